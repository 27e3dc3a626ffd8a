//! Resource limits that are server policy rather than protocol rules:
//! the connection cap and the per-user send rate limiter.

use std::collections::HashMap;
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

/// One token bucket per user (§12.5), shared by all of the user's sockets so
/// opening more sockets does not buy more throughput.
#[derive(Debug)]
pub struct SendRateLimiter {
    rate_per_sec: u32,
    burst: u32,
    // A std Mutex: the critical section is a hash lookup and some float
    // arithmetic, never an await, so an async mutex would only add cost.
    buckets: Mutex<HashMap<Username, (TokenBucket, Instant)>>,
}

impl SendRateLimiter {
    /// A limiter for `rate_per_sec` sustained sends with bursts of `burst`.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self {
            rate_per_sec,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one send token for `user`, or says how long to wait.
    pub fn try_send(&self, user: &Username, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (bucket, last_used) = buckets
            .entry(user.clone())
            .or_insert_with(|| (TokenBucket::new(self.rate_per_sec, self.burst, now), now));
        *last_used = now;
        bucket.try_take(now)
    }

    /// Drops buckets unused long enough to be full again, so the map does not
    /// grow with every user ever seen. Dropping a full bucket changes nothing:
    /// a new one starts full.
    pub fn prune(&self, now: Instant) {
        let refill = Duration::from_secs_f64(
            f64::from(self.burst.max(1)) / f64::from(self.rate_per_sec.max(1)),
        );
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|_, (_, last_used)| now.saturating_duration_since(*last_used) < refill);
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
        assert!(limiter.try_send(&alice, now).is_ok());
        assert!(limiter.try_send(&alice, now).is_ok());
        assert_eq!(limiter.try_send(&alice, now), Err(Duration::from_secs(1)));
        assert!(
            limiter.try_send(&bob, now).is_ok(),
            "another user is unaffected"
        );
        // Pruning keeps a bucket that is not yet full again...
        limiter.prune(now + Duration::from_secs(1));
        assert!(
            limiter
                .try_send(&alice, now + Duration::from_secs(1))
                .is_ok()
        );
        assert!(
            limiter
                .try_send(&alice, now + Duration::from_secs(1))
                .is_err()
        );
        // ...and forgets it once it would be.
        limiter.prune(now + Duration::from_secs(10));
        assert_eq!(limiter.buckets.lock().expect("lock").len(), 0);
    }
}
