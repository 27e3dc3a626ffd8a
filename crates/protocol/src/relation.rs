//! Relations: edit, delete, reply and react (spec §8.6).
//!
//! A relation is a message that refers to an earlier message of its room,
//! its target. This module holds what both sides need about one relation
//! on its own:
//!
//! - [`ValidRelation::parse`]: rule 5 of §8.6 (the relation is well
//!   formed; the text rule of its kind), for the server's validation.
//! - [`quote`]: the reply quote of §8.6.4 (**[R-8.6.9]**).
//! - [`fallback`]: the form a connection without the capability gets
//!   (§8.6.1, **[R-3.4.4]**, **[R-8.6.5]**).
//!
//! What a relation does to its target in storage (authorship, deleted
//! targets, the reaction rule) is decided by [`crate::batch`]; how a client
//! folds relations into what it shows, by [`crate::timeline`].

use crate::error::Rejection;
use crate::names::{MessageId, ReactionKey};
use crate::wire::{self, ErrorCode, relation::Kind};

/// Longest reply quote, in bytes (§8.6.4).
pub const MAX_QUOTE_BYTES: usize = 128;

/// A fallback is at most this many bytes longer than the text it is built
/// from (§8.6.1).
pub const MAX_FALLBACK_EXTRA_BYTES: usize = 160;

/// Most reaction keys a HistoryPage gives for one message: those
/// most users have, ties by the key's bytes. Bounds the page whatever
/// keys were added.
pub const MAX_PAGE_REACTION_KEYS: u32 = 20;

/// Fallback text of a deletion (§8.6.1).
pub const DELETION_FALLBACK: &str = "(deleted a message)";

/// Fallback text of a deleted message (§8.6.1).
pub const DELETED_FALLBACK: &str = "(deleted)";

/// What a relation does (§8.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RelationKind {
    /// §8.6.2: the text replaces the target's.
    Edit,
    /// §8.6.3: deletes the target.
    Redact,
    /// §8.6.4: answers the target.
    Reply,
    /// §8.6.5: adds (or removes) the sender's reaction `key`.
    React {
        /// The reaction.
        key: ReactionKey,
        /// Removes it instead of adding it.
        remove: bool,
    },
}

impl RelationKind {
    /// Whether a message of this kind carries text (an edit, a reply) or
    /// must have none (a deletion, a reaction).
    pub fn has_text(&self) -> bool {
        matches!(self, RelationKind::Edit | RelationKind::Reply)
    }

    /// Whether only the target's sender may send it (§8.6, R-8.6.2).
    pub fn author_only(&self) -> bool {
        matches!(self, RelationKind::Edit | RelationKind::Redact)
    }

    /// The name used in errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            RelationKind::Edit => "edit",
            RelationKind::Redact => "redact",
            RelationKind::Reply => "reply",
            RelationKind::React { .. } => "react",
        }
    }
}

/// A validated `SendMessage.relation` (§8.6, rule 5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValidRelation {
    /// The target's message_id.
    pub target: MessageId,
    /// What it does.
    pub kind: RelationKind,
}

impl ValidRelation {
    /// Validates a relation as sent; `target_seq` and `quote`, which the
    /// server sets, are ignored.
    pub fn parse(relation: &wire::Relation) -> Result<Self, Rejection> {
        let target = MessageId::parse(relation.target_id.as_str())?;
        let kind = match &relation.kind {
            Some(Kind::Edit(_)) => RelationKind::Edit,
            Some(Kind::Redact(_)) => RelationKind::Redact,
            Some(Kind::Reply(_)) => RelationKind::Reply,
            Some(Kind::React(react)) => RelationKind::React {
                key: ReactionKey::parse(react.key.as_str())?,
                remove: react.remove,
            },
            None => {
                return Err(Rejection::new(
                    ErrorCode::InvalidArgument,
                    "relation has no kind; set one of edit, redact, reply or react",
                ));
            }
        };
        Ok(Self { target, kind })
    }

    /// The wire form of the stored relation: as sent, with the target's
    /// seq and, for a reply, its quote.
    pub fn to_wire(&self, target_seq: u64, quote: &str) -> wire::Relation {
        let kind = match &self.kind {
            RelationKind::Edit => Kind::Edit(wire::Edit {}),
            RelationKind::Redact => Kind::Redact(wire::Redact {}),
            RelationKind::Reply => Kind::Reply(wire::Reply {
                quote: quote.to_owned(),
            }),
            RelationKind::React { key, remove } => Kind::React(wire::React {
                key: key.as_str().to_owned(),
                remove: *remove,
            }),
        };
        wire::Relation {
            target_id: self.target.as_str().to_owned(),
            kind: Some(kind),
            target_seq,
        }
    }
}

