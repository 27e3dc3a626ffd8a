//! Read state: the mention rule, the marker rule and a client's per-room
//! counts.
//!
//! Spec: §11.3 (capability `read-state`). The server keeps one read marker
//! per user and room and counts, above it, the messages not sent by the
//! user (`unread_count`) and those of them that mention the user
//! (`mention_count`). Server and clients decide "is this a mention" and
//! "does this count" with the functions here, so a client that adds live
//! messages to the server's counts gets the numbers the server would.

use std::collections::VecDeque;

use crate::names::Username;
use crate::wire::{Message, ReadState};

/// Counts saturate here: a server need not count past it and a
/// client shows "9999+" (Slack and Element stop at similar figures).
pub const COUNT_CAP: u32 = 9999;

/// Only the first this many distinct names a message mentions count
/// so one message costs a server a bounded number of mention
/// rows whatever its length.
pub const MAX_MENTIONS: usize = 50;

/// Characters a username is made of, upper case included so `@Alice`
/// mentions `alice` (usernames are lower case, §12.3, and people type
/// capitals).
fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// The users a text mentions, in order of first appearance, each once, at
/// most [`MAX_MENTIONS`] (§11.3 mention rule).
///
/// A mention is an `@` at the start of the text or after a character that
/// is not a letter, digit, `_` or `-`, followed by the longest run of
/// letters, digits, `_` and `-`; that run, in lower case, must be a valid
/// username (§12.3). So `hi @bob!` and `@Bob, look` mention `bob`, while
/// `mail a@bob.org` and `@@bob` mention nobody.
pub fn mentions(text: &str) -> Vec<Username> {
    let bytes = text.as_bytes();
    let mut found: Vec<Username> = Vec::new();
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|&b| b == b'@') {
        let start = at + offset;
        at = start + 1;
        if start > 0 && (is_name_char(bytes[start - 1]) || bytes[start - 1] == b'@') {
            continue;
        }
        let end = bytes[at..]
            .iter()
            .position(|&b| !is_name_char(b))
            .map_or(bytes.len(), |n| at + n);
        // The run is ASCII, so slicing at its ends is on char boundaries.
        let Ok(name) = Username::parse(text[at..end].to_ascii_lowercase()) else {
            continue;
        };
        if !found.contains(&name) {
            found.push(name);
            if found.len() == MAX_MENTIONS {
                break;
            }
        }
        at = end;
    }
    found
}

/// What one message adds to a reader's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    /// It counts as unread: someone else sent it.
    pub unread: bool,
    /// It mentions the reader, and someone else sent it.
    pub mention: bool,
}

/// How a message by `sender` with `text` counts for the user `me`.
pub fn counts_for(sender: &str, text: &str, me: &str) -> Counted {
    if sender == me {
        return Counted::default();
    }
    Counted {
        unread: true,
        mention: mentions(text).iter().any(|name| name.as_str() == me),
    }
}

/// Whether read state counts `message` at all: edits,
/// deletions and reactions (§8.6) are not new lines; a reply is.
pub fn counts_as_message(message: &Message) -> bool {
    use crate::wire::relation::Kind;
    matches!(
        message.relation.as_ref().map(|r| &r.kind),
        None | Some(Some(Kind::Reply(_)))
    )
}

/// The marker a MarkRead leaves: never behind the
/// current one, never beyond the room's head.
pub fn marker_after(current: u64, requested: u64, head_seq: u64) -> u64 {
    current.max(requested.min(head_seq))
}

fn saturating(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).min(COUNT_CAP)
}

/// A room's read state at one moment, as a front end shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadCounts {
    /// The marker.
    pub read_seq: u64,
    /// Unread messages, at most [`COUNT_CAP`].
    pub unread: u32,
    /// Unread mentions of the user, at most [`COUNT_CAP`].
    pub mentions: u32,
}

/// A message counted since the last server [`ReadState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Later {
    seq: u64,
    counted: Counted,
}

/// A client's view of its read state in one room: the server's last
/// [`ReadState`] plus the messages received since it was counted.
///
/// The server's counts are exact as of `counted_seq`; the messages above it
/// are counted here by the same rule ([`counts_for`]). A ReadState can be
/// older than messages already received (it was counted before they were
/// stored), so the room remembers what each message above the last state
/// added, at most [`COUNT_CAP`] of them: if a state is older than all of
/// them, the count is at the cap either way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomRead {
    read_seq: u64,
    /// The server's counts, and the seq they were taken at.
    base_unread: u32,
    base_mentions: u32,
    base_seq: u64,
    /// Messages above `base_seq`, ascending.
    later: VecDeque<Later>,
}

