//! Resource limits that are server policy rather than protocol rules:
//! the connection caps (total and per address) and the per-user rate
//! limiters (sends, typing, room creation).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_protocol::limits::TokenBucket;
use confab_protocol::names::Username;

/// Caps simultaneous TCP connections, in total and per source address.
///
/// The accept loop never waits for a slot: it accepts, asks for a permit,
/// and answers a refusal with `503 unavailable` at once (§3.1), so clients
/// beyond the cap get an answer instead of hanging in the kernel backlog.
/// The per-address cap keeps one address from taking every slot. Check and
/// count happen under one lock, so concurrent accepts cannot overshoot
/// either cap. The permit lives as long as the connection, including a
/// WebSocket after the HTTP upgrade.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    shared: Arc<LimitShared>,
}

#[derive(Debug)]
struct LimitShared {
    max_total: usize,
    /// 0: no per-address cap.
    max_per_address: usize,
    // A std Mutex: the critical section is a counter and a hash entry,
    // never an await.
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only addresses holding at least one slot, so the map is bounded by
    /// the connection cap.
    per_address: HashMap<IpAddr, usize>,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Every slot of the server-wide cap (`--max-connections`) is taken.
    #[error("the server is at its connection limit")]
    AtCapacity,
    /// The source address holds its share (`--max-connections-per-ip`).
    #[error("too many connections from this address")]
    AddressAtCapacity,
}

/// Proof that a connection holds one slot; the slot frees when the last
/// clone drops (the HTTP connection and its WebSocket share one).
#[derive(Debug, Clone)]
pub struct ConnectionPermit {
    _slot: Arc<Slot>,
}

#[derive(Debug)]
struct Slot {
    shared: Arc<LimitShared>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_address.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.per_address.remove(&self.address);
            }
        }
    }
}

/// The key an address is counted under: IPv4 (also when IPv4-mapped) as
/// itself, IPv6 by its /64, the smallest block one host is usually given,
/// so a host cannot escape the cap by rotating addresses inside it.
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

impl ConnectionLimit {
    /// At most `max_total` connections, and at most `max_per_address` from
    /// one address (0: no per-address cap).
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        Self {
            shared: Arc::new(LimitShared {
                max_total: max_total.max(1),
                max_per_address,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// A slot for a connection from `address`, or why there is none.
    pub fn try_acquire(&self, address: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let address = address_key(address);
        let mut counts = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.shared.max_total {
            return Err(Refusal::AtCapacity);
        }
        let held = counts.per_address.get(&address).copied().unwrap_or(0);
        if self.shared.max_per_address > 0 && held >= self.shared.max_per_address {
            return Err(Refusal::AddressAtCapacity);
        }
        counts.total += 1;
        counts.per_address.insert(address, held + 1);
        drop(counts);
        Ok(ConnectionPermit {
            _slot: Arc::new(Slot {
                shared: Arc::clone(&self.shared),
                address,
            }),
        })
    }

    /// Free slots right now, for metrics.
    pub fn available(&self) -> usize {
        let counts = self.shared.counts.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.max_total.saturating_sub(counts.total)
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
    use super::*;

    #[test]
    fn caps_hold_in_total_and_per_address() {
        let limit = ConnectionLimit::new(3, 2);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.3".parse().expect("ip");
        let first = limit.try_acquire(a).expect("a's first slot");
        // The HTTP connection and its WebSocket share one permit: the slot
        // frees only when the last holder lets go.
        let clone = first.clone();
        let second = limit.try_acquire(a).expect("a's second slot");
        assert_eq!(limit.try_acquire(a).err(), Some(Refusal::AddressAtCapacity));
        let third = limit
            .try_acquire(b)
            .expect("another address still gets one");
        assert_eq!(limit.try_acquire(b).err(), Some(Refusal::AtCapacity));
        assert_eq!(limit.available(), 0);
        drop(first);
        assert_eq!(limit.available(), 0, "the clone still holds the slot");
        drop(clone);
        assert_eq!(limit.available(), 1);
        let again = limit.try_acquire(a).expect("a's slot came back");
        drop((second, third, again));
        assert_eq!(limit.available(), 3);
        assert!(
            limit
                .shared
                .counts
                .lock()
                .expect("lock")
                .per_address
                .is_empty(),
            "addresses without slots are forgotten"
        );
    }

    #[test]
    fn no_per_address_cap_when_zero() {
        let limit = ConnectionLimit::new(3, 0);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let permits: Vec<_> = (0..3)
            .map(|_| limit.try_acquire(a).expect("slot"))
            .collect();
        assert_eq!(limit.try_acquire(a).err(), Some(Refusal::AtCapacity));
        drop(permits);
    }

    #[test]
    fn the_cap_holds_under_concurrency() {
        let limit = ConnectionLimit::new(1000, 10);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let barrier = std::sync::Barrier::new(8);
        let granted: Vec<ConnectionPermit> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        (0..10)
                            .filter_map(|_| limit.try_acquire(a).ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().expect("thread"))
                .collect()
        });
        assert_eq!(granted.len(), 10, "exactly the per-address cap");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().expect("ip");
        assert_eq!(
            address_key(mapped),
            "127.0.0.2".parse::<IpAddr>().expect("ip")
        );
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
