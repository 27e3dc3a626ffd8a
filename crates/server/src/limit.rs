//! Resource limits that are server policy rather than protocol rules:
//! the connection cap and the per-user rate limiters (sends, typing, room
//! creation).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_protocol::limits::TokenBucket;
use confab_protocol::names::Username;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Caps simultaneous TCP connections.
///
/// The accept loop waits for a permit *before* accepting, so at the cap new
/// clients queue in the kernel's listen backlog instead of costing us a task
/// and a file descriptor each. The permit lives as long as the connection,
/// including a WebSocket after the HTTP upgrade.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    semaphore: Arc<Semaphore>,
}

/// Proof that a connection holds one slot; the slot frees when this drops.
#[derive(Debug, Clone)]
pub struct ConnectionPermit {
    _permit: Arc<OwnedSemaphorePermit>,
}

impl ConnectionLimit {
    /// A limit of `max` simultaneous connections.
    pub fn new(max: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> ConnectionPermit {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .expect("connection semaphore is never closed");
        ConnectionPermit {
            _permit: Arc::new(permit),
        }
    }

    /// Free slots right now, for metrics.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

/// One token bucket per key (a user, for sends §12.5, SetTyping §11.2 and
/// CreateRoom §7.2), shared by all of the key's sockets so opening more
/// sockets does not buy more throughput.
#[derive(Debug)]
pub struct KeyedRateLimiter<K> {
    rate_per_sec: f64,
    burst: u32,
    // A std Mutex: the critical section is a hash lookup and some float
    // arithmetic, never an await, so an async mutex would only add cost.
    buckets: Mutex<Buckets<K>>,
}

#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, (TokenBucket, Instant)>,
    /// Size at which the next take first drops buckets that are full again,
    /// so the map stays proportional to the keys active lately, not to every
    /// key ever seen; doubling it makes the pruning amortised O(1) per take.
    prune_at: usize,
}

/// Buckets kept before the first pruning pass.
const PRUNE_FLOOR: usize = 1024;

/// The per-user send limiter of §12.5.
pub type SendRateLimiter = KeyedRateLimiter<Username>;

impl<K: Eq + Hash + Clone> KeyedRateLimiter<K> {
    /// A limiter for `rate_per_sec` sustained takes per key with bursts of `burst`.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self::with_rate(f64::from(rate_per_sec.max(1)), burst)
    }

    /// As [`Self::new`], with a fractional rate (e.g. `10.0 / 60.0`: ten a minute).
    pub fn with_rate(rate_per_sec: f64, burst: u32) -> Self {
        Self {
            rate_per_sec,
            burst,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                prune_at: PRUNE_FLOOR,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets<K>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one token for `key`, or says how long until one is available.
    /// Check and take happen under one lock, so concurrent requests of one
    /// key can never take more tokens than the bucket holds.
    pub fn try_take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.lock();
        if buckets.map.len() >= buckets.prune_at {
            Self::prune_locked(&mut buckets, now);
        }
        let (rate, burst) = (self.rate_per_sec, self.burst);
        let (bucket, last_used) = buckets
            .map
            .entry(key.clone())
            .or_insert_with(|| (TokenBucket::with_rate(rate, burst, now), now));
        *last_used = now;
        bucket.try_take(now)
    }

    /// Gives back a token taken for a request that turned out to cost
    /// nothing (an idempotent repeat, §12.5).
    pub fn refund(&self, key: &K, now: Instant) {
        if let Some((bucket, _)) = self.lock().map.get_mut(key) {
            bucket.refund(now);
        }
    }

    /// Drops buckets unused long enough to be full again. Dropping a full
    /// bucket changes nothing: a new one starts full.
    pub fn prune(&self, now: Instant) {
        Self::prune_locked(&mut self.lock(), now);
    }

    fn prune_locked(buckets: &mut Buckets<K>, now: Instant) {
        buckets.map.retain(|_, (bucket, last_used)| {
            now.saturating_duration_since(*last_used) < bucket.full_after()
        });
        buckets.prune_at = (buckets.map.len() * 2).max(PRUNE_FLOOR);
    }

    /// Buckets held now, for tests.
    pub fn tracked(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    #[test]
    fn a_connection_waits_for_a_free_slot() {
        let limit = ConnectionLimit::new(1);
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(first) = pin!(limit.acquire()).poll(&mut cx) else {
            panic!("a free slot is granted at once");
        };
        let mut second = pin!(limit.acquire());
        assert!(second.as_mut().poll(&mut cx).is_pending(), "no second slot");
        // The permit is shared by the HTTP connection and its WebSocket;
        // the slot frees only when the last holder lets go.
        let clone = first.clone();
        drop(first);
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(clone);
        assert!(second.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn rate_buckets_are_per_user() {
        let now = Instant::now();
        let limiter = SendRateLimiter::new(1, 2);
        let alice = Username::parse("alice").expect("name");
        let bob = Username::parse("bob").expect("name");
        assert!(limiter.try_take(&alice, now).is_ok());
        assert!(limiter.try_take(&alice, now).is_ok());
        assert_eq!(limiter.try_take(&alice, now), Err(Duration::from_secs(1)));
        assert!(
            limiter.try_take(&bob, now).is_ok(),
            "another user is unaffected"
        );
        // Pruning keeps a bucket that is not yet full again...
        limiter.prune(now + Duration::from_secs(1));
        assert!(
            limiter
                .try_take(&alice, now + Duration::from_secs(1))
                .is_ok()
        );
        assert!(
            limiter
                .try_take(&alice, now + Duration::from_secs(1))
                .is_err()
        );
        // ...and forgets it once it would be.
        limiter.prune(now + Duration::from_secs(10));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn refunds_and_fractional_rates() {
        let now = Instant::now();
        // Ten a minute, burst 2.
        let limiter: KeyedRateLimiter<u32> = KeyedRateLimiter::with_rate(10.0 / 60.0, 2);
        assert!(limiter.try_take(&1, now).is_ok());
        assert!(limiter.try_take(&1, now).is_ok());
        assert_eq!(limiter.try_take(&1, now), Err(Duration::from_secs(6)));
        limiter.refund(&1, now);
        assert!(
            limiter.try_take(&1, now).is_ok(),
            "a refunded token is usable"
        );
        // A refund for a key never seen creates nothing.
        limiter.refund(&2, now);
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn the_map_prunes_itself() {
        let now = Instant::now();
        let limiter: KeyedRateLimiter<usize> = KeyedRateLimiter::new(1000, 1);
        for key in 0..PRUNE_FLOOR {
            assert!(limiter.try_take(&key, now).is_ok());
        }
        assert_eq!(limiter.tracked(), PRUNE_FLOOR);
        // Long after, every old bucket is full again: the next take drops them.
        let later = now + Duration::from_secs(60);
        assert!(limiter.try_take(&usize::MAX, later).is_ok());
        assert_eq!(limiter.tracked(), 1);
    }
}
