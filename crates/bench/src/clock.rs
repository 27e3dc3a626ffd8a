//! One monotonic clock for the whole generator, the tag every published
//! message carries, and the open-loop schedule.
//!
//! Senders and receivers live in the same process, so a message can carry
//! its *intended* send time as nanoseconds since `base()` and the receiver
//! subtracts it from its own reading of the same clock: no cross-host clock
//! skew, no server timestamps involved.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since the process's clock base.
pub fn now_ns() -> u64 {
    since_base(Instant::now())
}

/// `at` as nanoseconds since the clock base (0 for instants before it).
pub fn since_base(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_nanos()).unwrap_or(u64::MAX)
}

/// The instant `ns` nanoseconds after the clock base.
pub fn instant_at(ns: u64) -> Instant {
    base() + Duration::from_nanos(ns)
}

/// What a published message carries so its receiver can attribute it:
/// the measurement phase and the intended send time.
///
/// Written at the start of the message text as `<phase>:<intended_ns>:`,
/// followed by padding to the requested text size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Index of the phase (one rate step of a sweep, or warm-up).
    pub phase: u32,
    /// Intended send time, ns since the clock base.
    pub intended_ns: u64,
}

impl Tag {
    /// The message text: the tag, then `x` padding up to `text_bytes`.
    pub fn text(self, text_bytes: usize) -> String {
        let mut text = format!("{}:{}:", self.phase, self.intended_ns);
        while text.len() < text_bytes {
            text.push('x');
        }
        text
    }

    /// Reads the tag back from a message text; `None` for texts that the
    /// generator did not write.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_bytes(text.as_bytes())
    }

    /// [`Tag::parse`] on raw text bytes: the receive path reads the tag
    /// without checking (or copying) the rest of the text.
    pub fn parse_bytes(text: &[u8]) -> Option<Self> {
        let (phase, rest) = leading_number(text)?;
        let (intended_ns, _) = leading_number(rest)?;
        Some(Self {
            phase: u32::try_from(phase).ok()?,
            intended_ns,
        })
    }
}

/// The decimal number before the first `:` of `bytes`, and what follows
/// that `:`; `None` unless it is 1-20 ASCII digits that fit a `u64`.
fn leading_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let end = bytes.iter().position(|&b| b == b':')?;
    let digits = &bytes[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((value, &bytes[end + 1..]))
}

/// How an open-loop schedule went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScheduleStats {
    /// Sends issued.
    pub issued: u64,
    /// Worst delay between a send's intended time and its issue; large
    /// values mean the *generator* could not keep up, and every latency
    /// measured from the intended time includes that delay.
    pub max_lag: Duration,
}

/// Issues `rate * duration` sends at intended times `start + i / rate`,
/// calling `emit(i, intended_ns)` for each, on the calling thread.
///
/// Run it on a dedicated OS thread: `std::thread::sleep` wakes within tens
/// of microseconds, where a tokio timer rounds to whole milliseconds. A send
/// that is late is issued at once and keeps its intended time, so lateness
/// is measured, never skipped. `stop` ends the schedule early.
pub fn open_loop(
    rate: f64,
    duration: Duration,
    start: Instant,
    stop: &AtomicBool,
    mut emit: impl FnMut(u64, u64),
) -> ScheduleStats {
    let mut stats = ScheduleStats::default();
    if rate <= 0.0 {
        return stats;
    }
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval_ns = 1e9 / rate;
    let start_ns = since_base(start);
    for i in 0..total {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let intended_ns = start_ns + (i as f64 * interval_ns) as u64;
        let now = now_ns();
        if intended_ns > now {
            std::thread::sleep(Duration::from_nanos(intended_ns - now));
        } else {
            stats.max_lag = stats.max_lag.max(Duration::from_nanos(now - intended_ns));
        }
        emit(i, intended_ns);
        stats.issued += 1;
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trips_through_text() {
        let tag = Tag {
            phase: 3,
            intended_ns: 123_456_789,
        };
        let text = tag.text(64);
        assert_eq!(text.len(), 64);
        assert_eq!(Tag::parse(&text), Some(tag));
    }

    #[test]
    fn short_text_keeps_the_whole_tag() {
        let tag = Tag {
            phase: 1,
            intended_ns: 42,
        };
        assert_eq!(tag.text(1), "1:42:");
        assert_eq!(Tag::parse("1:42:"), Some(tag));
    }

    #[test]
    fn foreign_texts_have_no_tag() {
        assert_eq!(Tag::parse("hello"), None);
        assert_eq!(Tag::parse("1:x:"), None);
        assert_eq!(Tag::parse("1:2"), None);
        assert_eq!(Tag::parse(":2:"), None);
        assert_eq!(Tag::parse("+1:2:"), None);
        assert_eq!(Tag::parse("4294967296:2:"), None, "phase over u32");
        assert_eq!(Tag::parse("1:18446744073709551616:"), None, "over u64");
        assert_eq!(Tag::parse_bytes(b"1:2:\xff\xfe"), Tag::parse("1:2:"));
    }

    #[test]
    fn schedule_issues_rate_times_duration() {
        let stop = AtomicBool::new(false);
        let mut intended = Vec::new();
        let stats = open_loop(
            1000.0,
            Duration::from_millis(20),
            Instant::now(),
            &stop,
            |_, at| intended.push(at),
        );
        assert_eq!(stats.issued, 20);
        // Intended times are exactly one interval apart, whatever the lateness.
        assert!(intended.windows(2).all(|w| w[1] - w[0] == 1_000_000));
    }
}
