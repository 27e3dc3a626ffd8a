//! Pure server-side rules, so every server implements them the same way and
//! tests reach them without a network.
//!
//! Spec: §3.4 (capability negotiation), §8.1 (send validation), §9 (history
//! ranges), §7.1 (room-list paging), §10.3 (the resume decision) and §11.2
//! (typing expiry and coalescing).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::Rejection;
use crate::limits::ServerLimits;
use crate::names::{ClientMsgId, MessageText, RoomName};
use crate::relation::ValidRelation;
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
    /// What the message does to an earlier one (§8.6), if anything.
    pub relation: Option<ValidRelation>,
}

/// §8.1: validates a send against the server's limits.
pub fn validate_send(msg: &SendMessage, limits: &ServerLimits) -> Result<ValidSend, Rejection> {
    let room = RoomName::parse(msg.room.as_str())?;
    let client_msg_id = ClientMsgId::parse(msg.client_msg_id.as_str())?;
    let relation = msg
        .relation
        .as_ref()
        .map(ValidRelation::parse)
        .transpose()?;
    // §8.6: a deletion or a reaction has no text; everything else does.
    let text = match &relation {
        Some(rel) if !rel.kind.has_text() => {
            if !msg.text.is_empty() {
                return Err(Rejection::new(
                    crate::wire::ErrorCode::InvalidArgument,
                    format!(
                        "a {} carries no text; send it with an empty text",
                        rel.kind.name()
                    ),
                ));
            }
            MessageText::none()
        }
        _ => MessageText::parse(msg.text.as_str(), limits.max_text_bytes as usize)?,
    };
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
        relation,
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

/// One (room, user) typing state: when it expires, and when its last
/// `active:true` was pushed.
#[derive(Debug, Clone, Copy)]
struct TypingState {
    expires: Instant,
    pushed: Instant,
}

/// §11.2: server-side typing state with a time to live. Generic over the key
/// (typically `(room, user)`), sans-IO: time comes in as `now`.
///
/// Renewals are coalesced: an `active:true` for a state that is already
/// active extends its time to live but is pushed only when the last push of
/// that state is at least `push_interval` old. Transitions (inactive to
/// active, active to inactive) are always pushed. So a client repeating
/// SetTyping costs its room at most one push per `push_interval` per
/// transition, and the transitions themselves are bounded by the per-user
/// SetTyping rate limit the server applies before this rule.
#[derive(Debug)]
pub struct TypingTracker<K: Ord + Clone> {
    ttl: Duration,
    push_interval: Duration,
    states: BTreeMap<K, TypingState>,
}

impl<K: Ord + Clone> TypingTracker<K> {
    /// A tracker whose indicators expire after `ttl`, pushing renewals at
    /// most every `push_interval`.
    pub fn new(ttl: Duration, push_interval: Duration) -> Self {
        Self {
            ttl,
            push_interval,
            states: BTreeMap::new(),
        }
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records SetTyping (or a sent message, which ends typing, with `active=false`).
    /// Returns the change to push, if any: a start, a stop, or a renewal of
    /// an active indicator whose last push is `push_interval` old or more
    /// (so receivers extend their own timers); other renewals only extend
    /// the server's timer.
    pub fn handle_set(&mut self, key: K, active: bool, now: Instant) -> Option<TypingChange<K>> {
        if !active {
            return self
                .states
                .remove(&key)
                .map(|_| TypingChange { key, active: false });
        }
        let expires = now + self.ttl;
        match self.states.get_mut(&key) {
            Some(state) if now.saturating_duration_since(state.pushed) < self.push_interval => {
                state.expires = expires;
                None
            }
            Some(state) => {
                *state = TypingState {
                    expires,
                    pushed: now,
                };
                Some(TypingChange { key, active: true })
            }
            None => {
                self.states.insert(
                    key.clone(),
                    TypingState {
                        expires,
                        pushed: now,
                    },
                );
                Some(TypingChange { key, active: true })
            }
        }
    }

    /// Expires indicators whose time is up; each yields an `active=false` push.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TypingChange<K>> {
        let expired: Vec<K> = self
            .states
            .iter()
            .filter(|(_, state)| state.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.states.remove(key);
        }
        expired
            .into_iter()
            .map(|key| TypingChange { key, active: false })
            .collect()
    }

    /// When [`Self::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.states.values().map(|s| s.expires).min()
    }
}

/// Where a RoomList page starts (§7.1): the sort key of the last room of
/// the previous page. Sent to clients as an opaque string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomListCursor {
    /// `last_activity_ms` of the previous page's last room.
    pub last_activity_ms: i64,
    /// Name of the previous page's last room.
    pub name: String,
}

/// Version tag of the cursor encoding, so a later server can change it and
/// still recognise (and refuse) old cursors.
const CURSOR_TAG: &str = "r1";

