//! Server limits and the per-user send rate limiter.
//!
//! Spec: §12 (liveness and limits). The limits travel to the client in
//! `Welcome.limits`; [`TokenBucket`] is the rate rule of §12.5, with time
//! passed in so it is testable without a clock.

use std::time::{Duration, Instant};

use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::names::DEFAULT_MAX_TEXT_BYTES;
use crate::wire;

/// The limits a server enforces and announces (§12). Defaults are the
/// reference server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest WebSocket message accepted, in bytes.
    pub max_frame_bytes: u32,
    /// Largest message text, in UTF-8 bytes.
    pub max_text_bytes: u32,
    /// Largest history page.
    pub max_history_page: u32,
    /// Most messages one Resume replays per room.
    pub max_resume_replay: u32,
    /// Sustained sends per second per user.
    pub send_rate_per_sec: u32,
    /// Burst of the send rate limiter.
    pub send_burst: u32,
    /// Interval of server pings.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is dropped.
    pub idle_timeout: Duration,
    /// Time to live of a typing indicator.
    pub typing_ttl: Duration,
    /// Outbound frames queued per connection before it is closed as slow.
    pub outbound_queue_frames: u32,
    /// Outbound bytes (encoded frames) queued per connection before it is
    /// closed as slow (§12.4). Must exceed the largest single frame the
    /// server sends (a full HistoryPage or RoomList page), or such a frame
    /// alone would close the connection.
    pub outbound_queue_bytes: u32,
    /// Largest RoomList page (§7.1).
    pub max_room_list_page: u32,
    /// Shortest interval between two `Typing{active:true}` pushes for one
    /// (room, user); renewals inside it are coalesced (§11.2).
    pub typing_push_interval: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES as u32,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES as u32,
            max_history_page: 100,
            max_resume_replay: 500,
            send_rate_per_sec: 10,
            send_burst: 30,
            heartbeat_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            typing_ttl: Duration::from_secs(6),
            outbound_queue_frames: 1024,
            // A full HistoryPage (100 texts of 4 KiB) encodes to about
            // 420 KiB and a RoomList page of 100 rooms to about 12 KiB, so
            // several of the largest replies fit; 1024 frames of small
            // pushes fit too.
            outbound_queue_bytes: 4 * 1024 * 1024,
            max_room_list_page: 100,
            typing_push_interval: Duration::from_millis(1000),
        }
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl ServerLimits {
    /// The wire form sent in `Welcome`.
    pub fn to_wire(&self) -> wire::Limits {
        wire::Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_text_bytes: self.max_text_bytes,
            max_history_page: self.max_history_page,
            max_resume_replay: self.max_resume_replay,
            send_rate_per_sec: self.send_rate_per_sec,
            send_burst: self.send_burst,
            heartbeat_interval_ms: millis(self.heartbeat_interval),
            idle_timeout_ms: millis(self.idle_timeout),
            typing_ttl_ms: millis(self.typing_ttl),
            outbound_queue_frames: self.outbound_queue_frames,
            outbound_queue_bytes: self.outbound_queue_bytes,
            max_room_list_page: self.max_room_list_page,
            typing_push_interval_ms: millis(self.typing_push_interval),
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `rate_per_sec` (§12.5).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    rate_per_sec: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        Self::with_rate(f64::from(rate_per_sec.max(1)), burst, now)
    }

    /// A full bucket refilled at a fractional rate, e.g. `10.0 / 60.0` for
    /// ten tokens a minute. A rate that is not positive and finite is read
    /// as one token per hour, so the bucket never divides by zero.
    pub fn with_rate(rate_per_sec: f64, burst: u32, now: Instant) -> Self {
        let capacity = f64::from(burst.max(1));
        let rate_per_sec = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            rate_per_sec
        } else {
            1.0 / 3600.0
        };
        Self {
            capacity,
            rate_per_sec,
            tokens: capacity,
            updated: now,
        }
    }

    /// Gives back a token taken for a request that turned out to cost
    /// nothing (an idempotent repeat, §12.5); never above capacity.
    pub fn refund(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }

    /// How long an untouched bucket takes to be full again from empty.
    pub fn full_after(&self) -> Duration {
        Duration::from_secs_f64(self.capacity / self.rate_per_sec)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.capacity);
        self.updated = now;
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            // Round up to whole milliseconds so a client that waits exactly
            // retry_after_ms always finds a token.
            let ms = (missing / self.rate_per_sec * 1000.0).ceil();
            Err(Duration::from_millis(ms as u64))
        }
    }

    /// Gives back a token taken by [`TokenBucket::try_take`] for an action
    /// that turned out not to count (e.g. a login that succeeded), never
    /// above the burst.
    pub fn put_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }
}

