//! Latency histograms and counters, per measurement phase.
//!
//! Every connection task records into the [`Phase`] named by the tag of the
//! message it handles, so a message that arrives late is still attributed
//! to the rate that produced it. Histograms are sharded by *thread*: the
//! runtime's worker threads never contend for one lock, and a generator on
//! one thread records every sample into one histogram that stays in cache
//! (an HDR histogram here is ~160 KB; sharding by connection spread each
//! thread's samples over all shards).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Notify;

/// Shards per histogram; threads beyond this many share shards.
const SHARDS: usize = 8;

/// This thread's shard: threads are numbered in the order they first record.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// Highest latency a histogram holds (10 minutes, in microseconds); larger
/// values are clamped to it rather than lost.
const MAX_MICROS: u64 = 600_000_000;

fn new_histogram() -> Histogram<u64> {
    // Three significant figures: 0.1% resolution from 1 µs to 10 min.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

/// A latency histogram in microseconds, sharded for concurrent recording.
#[derive(Debug)]
pub struct ShardedHistogram {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for ShardedHistogram {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }
}

impl ShardedHistogram {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_MICROS);
        let mut histogram = self.shards[shard()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        histogram.saturating_record(micros);
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds everywhere, so adding cannot fail.
            all.add(&*shard).ok();
        }
        all
    }

    /// The percentile summary of everything recorded.
    pub fn summary(&self) -> Summary {
        Summary::of(&self.merged())
    }
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Summary {
    /// The summary of a histogram in microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

/// Counters and histograms of one measurement phase.
#[derive(Debug, Default)]
pub struct Phase {
    /// Sends handed to connections.
    pub scheduled: AtomicU64,
    /// SendAcks received.
    pub acked: AtomicU64,
    /// Sends answered with an Error frame or lost with their connection.
    pub send_errors: AtomicU64,
    /// Message pushes received.
    pub delivered: AtomicU64,
    /// Pushes the acked sends should cause (acks times audience).
    pub expected: AtomicU64,
    /// Pushes received for a seq already seen on that connection.
    pub duplicates: AtomicU64,
    /// Intended send time to Message push.
    pub delivery: ShardedHistogram,
    /// Intended send time to SendAck.
    pub ack: ShardedHistogram,
    draining: AtomicBool,
    changed: Notify,
}

impl Phase {
    /// Records a delivery.
    pub fn on_delivery(&self, latency: Duration) {
        self.delivery.record(latency);
        self.delivered.fetch_add(1, Relaxed);
        self.poke();
    }

    /// Records an ack of a message that `audience` connections should receive.
    pub fn on_ack(&self, latency: Duration, audience: u64) {
        self.ack.record(latency);
        self.expected.fetch_add(audience, Relaxed);
        self.acked.fetch_add(1, Relaxed);
        self.poke();
    }

    /// Records a send that failed.
    pub fn on_send_error(&self) {
        self.send_errors.fetch_add(1, Relaxed);
        self.poke();
    }

    fn poke(&self) {
        // Only a drain waits; skip the wake-up cost while traffic flows.
        if self.draining.load(Relaxed) {
            self.changed.notify_one();
        }
    }

    /// Whether every scheduled send is answered and every expected push arrived.
    pub fn settled(&self) -> bool {
        let answered = self.acked.load(Relaxed) + self.send_errors.load(Relaxed);
        answered >= self.scheduled.load(Relaxed)
            && self.delivered.load(Relaxed) >= self.expected.load(Relaxed)
    }

    /// Waits until [`Phase::settled`] or `within` passes; returns whether it settled.
    pub async fn drain(&self, within: Duration) -> bool {
        self.draining.store(true, Relaxed);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // notify_one stores a permit, so a change between this check and
            // the wait below is not missed.
            if self.settled() {
                return true;
            }
            if tokio::time::timeout_at(deadline, self.changed.notified())
                .await
                .is_err()
            {
                return self.settled();
            }
        }
    }

    /// Deliveries expected but not received (so far).
    pub fn missing(&self) -> u64 {
        self.expected
            .load(Relaxed)
            .saturating_sub(self.delivered.load(Relaxed))
    }

    /// Sends neither acked nor refused (so far).
    pub fn unanswered(&self) -> u64 {
        let answered = self.acked.load(Relaxed) + self.send_errors.load(Relaxed);
        self.scheduled.load(Relaxed).saturating_sub(answered)
    }
}

/// Every phase of a run plus counters of events that belong to none.
#[derive(Debug)]
pub struct Recorder {
    phases: Vec<Arc<Phase>>,
    events: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    /// A recorder with `phases` phases, numbered from 0.
    pub fn new(phases: usize) -> Arc<Self> {
        Arc::new(Self {
            phases: (0..phases.max(1))
                .map(|_| Arc::new(Phase::default()))
                .collect(),
            events: Mutex::new(BTreeMap::new()),
        })
    }

    /// Phase `index`, if it exists.
    pub fn phase(&self, index: u32) -> Option<&Arc<Phase>> {
        self.phases.get(index as usize)
    }

    /// Counts an event such as `error:RATE_LIMITED` or `close:4429`.
    pub fn count(&self, event: impl Into<String>) {
        *self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(event.into())
            .or_insert(0) += 1;
    }

    /// Every counted event.
    pub fn events(&self) -> BTreeMap<String, u64> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sum of every counted event (all of them are errors or anomalies).
    pub fn event_total(&self) -> u64 {
        self.events().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_percentiles_in_milliseconds() {
        let histogram = ShardedHistogram::default();
        for micros in 1..=1000u64 {
            histogram.record(Duration::from_micros(micros * 10));
        }
        let summary = histogram.summary();
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 5.0).abs() < 0.01, "{summary}");
        assert!((summary.p99_ms - 9.9).abs() < 0.02, "{summary}");
        assert!((summary.max_ms - 10.0).abs() < 0.01, "{summary}");
    }

    #[test]
    fn samples_from_several_threads_are_all_counted() {
        let histogram = ShardedHistogram::default();
        std::thread::scope(|scope| {
            for _ in 0..SHARDS + 3 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        histogram.record(Duration::from_millis(1));
                    }
                });
            }
        });
        assert_eq!(histogram.summary().count, 100 * (SHARDS as u64 + 3));
    }

    #[test]
    fn a_phase_settles_when_every_send_is_answered_and_delivered() {
        let phase = Phase::default();
        phase.scheduled.store(2, Relaxed);
        phase.on_ack(Duration::from_millis(1), 3);
        assert!(!phase.settled());
        phase.on_send_error();
        for _ in 0..3 {
            assert!(!phase.settled());
            phase.on_delivery(Duration::from_millis(2));
        }
        assert!(phase.settled());
        assert_eq!(phase.missing(), 0);
        assert_eq!(phase.unanswered(), 0);
    }
}
