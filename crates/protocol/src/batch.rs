//! Planning a batch of message appends: the pure rule every store drives.
//!
//! A store appends messages in batches (group commit). Inside its
//! transaction it reads what the batch touches, calls [`plan_batch`], and
//! writes what the plan says. The rule is here, once, so that SQLite,
//! PostgreSQL or any later store assign seqs and recognise repeats the same
//! way:
//!
//! - §8.2 **[R-8.2.1]**, **[R-8.2.2]**: the first message of a room gets
//!   seq 1, each further one the previous seq plus one. The plan continues
//!   each room's head, in arrival order, without gaps: one seq per stored
//!   row, none for a repeat.
//! - §8.5 **[R-8.5.1]**: a repeat of a stored key with the same room and
//!   text is a [`Planned::Duplicate`], answered with the original's ack.
//! - **[R-8.5.2]**: a repeat stores no row.
//! - **[R-8.5.3]**: a repeat with another room or text is a
//!   [`Planned::Conflict`] (`IDEMPOTENCY_CONFLICT`).
//! - **[R-8.5.4]**: at most one row per key, also when several requests with
//!   the key are in one batch: the first is stored, every later one is
//!   judged against it exactly as against a message stored before.
//! - **[R-8.5.5]**: the key is `(sender, client_msg_id)`; senders are
//!   independent.
//!
//! A store's steps:
//! 1. [`batch_keys`]: the distinct rooms and idempotency keys of the batch.
//! 2. In the transaction: read the head seq of those rooms and the stored
//!    message behind each of those keys that exists ([`StoredKey`]).
//! 3. [`plan_batch`]: rows to insert with their seqs, one outcome per
//!    request, and the new head of every room that got a row.
//! 4. Write the rows and heads, commit; only then answer the requests.
//!
//! Pure: no I/O, no clock, no randomness. Message ids and timestamps are the
//! store's; the plan names requests by their index in the batch.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

/// One SendMessage of a batch, already validated (§8.1) and authorised.
///
/// `R` identifies a room and `U` a user, in whatever form the store keeps
/// them (e.g. database ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRequest<'a, R, U> {
    /// Room the message is sent to.
    pub room: R,
    /// Sending user; first half of the idempotency key.
    pub sender: U,
    /// Second half of the idempotency key (§8.5).
    pub client_msg_id: &'a str,
    /// Message text, compared byte for byte with a repeat's.
    pub text: &'a str,
}

/// The message stored under an idempotency key before the batch: what the
/// repeat rule compares (§8.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredKey<'a, R, U> {
    /// Sender of the stored message.
    pub sender: U,
    /// Its client_msg_id.
    pub client_msg_id: &'a str,
    /// Room it was stored in.
    pub room: R,
    /// Its text.
    pub text: &'a str,
}

/// Which message a duplicate repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Original {
    /// The message behind `stored[index]`, stored before this batch.
    Stored(usize),
    /// The row this batch stores for request `index` (an earlier request).
    Batch(usize),
}

/// What happens to one request of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planned {
    /// Stored as `rows[row]` with this seq; acknowledge and fan it out.
    Stored {
        /// Index in [`BatchPlan::rows`].
        row: usize,
        /// The seq assigned (§8.2).
        seq: u64,
    },
    /// A repeat with the same room and text: answer with the original's
    /// ack, store nothing, push nothing.
    Duplicate(Original),
    /// A repeat with another room or text: `IDEMPOTENCY_CONFLICT`.
    Conflict,
}

/// A row to insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRow<R> {
    /// Index of the request in the batch.
    pub request: usize,
    /// Its room.
    pub room: R,
    /// Its seq.
    pub seq: u64,
}

/// The new head of a room that got at least one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadUpdate<R> {
    /// The room.
    pub room: R,
    /// Its new head seq: the seq of its last row in the batch.
    pub head_seq: u64,
    /// Index of the request stored last in the room (its time is the
    /// room's last activity).
    pub last_request: usize,
}