impl RoomRead {
    /// From a server ReadState (Welcome, a MarkRead reply or a push).
    pub fn from_wire(state: &ReadState) -> Self {
        Self {
            read_seq: state.read_seq,
            base_unread: state.unread_count.min(COUNT_CAP),
            base_mentions: state.mention_count.min(COUNT_CAP),
            base_seq: state.counted_seq.max(state.read_seq),
            later: VecDeque::new(),
        }
    }

    /// The marker: every message up to it is read.
    pub fn read_seq(&self) -> u64 {
        self.read_seq
    }

    /// Messages above the marker not sent by the user, at most [`COUNT_CAP`].
    pub fn unread_count(&self) -> u32 {
        self.total(self.base_unread, |c| c.unread)
    }

    /// Unread messages that mention the user, at most [`COUNT_CAP`].
    pub fn mention_count(&self) -> u32 {
        self.total(self.base_mentions, |c| c.mention)
    }

    /// The server's count plus the later messages above the marker that
    /// `counts` says count.
    fn total(&self, base: u32, counts: impl Fn(Counted) -> bool) -> u32 {
        let later = self
            .later
            .iter()
            .filter(|l| l.seq > self.read_seq && counts(l.counted))
            .count();
        base.saturating_add(saturating(later)).min(COUNT_CAP)
    }

    /// The marker and both counts.
    pub fn counts(&self) -> ReadCounts {
        ReadCounts {
            read_seq: self.read_seq,
            unread: self.unread_count(),
            mentions: self.mention_count(),
        }
    }

    /// The highest seq the counts include.
    pub fn counted_seq(&self) -> u64 {
        self.later.back().map_or(self.base_seq, |l| l.seq)
    }

    /// Counts a message the client received, live, replayed or from
    /// history; one at or below [`RoomRead::counted_seq`] is already in the
    /// counts and changes nothing. Returns whether the counts changed.
    pub fn handle_message(&mut self, message: &Message, me: &str) -> bool {
        if message.seq <= self.counted_seq() {
            return false;
        }
        let counted = if counts_as_message(message) {
            counts_for(&message.sender, &message.text, me)
        } else {
            Counted::default()
        };
        if self.later.len() == COUNT_CAP as usize {
            self.later.pop_front();
        }
        self.later.push_back(Later {
            seq: message.seq,
            counted,
        });
        message.seq > self.read_seq && (counted.unread || counted.mention)
    }

    /// Takes a ReadState from the server. One whose marker is behind ours
    /// is stale (markers never move back, R-11.3.3) and is ignored; returns
    /// whether it was taken.
    pub fn handle_state(&mut self, state: &ReadState) -> bool {
        if state.read_seq < self.read_seq {
            return false;
        }
        let mut later = std::mem::take(&mut self.later);
        *self = Self::from_wire(state);
        later.retain(|l| l.seq > self.base_seq);
        self.later = later;
        true
    }

