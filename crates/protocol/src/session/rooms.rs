//! Per-room position tracking: in-order, exactly-once delivery of messages.
//!
//! Spec: §8.2 (gapless seq), §10 (resume) and §14.3 (dedupe and gap
//! detection). A room's `last_seq` is the highest seq shown to the user; a
//! message above `last_seq + 1` is held until the gap below it is filled
//! from history, and a message at or below `last_seq` is a duplicate.

use std::collections::BTreeMap;

use crate::wire::Message;

/// What became of an incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Already shown or already held: dropped.
    Duplicate,
    /// Shown, possibly with held successors.
    Delivered,
    /// Held behind a gap; `start_fill` says no history request is in flight yet.
    Held { start_fill: bool },
}

/// Where a room stands.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoomTrack {
    pub last_seq: u64,
    pub epoch: String,
    /// Messages above a gap, by seq.
    pending: BTreeMap<u64, Message>,
    /// Request id of the history request filling the gap, if one is in flight.
    pub gap_fill: Option<u64>,
    /// A seq known to exist (a resume's head): filling goes on until it is shown.
    pub fill_until: u64,
}

/// What to do after a history page filled part of a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FillNext {
    /// Nothing is missing any more.
    Done,
    /// Ask for the page after this seq.
    More { after_seq: u64 },
    /// The server has no more history yet messages are still missing; the
    /// range was skipped so delivery can go on (a broken server; reported).
    Skipped { from: u64, to: u64 },
}

impl RoomTrack {
    pub fn new(last_seq: u64, epoch: String) -> Self {
        Self {
            last_seq,
            epoch,
            ..Self::default()
        }
    }

    /// Feeds one message; deliverable messages are appended to `out` in seq order.
    pub fn accept(&mut self, msg: Message, out: &mut Vec<Message>) -> Accepted {
        if msg.seq <= self.last_seq || self.pending.contains_key(&msg.seq) {
            return Accepted::Duplicate;
        }
        if msg.seq == self.last_seq + 1 {
            self.last_seq = msg.seq;
            out.push(msg);
            self.drain(out);
            return Accepted::Delivered;
        }
        self.pending.insert(msg.seq, msg);
        Accepted::Held {
            start_fill: self.gap_fill.is_none(),
        }
    }

    fn drain(&mut self, out: &mut Vec<Message>) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.last_seq + 1 {
                break;
            }
            let msg = entry.remove();
            self.last_seq = msg.seq;
            out.push(msg);
        }
    }

    /// Feeds a history page that answered this room's gap fill.
    pub fn fill(&mut self, page: Vec<Message>, has_more: bool, out: &mut Vec<Message>) -> FillNext {
        self.gap_fill = None;
        for msg in page {
            self.accept(msg, out);
        }
        let first_pending = self.pending.keys().next().copied();
        let missing = first_pending.is_some() || self.last_seq < self.fill_until;
        match first_pending {
            _ if !missing => FillNext::Done,
            _ if has_more => FillNext::More {
                after_seq: self.last_seq,
            },
            // The server says there is no more, yet a gap remains below a
            // held message: skip it so delivery is not stuck forever.
            Some(first) => {
                let skipped = FillNext::Skipped {
                    from: self.last_seq + 1,
                    to: first - 1,
                };
                self.last_seq = first - 1;
                self.drain(out);
                skipped
            }
            None => FillNext::Done,
        }
    }

    /// Forgets held messages and any fill in flight (new epoch or disconnect).
    pub fn reset_to(&mut self, last_seq: u64, epoch: String) {
        self.last_seq = last_seq;
        self.epoch = epoch;
        self.pending.clear();
        self.gap_fill = None;
        self.fill_until = 0;
    }
}
