//! Limits every node of a cluster shares (§12.5 sends and room creation
//! per user, §15.3 failed logins per name): PostgreSQL rows, so a user who
//! spreads requests over nodes gets one budget, not one per node.
//!
//! Each operation is one short transaction: lock the row, apply the rule a
//! single node applies in memory (`StoredBucket`, `auth::lockout_after`),
//! write it back. When PostgreSQL fails, the caller falls back to its own
//! node's limiter, so an outage never lifts the limits.

use std::time::Duration;

use confab_protocol::limits::StoredBucket;
use sqlx::PgPool;
use sqlx::Row;

use crate::auth::lockout_after;
use crate::storage::StoreError;

/// Shared budgets, on the cluster's PostgreSQL.
#[derive(Debug, Clone)]
pub struct SharedLimits {
    pool: PgPool,
}

/// A bucket's name: what it limits and whose it is.
#[derive(Debug, Clone, Copy)]
pub enum Bucket<'a> {
    /// SendMessage per user.
    Send(&'a str),
    /// CreateRoom per user.
    CreateRoom(&'a str),
}

impl Bucket<'_> {
    fn key(self) -> String {
        match self {
            Bucket::Send(user) => format!("send:{user}"),
            Bucket::CreateRoom(user) => format!("create_room:{user}"),
        }
    }
}

impl SharedLimits {
    /// Limits on the pool of the cluster's store.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Takes a token from `bucket` (rate per second, burst), or says how
    /// long until one is available.
    pub async fn try_take(
        &self,
        bucket: Bucket<'_>,
        rate_per_sec: f64,
        burst: u32,
        now_ms: i64,
    ) -> Result<Result<(), Duration>, StoreError> {
        self.update(bucket, burst, now_ms, |b| {
            b.try_take(rate_per_sec, burst, now_ms)
        })
        .await
    }

    /// Gives a token back (§12.5: a repeat costs none).
    pub async fn refund(
        &self,
        bucket: Bucket<'_>,
        rate_per_sec: f64,
        burst: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.update(bucket, burst, now_ms, |b| {
            b.refund(rate_per_sec, burst, now_ms);
        })
        .await
    }

    async fn update<T>(
        &self,
        bucket: Bucket<'_>,
        burst: u32,
        now_ms: i64,
        apply: impl FnOnce(&mut StoredBucket) -> T,
    ) -> Result<T, StoreError> {
        let key = bucket.key();
        let mut tx = self.pool.begin().await?;
        let full = StoredBucket::full(burst, now_ms);
        // Creates the row full if it is new, and locks it either way.
        let row = sqlx::query(
            "INSERT INTO rate_buckets (key, tokens, updated_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING tokens, updated_ms",
        )
        .bind(&key)
        .bind(full.tokens)
        .bind(full.updated_ms)
        .fetch_one(&mut *tx)
        .await?;
        let mut state = StoredBucket {
            tokens: row.try_get("tokens")?,
            updated_ms: row.try_get("updated_ms")?,
        };
        let result = apply(&mut state);
        sqlx::query("UPDATE rate_buckets SET tokens = $2, updated_ms = $3 WHERE key = $1")
            .bind(&key)
            .bind(state.tokens)
            .bind(state.updated_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(result)
    }

    /// How long the name is locked out for, if it is.
    pub async fn login_locked(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<Duration>, StoreError> {
        let until: Option<i64> =
            sqlx::query_scalar("SELECT locked_until_ms FROM login_failures WHERE username = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(until
            .filter(|until| *until > now_ms)
            .map(|until| Duration::from_millis((until - now_ms) as u64)))
    }

    /// Counts a failed login for the name; returns the lockout it starts.
    pub async fn login_failed(
        &self,
        name: &str,
        policy: (u32, Duration, Duration),
        now_ms: i64,
    ) -> Result<Option<Duration>, StoreError> {
        let (free, base, max) = policy;
        let mut tx = self.pool.begin().await?;
        let failures: i32 = sqlx::query_scalar(
            "INSERT INTO login_failures (username, failures, locked_until_ms) VALUES ($1, 1, 0) \
             ON CONFLICT (username) DO UPDATE SET failures = login_failures.failures + 1 \
             RETURNING failures",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        let lockout = lockout_after(u32::try_from(failures).unwrap_or(0), free, base, max);
        if let Some(lockout) = lockout {
            let until =
                now_ms.saturating_add(i64::try_from(lockout.as_millis()).unwrap_or(i64::MAX));
            sqlx::query("UPDATE login_failures SET locked_until_ms = $2 WHERE username = $1")
                .bind(name)
                .bind(until)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(lockout)
    }

    /// A successful login clears the name's failures.
    pub async fn login_succeeded(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE username = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
