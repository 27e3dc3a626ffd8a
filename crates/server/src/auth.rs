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
//!   not, so it reveals nothing about which accounts exist. Its budget is
//!   reserved before a password is verified, so concurrent guesses cannot
//!   outrun it.
//! - Per client address: a budget of failed logins across all names, a
//!   registration rate, and a fair share of the hash limiter, so one
//!   address can neither rotate names to guess freely nor delay other
//!   addresses' logins by more than a verification or so.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use confab_protocol::limits::TokenBucket;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
        let dummy = hash_blocking(hex::encode(random), Vec::new()).await?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(CONCURRENT_HASHES)),
            dummy_hash: dummy.into(),
        })
    }

    /// Waits for the address's running share, then a global permit. Both
    /// permits are owned so they move into the blocking task: a request
    /// cancelled mid-hash keeps its permits until the hash really ends, so
    /// at most `CONCURRENT_HASHES` run, cancelled or not.
    async fn permits(&self, slot: &HashSlot<'_>) -> Result<Vec<OwnedSemaphorePermit>, HashError> {
        let closed = |e: tokio::sync::AcquireError| HashError(e.to_string());
        let address = Arc::clone(&slot.running)
            .acquire_owned()
            .await
            .map_err(closed)?;
        let global = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(closed)?;
        Ok(vec![address, global])
    }

    /// The PHC string of `password`, hashed once `slot`'s turn comes.
    pub async fn hash(&self, slot: &HashSlot<'_>, password: String) -> Result<String, HashError> {
        let permits = self.permits(slot).await?;
        hash_blocking(password, permits).await
    }

    /// Whether `password` matches `phc`; with `None` (unknown user) verifies
    /// against the dummy hash and returns false, taking the same time.
    pub async fn verify(&self, slot: &HashSlot<'_>, password: String, phc: Option<String>) -> bool {
        let Ok(permits) = self.permits(slot).await else {
            return false;
        };
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy_hash.to_string());
        let matched = tokio::task::spawn_blocking(move || {
            let _permits = permits;
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

async fn hash_blocking(
    password: String,
    permits: Vec<OwnedSemaphorePermit>,
) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        let _permits = permits;
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
    /// Verifications reserved and not finished yet (§15.3): they count
    /// against the budget as if each were a failure.
    in_flight: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// A reserved password verification for one name, from
/// [`LoginThrottle::reserve`]. Hand it back with [`Reservation::failed`],
/// [`Reservation::succeeded`] or [`Reservation::release`]; dropped without
/// one (the request was cancelled mid-verification) it counts as a failure
/// at the time it was reserved, so cancelling cannot buy free guesses.
#[derive(Debug)]
#[must_use = "a reservation holds a slot of the name's budget until it is handed back"]
pub struct Reservation<'a> {
    throttle: &'a LoginThrottle,
    /// `None` once handed back.
    key: Option<String>,
    reserved_at: Instant,
}

impl Reservation<'_> {
    /// The verification failed: counts a failure and returns the lockout
    /// it starts, if any.
    pub fn failed(mut self, now: Instant) -> Option<Duration> {
        let key = self.key.take()?;
        self.throttle.finish_failed(key, now)
    }

    /// The verification succeeded: the name's record is cleared.
    pub fn succeeded(mut self) {
        if let Some(key) = self.key.take() {
            self.throttle.finish_succeeded(&key);
        }
    }

    /// The reservation was not used (a later limit refused the login before
    /// any verification): frees its slot without counting.
    pub fn release(mut self) {
        if let Some(key) = self.key.take() {
            self.throttle.finish_released(&key);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.throttle.finish_failed(key, self.reserved_at);
        }
    }
}

/// The lockout after a name's `failures`-th failure (§15.3): none for the
/// first `free - 1`, then `base`, doubling with each further failure, at
/// most `max`. One rule for the per-node throttle and the shared one of
/// cluster mode.
pub fn lockout_after(failures: u32, free: u32, base: Duration, max: Duration) -> Option<Duration> {
    if failures < free {
        return None;
    }
    let doublings = (failures - free).min(30);
    Some(base.saturating_mul(1u32 << doublings).min(max))
}