impl RoomListCursor {
    /// The opaque wire form: `r1.<last_activity_ms>.<name>`. Room names
    /// never contain `.`, so the form is unambiguous.
    pub fn encode(&self) -> String {
        format!("{CURSOR_TAG}.{}.{}", self.last_activity_ms, self.name)
    }

    /// §7.1: parses a client's `ListRooms.cursor`; empty means the first page.
    /// Anything this server did not produce is `INVALID_ARGUMENT`, without
    /// echoing the cursor back.
    pub fn parse(cursor: &str) -> Result<Option<Self>, Rejection> {
        if cursor.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            Rejection::new(
                crate::wire::ErrorCode::InvalidArgument,
                "cursor is not one this server issued; pass RoomList.next_cursor back unchanged, or none for the first page",
            )
        };
        let mut parts = cursor.splitn(3, '.');
        let (Some(CURSOR_TAG), Some(ms), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let last_activity_ms = ms.parse::<i64>().map_err(|_| invalid())?;
        let name = RoomName::parse(name).map_err(|_| invalid())?;
        Ok(Some(Self {
            last_activity_ms,
            name: name.into_string(),
        }))
    }
}

/// §7.1: the page size a ListRooms gets: `limit` 0, or above the maximum,
/// is the maximum.
pub fn room_list_limit(limit: u32, max_page: u32) -> usize {
    let max = max_page.max(1);
    (if limit == 0 { max } else { limit.min(max) }) as usize
}

