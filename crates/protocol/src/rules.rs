//! Pure server-side rules, so every server implements them the same way and
//! tests reach them without a network.
//!
//! Spec: §3.4 (capability negotiation), §8.1 (send validation), §9 (history
//! ranges), §10.3 (the resume decision) and §11.2 (typing expiry).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::Rejection;
use crate::limits::ServerLimits;
use crate::names::{ClientMsgId, MessageText, RoomName};
use crate::wire::{FetchHistory, MessageKind, SendMessage, fetch_history::Anchor};

/// §3.4: the session's capabilities are those both sides support, in the
/// server's order. Unknown names from the client are ignored.
pub fn negotiate_capabilities(requested: &[String], supported: &[&str]) -> Vec<String> {
    supported
        .iter()
        .filter(|cap| requested.iter().any(|r| r == *cap))
        .map(|cap| (*cap).to_owned())
        .collect()
}

/// A `SendMessage` whose fields passed §8.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSend {
    /// Target room.
    pub room: RoomName,
    /// Idempotency key.
    pub client_msg_id: ClientMsgId,
    /// Text.
    pub text: MessageText,
    /// Text or action; UNSPECIFIED is read as TEXT.
    pub kind: MessageKind,
}

/// §8.1: validates a send against the server's limits.
pub fn validate_send(msg: &SendMessage, limits: &ServerLimits) -> Result<ValidSend, Rejection> {
    let room = RoomName::parse(msg.room.as_str())?;
    let client_msg_id = ClientMsgId::parse(msg.client_msg_id.as_str())?;
    let text = MessageText::parse(msg.text.as_str(), limits.max_text_bytes as usize)?;
    let kind = match MessageKind::try_from(msg.kind) {
        Ok(MessageKind::Action) => MessageKind::Action,
        Ok(MessageKind::Text | MessageKind::Unspecified) => MessageKind::Text,
        Err(_) => {
            return Err(Rejection::new(
                crate::wire::ErrorCode::InvalidArgument,
                format!("unknown message kind {}; use TEXT or ACTION", msg.kind),
            ));
        }
    };
    Ok(ValidSend {
        room,
        client_msg_id,
        text,
        kind,
    })
}

/// Which slice of a room's history a page holds (§9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRange {
    /// The newest `limit` messages.
    Latest,
    /// The newest `limit` messages with seq < this.
    Before(u64),
    /// The oldest `limit` messages with seq > this.
    After(u64),
}

/// A validated history request (§9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Room to read.
    pub room: RoomName,
    /// Slice.
    pub range: HistoryRange,
    /// Page size, already clamped to 1..=max_history_page.
    pub limit: u32,
}

impl HistoryQuery {
    /// §9: validates a FetchHistory; `limit` 0 or above the maximum becomes the maximum.
    pub fn from_request(req: &FetchHistory, max_page: u32) -> Result<Self, Rejection> {
        let room = RoomName::parse(req.room.as_str())?;
        let range = match req.anchor {
            None | Some(Anchor::BeforeSeq(0)) => HistoryRange::Latest,
            Some(Anchor::BeforeSeq(seq)) => HistoryRange::Before(seq),
            Some(Anchor::AfterSeq(seq)) => HistoryRange::After(seq),
        };
        let limit = if req.limit == 0 {
            max_page
        } else {
            req.limit.min(max_page)
        };
        Ok(Self {
            room,
            range,
            limit: limit.max(1),
        })
    }
}

/// What a server does for one room of a Resume (§10.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeDecision {
    /// Replay every message with seq in `after_seq+1..=head_seq` (possibly none).
    Replay {
        /// The client's last seen seq.
        after_seq: u64,
    },
    /// More than `max_resume_replay` missed: replay nothing, signal the gap.
    GapTooLarge,
    /// The client's epoch is not the room's: its position is meaningless.
    EpochChanged,
}

/// §10.3: decides how to resume one room.
///
/// An empty client epoch means "never saw this room's epoch" and is accepted
/// only with `last_seq == 0`. A `last_seq` beyond the head can only come from
/// another epoch, so it is treated as an epoch change too.
pub fn resume_decision(
    last_seq: u64,
    client_epoch: &str,
    room_epoch: &str,
    head_seq: u64,
    max_replay: u32,
) -> ResumeDecision {
    let epoch_matches = client_epoch == room_epoch || (client_epoch.is_empty() && last_seq == 0);
    if !epoch_matches || last_seq > head_seq {
        return ResumeDecision::EpochChanged;
    }
    if head_seq - last_seq > u64::from(max_replay) {
        ResumeDecision::GapTooLarge
    } else {
        ResumeDecision::Replay {
            after_seq: last_seq,
        }
    }
}

/// A change of someone's typing state that a server pushes (§11.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingChange<K> {
    /// Who, where.
    pub key: K,
    /// New state.
    pub active: bool,
}

/// §11.2: server-side typing state with a time to live. Generic over the key
/// (typically `(room, user)`), sans-IO: time comes in as `now`.
#[derive(Debug)]
pub struct TypingTracker<K: Ord + Clone> {
    ttl: Duration,
    expires: BTreeMap<K, Instant>,
}

