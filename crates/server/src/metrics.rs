//! Counters and a latency histogram, exposed as Prometheus text on `GET /metrics` (§5.6).
//!
//! Hand-written: a dozen atomics and one fixed-bucket histogram do not
//! justify a metrics framework, and the text format is simple and stable.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the send-to-deliver latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Server-wide counters. Every field is a relaxed atomic: metrics need no
/// ordering with anything else, only eventual accuracy.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Authenticated WebSocket connections open now.
    pub sockets_open: AtomicU64,
    /// WebSocket connections ever upgraded.
    pub sockets_total: AtomicU64,
    /// Messages committed to storage since start.
    pub messages_stored: AtomicU64,
    /// Idempotent repeats answered without storing (§8.5).
    pub duplicate_sends: AtomicU64,
    /// Message pushes queued to connections by live fan-out.
    pub fanout_deliveries: AtomicU64,
    /// Pushes that did not fit a connection's queue (§12.4).
    pub queue_drops: AtomicU64,
    /// Connections closed with 4429 (§12.4).
    pub slow_consumer_closes: AtomicU64,
    /// Sends refused by the rate limiter (§12.5).
    pub rate_limited: AtomicU64,
    /// Failed logins, including throttled ones (§15).
    pub login_failures: AtomicU64,
    /// Storage write transactions (group commits).
    pub write_batches: AtomicU64,
    /// Cluster: changes for other nodes dropped because the queue to NATS was full.
    pub cluster_events_dropped: AtomicU64,
    /// Cluster: messages that arrived again (from NATS or a repair) and were skipped.
    pub cluster_duplicates_skipped: AtomicU64,
    /// Cluster: messages read from storage because NATS did not bring them in order.
    pub cluster_repaired_messages: AtomicU64,
    /// Cluster: publishes to NATS that failed (storage repairs what they carried).
    pub cluster_publish_failures: AtomicU64,
    /// Cluster: events received from other nodes.
    pub cluster_events_received: AtomicU64,
    // Hardening (C1): socket task.
    /// Sockets refused because their user held max_sockets_per_user.
    pub sockets_over_user_cap: AtomicU64,
    /// Bytes of a socket's reader task future, as compiled: the largest
    /// state of any of its awaits, held by every open socket.
    pub socket_reader_task_bytes: AtomicU64,
    /// Bytes of a socket's writer task future, as compiled.
    pub socket_writer_task_bytes: AtomicU64,
    // --- hub limits (hardening C2): queue bytes, typing, room creation ---
    /// The most bytes any connection's outbound queue has held (§12.4):
    /// never above `outbound_queue_bytes`, since a frame that would pass
    /// the cap is refused before it counts.
    pub outbound_queue_bytes_peak: AtomicU64,
    /// SetTyping refused by the per-user limiter (§11.2).
    pub typing_rate_limited: AtomicU64,
    /// MarkRead refused by the per-user limiter (§11.3).
    pub mark_read_rate_limited: AtomicU64,
    /// Typing renewals not pushed because one was pushed within the interval (§11.2).
    pub typing_coalesced: AtomicU64,
    /// CreateRoom refused by the per-user limiter (§7.2).
    pub room_create_rate_limited: AtomicU64,
    /// Idempotent repeats answered while the sender's send bucket was empty (§12.5).
    pub repeats_past_rate_limit: AtomicU64,
    // TCP/HTTP edge (admission and deadlines, §3.1).
    /// Connections refused with 503 because the server-wide cap was reached.
    pub refused_at_capacity: AtomicU64,
    /// Connections refused with 503 because their address held its share.
    pub refused_per_address: AtomicU64,
    /// Refused connections dropped without a 503 because too many 503s
    /// were already being written.
    pub refused_dropped: AtomicU64,
    /// HTTP connections closed because a deadline passed (first byte, head,
    /// body, keep-alive idle or a stalled write).
    pub deadline_closes: AtomicU64,
    // Logins and registrations (hardening B).
    /// Passwords verified against a stored or dummy hash (logins).
    pub password_verifications: AtomicU64,
    /// Passwords hashed for new accounts.
    pub password_hashes: AtomicU64,
    /// Logins and registrations refused by a per-address limit (429).
    pub auth_address_throttled: AtomicU64,
    /// Logins and registrations refused because the server-wide hash
    /// queue was full (503).
    pub auth_hash_queue_full: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

