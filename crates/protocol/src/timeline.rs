//! One room's messages with relations applied, as a client shows them
//! (spec §8.6.6).
//!
//! Feed it every Message of the room, live or from history, in any order;
//! it keeps the messages a user sees, each with its relations folded in:
//!
//! - §8.6.2: the shown text is that of the edit with the highest seq, and
//!   the message is marked edited;
//! - §8.6.3: a deleted message is shown as deleted, without text, edits
//!   or reactions, whether the deletion arrives live or the
//!   message comes from history already deleted;
//! - §8.6.4: a reply is its own message, with the quote of what it answers;
//! - §8.6.5, R-8.6.11: per key, the users whose latest react message for
//!   it adds it.
//!
//! Edits, deletions and reactions are not messages of their own. One that
//! names a message not loaded yet (history paged forward from an old
//! position) waits, bounded by [`MAX_WAITING`], until the target arrives.
//! Because each relation is compared by seq with what it replaces, the
//! order messages arrive in does not change the result.

use std::collections::{BTreeMap, HashMap};

use crate::wire::{self, relation::Kind};

/// Relations kept waiting for a target not loaded yet; beyond it the
/// oldest waiting one is dropped (a target that old is rarely shown).
pub const MAX_WAITING: usize = 4096;

/// A message as shown, with its relations applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The message as stored (the original text, not an edit's).
    pub message: wire::Message,
    /// The text to show: the latest edit's, else the message's own; empty
    /// once deleted.
    pub text: String,
    /// Whether an edit was applied.
    pub edited: bool,
    /// Whether the message was deleted.
    pub deleted: bool,
    /// For a reply, the seq it answers and the quote of it.
    pub reply_to: Option<(u64, String)>,
    /// Seq of the edit shown, 0 for none.
    edit_seq: u64,
    /// Key -> user -> (seq of the user's latest react message, present).
    reactions: BTreeMap<String, BTreeMap<String, (u64, bool)>>,
}

impl Shown {
    fn new(message: wire::Message) -> Self {
        let reply_to = match message.relation.as_ref() {
            Some(wire::Relation {
                kind: Some(Kind::Reply(reply)),
                target_seq,
                ..
            }) => Some((*target_seq, reply.quote.clone())),
            _ => None,
        };
        Self {
            text: message.text.clone(),
            edited: false,
            deleted: message.redacted,
            reply_to,
            edit_seq: 0,
            reactions: BTreeMap::new(),
            message,
        }
    }

    /// Seq of the message.
    pub fn seq(&self) -> u64 {
        self.message.seq
    }

    /// The reactions that count, by key in byte order: the key, how many
    /// users have it, and whether `me` is one of them.
    pub fn reactions(&self, me: &str) -> Vec<(&str, usize, bool)> {
        self.reactions
            .iter()
            .filter_map(|(key, users)| {
                let present = users.iter().filter(|(_, (_, on))| *on);
                let count = present.clone().count();
                let mine = present.clone().any(|(user, _)| user == me);
                (count > 0).then_some((key.as_str(), count, mine))
            })
            .collect()
    }

    fn delete(&mut self) {
        self.deleted = true;
        self.text.clear();
        self.edited = false;
        self.reactions.clear();
        self.message.text.clear();
    }
}

/// What applying one message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A new message to show, at this seq.
    Added(u64),
    /// The message at this seq changed (an edit, deletion or reaction).
    Updated(u64),
    /// A relation whose target is not loaded; it waits for it.
    Waiting,
    /// Nothing to show: already applied, or a relation of a deleted
    /// message.
    Nothing,
}