/// A token bucket kept outside the process, e.g. a PostgreSQL row that
/// every node of a cluster shares (§12.5 per user, across nodes): the rule
/// of [`TokenBucket`], on wall-clock milliseconds, since nodes share no
/// `Instant`. The store reads the row under a lock, calls this, and writes
/// it back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredBucket {
    /// Tokens at `updated_ms`.
    pub tokens: f64,
    /// When `tokens` was computed, ms since the Unix epoch.
    pub updated_ms: i64,
}

impl StoredBucket {
    /// A full bucket.
    pub fn full(burst: u32, now_ms: i64) -> Self {
        Self {
            tokens: f64::from(burst.max(1)),
            updated_ms: now_ms,
        }
    }

    fn refill(&mut self, rate_per_sec: f64, burst: u32, now_ms: i64) {
        let rate = if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            rate_per_sec
        } else {
            1.0 / 3600.0
        };
        // A clock that went backwards (another node's) refills nothing.
        let elapsed = (now_ms - self.updated_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst.max(1)));
        self.updated_ms = self.updated_ms.max(now_ms);
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, rate_per_sec: f64, burst: u32, now_ms: i64) -> Result<(), Duration> {
        self.refill(rate_per_sec, burst, now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let rate = if rate_per_sec > 0.0 {
                rate_per_sec
            } else {
                1.0 / 3600.0
            };
            let ms = ((1.0 - self.tokens) / rate * 1000.0).ceil();
            Err(Duration::from_millis(ms as u64))
        }
    }

    /// Gives a token back (an idempotent repeat costs none, §12.5).
    pub fn refund(&mut self, rate_per_sec: f64, burst: u32, now_ms: i64) {
        self.refill(rate_per_sec, burst, now_ms);
        self.tokens = (self.tokens + 1.0).min(f64::from(burst.max(1)));
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_stored_bucket_keeps_the_token_bucket_rule_on_wall_clock_ms() {
        let mut b = StoredBucket::full(2, 1_000);
        assert_eq!(b.try_take(10.0, 2, 1_000), Ok(()));
        assert_eq!(b.try_take(10.0, 2, 1_000), Ok(()));
        assert_eq!(b.try_take(10.0, 2, 1_000), Err(Duration::from_millis(100)));
        // 100 ms at 10/s is one token; a clock going backwards adds none.
        assert_eq!(b.try_take(10.0, 2, 1_100), Ok(()));
        assert_eq!(b.try_take(10.0, 2, 900), Err(Duration::from_millis(100)));
        b.refund(10.0, 2, 1_100);
        assert_eq!(b.try_take(10.0, 2, 1_100), Ok(()));
        // Never above the burst, however long it rested.
        let mut idle = StoredBucket::full(2, 0);
        idle.refund(10.0, 2, 1_000_000);
        assert!((idle.tokens - 2.0).abs() < f64::EPSILON);
    }
    use super::*;

    #[test]
    fn bucket_allows_burst_then_paces() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, t0);
        for _ in 0..3 {
            assert!(bucket.try_take(t0).is_ok());
        }
        let wait = bucket.try_take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Waiting exactly the advised time succeeds.
        assert!(bucket.try_take(t0 + wait).is_ok());
        assert!(bucket.try_take(t0 + wait).is_err());
    }

    #[test]
    fn fractional_rates_and_refunds() {
        let t0 = Instant::now();
        // Ten a minute: one token every 6 s.
        let mut bucket = TokenBucket::with_rate(10.0 / 60.0, 1, t0);
        assert!(bucket.try_take(t0).is_ok());
        assert_eq!(bucket.try_take(t0), Err(Duration::from_secs(6)));
        // A refunded token is available at once, but never beyond capacity.
        bucket.refund(t0);
        assert!(bucket.try_take(t0).is_ok());
        bucket.refund(t0);
        bucket.refund(t0);
        assert!(bucket.try_take(t0).is_ok());
        assert!(bucket.try_take(t0).is_err());
        assert_eq!(bucket.full_after(), Duration::from_secs(6));
        // Nonsense rates still give a working bucket.
        let mut odd = TokenBucket::with_rate(0.0, 1, t0);
        assert!(odd.try_take(t0).is_ok());
        assert!(odd.try_take(t0).is_err());
    }

    #[test]
    fn bucket_never_exceeds_capacity() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 2, t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(bucket.try_take(later).is_ok());
        assert!(bucket.try_take(later).is_ok());
        assert!(bucket.try_take(later).is_err());
    }
}