/// Per-username failed-login throttle (§5.3, §15.3): `free` failures, then
/// each further failure locks the name for `base * 2^(n - free)`, capped at
/// `max`.
///
/// The budget is *reserved* before a password is verified, under the same
/// lock as the check: a login is refused at once when the name is locked,
/// or when the verifications in flight plus the failures so far already
/// fill the budget. So however many logins for one name arrive at once, at
/// most `free` passwords are verified before the lockout starts (after it,
/// one at a time). Sans-IO: time is passed in.
#[derive(Debug)]
pub struct LoginThrottle {
    free: u32,
    base: Duration,
    max: Duration,
    // std Mutex: lookups only, never held across an await.
    entries: Mutex<HashMap<String, Failures>>,
    /// Size at which the next prune runs; only changed under `entries`' lock.
    next_prune: AtomicUsize,
}

/// Entries kept before stale ones are first pruned.
const PRUNE_AT: usize = 10_000;

/// Most entries kept by a throttle or a set of buckets (a few MiB). Past
/// it, state that matters least is forgotten first (see the callers): the
/// memory bound wins over perfect recall, since the alternative, refusing
/// new names or addresses, would let a flood lock everyone out.
const MAX_ENTRIES: usize = 100_000;

/// After pruning down to `len` entries, when to prune next: at twice the
/// size, so the O(n) sweep costs O(1) per insert amortised.
fn next_prune_at(len: usize) -> usize {
    len.saturating_mul(2).clamp(PRUNE_AT, MAX_ENTRIES)
}

/// Longest throttle key in bytes. Longer names cannot be valid usernames
/// (at most 32 bytes), so they share the bucket of their first bytes: an
/// attacker's 16 KiB "names" cost no more memory than real ones.
const MAX_KEY_BYTES: usize = confab_protocol::names::MAX_USERNAME_BYTES + 1;

/// The name a login throttle counts `username`'s failures under.
pub fn throttle_key(username: &str) -> String {
    let mut end = username.len().min(MAX_KEY_BYTES);
    while !username.is_char_boundary(end) {
        end -= 1;
    }
    username[..end].to_owned()
}

impl LoginThrottle {
    /// A throttle with `free` free failures and lockouts from `base` to `max`.
    pub fn new(free: u32, base: Duration, max: Duration) -> Self {
        Self {
            free: free.max(1),
            base,
            max,
            entries: Mutex::new(HashMap::new()),
            next_prune: AtomicUsize::new(PRUNE_AT),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves one verification for `username`, or `Err(wait)` when the
    /// name is locked out or its budget is taken by verifications in flight.
    pub fn reserve(&self, username: &str, now: Instant) -> Result<Reservation<'_>, Duration> {
        let key = throttle_key(username);
        let mut entries = self.entries();
        if entries.len() >= self.next_prune.load(Relaxed) && !entries.contains_key(&key) {
            // Forget idle names whose last failure is older than the longest
            // lockout: they would start afresh anyway.
            let max = self.max;
            entries.retain(|_, f| f.in_flight > 0 || now.saturating_duration_since(f.last) < max);
            if entries.len() >= MAX_ENTRIES {
                // Still full: keep only names locked now or being verified.
                entries.retain(|_, f| f.in_flight > 0 || f.locked_until.is_some_and(|u| u > now));
            }
            if entries.len() >= MAX_ENTRIES {
                // In-flight entries are bounded by the hash limiter's total.
                entries.retain(|_, f| f.in_flight > 0);
            }
            self.next_prune.store(next_prune_at(entries.len()), Relaxed);
        }
        let entry = entries.entry(key.clone()).or_insert(Failures {
            count: 0,
            in_flight: 0,
            locked_until: None,
            last: now,
        });
        if let Some(until) = entry.locked_until.filter(|until| *until > now) {
            return Err(until - now);
        }
        // Before the lockout: what is left of the free failures. After a
        // lockout has passed: one guess at a time, each failure doubling it.
        let allowed = self.free.saturating_sub(entry.count).max(1);
        if entry.in_flight >= allowed {
            // The verifications in flight decide the name's fate within a
            // verification time; the shortest lockout is a fair wait.
            return Err(self.base.max(Duration::from_millis(1)));
        }
        entry.in_flight += 1;
        entry.last = now;
        Ok(Reservation {
            throttle: self,
            key: Some(key),
            reserved_at: now,
        })
    }

    fn finish_failed(&self, key: String, now: Instant) -> Option<Duration> {
        let mut entries = self.entries();
        let entry = entries.entry(key).or_insert(Failures {
            count: 0,
            in_flight: 1,
            locked_until: None,
            last: now,
        });
        entry.in_flight = entry.in_flight.saturating_sub(1);
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let lockout = lockout_after(entry.count, self.free, self.base, self.max)?;
        entry.locked_until = Some(now + lockout);
        Some(lockout)
    }

    /// Failures before lockouts start, first lockout, longest lockout.
    pub fn policy(&self) -> (u32, Duration, Duration) {
        (self.free, self.base, self.max)
    }

    fn finish_succeeded(&self, key: &str) {
        let mut entries = self.entries();
        if let Some(entry) = entries.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            entry.count = 0;
            entry.locked_until = None;
            if entry.in_flight == 0 {
                entries.remove(key);
            }
        }
    }