/// What a store writes for a batch, and what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPlan<R> {
    /// Rows to insert, in arrival order; per room, seqs continue the head
    /// without gaps.
    pub rows: Vec<PlannedRow<R>>,
    /// One outcome per request, in the batch's order.
    pub outcomes: Vec<Planned>,
    /// New heads, one per room with rows, in the order rooms first got one.
    pub heads: Vec<HeadUpdate<R>>,
}

/// Why a batch cannot be planned. Either means the store's read does not
/// match its batch; nothing of the batch may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A request names a room whose head was not given (the room does not
    /// exist, or was not read).
    #[error("request {request} names a room whose head was not read; the room may not exist")]
    UnknownRoom {
        /// Index of the request.
        request: usize,
    },
    /// A room's seqs would pass `u64::MAX`.
    #[error("request {request} would take a room's seq past u64::MAX")]
    SeqExhausted {
        /// Index of the request.
        request: usize,
    },
}

/// The distinct rooms and idempotency keys of a batch: what a store reads
/// before [`plan_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKeys<'a, R, U> {
    /// Every room named, once, in the order of first arrival.
    pub rooms: Vec<R>,
    /// Every `(sender, client_msg_id)`, once, in the order of first arrival.
    pub keys: Vec<(U, &'a str)>,
}

/// Lists the distinct rooms and keys of `batch` (step 1 of the module doc).
pub fn batch_keys<'a, R, U>(batch: &[BatchRequest<'a, R, U>]) -> BatchKeys<'a, R, U>
where
    R: Copy + Eq + Hash,
    U: Copy + Eq + Hash,
{
    let mut seen_rooms = HashMap::with_capacity(batch.len());
    let mut seen_keys = HashMap::with_capacity(batch.len());
    let mut out = BatchKeys {
        rooms: Vec::new(),
        keys: Vec::with_capacity(batch.len()),
    };
    for req in batch {
        if let Entry::Vacant(slot) = seen_rooms.entry(req.room) {
            slot.insert(());
            out.rooms.push(req.room);
        }
        if let Entry::Vacant(slot) = seen_keys.entry((req.sender, req.client_msg_id)) {
            slot.insert(());
            out.keys.push((req.sender, req.client_msg_id));
        }
    }
    out
}

