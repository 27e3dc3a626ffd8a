//! What a connection has delivered, so that no seq is pushed twice.
//!
//! Spec: §10.6 **[R-10.6.3]** (once a room is active from start seq S, every
//! message with seq above S is pushed, in seq order) and **[R-10.6.4]** (a
//! Message whose seq is at or below its room's high-water mark on the
//! connection is never pushed). A replay and the live stream of a room can
//! both carry the same seq (a message committed while the replay reads);
//! the mark decides which copy goes out: the first.
//!
//! Pure and per connection: one map of room -> highest seq delivered.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Per-room high-water marks of one connection (§10.6).
///
/// A room not seen yet has mark 0: every seq (which starts at 1) is new.
#[derive(Debug, Clone)]
pub struct DeliveredSeqs<K> {
    marks: HashMap<K, u64>,
}

impl<K> Default for DeliveredSeqs<K> {
    fn default() -> Self {
        Self {
            marks: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> DeliveredSeqs<K> {
    /// No room delivered yet (R-10.6.1: a new connection has no active rooms).
    pub fn new() -> Self {
        Self::default()
    }

    /// The room's high-water mark: the highest seq delivered, 0 if none.
    pub fn mark<Q>(&self, room: &Q) -> u64
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.marks.get(room).copied().unwrap_or(0)
    }

    /// Whether `seq` of `room` is above the mark, i.e. may be pushed
    /// . Does not record it; see [`DeliveredSeqs::admit`].
    pub fn should_push<Q>(&self, room: &Q, seq: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        seq > self.mark(room)
    }

    /// Raises the room's mark to `seq` (never lowers it): everything up to
    /// `seq` counts as delivered.
    pub fn advance<Q>(&mut self, room: &Q, seq: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match self.marks.get_mut(room) {
            Some(mark) => *mark = (*mark).max(seq),
            None => {
                self.marks.insert(room.to_owned(), seq);
            }
        }
    }

    /// The hot path of a push: if `seq` is above the mark, records it as
    /// delivered and returns true; otherwise returns false (drop the push).
    /// One hash lookup when the room has a mark (activation gives it one,
    /// see [`DeliveredSeqs::advance`]); only a room without one allocates
    /// its key.
    pub fn admit<Q>(&mut self, room: &Q, seq: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match self.marks.get_mut(room) {
            Some(mark) if seq <= *mark => false,
            Some(mark) => {
                *mark = seq;
                true
            }
            None => {
                self.marks.insert(room.to_owned(), seq);
                // Seqs start at 1; a 0 is never a message.
                seq > 0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation in order on one connection, with what each returns.
    #[test]
    fn marks_only_rise_and_nothing_at_or_below_goes_out() {
        let mut d: DeliveredSeqs<String> = DeliveredSeqs::new();
        let steps: Vec<(&str, &str, u64, bool)> = vec![
            // (op, room, seq, expected result / should_push after)
            ("admit", "a", 1, true),
            ("admit", "a", 1, false),
            ("admit", "a", 3, true),
            ("admit", "a", 2, false),
            ("admit", "b", 0, false),
            ("admit", "b", 1, true),
            ("advance", "a", 2, false),
            ("should", "a", 3, false),
            ("should", "a", 4, true),
            ("advance", "c", 10, false),
            ("should", "c", 10, false),
            ("admit", "c", 11, true),
        ];
        for (i, (op, room, seq, want)) in steps.into_iter().enumerate() {
            let got = match op {
                "admit" => d.admit(room, seq),
                "should" => d.should_push(room, seq),
                _ => {
                    d.advance(room, seq);
                    false
                }
            };
            assert_eq!(got, want, "step {i}: {op} {room} {seq}");
        }
        assert_eq!(
            (d.mark("a"), d.mark("b"), d.mark("c"), d.mark("z")),
            (3, 1, 11, 0)
        );
    }
}
