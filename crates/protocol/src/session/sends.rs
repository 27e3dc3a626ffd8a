//! Own sends as a front end shows them: pending, then delivered, once.
//!
//! Spec: §8.4 (a sender's own connections get the message pushed, and the
//! push may come before the SendAck) and §14.1 (a send is kept until
//! acknowledged). The outbox decides what goes on the wire; this decides
//! what the user is told, so that no front end keeps its own echo
//! bookkeeping:
//!
//! - a send that waits longer than [`SessionConfig::pending_after`](super::SessionConfig)
//!   (or is queued offline, or was restored from disk) is reported pending,
//!   once;
//! - its first sign of storage, the echo or the SendAck, reports it
//!   delivered, once; the other is recognised as ours and says nothing new.

use std::collections::VecDeque;
use std::time::Instant;

/// How many delivered ids are remembered, so the echo or ack that comes
/// second is still recognised. Both normally arrive within one round trip.
const DELIVERED_MEMORY: usize = 1024;

/// One send not yet delivered.
#[derive(Debug, Clone)]
struct Waiting {
    client_msg_id: String,
    /// When it is reported pending, unless delivered first; `None` once reported.
    pending_at: Option<Instant>,
}

/// What the session told about its own sends.
#[derive(Debug, Default)]
pub(crate) struct OwnSends {
    waiting: Vec<Waiting>,
    delivered: VecDeque<String>,
}

impl OwnSends {
    /// A send was queued; it is reported pending at `pending_at`, or at
    /// once when that is `None` (the session is not online, or the send
    /// comes from an earlier run).
    ///
    /// Returns whether it must be reported pending now.
    pub(crate) fn queued(&mut self, client_msg_id: &str, pending_at: Option<Instant>) -> bool {
        if self.is_known(client_msg_id) {
            return false;
        }
        self.waiting.push(Waiting {
            client_msg_id: client_msg_id.to_owned(),
            pending_at,
        });
        pending_at.is_none()
    }

    /// Sends whose wait ended by `now`: report them pending.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for send in &mut self.waiting {
            if send.pending_at.is_some_and(|at| at <= now) {
                send.pending_at = None;
                due.push(send.client_msg_id.clone());
            }
        }
        due
    }

    /// The next instant [`OwnSends::due`] has something.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.waiting.iter().filter_map(|s| s.pending_at).min()
    }

    /// A sign that the send is stored (its echo or its ack). `Some(was_pending)`
    /// the first time for a send of ours; `None` when it was delivered
    /// already or is not ours.
    pub(crate) fn stored(&mut self, client_msg_id: &str) -> Option<bool> {
        let pos = self
            .waiting
            .iter()
            .position(|s| s.client_msg_id == client_msg_id)?;
        let send = self.waiting.remove(pos);
        self.remember(send.client_msg_id);
        Some(send.pending_at.is_none())
    }

    /// The server refused the send for good: forget it.
    pub(crate) fn refused(&mut self, client_msg_id: &str) {
        self.waiting.retain(|s| s.client_msg_id != client_msg_id);
    }

    /// Whether `client_msg_id` is a send of this session, waiting or delivered.
    pub(crate) fn is_known(&self, client_msg_id: &str) -> bool {
        !client_msg_id.is_empty()
            && (self
                .waiting
                .iter()
                .any(|s| s.client_msg_id == client_msg_id)
                || self.delivered.iter().any(|id| id == client_msg_id))
    }

    fn remember(&mut self, client_msg_id: String) {
        if self.delivered.len() == DELIVERED_MEMORY {
            self.delivered.pop_front();
        }
        self.delivered.push_back(client_msg_id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_send_is_pending_once_and_delivered_once() {
        let now = Instant::now();
        let mut sends = OwnSends::default();
        assert!(!sends.queued("a", Some(now + Duration::from_millis(400))));
        assert_eq!(sends.next_due(), Some(now + Duration::from_millis(400)));
        assert!(sends.due(now).is_empty());
        assert_eq!(
            sends.due(now + Duration::from_secs(1)),
            vec!["a".to_owned()]
        );
        assert!(sends.due(now + Duration::from_secs(2)).is_empty());
        assert_eq!(sends.stored("a"), Some(true));
        assert_eq!(sends.stored("a"), None);
        assert!(sends.is_known("a"));
        assert!(!sends.is_known("b"));
        assert_eq!(sends.next_due(), None);
    }

    #[test]
    fn a_quick_delivery_was_never_pending_and_a_queued_offline_send_is_at_once() {
        let now = Instant::now();
        let mut sends = OwnSends::default();
        sends.queued("quick", Some(now + Duration::from_secs(1)));
        assert_eq!(sends.stored("quick"), Some(false));
        assert!(sends.queued("offline", None));
        assert!(!sends.queued("offline", None), "one report per send");
        sends.refused("offline");
        assert!(!sends.is_known("offline"));
    }

    #[test]
    fn the_memory_of_delivered_sends_is_bounded() {
        let mut sends = OwnSends::default();
        for i in 0..DELIVERED_MEMORY + 10 {
            let id = i.to_string();
            sends.queued(&id, None);
            sends.stored(&id);
        }
        assert_eq!(sends.delivered.len(), DELIVERED_MEMORY);
        assert!(!sends.is_known("0"));
        assert!(sends.is_known(&(DELIVERED_MEMORY + 9).to_string()));
    }
}