/// §8.6.4, R-8.6.9: the quote of `text`: all of it when it is at most
/// [`MAX_QUOTE_BYTES`] bytes, else the longest prefix of at most that many
/// bytes that ends at a character boundary.
pub fn quote(text: &str) -> &str {
    if text.len() <= MAX_QUOTE_BYTES {
        return text;
    }
    let mut end = MAX_QUOTE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The relation capabilities of a connection (§3.4): which relations it
/// gets as they are rather than as their fallback.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelationCaps {
    /// `edit`.
    pub edit: bool,
    /// `redact`.
    pub redact: bool,
    /// `reply`.
    pub reply: bool,
    /// `react`.
    pub react: bool,
}

impl RelationCaps {
    /// Every relation capability.
    pub const ALL: Self = Self {
        edit: true,
        redact: true,
        reply: true,
        react: true,
    };

    /// From the negotiated capability names.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        let has = |cap: &str| names.iter().any(|n| n.as_ref() == cap);
        Self {
            edit: has(crate::capability::EDIT),
            redact: has(crate::capability::REDACT),
            reply: has(crate::capability::REPLY),
            react: has(crate::capability::REACT),
        }
    }
}

/// §8.6.1: the Message a connection with `caps` gets instead of `message`,
/// or `None` when it gets `message` as stored.
///
/// A server that encodes a push once for all recipients calls this once
/// per message and encodes the fallback (when there is one) once more;
/// whether a given connection needs it depends only on `caps`.
pub fn fallback(message: &wire::Message, caps: RelationCaps) -> Option<wire::Message> {
    let kind = message.relation.as_ref().and_then(|r| r.kind.as_ref());
    let text = if message.redacted && !caps.redact {
        // Deleted content (a message, or an edit or reply of one) reads
        // the same whatever relation it had.
        DELETED_FALLBACK.to_owned()
    } else {
        match kind {
            Some(Kind::Edit(_)) if !caps.edit => format!("* {}", message.text),
            Some(Kind::Redact(_)) if !caps.redact => DELETION_FALLBACK.to_owned(),
            Some(Kind::Reply(reply)) if !caps.reply => {
                if reply.quote.is_empty() {
                    message.text.clone()
                } else {
                    format!("> {}\n{}", reply.quote, message.text)
                }
            }
            Some(Kind::React(react)) if !caps.react => {
                if react.remove {
                    format!("(removed reaction {})", react.key)
                } else {
                    format!("(reacted {})", react.key)
                }
            }
            _ => return None,
        }
    };
    // A fallback is a plain v1.0 message.
    Some(wire::Message {
        text,
        relation: None,
        ..message.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(relation: Option<Kind>, text: &str, redacted: bool) -> wire::Message {
        wire::Message {
            room: "lobby".into(),
            seq: 5,
            message_id: "m5".into(),
            sender: "alice".into(),
            client_msg_id: "c5".into(),
            text: text.into(),
            kind: wire::MessageKind::Text as i32,
            server_ts_ms: 1,
            relation: relation.map(|kind| wire::Relation {
                target_id: "m1".into(),
                kind: Some(kind),
                target_seq: 1,
            }),
            redacted,
        }
    }

    fn react(key: &str, remove: bool) -> Kind {
        Kind::React(wire::React {
            key: key.into(),
            remove,
        })
    }

    fn reply(quote: &str) -> Kind {
        Kind::Reply(wire::Reply {
            quote: quote.into(),
        })
    }

    /// One driver, every row of the §8.6.1 table: what a
    /// connection without each capability gets, and that one with it gets
    /// the message as stored.
    #[test]
    fn fallbacks_follow_the_table() {
        let none = RelationCaps::default();
        let cases: Vec<(&str, wire::Message, RelationCaps, Option<&str>)> = vec![
            ("plain", message(None, "hi", false), none, None),
            (
                "edit without edit",
                message(Some(Kind::Edit(wire::Edit {})), "fixed", false),
                none,
                Some("* fixed"),
            ),
            (
                "edit with edit",
                message(Some(Kind::Edit(wire::Edit {})), "fixed", false),
                RelationCaps::ALL,
                None,
            ),
            (
                "deletion without redact",
                message(Some(Kind::Redact(wire::Redact {})), "", false),
                none,
                Some(DELETION_FALLBACK),
            ),
            (
                "deleted message without redact",
                message(None, "", true),
                none,
                Some(DELETED_FALLBACK),
            ),
            (
                "deleted message with redact",
                message(None, "", true),
                RelationCaps {
                    redact: true,
                    ..none
                },
                None,
            ),
            (
                "deleted edit without edit",
                message(Some(Kind::Edit(wire::Edit {})), "", true),
                none,
                Some(DELETED_FALLBACK),
            ),
            (
                "reply without reply",
                message(Some(reply("the question")), "the answer", false),
                none,
                Some("> the question\nthe answer"),
            ),
            (
                "reply to a deleted message without reply",
                message(Some(reply("")), "the answer", false),
                none,
                Some("the answer"),
            ),
            (
                "reply with reply",
                message(Some(reply("q")), "a", false),
                RelationCaps {
                    reply: true,
                    ..none
                },
                None,
            ),
            (
                "deleted reply, with reply but not redact",
                message(Some(reply("q")), "", true),
                RelationCaps {
                    reply: true,
                    ..none
                },
                Some(DELETED_FALLBACK),
            ),
            (
                "reaction without react",
                message(Some(react("👍", false)), "", false),
                none,
                Some("(reacted 👍)"),
            ),
            (
                "removed reaction without react",
                message(Some(react("👍", true)), "", false),
                none,
                Some("(removed reaction 👍)"),
            ),
            (
                "reaction with react",
                message(Some(react("👍", false)), "", false),
                RelationCaps {
                    react: true,
                    ..none
                },
                None,
            ),
        ];
        let mut failures = Vec::new();
        for (name, msg, caps, want) in cases {
            let got = fallback(&msg, caps);
            let got_text = got.as_ref().map(|m| m.text.as_str());
            if got_text != want {
                failures.push(format!("{name}: got {got_text:?}, want {want:?}"));
            }
            if let Some(m) = &got {
                if m.relation.is_some() {
                    failures.push(format!("{name}: a fallback kept its relation"));
                }
                if (m.seq, &m.message_id) != (msg.seq, &msg.message_id) {
                    failures.push(format!("{name}: a fallback changed the seq or id"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_fallback_stays_within_its_bound() {
        let long_key = "k".repeat(crate::names::MAX_REACTION_KEY_BYTES);
        let quote_full = "q".repeat(MAX_QUOTE_BYTES);
        let none = RelationCaps::default();
        for msg in [
            message(Some(react(&long_key, true)), "", false),
            message(Some(reply(&quote_full)), "t", false),
            message(Some(Kind::Edit(wire::Edit {})), "t", false),
        ] {
            let extra = fallback(&msg, none).map_or(0, |m| m.text.len()) - msg.text.len();
            assert!(extra <= MAX_FALLBACK_EXTRA_BYTES, "{extra} extra bytes");
        }
    }

    #[test]
    fn quotes_cut_at_a_character_boundary() {
        assert_eq!(quote("short"), "short");
        let exact = "a".repeat(MAX_QUOTE_BYTES);
        assert_eq!(quote(&exact), exact);
        // 127 ASCII bytes then a 4-byte emoji: the emoji would end at 131.
        let text = format!("{}👍tail", "a".repeat(127));
        assert_eq!(quote(&text), "a".repeat(127));
        let emoji_only = "👍".repeat(40);
        assert_eq!(quote(&emoji_only).len(), 128);
    }

    #[test]
    fn parse_checks_the_relation_and_its_key() {
        let rel = |kind: Option<Kind>, target: &str| wire::Relation {
            target_id: target.into(),
            kind,
            target_seq: 99,
        };
        assert!(ValidRelation::parse(&rel(None, "m1")).is_err());
        assert!(ValidRelation::parse(&rel(Some(Kind::Edit(wire::Edit {})), "")).is_err());
        assert!(ValidRelation::parse(&rel(Some(Kind::Edit(wire::Edit {})), "a b")).is_err());
        assert!(ValidRelation::parse(&rel(Some(react("", false)), "m1")).is_err());
        assert!(ValidRelation::parse(&rel(Some(react("a b", false)), "m1")).is_err());
        assert!(ValidRelation::parse(&rel(Some(react("\u{202E}x", false)), "m1")).is_err());
        assert!(ValidRelation::parse(&rel(Some(react(&"x".repeat(33), false)), "m1")).is_err());
        // A family emoji: joined by U+200D.
        let family = ValidRelation::parse(&rel(Some(react("👨\u{200D}👩\u{200D}👧", false)), "m1"))
            .expect("a joined emoji is a valid key");
        assert_eq!(family.target.as_str(), "m1");
        // target_seq and quote are the server's: ignored when parsed.
        let parsed = ValidRelation::parse(&rel(Some(reply("made up")), "m1")).expect("valid");
        assert_eq!(parsed.to_wire(3, "real").kind, Some(reply("real")));
        assert_eq!(parsed.to_wire(3, "real").target_seq, 3);
    }
}
