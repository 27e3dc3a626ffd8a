//! Passwords, tokens and the failed-login throttle (§5.2-§5.4, §15).
//!
//! - Passwords are hashed with argon2id at m=19456 KiB, t=2, p=1 (the OWASP
//!   baseline). Hashing runs on the blocking pool, at most a few at a time,
//!   so a burst of logins can neither stall the async workers nor allocate
//!   unbounded memory (each hash takes 19 MiB).
//! - Unknown users are verified against a dummy hash with the same
//!   parameters, so "no such user" and "wrong password" take the same time
//!   and get the same bytes back.
//! - Tokens are 32 random bytes shown as 64 hex characters. Only their
//!   SHA-256 is stored, so a leaked database holds no usable token.
//! - The login throttle is keyed by the *requested* username, existing or
//!   not, so it reveals nothing about which accounts exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// argon2id memory cost in KiB (§15).
pub const ARGON2_M_KIB: u32 = 19_456;
/// argon2id iterations (§15).
pub const ARGON2_T: u32 = 2;
/// argon2id parallelism (§15).
pub const ARGON2_P: u32 = 1;

/// Hashes running at once; bounds memory at 19 MiB each.
const CONCURRENT_HASHES: usize = 4;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why hashing failed (only on internal errors: bad parameters, a panicked thread).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Password hashing with a bounded number of concurrent hashes.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl Passwords {
    /// Prepares the dummy hash used for unknown users.
    pub async fn new() -> Result<Self, HashError> {
        let mut random = [0u8; 24];
        rand::rng().fill_bytes(&mut random);
        let dummy = hash_blocking(hex::encode(random)).await?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(CONCURRENT_HASHES)),
            dummy_hash: dummy.into(),
        })
    }

    /// The PHC string of `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError(e.to_string()))?;
        hash_blocking(password).await
    }

    /// Whether `password` matches `phc`; with `None` (unknown user) verifies
    /// against the dummy hash and returns false, taking the same time.
    pub async fn verify(&self, password: String, phc: Option<String>) -> bool {
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.to_string());
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .map(|parsed| {
                    argon2()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        known && matched
    }
}

async fn hash_blocking(password: String) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError(e.to_string()))
    })
    .await
    .map_err(|e| HashError(e.to_string()))?
}

/// A new bearer token: 32 random bytes as 64 lowercase hex characters.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the database stores for a token: SHA-256 of its string, in hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// Per-username failed-login throttle (§5.3, §15): `free` failures, then
/// each further failure locks the name for `base * 2^(n - free)`, capped at
/// `max`. Sans-IO: time is passed in.
#[derive(Debug)]
pub struct LoginThrottle {
    free: u32,
    base: Duration,
    max: Duration,
    // std Mutex: lookups only, never held across an await.
    entries: Mutex<HashMap<String, Failures>>,
}

/// Entries kept before stale ones are pruned.
const THROTTLE_PRUNE_AT: usize = 10_000;

impl LoginThrottle {
    /// A throttle with `free` free failures and lockouts from `base` to `max`.
    pub fn new(free: u32, base: Duration, max: Duration) -> Self {
        Self {
            free,
            base,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(wait)` while the name is locked out.
    pub fn check(&self, username: &str, now: Instant) -> Result<(), Duration> {
        match self.entries().get(username).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns the lockout it starts, if any.
    pub fn record_failure(&self, username: &str, now: Instant) -> Option<Duration> {
        let mut entries = self.entries();
        if entries.len() >= THROTTLE_PRUNE_AT {
            // Forget names whose last failure is older than the longest lockout.
            let max = self.max;
            entries.retain(|_, f| now.saturating_duration_since(f.last) < max);
        }
        let entry = entries.entry(username.to_owned()).or_insert(Failures {
            count: 0,
            locked_until: None,
            last: now,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count < self.free {
            return None;
        }
        let doublings = (entry.count - self.free).min(30);
        let lockout = self.base.saturating_mul(1u32 << doublings).min(self.max);
        entry.locked_until = Some(now + lockout);
        Some(lockout)
    }

    /// A successful login clears the name's record.
    pub fn record_success(&self, username: &str) {
        self.entries().remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_locks_after_free_failures_and_doubles() {
        let t0 = Instant::now();
        let throttle = LoginThrottle::new(5, Duration::from_secs(1), Duration::from_secs(10));
        for _ in 0..4 {
            assert_eq!(throttle.record_failure("bob", t0), None);
            assert!(throttle.check("bob", t0).is_ok());
        }
        assert_eq!(
            throttle.record_failure("bob", t0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(throttle.check("bob", t0), Err(Duration::from_secs(1)));
        assert!(
            throttle.check("alice", t0).is_ok(),
            "other names are unaffected"
        );
        let t1 = t0 + Duration::from_secs(1);
        assert!(throttle.check("bob", t1).is_ok());
        assert_eq!(
            throttle.record_failure("bob", t1),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            throttle.record_failure("bob", t1),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            throttle.record_failure("bob", t1),
            Some(Duration::from_secs(8))
        );
        assert_eq!(
            throttle.record_failure("bob", t1),
            Some(Duration::from_secs(10)),
            "capped"
        );
        throttle.record_success("bob");
        assert!(throttle.check("bob", t1).is_ok());
    }

    #[test]
    fn tokens_are_long_and_hashed() {
        let token = new_token();
        assert_eq!(token.len(), 64);
        assert_ne!(token, new_token());
        let hash = token_hash(&token);
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, token);
    }
}