    fn finish_released(&self, key: &str) {
        let mut entries = self.entries();
        if let Some(entry) = entries.get_mut(key) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if entry.in_flight == 0 && entry.count == 0 {
                entries.remove(key);
            }
        }
    }

    /// Names tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.entries().len()
    }
}

/// A token bucket per client address (§15.3): failed logins across every
/// name, or registrations. A failed login or a registration keeps its
/// token; a successful login gives it back, so honest users behind one NAT
/// only pay for their typos. Sans-IO: time is passed in.
#[derive(Debug)]
pub struct AddressBuckets {
    rate_per_min: u32,
    burst: u32,
    // std Mutex: a hash lookup and float arithmetic, never an await.
    buckets: Mutex<HashMap<IpAddr, (TokenBucket, Instant)>>,
    /// Size at which the next prune runs; only changed under `buckets`' lock.
    next_prune: AtomicUsize,
}

impl AddressBuckets {
    /// `burst` tokens per address, refilled at `rate_per_min`.
    pub fn new(burst: u32, rate_per_min: u32) -> Self {
        Self {
            rate_per_min: rate_per_min.max(1),
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
            next_prune: AtomicUsize::new(PRUNE_AT),
        }
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (TokenBucket, Instant)>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time for an empty bucket to fill up again.
    fn refill_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst) * 60.0 / f64::from(self.rate_per_min))
    }

    /// Takes one token for `addr`, or says how long until one is there.
    pub fn try_take(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets();
        if buckets.len() >= self.next_prune.load(Relaxed) && !buckets.contains_key(&addr) {
            // A bucket unused for its refill time is full: dropping it
            // changes nothing, a new one starts full.
            let refill = self.refill_time();
            buckets.retain(|_, (_, used)| now.saturating_duration_since(*used) < refill);
            if buckets.len() >= MAX_ENTRIES {
                // Still full (a flood from very many addresses): forget all
                // but the last minute's, which gives older ones a new burst.
                buckets.retain(|_, (_, used)| {
                    now.saturating_duration_since(*used) < Duration::from_secs(60)
                });
            }
            if buckets.len() >= MAX_ENTRIES {
                buckets.clear();
            }
            self.next_prune.store(next_prune_at(buckets.len()), Relaxed);
        }
        let (bucket, used) = buckets
            .entry(addr)
            .or_insert_with(|| (bucket_per_min(self.rate_per_min, self.burst, now), now));
        *used = now;
        bucket.try_take(now)
    }

    /// Returns the token of an attempt that does not count.
    pub fn put_back(&self, addr: IpAddr) {
        if let Some((bucket, _)) = self.buckets().get_mut(&addr) {
            bucket.put_back();
        }
    }
}

/// A bucket of `burst` tokens refilled at `rate_per_min` tokens a minute.
fn bucket_per_min(rate_per_min: u32, burst: u32, now: Instant) -> TokenBucket {
    TokenBucket::with_rate(f64::from(rate_per_min) / 60.0, burst, now)
}

/// Why the password-hashing limiter refused work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashBusy {
    /// This address already has its share of verifications running or
    /// queued: answered `429 too_many_attempts`.
    #[error("this address has too many password checks in progress")]
    Address,
    /// The server-wide queue is full: answered `503 unavailable`.
    #[error("the server has too many password checks in progress")]
    Server,
}

/// How long a client refused by the [`HashLimiter`] is told to wait: a few
/// verification times, so the queue ahead of it has drained.
pub const HASH_BUSY_RETRY: Duration = Duration::from_secs(1);