impl<K: Ord + Clone> TypingTracker<K> {
    /// A tracker whose indicators expire after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            expires: BTreeMap::new(),
        }
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records SetTyping (or a sent message, which ends typing, with `active=false`).
    /// Returns the change to push, if any: a renewal of an active indicator
    /// is pushed again so receivers extend their own timers.
    pub fn handle_set(&mut self, key: K, active: bool, now: Instant) -> Option<TypingChange<K>> {
        if active {
            self.expires.insert(key.clone(), now + self.ttl);
            Some(TypingChange { key, active: true })
        } else {
            self.expires
                .remove(&key)
                .map(|_| TypingChange { key, active: false })
        }
    }

    /// Expires indicators whose time is up; each yields an `active=false` push.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TypingChange<K>> {
        let expired: Vec<K> = self
            .expires
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.expires.remove(key);
        }
        expired
            .into_iter()
            .map(|key| TypingChange { key, active: false })
            .collect()
    }

    /// When [`Self::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expires.values().min().copied()
    }
}

/// §4.3: a request's id MUST be non-zero; 0 is reserved for pushes.
pub fn check_request_id(request_id: u64) -> Result<(), Rejection> {
    if request_id == 0 {
        return Err(Rejection::new(
            crate::wire::ErrorCode::InvalidArgument,
            "request_id must be non-zero; 0 is reserved for pushes",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_must_be_non_zero() {
        assert!(check_request_id(1).is_ok());
        assert_eq!(
            check_request_id(0).unwrap_err().code,
            crate::wire::ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn resume_decisions() {
        use ResumeDecision::*;
        // (last_seq, client_epoch, room_epoch, head, max, expected)
        let cases = [
            (5, "e1", "e1", 5, 10, Replay { after_seq: 5 }),
            (5, "e1", "e1", 15, 10, Replay { after_seq: 5 }),
            (4, "e1", "e1", 15, 10, GapTooLarge),
            (0, "", "e1", 3, 10, Replay { after_seq: 0 }),
            (0, "", "e1", 30, 10, GapTooLarge),
            (2, "", "e1", 3, 10, EpochChanged),
            (2, "e0", "e1", 3, 10, EpochChanged),
            (9, "e1", "e1", 3, 10, EpochChanged),
        ];
        for (last, ce, re, head, max, want) in cases {
            assert_eq!(
                resume_decision(last, ce, re, head, max),
                want,
                "last={last} client_epoch={ce} room_epoch={re} head={head} max={max}"
            );
        }
    }

    #[test]
    fn history_limits_are_clamped() {
        let req = |anchor, limit| FetchHistory {
            room: "general".into(),
            anchor,
            limit,
        };
        let q = HistoryQuery::from_request(&req(None, 0), 100).unwrap();
        assert_eq!((q.range, q.limit), (HistoryRange::Latest, 100));
        let q = HistoryQuery::from_request(&req(Some(Anchor::AfterSeq(7)), 1000), 100).unwrap();
        assert_eq!((q.range, q.limit), (HistoryRange::After(7), 100));
        let q = HistoryQuery::from_request(&req(Some(Anchor::BeforeSeq(7)), 5), 100).unwrap();
        assert_eq!((q.range, q.limit), (HistoryRange::Before(7), 5));
        assert!(
            HistoryQuery::from_request(
                &FetchHistory {
                    room: "Bad".into(),
                    anchor: None,
                    limit: 1
                },
                10
            )
            .is_err()
        );
    }

    #[test]
    fn typing_expires_after_ttl_and_renewal_extends_it() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(5);
        let mut t = TypingTracker::new(ttl);
        assert!(t.handle_set(("r", "alice"), true, t0).is_some());
        assert_eq!(t.poll_timeout(), Some(t0 + ttl));
        assert!(t.handle_timeout(t0 + Duration::from_secs(4)).is_empty());
        // Renewal at 4 s moves expiry to 9 s.
        t.handle_set(("r", "alice"), true, t0 + Duration::from_secs(4));
        assert!(t.handle_timeout(t0 + Duration::from_secs(6)).is_empty());
        let expired = t.handle_timeout(t0 + Duration::from_secs(9));
        assert_eq!(
            expired,
            vec![TypingChange {
                key: ("r", "alice"),
                active: false
            }]
        );
        assert_eq!(t.poll_timeout(), None);
        // Stopping when not typing pushes nothing.
        assert_eq!(t.handle_set(("r", "alice"), false, t0), None);
    }

    #[test]
    fn capabilities_are_the_intersection() {
        let requested = vec!["typing".to_owned(), "teleport".to_owned()];
        assert_eq!(
            negotiate_capabilities(&requested, &crate::capability::ALL),
            vec!["typing"]
        );
    }

    #[test]
    fn send_validation() {
        let limits = ServerLimits::default();
        let ok = SendMessage {
            room: "general".into(),
            client_msg_id: "c1".into(),
            text: "hi".into(),
            kind: 0,
        };
        assert!(validate_send(&ok, &limits).is_ok());
        let long = SendMessage {
            text: "x".repeat(limits.max_text_bytes as usize + 1),
            ..ok.clone()
        };
        assert_eq!(
            validate_send(&long, &limits).unwrap_err().code,
            crate::wire::ErrorCode::TextTooLong
        );
        let bad_kind = SendMessage {
            kind: 99,
            ..ok.clone()
        };
        assert!(validate_send(&bad_kind, &limits).is_err());
        let no_id = SendMessage {
            client_msg_id: String::new(),
            ..ok
        };
        assert_eq!(
            validate_send(&no_id, &limits).unwrap_err().code,
            crate::wire::ErrorCode::InvalidArgument
        );
    }
}