    /// The user read up to `seq` here, before the server confirms it: the
    /// counts drop to what this room can count alone. Above the server's
    /// last counts that is exact; below them the server's reply will say.
    pub fn read_up_to(&mut self, seq: u64) {
        if seq <= self.read_seq {
            return;
        }
        self.read_seq = seq;
        if seq >= self.base_seq {
            self.base_unread = 0;
            self.base_mentions = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        mentions(text)
            .into_iter()
            .map(Username::into_string)
            .collect()
    }

    #[test]
    fn the_mention_rule() {
        let cases: &[(&str, &[&str])] = &[
            ("@bob", &["bob"]),
            ("hi @bob!", &["bob"]),
            ("@Bob, look", &["bob"]),
            ("(@bob)", &["bob"]),
            ("@bob's idea", &["bob"]),
            ("@bob @ann @bob", &["bob", "ann"]),
            ("mail a@bob.org", &[]),
            ("@@bob", &[]),
            ("@b", &[]),
            ("@", &[]),
            ("@ bob", &[]),
            ("@-bob", &[]),
            ("@bob_smith", &["bob_smith"]),
            ("@bob-", &["bob-"]),
            ("é@bob", &["bob"]),
            ("@bobé", &["bob"]),
            ("@abcdefghijklmnopqrstuvwxyz0123456789", &[]),
            ("line\n@bob", &["bob"]),
        ];
        for (text, want) in cases {
            assert_eq!(names(text), *want, "mentions in {text:?}");
        }
    }

    #[test]
    fn mentions_are_capped() {
        let text: String = (0..80).map(|i| format!("@user{i} ")).collect();
        let found = mentions(&text);
        assert_eq!(found.len(), MAX_MENTIONS);
        assert_eq!(found[0].as_str(), "user0");
    }

    #[test]
    fn own_messages_never_count() {
        assert_eq!(counts_for("bob", "@bob", "bob"), Counted::default());
        assert_eq!(
            counts_for("ann", "@bob", "bob"),
            Counted {
                unread: true,
                mention: true
            }
        );
        assert_eq!(
            counts_for("ann", "@bobby", "bob"),
            Counted {
                unread: true,
                mention: false
            }
        );
    }

    #[test]
    fn the_marker_rule() {
        assert_eq!(marker_after(5, 7, 10), 7);
        assert_eq!(marker_after(5, 3, 10), 5, "never back");
        assert_eq!(marker_after(5, 99, 10), 10, "never past the head");
        assert_eq!(marker_after(0, 0, 0), 0);
    }

    fn message(seq: u64, sender: &str, text: &str) -> Message {
        Message {
            room: "lobby".into(),
            seq,
            sender: sender.into(),
            text: text.into(),
            ..Message::default()
        }
    }

    /// edits, deletions and reactions are not counted; replies are.
    #[test]
    fn only_messages_and_replies_count() {
        use crate::wire::{Relation, relation::Kind};
        let with = |seq, kind| Message {
            relation: Some(Relation {
                target_id: "m1".into(),
                kind: Some(kind),
                target_seq: 1,
            }),
            ..message(seq, "bob", "@alice hi")
        };
        let mut read = RoomRead::from_wire(&state(0, 0, 0, 0));
        assert!(read.handle_message(&message(1, "bob", "hi"), "alice"));
        assert!(!read.handle_message(&with(2, Kind::Edit(crate::wire::Edit {})), "alice"));
        assert!(!read.handle_message(&with(3, Kind::Redact(crate::wire::Redact {})), "alice"));
        assert!(!read.handle_message(
            &with(
                4,
                Kind::React(crate::wire::React {
                    key: "👍".into(),
                    remove: false
                })
            ),
            "alice"
        ));
        assert!(read.handle_message(
            &with(5, Kind::Reply(crate::wire::Reply { quote: "hi".into() })),
            "alice"
        ));
        assert_eq!((read.unread_count(), read.mention_count()), (2, 1));
    }

    fn state(read_seq: u64, unread: u32, mentions: u32, counted_seq: u64) -> ReadState {
        ReadState {
            room: "lobby".into(),
            read_seq,
            unread_count: unread,
            mention_count: mentions,
            counted_seq,
        }
    }

    #[test]
    fn live_messages_add_to_the_server_counts_once() {
        let mut read = RoomRead::from_wire(&state(10, 2, 1, 12));
        assert!(
            !read.handle_message(&message(12, "ann", "@bob"), "bob"),
            "counted already"
        );
        assert!(read.handle_message(&message(13, "ann", "hi @bob"), "bob"));
        assert!(
            !read.handle_message(&message(13, "ann", "hi @bob"), "bob"),
            "a repeat"
        );
        assert!(!read.handle_message(&message(14, "bob", "mine"), "bob"));
        assert!(read.handle_message(&message(15, "ann", "hi"), "bob"));
        assert_eq!((read.unread_count(), read.mention_count()), (4, 2));
        assert_eq!(read.counted_seq(), 15);
    }

    #[test]
    fn an_older_state_keeps_the_messages_counted_after_it() {
        let mut read = RoomRead::from_wire(&state(0, 0, 0, 0));
        for seq in 1..=5 {
            read.handle_message(&message(seq, "ann", "hi"), "bob");
        }
        // Another device read up to 3 when the head was 4; 5 came later.
        assert!(read.handle_state(&state(3, 1, 0, 4)));
        assert_eq!(
            read.unread_count(),
            2,
            "seq 4 from the server, seq 5 from here"
        );
        assert_eq!(read.read_seq(), 3);
        assert!(
            !read.handle_state(&state(2, 3, 0, 5)),
            "a marker never moves back"
        );
        assert_eq!(read.read_seq(), 3);
    }

    #[test]
    fn reading_locally_clears_what_it_covers() {
        let mut read = RoomRead::from_wire(&state(0, 3, 1, 3));
        read.handle_message(&message(4, "ann", "@bob"), "bob");
        read.handle_message(&message(5, "ann", "x"), "bob");
        read.read_up_to(4);
        assert_eq!((read.unread_count(), read.mention_count()), (1, 0));
        read.read_up_to(2);
        assert_eq!(read.read_seq(), 4, "never back");
        // Below the server's counts the local view cannot tell: unchanged.
        let mut read = RoomRead::from_wire(&state(0, 3, 1, 3));
        read.read_up_to(2);
        assert_eq!(read.unread_count(), 3);
    }

    #[test]
    fn counts_saturate() {
        let mut read = RoomRead::from_wire(&state(0, COUNT_CAP, 0, 100));
        read.handle_message(&message(101, "ann", "x"), "bob");
        assert_eq!(read.unread_count(), COUNT_CAP);
        let mut read = RoomRead::default();
        for seq in 1..=u64::from(COUNT_CAP) + 5 {
            read.handle_message(&message(seq, "ann", "x"), "bob");
        }
        assert_eq!(read.unread_count(), COUNT_CAP);
    }
}