/// Admission to password hashing (§15.3): at most `per_address` hashes
/// admitted (running or queued) per client address, of which at most
/// `per_address_running` run at once, and at most `total` admitted in all.
/// Beyond either cap a request is refused at once instead of queueing.
///
/// A flooding address therefore holds at most `per_address_running` of the
/// global permits and has no place in the global queue beyond that: a login
/// from another address waits for at most one verification per busy
/// address before it gets a permit.
#[derive(Debug)]
pub struct HashLimiter {
    per_address: usize,
    per_address_running: usize,
    total: usize,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    admitted: usize,
    addresses: HashMap<IpAddr, AddressSlots>,
}

#[derive(Debug)]
struct AddressSlots {
    admitted: usize,
    running: Arc<Semaphore>,
}

/// One admitted hash: holds its place until dropped.
#[derive(Debug)]
#[must_use = "admission is released when the slot is dropped"]
pub struct HashSlot<'a> {
    limiter: &'a HashLimiter,
    addr: IpAddr,
    running: Arc<Semaphore>,
}

impl HashLimiter {
    /// A limiter with these caps (each at least 1).
    pub fn new(per_address: usize, per_address_running: usize, total: usize) -> Self {
        Self {
            per_address: per_address.max(1),
            per_address_running: per_address_running.max(1),
            total: total.max(1),
            state: Mutex::new(LimiterState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one hash for `addr`, or says which cap is full. Check and
    /// count happen under one lock, so concurrent requests cannot overshoot.
    pub fn admit(&self, addr: IpAddr) -> Result<HashSlot<'_>, HashBusy> {
        let mut state = self.state();
        if state.admitted >= self.total {
            return Err(HashBusy::Server);
        }
        let running = self.per_address_running;
        let slots = state.addresses.entry(addr).or_insert_with(|| AddressSlots {
            admitted: 0,
            running: Arc::new(Semaphore::new(running)),
        });
        if slots.admitted >= self.per_address {
            return Err(HashBusy::Address);
        }
        slots.admitted += 1;
        let running = Arc::clone(&slots.running);
        state.admitted += 1;
        Ok(HashSlot {
            limiter: self,
            addr,
            running,
        })
    }

    /// Hashes admitted now, running or queued (for tests and metrics).
    pub fn admitted(&self) -> usize {
        self.state().admitted
    }
}

impl Drop for HashSlot<'_> {
    fn drop(&mut self) {
        let mut state = self.limiter.state();
        state.admitted = state.admitted.saturating_sub(1);
        if let Some(slots) = state.addresses.get_mut(&self.addr) {
            slots.admitted = slots.admitted.saturating_sub(1);
            if slots.admitted == 0 {
                state.addresses.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail_once(throttle: &LoginThrottle, name: &str, now: Instant) -> Option<Duration> {
        throttle.reserve(name, now).expect("not locked").failed(now)
    }

    #[test]
    fn throttle_locks_after_free_failures_and_doubles() {
        let t0 = Instant::now();
        let throttle = LoginThrottle::new(5, Duration::from_secs(1), Duration::from_secs(10));
        for _ in 0..4 {
            assert_eq!(fail_once(&throttle, "bob", t0), None);
        }
        assert_eq!(
            fail_once(&throttle, "bob", t0),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            throttle.reserve("bob", t0).map(|_| ()),
            Err(Duration::from_secs(1))
        );
        throttle
            .reserve("alice", t0)
            .expect("other names are unaffected")
            .release();
        let t1 = t0 + Duration::from_secs(1);
        for expected in [2, 4, 8, 10] {
            assert_eq!(
                fail_once(&throttle, "bob", t1),
                Some(Duration::from_secs(expected)),
                "doubling, capped at 10 s"
            );
            // Locked again until the new lockout ends.
            assert!(throttle.reserve("bob", t1).is_err());
            throttle
                .entries()
                .get_mut("bob")
                .expect("tracked")
                .locked_until = None;
        }
        throttle.reserve("bob", t1).expect("unlocked").succeeded();
        assert_eq!(throttle.tracked(), 0, "success clears the record");
    }

    #[test]
    fn in_flight_verifications_count_against_the_budget() {
        let t0 = Instant::now();
        let throttle = LoginThrottle::new(3, Duration::from_secs(1), Duration::from_secs(60));
        let held: Vec<_> = (0..3)
            .map(|_| throttle.reserve("bob", t0).expect("within budget"))
            .collect();
        assert_eq!(
            throttle.reserve("bob", t0).map(|_| ()),
            Err(Duration::from_secs(1)),
            "three in flight fill a budget of three"
        );
        // One is released unused: its slot is free again, uncounted.
        let mut held = held.into_iter();
        held.next().expect("one").release();
        let again = throttle.reserve("bob", t0).expect("a freed slot");
        assert!(throttle.reserve("bob", t0).is_err());
        // Two fail, one succeeds: the success clears the failures.
        assert_eq!(held.next().expect("two").failed(t0), None);
        assert_eq!(held.next().expect("three").failed(t0), None);
        again.succeeded();
        assert_eq!(throttle.tracked(), 0);
    }

    #[test]
    fn a_dropped_reservation_counts_as_a_failure() {
        let t0 = Instant::now();
        let throttle = LoginThrottle::new(2, Duration::from_secs(5), Duration::from_secs(60));
        drop(throttle.reserve("bob", t0).expect("free"));
        drop(throttle.reserve("bob", t0).expect("free"));
        assert_eq!(
            throttle.reserve("bob", t0).map(|_| ()),
            Err(Duration::from_secs(5)),
            "two cancelled verifications used the budget of two"
        );
    }

    #[test]
    fn long_names_share_a_bounded_key() {
        let t0 = Instant::now();
        let throttle = LoginThrottle::new(1, Duration::from_secs(5), Duration::from_secs(60));
        let long = format!("{}é{}", "x".repeat(32), "y".repeat(10_000));
        assert_eq!(
            fail_once(&throttle, &long, t0),
            Some(Duration::from_secs(5))
        );
        let other = format!("{}é{}", "x".repeat(32), "z".repeat(50));
        assert!(throttle.reserve(&other, t0).is_err(), "same 33-byte prefix");
        let key = throttle.entries().keys().next().expect("one key").clone();
        assert!(key.len() <= MAX_KEY_BYTES, "{} bytes", key.len());
    }

    /// Many threads race for one name with wrong and right passwords: the
    /// verifications granted never exceed the budget once per "era" — a
    /// success clears the record (the owner's login wipes the failures
    /// before it), so each success can open at most one more budget.
    #[test]
    fn concurrent_logins_verify_at_most_the_budget() {
        const FREE: u32 = 5;
        let t0 = Instant::now();
        let throttle = LoginThrottle::new(FREE, Duration::from_secs(60), Duration::from_secs(600));
        let granted = std::sync::atomic::AtomicU32::new(0);
        let successes = std::sync::atomic::AtomicU32::new(0);
        let start = std::sync::Barrier::new(41);
        std::thread::scope(|scope| {
            for i in 0..41 {
                let (throttle, granted, successes, start) =
                    (&throttle, &granted, &successes, &start);
                scope.spawn(move || {
                    start.wait();
                    if let Ok(reservation) = throttle.reserve("bob", t0) {
                        granted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Hold the slot a little, as a verification does.
                        std::thread::yield_now();
                        // The 13th has the right password.
                        if i == 12 {
                            successes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            reservation.succeeded();
                        } else {
                            reservation.failed(t0);
                        }
                    }
                });
            }
        });
        let (granted, successes) = (granted.into_inner(), successes.into_inner());
        assert!(
            granted <= FREE * (successes + 1),
            "{granted} verifications with {successes} successes for a budget of {FREE}"
        );
        assert!(granted >= FREE.min(41), "the budget itself is usable");
    }

    #[test]
    fn concurrent_wrong_logins_verify_exactly_the_budget() {
        const FREE: u32 = 5;
        let t0 = Instant::now();
        let throttle = LoginThrottle::new(FREE, Duration::from_secs(60), Duration::from_secs(600));
        let granted = std::sync::atomic::AtomicU32::new(0);
        let start = std::sync::Barrier::new(64);
        std::thread::scope(|scope| {
            for _ in 0..64 {
                let (throttle, granted, start) = (&throttle, &granted, &start);
                scope.spawn(move || {
                    start.wait();
                    if let Ok(reservation) = throttle.reserve("bob", t0) {
                        granted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::yield_now();
                        reservation.failed(t0);
                    }
                });
            }
        });
        assert_eq!(granted.into_inner(), FREE);
        assert!(throttle.reserve("bob", t0).is_err(), "locked afterwards");
        // After the lockout the owner gets a try.
        throttle
            .reserve("bob", t0 + Duration::from_secs(60))
            .expect("lockout over")
            .succeeded();
    }

    #[test]
    fn address_buckets_are_per_address_and_refund() {
        let t0 = Instant::now();
        let a = IpAddr::from([127, 0, 0, 2]);
        let b = IpAddr::from([127, 0, 0, 3]);
        // 3 tokens, 6 a minute: one every 10 s.
        let buckets = AddressBuckets::new(3, 6);
        for _ in 0..3 {
            buckets.try_take(a, t0).expect("burst");
        }
        assert_eq!(buckets.try_take(a, t0), Err(Duration::from_secs(10)));
        buckets
            .try_take(b, t0)
            .expect("another address is unaffected");
        buckets.put_back(a);
        buckets.try_take(a, t0).expect("a refunded token");
        assert!(buckets.try_take(a, t0).is_err());
        buckets
            .try_take(a, t0 + Duration::from_secs(10))
            .expect("refilled");
    }

    #[test]
    fn hash_limiter_caps_per_address_and_in_total() {
        let a = IpAddr::from([127, 0, 0, 2]);
        let b = IpAddr::from([127, 0, 0, 3]);
        let c = IpAddr::from([127, 0, 0, 4]);
        let limiter = HashLimiter::new(2, 1, 3);
        let a1 = limiter.admit(a).expect("first");
        let a2 = limiter.admit(a).expect("second");
        assert_eq!(limiter.admit(a).map(|_| ()), Err(HashBusy::Address));
        let b1 = limiter.admit(b).expect("other address");
        assert_eq!(limiter.admit(c).map(|_| ()), Err(HashBusy::Server));
        assert_eq!(limiter.admitted(), 3);
        // Only one of a's two runs at a time.
        assert_eq!(a1.running.available_permits(), 1);
        assert!(Arc::ptr_eq(&a1.running, &a2.running));
        assert!(!Arc::ptr_eq(&a1.running, &b1.running));
        drop(a1);
        limiter
            .admit(c)
            .expect("a place freed")
            .running
            .available_permits();
        drop((a2, b1));
        assert_eq!(limiter.admitted(), 0);
        assert!(
            limiter.state().addresses.is_empty(),
            "no per-address residue"
        );
    }

    #[test]
    fn hash_limiter_admission_holds_under_concurrency() {
        let limiter = HashLimiter::new(4, 2, 1000);
        let addr = IpAddr::from([127, 0, 0, 2]);
        let start = std::sync::Barrier::new(32);
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        let hold = std::sync::Barrier::new(32);
        std::thread::scope(|scope| {
            for _ in 0..32 {
                let (limiter, start, admitted, hold) = (&limiter, &start, &admitted, &hold);
                scope.spawn(move || {
                    start.wait();
                    let slot = limiter.admit(addr);
                    if slot.is_ok() {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Everyone holds what they got until all have tried.
                    hold.wait();
                    drop(slot);
                });
            }
        });
        assert_eq!(admitted.into_inner(), 4);
        assert_eq!(limiter.admitted(), 0);
    }

    /// A flood of distinct names cannot grow the throttle past its cap, and
    /// the state that matters (a locked name) survives the pruning.
    #[test]
    fn the_throttle_stays_bounded_and_keeps_lockouts() {
        let t0 = Instant::now();
        let throttle = LoginThrottle::new(1, Duration::from_secs(60), Duration::from_secs(600));
        assert!(fail_once(&throttle, "victim", t0).is_some());
        for i in 0..MAX_ENTRIES + 20_000 {
            // free is 1, so each failure locks its name for a minute.
            // Half are released unused, like logins refused by later limits.
            let reservation = throttle.reserve(&format!("n{i}"), t0).expect("fresh name");
            if i % 2 == 0 {
                reservation.release();
            } else {
                reservation.failed(t0);
            }
            assert!(throttle.tracked() <= MAX_ENTRIES + 1, "at {i}");
        }
        assert!(throttle.reserve("victim", t0).is_err(), "still locked");
    }

    #[test]
    fn address_buckets_stay_bounded() {
        let t0 = Instant::now();
        let buckets = AddressBuckets::new(2, 1);
        for i in 0..(MAX_ENTRIES as u128 + 20_000) {
            let addr = IpAddr::V6(std::net::Ipv6Addr::from(i << 64));
            buckets
                .try_take(addr, t0)
                .expect("a fresh address has a burst");
            assert!(buckets.buckets().len() <= MAX_ENTRIES + 1, "at {i}");
        }
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