/// Gauges read from elsewhere when rendering.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Rooms that exist.
    pub rooms: usize,
    /// Users with at least one authenticated socket.
    pub users_online: usize,
    /// Free connection slots.
    pub connection_slots_free: usize,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Records the time from receiving a SendMessage to queueing its push to
    /// every recipient.
    pub fn observe_send_to_deliver(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        let counters: [(&str, &str, &AtomicU64); 15] = [
            (
                "confab_sockets_open",
                "Authenticated WebSocket connections open now.",
                &self.sockets_open,
            ),
            (
                "confab_sockets_total",
                "WebSocket connections upgraded since start.",
                &self.sockets_total,
            ),
            (
                "confab_messages_stored_total",
                "Messages committed to storage since start.",
                &self.messages_stored,
            ),
            (
                "confab_duplicate_sends_total",
                "Idempotent repeats answered without storing.",
                &self.duplicate_sends,
            ),
            (
                "confab_fanout_deliveries_total",
                "Message pushes queued to connections by live fan-out.",
                &self.fanout_deliveries,
            ),
            (
                "confab_cluster_events_dropped_total",
                "Changes for other nodes dropped because the queue to NATS was full.",
                &self.cluster_events_dropped,
            ),
            (
                "confab_cluster_duplicates_skipped_total",
                "Messages that reached this node again and were skipped.",
                &self.cluster_duplicates_skipped,
            ),
            (
                "confab_cluster_repaired_messages_total",
                "Messages read from storage because NATS did not bring them in order.",
                &self.cluster_repaired_messages,
            ),
            (
                "confab_cluster_publish_failures_total",
                "Publishes to NATS that failed; storage repairs what they carried.",
                &self.cluster_publish_failures,
            ),
            (
                "confab_cluster_events_received_total",
                "Events received from other nodes of the cluster.",
                &self.cluster_events_received,
            ),
            (
                "confab_queue_drops_total",
                "Pushes that did not fit a connection's outbound queue.",
                &self.queue_drops,
            ),
            (
                "confab_slow_consumer_closes_total",
                "Connections closed with 4429 because their queue filled.",
                &self.slow_consumer_closes,
            ),
            (
                "confab_rate_limited_total",
                "Sends refused by the per-user rate limiter.",
                &self.rate_limited,
            ),
            (
                "confab_login_failures_total",
                "Failed or throttled logins.",
                &self.login_failures,
            ),
            (
                "confab_write_batches_total",
                "Storage write transactions (group commits).",
                &self.write_batches,
            ),
        ];
        // Logins and registrations (hardening B).
        let auth_counters: [(&str, &str, &AtomicU64); 4] = [
            (
                "confab_password_verifications_total",
                "Passwords verified (logins, against a stored or dummy hash).",
                &self.password_verifications,
            ),
            (
                "confab_password_hashes_total",
                "Passwords hashed for new accounts.",
                &self.password_hashes,
            ),
            (
                "confab_auth_address_throttled_total",
                "Logins and registrations refused with 429 by a per-address limit.",
                &self.auth_address_throttled,
            ),
            (
                "confab_auth_hash_queue_full_total",
                "Logins and registrations refused with 503 because the hash queue was full.",
                &self.auth_hash_queue_full,
            ),
        ];
        for (name, help, counter) in counters.into_iter().chain(auth_counters) {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            metric(name, kind, help, counter.load(Relaxed));
        }
        // Hardening (C1): socket task.
        metric(
            "confab_sockets_over_user_cap_total",
            "counter",
            "Sockets refused with 1013 because their user held max_sockets_per_user.",
            self.sockets_over_user_cap.load(Relaxed),
        );
        // What each open socket costs in tasks (two: reader and writer);
        // read off the runtime rendering this page.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            metric(
                "confab_tasks_alive",
                "gauge",
                "Tasks alive in the server's runtime.",
                runtime.metrics().num_alive_tasks() as u64,
            );
        }
        metric(
            "confab_socket_reader_task_bytes",
            "gauge",
            "Bytes of one socket's reader task future as compiled (0 before the first socket).",
            self.socket_reader_task_bytes.load(Relaxed),
        );
        metric(
            "confab_socket_writer_task_bytes",
            "gauge",
            "Bytes of one socket's writer task future as compiled (0 before the first socket).",
            self.socket_writer_task_bytes.load(Relaxed),
        );
        metric(
            "confab_rooms",
            "gauge",
            "Rooms that exist.",
            gauges.rooms as u64,
        );
        metric(
            "confab_users_online",
            "gauge",
            "Users with at least one authenticated socket.",
            gauges.users_online as u64,
        );
        metric(
            "confab_connection_slots_free",
            "gauge",
            "Connections that can still be accepted before the cap.",
            gauges.connection_slots_free as u64,
        );

        // Hub limits (hardening C2).
        let hub_limits: [(&str, &str, &str, &AtomicU64); 6] = [
            (
                "confab_outbound_queue_bytes_peak",
                "gauge",
                "Most bytes any connection's outbound queue has held; never above the cap.",
                &self.outbound_queue_bytes_peak,
            ),
            (
                "confab_typing_rate_limited_total",
                "counter",
                "SetTyping refused by the per-user limiter.",
                &self.typing_rate_limited,
            ),
            (
                "confab_mark_read_rate_limited_total",
                "counter",
                "MarkRead refused by the per-user limiter.",
                &self.mark_read_rate_limited,
            ),
            (
                "confab_typing_coalesced_total",
                "counter",
                "Typing renewals not pushed because one was pushed within the interval.",
                &self.typing_coalesced,
            ),
            (
                "confab_room_create_rate_limited_total",
                "counter",
                "CreateRoom refused by the per-user limiter.",
                &self.room_create_rate_limited,
            ),
            (
                "confab_repeats_past_rate_limit_total",
                "counter",
                "Idempotent repeats answered while the sender's send bucket was empty.",
                &self.repeats_past_rate_limit,
            ),
        ];
        for (name, kind, help, value) in hub_limits {
            metric(name, kind, help, value.load(Relaxed));
        }
        // TCP/HTTP edge (admission and deadlines).
        metric(
            "confab_http_deadline_closes_total",
            "counter",
            "HTTP connections closed because a first-byte, head, body, keep-alive or write deadline passed.",
            self.deadline_closes.load(Relaxed),
        );
        let name = "confab_connections_refused_total";
        out.push_str(&format!(
            "# HELP {name} Connections refused at accept, by reason: max_connections and max_connections_per_ip got a 503; overload were dropped without one.\n# TYPE {name} counter\n"
        ));
        for (reason, counter) in [
            ("max_connections", &self.refused_at_capacity),
            ("max_connections_per_ip", &self.refused_per_address),
            ("overload", &self.refused_dropped),
        ] {
            out.push_str(&format!(
                "{name}{{reason=\"{reason}\"}} {}\n",
                counter.load(Relaxed)
            ));
        }

        let name = "confab_send_to_deliver_seconds";
        out.push_str(&format!(
            "# HELP {name} Time from receiving a SendMessage to queueing its push to every recipient.\n# TYPE {name} histogram\n"
        ));
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{bound}\"}} {}\n",
                bucket.load(Relaxed)
            ));
        }
        let count = self.latency_count.load(Relaxed);
        let sum = self.latency_sum_micros.load(Relaxed) as f64 / 1e6;
        out.push_str(&format!(
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}\n"
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.observe_send_to_deliver(Duration::from_micros(700));
        metrics.observe_send_to_deliver(Duration::from_secs(10));
        let text = metrics.render(Gauges {
            rooms: 2,
            users_online: 1,
            connection_slots_free: 5,
        });
        assert!(text.contains("confab_send_to_deliver_seconds_bucket{le=\"0.0005\"} 0"));
        assert!(text.contains("confab_send_to_deliver_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("confab_send_to_deliver_seconds_bucket{le=\"2.5\"} 1"));
        assert!(text.contains("confab_send_to_deliver_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("confab_rooms 2"));
    }
}