/// Plans a batch (§8.2, §8.5; see the module doc).
///
/// `heads`: the head seq of every room the batch names, read in the same
/// transaction the plan is written in. `stored`: the message stored under
/// each key of the batch that was used before (keys not listed are new;
/// if a key is listed twice, the first entry counts). `batch`: the requests
/// in arrival order.
///
/// Cost: one hash lookup per request and per stored key, no allocation
/// beyond the plan's vectors and one map of the batch's keys.
pub fn plan_batch<'a, R, U>(
    heads: impl IntoIterator<Item = (R, u64)>,
    stored: &[StoredKey<'a, R, U>],
    batch: &[BatchRequest<'a, R, U>],
) -> Result<BatchPlan<R>, PlanError>
where
    R: Copy + Eq + Hash,
    U: Copy + Eq + Hash,
{
    // Room -> (head so far, index in `plan.heads` once it got a row).
    let mut rooms: HashMap<R, (u64, Option<usize>)> = heads
        .into_iter()
        .map(|(room, head)| (room, (head, None)))
        .collect();
    // Key -> the one message stored under it: from before the
    // batch, or the first row of this batch with the key. A key stored
    // before never gets a row, so one map holds both.
    let mut originals: HashMap<(U, &str), Original> =
        HashMap::with_capacity(stored.len() + batch.len());
    for (index, key) in stored.iter().enumerate() {
        originals
            .entry((key.sender, key.client_msg_id))
            .or_insert(Original::Stored(index));
    }
    let mut plan = BatchPlan {
        rows: Vec::with_capacity(batch.len()),
        outcomes: Vec::with_capacity(batch.len()),
        heads: Vec::new(),
    };
    for (i, req) in batch.iter().enumerate() {
        let slot = match originals.entry((req.sender, req.client_msg_id)) {
            Entry::Occupied(known) => {
                let original = *known.get();
                let (room, text) = match original {
                    Original::Stored(k) => (stored[k].room, stored[k].text),
                    Original::Batch(j) => (batch[j].room, batch[j].text),
                };
                plan.outcomes.push(if room == req.room && text == req.text {
                    Planned::Duplicate(original)
                } else {
                    Planned::Conflict
                });
                continue;
            }
            Entry::Vacant(slot) => slot,
        };
        let (head, update) = rooms
            .get_mut(&req.room)
            .ok_or(PlanError::UnknownRoom { request: i })?;
        let seq = head
            .checked_add(1)
            .ok_or(PlanError::SeqExhausted { request: i })?;
        *head = seq;
        match update {
            Some(u) => {
                plan.heads[*u].head_seq = seq;
                plan.heads[*u].last_request = i;
            }
            None => {
                *update = Some(plan.heads.len());
                plan.heads.push(HeadUpdate {
                    room: req.room,
                    head_seq: seq,
                    last_request: i,
                });
            }
        }
        slot.insert(Original::Batch(i));
        plan.outcomes.push(Planned::Stored {
            row: plan.rows.len(),
            seq,
        });
        plan.rows.push(PlannedRow {
            request: i,
            room: req.room,
            seq,
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Req = BatchRequest<'static, char, u8>;

    fn req(room: char, sender: u8, id: &'static str, text: &'static str) -> Req {
        BatchRequest {
            room,
            sender,
            client_msg_id: id,
            text,
        }
    }

    fn key(
        sender: u8,
        id: &'static str,
        room: char,
        text: &'static str,
    ) -> StoredKey<'static, char, u8> {
        StoredKey {
            sender,
            client_msg_id: id,
            room,
            text,
        }
    }

    /// The plan in words: one word per request, then the heads.
    fn describe(plan: &BatchPlan<char>) -> String {
        let mut out: Vec<String> = plan
            .outcomes
            .iter()
            .map(|o| match o {
                Planned::Stored { row, seq } => {
                    format!("{}{seq}", plan.rows[*row].room)
                }
                Planned::Duplicate(Original::Stored(k)) => format!("dup-stored{k}"),
                Planned::Duplicate(Original::Batch(j)) => format!("dup-req{j}"),
                Planned::Conflict => "conflict".to_owned(),
            })
            .collect();
        for h in &plan.heads {
            out.push(format!("head {}={}@{}", h.room, h.head_seq, h.last_request));
        }
        out.join(" ")
    }

    struct Case {
        name: &'static str,
        heads: &'static [(char, u64)],
        stored: Vec<StoredKey<'static, char, u8>>,
        batch: Vec<Req>,
        expect: Result<&'static str, PlanError>,
    }

    /// One driver, every case: §8.2 seqs and §8.5 repeats.
    #[test]
    fn plans() {
        let cases = [
            Case {
                name: "R-8.2.1: the first message of a room gets seq 1",
                heads: &[('a', 0)],
                stored: vec![],
                batch: vec![req('a', 1, "x", "hi")],
                expect: Ok("a1 head a=1@0"),
            },
            Case {
                name: "R-8.2.2: seqs continue each room's head in arrival order",
                heads: &[('a', 7), ('b', 0)],
                stored: vec![],
                batch: vec![
                    req('a', 1, "x", "1"),
                    req('b', 1, "y", "2"),
                    req('a', 2, "x", "3"),
                ],
                expect: Ok("a8 b1 a9 head a=9@2 head b=1@1"),
            },
            Case {
                name: "R-8.5.1: a repeat of a stored key, same room and text, is a duplicate",
                heads: &[('a', 3)],
                stored: vec![key(1, "x", 'a', "hi")],
                batch: vec![req('a', 1, "x", "hi"), req('a', 1, "y", "new")],
                expect: Ok("dup-stored0 a4 head a=4@1"),
            },
            Case {
                name: "R-8.5.3: a repeat of a stored key with other text conflicts",
                heads: &[('a', 3)],
                stored: vec![key(1, "x", 'a', "hi")],
                batch: vec![req('a', 1, "x", "Hi")],
                expect: Ok("conflict"),
            },
            Case {
                name: "R-8.5.3: a repeat of a stored key in another room conflicts",
                heads: &[('a', 3), ('b', 0)],
                stored: vec![key(1, "x", 'a', "hi")],
                batch: vec![req('b', 1, "x", "hi")],
                expect: Ok("conflict"),
            },
            Case {
                name: "R-8.5.4: in-batch repeat of a new key is a duplicate of its first",
                heads: &[('a', 0)],
                stored: vec![],
                batch: vec![
                    req('a', 1, "x", "hi"),
                    req('a', 1, "x", "hi"),
                    req('a', 1, "y", "next"),
                ],
                expect: Ok("a1 dup-req0 a2 head a=2@2"),
            },
            Case {
                name: "R-8.5.4: in-batch repeat with other text or room conflicts, uses no seq",
                heads: &[('a', 0), ('b', 5)],
                stored: vec![],
                batch: vec![
                    req('a', 1, "x", "hi"),
                    req('a', 1, "x", "changed"),
                    req('b', 1, "x", "hi"),
                    req('b', 1, "z", "fine"),
                ],
                expect: Ok("a1 conflict conflict b6 head a=1@0 head b=6@3"),
            },
            Case {
                name: "R-8.5.4: a later repeat is judged against the stored original, not an earlier repeat",
                heads: &[('a', 1)],
                stored: vec![key(1, "x", 'a', "hi")],
                batch: vec![req('a', 1, "x", "other"), req('a', 1, "x", "hi")],
                expect: Ok("conflict dup-stored0"),
            },
            Case {
                name: "R-8.5.5: the same client_msg_id from two senders is two keys",
                heads: &[('a', 0)],
                stored: vec![key(2, "x", 'a', "old")],
                batch: vec![req('a', 1, "x", "hi"), req('a', 2, "x", "old")],
                expect: Ok("a1 dup-stored0 head a=1@0"),
            },
            Case {
                name: "a batch of repeats changes no head",
                heads: &[('a', 4)],
                stored: vec![key(1, "x", 'a', "hi")],
                batch: vec![req('a', 1, "x", "hi"), req('a', 1, "x", "hi")],
                expect: Ok("dup-stored0 dup-stored0"),
            },
            Case {
                name: "an empty batch plans nothing",
                heads: &[],
                stored: vec![],
                batch: vec![],
                expect: Ok(""),
            },
            Case {
                name: "a room without a head fails the whole batch",
                heads: &[('a', 0)],
                stored: vec![],
                batch: vec![req('a', 1, "x", "hi"), req('c', 1, "y", "lost")],
                expect: Err(PlanError::UnknownRoom { request: 1 }),
            },
            Case {
                name: "a repeat needs no head: it names no row",
                heads: &[],
                stored: vec![key(1, "x", 'c', "hi")],
                batch: vec![req('c', 1, "x", "hi")],
                expect: Ok("dup-stored0"),
            },
            Case {
                name: "a room at u64::MAX cannot take another seq",
                heads: &[('a', u64::MAX)],
                stored: vec![],
                batch: vec![req('a', 1, "x", "hi")],
                expect: Err(PlanError::SeqExhausted { request: 0 }),
            },
            Case {
                name: "a key listed twice as stored: the first counts",
                heads: &[('a', 2)],
                stored: vec![key(1, "x", 'a', "hi"), key(1, "x", 'a', "other")],
                batch: vec![req('a', 1, "x", "hi")],
                expect: Ok("dup-stored0"),
            },
        ];
        let mut failures = Vec::new();
        for case in cases {
            let got = plan_batch(case.heads.iter().copied(), &case.stored, &case.batch)
                .map(|plan| describe(&plan));
            let want = case.expect.map(str::to_owned);
            if got != want {
                failures.push(format!("{}: got {got:?}, want {want:?}", case.name));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn batch_keys_lists_each_room_and_key_once_in_arrival_order() {
        let batch = [
            req('b', 1, "x", "1"),
            req('a', 1, "x", "2"),
            req('b', 2, "x", "3"),
            req('b', 1, "y", "4"),
        ];
        let keys = batch_keys(&batch);
        assert_eq!(keys.rooms, ['b', 'a']);
        assert_eq!(keys.keys, [(1, "x"), (2, "x"), (1, "y")]);
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::*;

        const IDS: [&str; 4] = ["k0", "k1", "k2", "k3"];
        const TEXTS: [&str; 2] = ["t0", "t1"];

        type Spec = (u8, u8, usize, usize);

        fn request(&(room, sender, id, text): &Spec) -> BatchRequest<'static, u8, u8> {
            BatchRequest {
                room,
                sender,
                client_msg_id: IDS[id],
                text: TEXTS[text],
            }
        }

        proptest! {
            /// Whatever the batch and the keys stored before it: per room the
            /// rows' seqs are head+1, head+2, ... in arrival order; at most one
            /// row per key and none for a key stored before; every outcome is
            /// judged against the key's one original.
            #[test]
            fn seqs_are_gapless_and_one_row_per_key(
                heads in proptest::collection::vec(0u64..1000, 3),
                stored in proptest::collection::vec((0u8..3, 0u8..2, 0usize..4, 0usize..2), 0..6),
                batch in proptest::collection::vec((0u8..3, 0u8..2, 0usize..4, 0usize..2), 0..40),
            ) {
                let stored: Vec<StoredKey<'static, u8, u8>> = stored
                    .iter()
                    .map(|s| {
                        let r = request(s);
                        StoredKey { sender: r.sender, client_msg_id: r.client_msg_id, room: r.room, text: r.text }
                    })
                    .collect();
                let batch: Vec<_> = batch.iter().map(request).collect();
                let plan = plan_batch(
                    heads.iter().enumerate().map(|(r, h)| (r as u8, *h)),
                    &stored,
                    &batch,
                ).expect("every room has a head");
                prop_assert_eq!(plan.outcomes.len(), batch.len());
                let mut next: Vec<u64> = heads.iter().map(|h| h + 1).collect();
                let mut rows_per_key = HashMap::new();
                for row in &plan.rows {
                    let req = batch[row.request];
                    prop_assert_eq!(row.room, req.room);
                    prop_assert_eq!(row.seq, next[usize::from(row.room)]);
                    next[usize::from(row.room)] += 1;
                    *rows_per_key.entry((req.sender, req.client_msg_id)).or_insert(0) += 1;
                    prop_assert!(!stored.iter().any(|s| (s.sender, s.client_msg_id) == (req.sender, req.client_msg_id)));
                }
                prop_assert!(rows_per_key.values().all(|&n| n == 1));
                prop_assert!(plan.rows.windows(2).all(|w| w[0].request < w[1].request));
                for h in &plan.heads {
                    prop_assert_eq!(h.head_seq + 1, next[usize::from(h.room)]);
                    prop_assert_eq!(batch[h.last_request].room, h.room);
                }
                let rooms_with_rows = next.iter().zip(&heads).filter(|(n, h)| **n != **h + 1).count();
                prop_assert_eq!(plan.heads.len(), rooms_with_rows);
                for (i, (outcome, req)) in plan.outcomes.iter().zip(&batch).enumerate() {
                    let key = (req.sender, req.client_msg_id);
                    let before = stored.iter().position(|s| (s.sender, s.client_msg_id) == key);
                    let first = batch.iter().position(|b| (b.sender, b.client_msg_id) == key);
                    let original = match (before, first) {
                        (Some(k), _) => Some((stored[k].room, stored[k].text, Original::Stored(k))),
                        (None, Some(j)) if j < i => Some((batch[j].room, batch[j].text, Original::Batch(j))),
                        _ => None,
                    };
                    match (original, outcome) {
                        (None, Planned::Stored { row, seq }) => {
                            prop_assert_eq!(plan.rows[*row].request, i);
                            prop_assert_eq!(plan.rows[*row].seq, *seq);
                        }
                        (Some((room, text, o)), Planned::Duplicate(got)) => {
                            prop_assert!(room == req.room && text == req.text);
                            prop_assert_eq!(o, *got);
                        }
                        (Some((room, text, _)), Planned::Conflict) => {
                            prop_assert!(room != req.room || text != req.text);
                        }
                        (original, outcome) => {
                            prop_assert!(false, "request {}: original {:?}, outcome {:?}", i, original, outcome);
                        }
                    }
                }
            }
        }
    }
}