/// §7.1: one page of the room list. `rooms` holds every room as
/// `(last_activity_ms, name, item)` in any order; the page is the `limit`
/// first rooms, in the order last_activity_ms descending then name
/// ascending (byte order), that come strictly after `cursor` in that order.
/// Returns the page and the cursor of the next page (None when no room
/// follows the page).
///
/// A room whose activity changes between two page requests moves in the
/// order, so paging may skip or repeat it; RoomListUpdate pushes (§7.1)
/// report such changes.
pub fn room_list_page<S: AsRef<str>, T>(
    mut rooms: Vec<(i64, S, T)>,
    cursor: Option<&RoomListCursor>,
    limit: usize,
) -> (Vec<T>, Option<RoomListCursor>) {
    use std::cmp::Reverse;
    if let Some(after) = cursor {
        let start = (Reverse(after.last_activity_ms), after.name.as_str());
        rooms.retain(|(ms, name, _)| (Reverse(*ms), name.as_ref()) > start);
    }
    let limit = limit.max(1);
    // Only the page needs sorting: partition the `limit` first rooms to the
    // front, then sort just those.
    let by_order = |a: &(i64, S, T), b: &(i64, S, T)| {
        b.0.cmp(&a.0).then_with(|| a.1.as_ref().cmp(b.1.as_ref()))
    };
    let more = rooms.len() > limit;
    if more {
        rooms.select_nth_unstable_by(limit - 1, by_order);
        rooms.truncate(limit);
    }
    rooms.sort_unstable_by(by_order);
    let next = if more {
        rooms.last().map(|(ms, name, _)| RoomListCursor {
            last_activity_ms: *ms,
            name: name.as_ref().to_owned(),
        })
    } else {
        None
    };
    (rooms.into_iter().map(|(_, _, item)| item).collect(), next)
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
        let mut t = TypingTracker::new(ttl, Duration::ZERO);
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
    fn typing_renewals_are_coalesced_but_transitions_are_not() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = TypingTracker::new(s(6), s(1));
        let key = ("r", "alice");
        assert!(t.handle_set(key, true, t0).is_some(), "a start is pushed");
        // A flood of renewals inside the interval: no push, but each one
        // extends the server's timer.
        for i in 1..=1000u64 {
            let now = t0 + Duration::from_micros(900 * i);
            assert_eq!(t.handle_set(key, true, now), None, "renewal {i}");
        }
        assert_eq!(
            t.poll_timeout(),
            Some(t0 + Duration::from_micros(900_000) + s(6))
        );
        // Once the interval has passed since the last push, a renewal is
        // pushed again (and restarts the interval).
        assert!(t.handle_set(key, true, t0 + s(1)).is_some());
        assert_eq!(
            t.handle_set(key, true, t0 + s(1) + Duration::from_millis(999)),
            None
        );
        // A stop is always pushed, and a new start right after it too.
        let soon = t0 + s(1) + Duration::from_millis(1);
        assert!(t.handle_set(key, false, soon).is_some());
        assert!(t.handle_set(key, true, soon).is_some());
        // Other keys are independent.
        assert!(t.handle_set(("r", "bob"), true, soon).is_some());
        assert!(t.handle_set(("q", "alice"), true, soon).is_some());
    }

    fn listed(rooms: &[(i64, &str)]) -> Vec<(i64, String, String)> {
        rooms
            .iter()
            .map(|(ms, n)| (*ms, (*n).to_owned(), (*n).to_owned()))
            .collect()
    }

    #[test]
    fn room_list_pages_cover_every_room_once_in_order() {
        let rooms = [
            (5, "b"),
            (9, "z"),
            (5, "a"),
            (1, "c"),
            (9, "y"),
            (7, "m"),
            (5, "c"),
        ];
        let want = ["y", "z", "m", "a", "b", "c", "c"];
        for limit in 1..=8 {
            let mut got = Vec::new();
            let mut cursor: Option<RoomListCursor> = None;
            let mut pages = 0;
            loop {
                let (page, next) = room_list_page(listed(&rooms), cursor.as_ref(), limit);
                pages += 1;
                assert!(page.len() <= limit);
                got.extend(page);
                // The cursor survives its wire form.
                cursor = match next {
                    Some(c) => Some(RoomListCursor::parse(&c.encode()).unwrap().unwrap()),
                    None => break,
                };
                assert!(pages < 10, "paging terminates");
            }
            // (5,"c") and (1,"c") are distinct rooms only in this test; names
            // are unique on a server, so compare the order only.
            assert_eq!(got, want, "limit {limit}");
            assert_eq!(pages, want.len().div_ceil(limit).max(1), "limit {limit}");
        }
    }

    #[test]
    fn room_list_edges() {
        // No rooms: one empty last page.
        let (page, next) = room_list_page::<String, ()>(Vec::new(), None, 10);
        assert!(page.is_empty() && next.is_none());
        // Exactly one page: no next cursor.
        let (page, next) = room_list_page(listed(&[(1, "a"), (2, "b")]), None, 2);
        assert_eq!(page, ["b", "a"]);
        assert!(next.is_none());
        // A cursor past every room: empty last page.
        let end = RoomListCursor {
            last_activity_ms: i64::MIN,
            name: "zzz".into(),
        };
        let (page, next) = room_list_page(listed(&[(1, "a")]), Some(&end), 2);
        assert!(page.is_empty() && next.is_none());
        // Limits: 0 and too large mean the maximum.
        assert_eq!(room_list_limit(0, 100), 100);
        assert_eq!(room_list_limit(1000, 100), 100);
        assert_eq!(room_list_limit(7, 100), 7);
        assert_eq!(room_list_limit(0, 0), 1);
    }

    #[test]
    fn room_list_cursors_parse_only_what_a_server_issues() {
        assert_eq!(RoomListCursor::parse("").unwrap(), None);
        let c = RoomListCursor {
            last_activity_ms: -3,
            name: "general".into(),
        };
        assert_eq!(RoomListCursor::parse(&c.encode()).unwrap(), Some(c));
        for bad in [
            "x",
            "r1.",
            "r1.12",
            "r1.abc.general",
            "r1.12.Bad",
            "r2.12.general",
            "r1.12.general.more",
        ] {
            let err = RoomListCursor::parse(bad).unwrap_err();
            assert_eq!(err.code, crate::wire::ErrorCode::InvalidArgument, "{bad}");
            assert!(
                bad.len() < 4 || !err.message.contains(bad),
                "no echo of {bad}"
            );
        }
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
            relation: None,
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
            ..ok.clone()
        };
        assert_eq!(
            validate_send(&no_id, &limits).unwrap_err().code,
            crate::wire::ErrorCode::InvalidArgument
        );
    }

    /// §8.6, step 1: a relation's text rule depends on its kind.
    #[test]
    fn relation_validation() {
        use crate::wire::{Edit, React, Redact, Relation, relation::Kind};
        let limits = ServerLimits::default();
        let send = |text: &str, kind: Kind| SendMessage {
            room: "general".into(),
            client_msg_id: "c1".into(),
            text: text.into(),
            kind: 0,
            relation: Some(Relation {
                target_id: "m1".into(),
                kind: Some(kind),
                target_seq: 0,
            }),
        };
        let react = |key: &str| {
            Kind::React(React {
                key: key.into(),
                remove: false,
            })
        };
        let cases = [
            ("an edit has text", send("fixed", Kind::Edit(Edit {})), true),
            ("an edit without text", send("", Kind::Edit(Edit {})), false),
            (
                "a deletion without text",
                send("", Kind::Redact(Redact {})),
                true,
            ),
            (
                "a deletion with text",
                send("why", Kind::Redact(Redact {})),
                false,
            ),
            ("a reaction", send("", react("👍")), true),
            ("a reaction with text", send("👍", react("👍")), false),
            (
                "a reaction with a spaced key",
                send("", react("a b")),
                false,
            ),
        ];
        for (name, msg, valid) in cases {
            let got = validate_send(&msg, &limits);
            assert_eq!(got.is_ok(), valid, "{name}: {got:?}");
            if let Err(err) = got {
                assert_eq!(err.code, crate::wire::ErrorCode::InvalidArgument, "{name}");
            }
        }
        let parsed = validate_send(&send("", react("🎉")), &limits).expect("valid");
        assert!(parsed.text.as_str().is_empty());
        assert!(parsed.relation.is_some());
    }
}