/// One room's shown messages (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    shown: BTreeMap<u64, Shown>,
    /// Seqs of every message applied, relations included: a repeat is
    /// applied once.
    seen: std::collections::BTreeSet<u64>,
    /// Target seq -> relations waiting for it.
    waiting: HashMap<u64, Vec<wire::Message>>,
    /// Waiting relations in arrival order, to drop the oldest.
    waiting_order: std::collections::VecDeque<(u64, u64)>,
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one Message of the room (§8.6.6).
    pub fn apply(&mut self, message: wire::Message) -> Change {
        if !self.seen.insert(message.seq) {
            return Change::Nothing;
        }
        let target_seq = match message.relation.as_ref().map(|r| (r.target_seq, &r.kind)) {
            None | Some((_, Some(Kind::Reply(_)) | None)) => {
                let seq = message.seq;
                self.shown.insert(seq, Shown::new(message));
                // Relations that arrived before it (history read forward).
                if let Some(waiting) = self.waiting.remove(&seq) {
                    self.waiting_order.retain(|(target, _)| *target != seq);
                    for relation in waiting {
                        self.relate(seq, &relation);
                    }
                }
                return Change::Added(seq);
            }
            Some((target_seq, _)) => target_seq,
        };
        if self.shown.contains_key(&target_seq) {
            return if self.relate(target_seq, &message) {
                Change::Updated(target_seq)
            } else {
                Change::Nothing
            };
        }
        if message.redacted {
            // An edit of a deleted message, from history: nothing to keep.
            return Change::Nothing;
        }
        if self.waiting_order.len() >= MAX_WAITING
            && let Some((target, seq)) = self.waiting_order.pop_front()
            && let Some(list) = self.waiting.get_mut(&target)
        {
            list.retain(|m| m.seq != seq);
            if list.is_empty() {
                self.waiting.remove(&target);
            }
        }
        self.waiting_order.push_back((target_seq, message.seq));
        self.waiting.entry(target_seq).or_default().push(message);
        Change::Waiting
    }

    /// Applies `relation` to the shown message at `target`; whether it
    /// changed anything.
    fn relate(&mut self, target: u64, relation: &wire::Message) -> bool {
        let Some(shown) = self.shown.get_mut(&target) else {
            return false;
        };
        if shown.deleted {
            return false;
        }
        match relation.relation.as_ref().and_then(|r| r.kind.as_ref()) {
            Some(Kind::Edit(_)) => {
                if relation.redacted || relation.seq < shown.edit_seq {
                    return false;
                }
                shown.edit_seq = relation.seq;
                shown.text.clone_from(&relation.text);
                shown.edited = true;
                true
            }
            Some(Kind::Redact(_)) => {
                shown.delete();
                // its replies no longer quote it either.
                for reply in self.shown.values_mut() {
                    if let Some((to, quote)) = &mut reply.reply_to
                        && *to == target
                    {
                        quote.clear();
                    }
                }
                true
            }
            Some(Kind::React(react)) => {
                let slot = shown
                    .reactions
                    .entry(react.key.clone())
                    .or_default()
                    .entry(relation.sender.clone())
                    .or_insert((0, false));
                if relation.seq < slot.0 {
                    return false;
                }
                *slot = (relation.seq, !react.remove);
                true
            }
            Some(Kind::Reply(_)) | None => false,
        }
    }

    /// The message shown at `seq`.
    pub fn get(&self, seq: u64) -> Option<&Shown> {
        self.shown.get(&seq)
    }

    /// The shown message with this message_id.
    pub fn by_message_id(&self, message_id: &str) -> Option<&Shown> {
        self.shown
            .values()
            .find(|s| s.message.message_id == message_id)
    }

    /// Shown messages in seq order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Shown> {
        self.shown.values()
    }

    /// Number of shown messages.
    pub fn len(&self) -> usize {
        self.shown.len()
    }

    /// Whether nothing is shown.
    pub fn is_empty(&self) -> bool {
        self.shown.is_empty()
    }

    /// Relations waiting for a target not loaded.
    pub fn waiting(&self) -> usize {
        self.waiting_order.len()
    }

    /// Keeps at most `keep` shown messages, dropping the oldest (and what
    /// is known of the seqs below them): a long-running client's memory
    /// stays bounded. A relation of a dropped message later waits like one
    /// of a message never loaded.
    pub fn keep_last(&mut self, keep: usize) {
        while self.shown.len() > keep {
            let Some((seq, _)) = self.shown.pop_first() else {
                break;
            };
            self.seen = self.seen.split_off(&(seq + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, sender: &str, text: &str, kind: Option<Kind>, target: u64) -> wire::Message {
        wire::Message {
            room: "lobby".into(),
            seq,
            message_id: format!("m{seq}"),
            sender: sender.into(),
            client_msg_id: format!("c{seq}"),
            text: text.into(),
            kind: wire::MessageKind::Text as i32,
            server_ts_ms: 0,
            relation: kind.map(|kind| wire::Relation {
                target_id: format!("m{target}"),
                kind: Some(kind),
                target_seq: target,
            }),
            redacted: false,
        }
    }

    fn plain(seq: u64, sender: &str, text: &str) -> wire::Message {
        msg(seq, sender, text, None, 0)
    }

    fn edit(seq: u64, target: u64, text: &str) -> wire::Message {
        msg(seq, "alice", text, Some(Kind::Edit(wire::Edit {})), target)
    }

    fn redact(seq: u64, target: u64) -> wire::Message {
        msg(
            seq,
            "alice",
            "",
            Some(Kind::Redact(wire::Redact {})),
            target,
        )
    }

    fn reply(seq: u64, target: u64, quote: &str, text: &str) -> wire::Message {
        msg(
            seq,
            "bob",
            text,
            Some(Kind::Reply(wire::Reply {
                quote: quote.into(),
            })),
            target,
        )
    }

    fn react(seq: u64, user: &str, target: u64, key: &str, remove: bool) -> wire::Message {
        msg(
            seq,
            user,
            "",
            Some(Kind::React(wire::React {
                key: key.into(),
                remove,
            })),
            target,
        )
    }

    /// The timeline in words, as bob sees it: one line per shown message.
    fn render(t: &Timeline) -> String {
        t.iter()
            .map(|s| {
                let mut line = format!("{}:{}", s.seq(), s.text);
                if s.edited {
                    line.push_str(" (edited)");
                }
                if s.deleted {
                    line.push_str(" (deleted)");
                }
                if let Some((to, quote)) = &s.reply_to {
                    line.push_str(&format!(" [re {to}: {quote}]"));
                }
                for (key, count, mine) in s.reactions("bob") {
                    line.push_str(&format!(" {key}{count}{}", if mine { "*" } else { "" }));
                }
                line
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// One driver, many cases; each is applied in order and reversed, which
    /// must agree (the result does not depend on arrival order).
    #[test]
    fn applies_relations() {
        let cases: Vec<(&str, Vec<wire::Message>, &str)> = vec![
            (
                "§8.6.2: the latest edit wins and marks the message edited",
                vec![
                    plain(1, "alice", "helo"),
                    edit(2, 1, "hello"),
                    edit(3, 1, "hello!"),
                ],
                "1:hello! (edited)",
            ),
            (
                "§8.6.3: a deletion drops text, edits and reactions",
                vec![
                    plain(1, "alice", "oops"),
                    edit(2, 1, "oops2"),
                    react(3, "bob", 1, "👍", false),
                    redact(4, 1),
                    plain(5, "bob", "next"),
                ],
                "1: (deleted) | 5:next",
            ),
            (
                "§8.6.3: a deletion also empties the quotes of replies to it",
                vec![
                    plain(1, "alice", "oops"),
                    reply(2, 1, "oops", "what?"),
                    redact(3, 1),
                ],
                "1: (deleted) | 2:what? [re 1: ]",
            ),
            (
                "§8.6.4: a reply is its own message with its quote",
                vec![
                    plain(1, "alice", "question?"),
                    reply(2, 1, "question?", "answer"),
                ],
                "1:question? | 2:answer [re 1: question?]",
            ),
            (
                "R-8.6.11: a reaction counts while the user's latest react message adds it",
                vec![
                    plain(1, "alice", "hi"),
                    react(2, "bob", 1, "👍", false),
                    react(3, "carol", 1, "👍", false),
                    react(4, "carol", 1, "👍", true),
                    react(5, "alice", 1, "🎉", false),
                ],
                "1:hi 🎉1 👍1*",
            ),
            (
                "a deleted message from history stays deleted, its relations ignored",
                vec![
                    wire::Message {
                        redacted: true,
                        ..plain(1, "alice", "")
                    },
                    wire::Message {
                        redacted: true,
                        ..edit(2, 1, "")
                    },
                    redact(3, 1),
                ],
                "1: (deleted)",
            ),
        ];
        let mut failures = Vec::new();
        for (name, messages, want) in cases {
            for reversed in [false, true] {
                let mut t = Timeline::new();
                let order: Vec<_> = if reversed {
                    messages.iter().rev().cloned().collect()
                } else {
                    messages.clone()
                };
                for m in order {
                    t.apply(m);
                }
                let got = render(&t);
                if got != want || t.waiting() != 0 {
                    failures.push(format!(
                        "{name} (reversed: {reversed}): got {got:?}, want {want:?}, {} waiting",
                        t.waiting()
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn reports_what_changed() {
        let mut t = Timeline::new();
        assert_eq!(t.apply(plain(1, "alice", "a")), Change::Added(1));
        assert_eq!(t.apply(plain(1, "alice", "a")), Change::Nothing);
        assert_eq!(t.apply(edit(2, 1, "b")), Change::Updated(1));
        assert_eq!(t.apply(edit(3, 9, "x")), Change::Waiting);
        assert_eq!(t.apply(redact(4, 1)), Change::Updated(1));
        assert_eq!(t.apply(react(5, "bob", 1, "👍", false)), Change::Nothing);
        assert_eq!(t.by_message_id("m1").map(|s| s.deleted), Some(true));
    }

    #[test]
    fn keep_last_bounds_what_is_shown() {
        let mut t = Timeline::new();
        for seq in 1..=10 {
            t.apply(plain(seq, "alice", "x"));
        }
        t.keep_last(3);
        assert_eq!(t.iter().map(Shown::seq).collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(t.apply(edit(11, 9, "y")), Change::Updated(9));
        assert_eq!(t.apply(edit(12, 2, "y")), Change::Waiting);
    }

    #[test]
    fn waiting_relations_are_bounded() {
        let mut t = Timeline::new();
        let total = u64::try_from(MAX_WAITING).expect("fits") + 10;
        for seq in 1..=total {
            t.apply(react(100_000 + seq, "bob", seq, "👍", false));
        }
        assert_eq!(t.waiting(), MAX_WAITING);
        // The oldest were dropped: target 1's reaction is gone, the last
        // target's applies when it arrives.
        t.apply(plain(1, "alice", "old"));
        assert!(t.get(1).is_some_and(|s| s.reactions("x").is_empty()));
        t.apply(plain(total, "alice", "new"));
        assert_eq!(
            t.get(total).map(|s| s.reactions("bob")),
            Some(vec![("👍", 1, true)])
        );
    }
}
