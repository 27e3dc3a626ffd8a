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
//! - §8.6 relations: **[R-8.6.1]** a target that is not a nameable,
//!   undeleted message of the room is [`Refusal::TargetNotFound`];
//!   **[R-8.6.2]** an edit or deletion by another user is
//!   [`Refusal::NotAuthor`]; **[R-8.6.3]** a stored relation names its
//!   target's seq, and a reply gets its quote (**[R-8.6.9]**);
//!   **[R-8.6.4]** a repeat compares the relation too; **[R-8.6.10]** a
//!   reaction that changes nothing stores nothing and is a duplicate of
//!   the react message that set the state. Requests are judged in order,
//!   so an edit after a deletion in the same batch finds no target.
//!
//! A store's steps:
//! 1. [`batch_keys`]: the distinct rooms, idempotency keys and relation
//!    targets of the batch.
//! 2. In the transaction: read the head seq of those rooms, the stored
//!    message behind each of those keys that exists ([`StoredKey`]) and
//!    each target that exists ([`Target`]); then, for the reactions
//!    [`reaction_keys`] lists, the sender's current state ([`Reaction`]).
//! 3. [`plan_batch`]: rows to insert with their seqs, one outcome per
//!    request, the new head of every room that got a row, the reaction
//!    states to write and the deletions to apply.
//! 4. Write the rows and heads, then the reaction states, then the
//!    deletions (which also drop the reactions of what they delete);
//!    commit; only then answer the requests.
//!
//! Pure: no I/O, no clock, no randomness. Message ids and timestamps are the
//! store's; the plan names requests by their index in the batch.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

/// What a request or a stored message does to an earlier message (§8.6),
/// as the plan checks and compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelationRef<'a> {
    /// The target's message_id.
    pub target: &'a str,
    /// What it does.
    pub kind: RefKind<'a>,
}

/// The kind of a [`RelationRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind<'a> {
    /// §8.6.2.
    Edit,
    /// §8.6.3.
    Redact,
    /// §8.6.4.
    Reply,
    /// §8.6.5.
    React {
        /// The reaction key.
        key: &'a str,
        /// Removes the reaction instead of adding it.
        remove: bool,
    },
}

impl<'a> RelationRef<'a> {
    /// The borrowed form of a validated relation.
    pub fn of(relation: &'a crate::relation::ValidRelation) -> Self {
        use crate::relation::RelationKind;
        Self {
            target: relation.target.as_str(),
            kind: match &relation.kind {
                RelationKind::Edit => RefKind::Edit,
                RelationKind::Redact => RefKind::Redact,
                RelationKind::Reply => RefKind::Reply,
                RelationKind::React { key, remove } => RefKind::React {
                    key: key.as_str(),
                    remove: *remove,
                },
            },
        }
    }
}

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
    /// Its relation (§8.6), if any.
    pub relation: Option<RelationRef<'a>>,
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
    /// Its relation, if any.
    pub relation: Option<RelationRef<'a>>,
    /// Whether it was deleted: its text is gone, so a repeat is judged by
    /// room and relation alone.
    pub redacted: bool,
}

impl<'a, R: Copy + Eq, U: Copy> StoredKey<'a, R, U> {
    /// What a request of the batch leaves under its key once stored.
    pub fn of(req: &BatchRequest<'a, R, U>) -> Self {
        Self {
            sender: req.sender,
            client_msg_id: req.client_msg_id,
            room: req.room,
            text: req.text,
            relation: req.relation,
            redacted: false,
        }
    }

    /// Whether `req`, sent with this key, repeats the stored message
    /// rather than conflicting with it: the same room,
    /// text and relation; a deleted message's text is not
    /// compared, it is gone.
    pub fn repeated_by(&self, req: &BatchRequest<'_, R, U>) -> bool {
        self.room == req.room
            && (self.redacted || self.text == req.text)
            && self.relation == req.relation
    }
}

/// A message named as a relation's target, as stored before the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a, R, U> {
    /// Its message_id.
    pub message_id: &'a str,
    /// Its room.
    pub room: R,
    /// Its seq.
    pub seq: u64,
    /// Its sender.
    pub sender: U,
    /// Whether a relation may name it: it has no relation, or is a reply.
    pub nameable: bool,
    /// Whether it is deleted.
    pub redacted: bool,
    /// Its text as shown: that of its latest edit, else its own (the
    /// reply quote is cut from it, §8.6.4).
    pub shown_text: &'a str,
}

/// A user's current reaction for one key on one message, as stored before
/// the batch (§8.6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaction<'a, R, U> {
    /// The target's room.
    pub room: R,
    /// The target's seq.
    pub target_seq: u64,
    /// Who reacted.
    pub user: U,
    /// The key.
    pub key: &'a str,
    /// Whether the user's latest react message for it added it.
    pub present: bool,
}

/// Why the plan refuses a new request (§8.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// `NOT_FOUND`: the target is not a message of the room a relation may
    /// name, or it is deleted.
    TargetNotFound,
    /// `NOT_AUTHOR`: only the target's sender may edit or delete it.
    NotAuthor,
    /// `NOT_FOUND`: the reaction to remove was never added.
    ReactionNotFound,
}

/// Which message a duplicate repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Original {
    /// The message behind `stored[index]`, stored before this batch.
    Stored(usize),
    /// The row this batch stores for request `index` (an earlier request).
    Batch(usize),
    /// The react message behind `reactions[index]`: a reaction that
    /// changes nothing repeats the one that set the state.
    Reaction(usize),
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
    /// A repeat with another room, text or relation:
    /// `IDEMPOTENCY_CONFLICT`.
    Conflict,
    /// A new relation the rules of §8.6 refuse; nothing is stored.
    Refused(Refusal),
}

/// A row to insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRow<'a, R> {
    /// Index of the request in the batch.
    pub request: usize,
    /// Its room.
    pub room: R,
    /// Its seq.
    pub seq: u64,
    /// For a relation, its target's seq.
    pub target_seq: Option<u64>,
    /// For a reply, its quote; empty otherwise.
    pub quote: &'a str,
}

/// A reaction state to write (insert or replace), one per key that a row
/// of the batch changed: the last change counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactionWrite<'a, R, U> {
    /// The target's room.
    pub room: R,
    /// The target's seq.
    pub target_seq: u64,
    /// Who reacted.
    pub user: U,
    /// The key.
    pub key: &'a str,
    /// Whether it is now present.
    pub present: bool,
    /// The row (index in [`BatchPlan::rows`]) of the react message that
    /// set it.
    pub row: usize,
}

/// A deletion to apply after the rows are written (§8.6.3): empty the
/// text of the message at `target_seq` and of its edits, the quote of its
/// replies, and drop its reactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redaction<R> {
    /// The room.
    pub room: R,
    /// The deleted message's seq.
    pub target_seq: u64,
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
pub struct BatchPlan<'a, R, U> {
    /// Rows to insert, in arrival order; per room, seqs continue the head
    /// without gaps.
    pub rows: Vec<PlannedRow<'a, R>>,
    /// One outcome per request, in the batch's order.
    pub outcomes: Vec<Planned>,
    /// New heads, one per room with rows, in the order rooms first got one.
    pub heads: Vec<HeadUpdate<R>>,
    /// Reaction states to write, after the rows.
    pub reactions: Vec<ReactionWrite<'a, R, U>>,
    /// Deletions to apply, after the reaction states.
    pub redactions: Vec<Redaction<R>>,
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
    /// Every message_id a relation names, once, in the order of first
    /// arrival.
    pub targets: Vec<&'a str>,
}

/// Lists the distinct rooms and keys of `batch` (step 1 of the module doc).
pub fn batch_keys<'a, R, U>(batch: &[BatchRequest<'a, R, U>]) -> BatchKeys<'a, R, U>
where
    R: Copy + Eq + Hash,
    U: Copy + Eq + Hash,
{
    let mut seen_rooms = HashMap::with_capacity(batch.len());
    let mut seen_keys = HashMap::with_capacity(batch.len());
    let mut seen_targets = HashMap::new();
    let mut out = BatchKeys {
        rooms: Vec::new(),
        keys: Vec::with_capacity(batch.len()),
        targets: Vec::new(),
    };
    for req in batch {
        if let Some(rel) = req.relation
            && let Entry::Vacant(slot) = seen_targets.entry(rel.target)
        {
            slot.insert(());
            out.targets.push(rel.target);
        }
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

/// The reactions whose current state a store reads before [`plan_batch`]
/// (step 2 of the module doc): `(room, target_seq, user, key)` of every
/// react request whose target is among `targets` in its room, once each.
pub fn reaction_keys<'a, R, U>(
    batch: &[BatchRequest<'a, R, U>],
    targets: &[Target<'a, R, U>],
) -> Vec<(R, u64, U, &'a str)>
where
    R: Copy + Eq + Hash,
    U: Copy + Eq + Hash,
{
    let by_id: HashMap<&str, &Target<'a, R, U>> =
        targets.iter().map(|t| (t.message_id, t)).collect();
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for req in batch {
        let Some(RelationRef {
            target,
            kind: RefKind::React { key, .. },
        }) = req.relation
        else {
            continue;
        };
        let Some(t) = by_id.get(target).filter(|t| t.room == req.room) else {
            continue;
        };
        let k = (req.room, t.seq, req.sender, key);
        if let Entry::Vacant(slot) = seen.entry(k) {
            slot.insert(());
            out.push(k);
        }
    }
    out
}

/// A target as the plan tracks it through the batch.
struct TargetState<'a, R, U> {
    room: R,
    seq: u64,
    sender: U,
    nameable: bool,
    redacted: bool,
    shown_text: &'a str,
}

/// Plans a batch (§8.2, §8.5, §8.6; see the module doc).
///
/// `heads`: the head seq of every room the batch names, read in the same
/// transaction the plan is written in. `stored`: the message stored under
/// each key of the batch that was used before (keys not listed are new;
/// if a key is listed twice, the first entry counts). `targets`: every
/// stored message the batch's relations name (ids not listed do not
/// exist). `reactions`: the current state of the reactions
/// [`reaction_keys`] listed (a key not listed was never added). `batch`:
/// the requests in arrival order.
///
/// Cost: one hash lookup per request, stored key, target and reaction, no
/// allocation beyond the plan's vectors and maps of what the batch names.
pub fn plan_batch<'a, R, U>(
    heads: impl IntoIterator<Item = (R, u64)>,
    stored: &[StoredKey<'a, R, U>],
    targets: &[Target<'a, R, U>],
    reactions: &[Reaction<'a, R, U>],
    batch: &[BatchRequest<'a, R, U>],
) -> Result<BatchPlan<'a, R, U>, PlanError>
where
    R: Copy + Eq + Hash,
    U: Copy + Eq + Hash,
{
    let mut target_states: HashMap<&str, TargetState<'a, R, U>> = targets
        .iter()
        .map(|t| {
            (
                t.message_id,
                TargetState {
                    room: t.room,
                    seq: t.seq,
                    sender: t.sender,
                    nameable: t.nameable,
                    redacted: t.redacted,
                    shown_text: t.shown_text,
                },
            )
        })
        .collect();
    // (room, target seq, user, key) -> (present, the react message that
    // set it, index in `plan.reactions` once a row of the batch changed it).
    type ReactionSlot = (bool, Original, Option<usize>);
    let mut reaction_states: HashMap<(R, u64, U, &str), ReactionSlot> = reactions
        .iter()
        .enumerate()
        .map(|(k, r)| {
            (
                (r.room, r.target_seq, r.user, r.key),
                (r.present, Original::Reaction(k), None),
            )
        })
        .collect();
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
        reactions: Vec::new(),
        redactions: Vec::new(),
    };
    for (i, req) in batch.iter().enumerate() {
        let slot = match originals.entry((req.sender, req.client_msg_id)) {
            Entry::Occupied(known) => {
                let original = *known.get();
                let repeats = match original {
                    Original::Stored(k) => stored[k].repeated_by(req),
                    Original::Batch(j) => StoredKey::of(&batch[j]).repeated_by(req),
                    Original::Reaction(_) => unreachable!("keys map to messages, not reactions"),
                };
                plan.outcomes.push(if repeats {
                    Planned::Duplicate(original)
                } else {
                    Planned::Conflict
                });
                continue;
            }
            Entry::Vacant(slot) => slot,
        };
        // §8.6: what a new relation may do, judged against the state the
        // batch has reached so far.
        let mut target_seq = None;
        let mut quote = "";
        if let Some(rel) = req.relation {
            let Some(target) = target_states
                .get(rel.target)
                .filter(|t| t.room == req.room && t.nameable && !t.redacted)
            else {
                plan.outcomes
                    .push(Planned::Refused(Refusal::TargetNotFound));
                continue;
            };
            if matches!(rel.kind, RefKind::Edit | RefKind::Redact) && target.sender != req.sender {
                plan.outcomes.push(Planned::Refused(Refusal::NotAuthor));
                continue;
            }
            if let RefKind::React { key, remove } = rel.kind {
                match reaction_states.get(&(req.room, target.seq, req.sender, key)) {
                    Some(&(present, original, _)) if present != remove => {
                        plan.outcomes.push(Planned::Duplicate(original));
                        continue;
                    }
                    None if remove => {
                        plan.outcomes
                            .push(Planned::Refused(Refusal::ReactionNotFound));
                        continue;
                    }
                    _ => {}
                }
            }
            if rel.kind == RefKind::Reply {
                quote = crate::relation::quote(target.shown_text);
            }
            target_seq = Some(target.seq);
        }
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
        let row = plan.rows.len();
        plan.outcomes.push(Planned::Stored { row, seq });
        plan.rows.push(PlannedRow {
            request: i,
            room: req.room,
            seq,
            target_seq,
            quote,
        });
        // What the new row changes for the requests after it.
        if let (Some(rel), Some(target_seq)) = (req.relation, target_seq) {
            let target = target_states
                .get_mut(rel.target)
                .expect("the target was found above");
            match rel.kind {
                RefKind::Edit => target.shown_text = req.text,
                RefKind::Redact => {
                    target.redacted = true;
                    plan.redactions.push(Redaction {
                        room: req.room,
                        target_seq,
                    });
                }
                RefKind::Reply => {}
                RefKind::React { key, remove } => {
                    let entry = reaction_states
                        .entry((req.room, target_seq, req.sender, key))
                        .or_insert((false, Original::Batch(i), None));
                    let write = ReactionWrite {
                        room: req.room,
                        target_seq,
                        user: req.sender,
                        key,
                        present: !remove,
                        row,
                    };
                    match entry.2 {
                        Some(w) => plan.reactions[w] = write,
                        None => {
                            entry.2 = Some(plan.reactions.len());
                            plan.reactions.push(write);
                        }
                    }
                    entry.0 = !remove;
                    entry.1 = Original::Batch(i);
                }
            }
        }
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
            relation: None,
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
            relation: None,
            redacted: false,
        }
    }

    /// The plan in words: one word per request, then the heads.
    fn describe(plan: &BatchPlan<'_, char, u8>) -> String {
        let mut out: Vec<String> = plan
            .outcomes
            .iter()
            .map(|o| match o {
                Planned::Stored { row, seq } => {
                    format!("{}{seq}", plan.rows[*row].room)
                }
                Planned::Duplicate(Original::Stored(k)) => format!("dup-stored{k}"),
                Planned::Duplicate(Original::Batch(j)) => format!("dup-req{j}"),
                Planned::Duplicate(Original::Reaction(k)) => format!("dup-reaction{k}"),
                Planned::Conflict => "conflict".to_owned(),
                Planned::Refused(Refusal::TargetNotFound) => "not-found".to_owned(),
                Planned::Refused(Refusal::NotAuthor) => "not-author".to_owned(),
                Planned::Refused(Refusal::ReactionNotFound) => "no-reaction".to_owned(),
            })
            .collect();
        for h in &plan.heads {
            out.push(format!("head {}={}@{}", h.room, h.head_seq, h.last_request));
        }
        for row in &plan.rows {
            if let Some(t) = row.target_seq {
                out.push(format!("row{}->{t}", row.seq));
            }
            if !row.quote.is_empty() {
                out.push(format!("quote {:?}", row.quote));
            }
        }
        for r in &plan.reactions {
            let sign = if r.present { '+' } else { '-' };
            out.push(format!(
                "react {}{}@{}/u{}",
                sign, r.key, r.target_seq, r.user
            ));
        }
        for r in &plan.redactions {
            out.push(format!("redact {}", r.target_seq));
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
            let got = plan_batch(
                case.heads.iter().copied(),
                &case.stored,
                &[],
                &[],
                &case.batch,
            )
            .map(|plan| describe(&plan));
            let want = case.expect.map(str::to_owned);
            if got != want {
                failures.push(format!("{}: got {got:?}, want {want:?}", case.name));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    fn rel(mut r: Req, target: &'static str, kind: RefKind<'static>) -> Req {
        r.relation = Some(RelationRef { target, kind });
        r
    }

    fn react(key: &'static str) -> RefKind<'static> {
        RefKind::React { key, remove: false }
    }

    fn unreact(key: &'static str) -> RefKind<'static> {
        RefKind::React { key, remove: true }
    }

    /// Stored messages of room 'a': m1 by user 1 ("hello"), m2 by user 2
    /// ("x" × 200, for the quote), m3 deleted, e4 an edit (not nameable).
    fn targets() -> Vec<Target<'static, char, u8>> {
        let t = |message_id, seq, sender, nameable, redacted, shown_text| Target {
            message_id,
            room: 'a',
            seq,
            sender,
            nameable,
            redacted,
            shown_text,
        };
        vec![
            t("m1", 1, 1, true, false, "hello"),
            t("m2", 2, 2, true, false, LONG),
            t("m3", 3, 1, true, true, ""),
            t("e4", 4, 1, false, false, "edit"),
        ]
    }

    /// What a reply to m2 stores (and the plan prints) as its quote.
    const QUOTED: &str = concat!(
        "a5 a6 a7 head a=7@2 row5->2 quote \"",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "\" row6->2 row7->2 quote \"new text\""
    );

    const LONG: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

    struct RelCase {
        name: &'static str,
        stored: Vec<StoredKey<'static, char, u8>>,
        reactions: Vec<Reaction<'static, char, u8>>,
        batch: Vec<Req>,
        expect: &'static str,
    }

    /// One driver, every rule of §8.6 the plan decides.
    #[test]
    fn plans_relations() {
        let reaction = |user, key, present| Reaction {
            room: 'a',
            target_seq: 1,
            user,
            key,
            present,
        };
        let cases = [
            RelCase {
                name: "R-8.6.3: an edit by the author names its target's seq",
                stored: vec![],
                reactions: vec![],
                batch: vec![rel(req('a', 1, "x", "hullo"), "m1", RefKind::Edit)],
                expect: "a5 head a=5@0 row5->1",
            },
            RelCase {
                name: "R-8.6.2: an edit or deletion by another user is NOT_AUTHOR",
                stored: vec![],
                reactions: vec![],
                batch: vec![
                    rel(req('a', 2, "x", "mine now"), "m1", RefKind::Edit),
                    rel(req('a', 2, "y", ""), "m1", RefKind::Redact),
                ],
                expect: "not-author not-author",
            },
            RelCase {
                name: "R-8.6.1: unknown, deleted, unnameable or other-room targets are NOT_FOUND",
                stored: vec![],
                reactions: vec![],
                batch: vec![
                    rel(req('a', 1, "x", "t"), "nope", RefKind::Edit),
                    rel(req('a', 1, "y", "t"), "m3", RefKind::Edit),
                    rel(req('a', 1, "z", "t"), "e4", RefKind::Reply),
                    rel(req('b', 1, "w", "t"), "m1", RefKind::Reply),
                ],
                expect: "not-found not-found not-found not-found",
            },
            RelCase {
                name: "R-8.6.1: after a deletion in the batch its target is gone for later requests",
                stored: vec![],
                reactions: vec![],
                batch: vec![
                    rel(req('a', 1, "x", ""), "m1", RefKind::Redact),
                    rel(req('a', 1, "y", "late"), "m1", RefKind::Edit),
                    rel(req('a', 2, "z", ""), "m1", react("👍")),
                ],
                expect: "a5 not-found not-found head a=5@0 row5->1 redact 1",
            },
            RelCase {
                name: "R-8.6.9: a reply quotes the target's shown text, cut to 128 bytes; after an in-batch edit, the edit's",
                stored: vec![],
                reactions: vec![],
                batch: vec![
                    rel(req('a', 1, "x", "re"), "m2", RefKind::Reply),
                    rel(req('a', 2, "y", "new text"), "m2", RefKind::Edit),
                    rel(req('a', 1, "z", "re2"), "m2", RefKind::Reply),
                ],
                expect: QUOTED,
            },
            RelCase {
                name: "R-8.6.10: adding a reaction twice stores one; the second repeats the first",
                stored: vec![],
                reactions: vec![],
                batch: vec![
                    rel(req('a', 2, "x", ""), "m1", react("👍")),
                    rel(req('a', 2, "y", ""), "m1", react("👍")),
                    rel(req('a', 3, "z", ""), "m1", react("👍")),
                ],
                expect: "a5 dup-req0 a6 head a=6@2 row5->1 row6->1 react +👍@1/u2 react +👍@1/u3",
            },
            RelCase {
                name: "R-8.6.10: adding a stored reaction repeats its react message; removing it stores a row",
                stored: vec![],
                reactions: vec![reaction(2, "👍", true)],
                batch: vec![
                    rel(req('a', 2, "x", ""), "m1", react("👍")),
                    rel(req('a', 2, "y", ""), "m1", unreact("👍")),
                    rel(req('a', 2, "z", ""), "m1", unreact("👍")),
                ],
                expect: "dup-reaction0 a5 dup-req1 head a=5@1 row5->1 react -👍@1/u2",
            },
            RelCase {
                name: "R-8.6.10: removing a reaction never added is NOT_FOUND; one removed before repeats its removal",
                stored: vec![],
                reactions: vec![reaction(3, "🎉", false)],
                batch: vec![
                    rel(req('a', 2, "x", ""), "m1", unreact("👍")),
                    rel(req('a', 3, "y", ""), "m1", unreact("🎉")),
                ],
                expect: "no-reaction dup-reaction0",
            },
            RelCase {
                name: "one reaction state per key: add, remove, add in one batch writes the last",
                stored: vec![],
                reactions: vec![],
                batch: vec![
                    rel(req('a', 2, "x", ""), "m1", react("👍")),
                    rel(req('a', 2, "y", ""), "m1", unreact("👍")),
                    rel(req('a', 2, "z", ""), "m1", react("👍")),
                ],
                expect: "a5 a6 a7 head a=7@2 row5->1 row6->1 row7->1 react +👍@1/u2",
            },
            RelCase {
                name: "R-8.6.4: a repeat with the same relation is a duplicate, even after its target is deleted",
                stored: vec![StoredKey {
                    relation: Some(RelationRef {
                        target: "m3",
                        kind: RefKind::Redact,
                    }),
                    ..key(1, "x", 'a', "")
                }],
                reactions: vec![],
                batch: vec![rel(req('a', 1, "x", ""), "m3", RefKind::Redact)],
                expect: "dup-stored0",
            },
            RelCase {
                name: "R-8.6.4: a repeat with another relation or none conflicts",
                stored: vec![StoredKey {
                    relation: Some(RelationRef {
                        target: "m1",
                        kind: react("👍"),
                    }),
                    ..key(2, "x", 'a', "")
                }],
                reactions: vec![],
                batch: vec![
                    rel(req('a', 2, "x", ""), "m1", react("🎉")),
                    rel(req('a', 2, "x", ""), "m1", unreact("👍")),
                    req('a', 2, "x", ""),
                ],
                expect: "conflict conflict conflict",
            },
            RelCase {
                name: "R-8.6.4: a repeat of a deleted message is judged without its text",
                stored: vec![StoredKey {
                    redacted: true,
                    ..key(1, "x", 'a', "")
                }],
                reactions: vec![],
                batch: vec![
                    req('a', 1, "x", "what it said"),
                    req('b', 1, "x", "what it said"),
                ],
                expect: "dup-stored0 conflict",
            },
            RelCase {
                name: "a refused request uses no seq and leaves its key unused",
                stored: vec![],
                reactions: vec![],
                batch: vec![
                    rel(req('a', 2, "x", "no"), "m1", RefKind::Edit),
                    rel(req('a', 2, "x", "re"), "m1", RefKind::Reply),
                ],
                expect: "not-author a5 head a=5@1 row5->1 quote \"hello\"",
            },
        ];
        let targets = targets();
        let mut failures = Vec::new();
        for case in cases {
            let got = plan_batch(
                [('a', 4), ('b', 0)],
                &case.stored,
                &targets,
                &case.reactions,
                &case.batch,
            )
            .map(|plan| describe(&plan));
            if got.as_deref() != Ok(case.expect) {
                failures.push(format!(
                    "{}: got {got:?}, want {:?}",
                    case.name, case.expect
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn reaction_keys_lists_what_to_read_once() {
        let targets = targets();
        let batch = [
            rel(req('a', 2, "x", ""), "m1", react("👍")),
            rel(req('a', 2, "y", ""), "m1", unreact("👍")),
            rel(req('a', 3, "z", ""), "m1", react("👍")),
            rel(req('a', 3, "w", ""), "nope", react("👍")),
            rel(req('b', 3, "v", ""), "m1", react("👍")),
            rel(req('a', 3, "u", "t"), "m1", RefKind::Reply),
        ];
        assert_eq!(
            reaction_keys(&batch, &targets),
            [('a', 1, 2, "👍"), ('a', 1, 3, "👍")]
        );
        assert_eq!(batch_keys(&batch).targets, ["m1", "nope"]);
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
                relation: None,
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
                        StoredKey { sender: r.sender, client_msg_id: r.client_msg_id, room: r.room, text: r.text, relation: None, redacted: false }
                    })
                    .collect();
                let batch: Vec<_> = batch.iter().map(request).collect();
                let plan = plan_batch(
                    heads.iter().enumerate().map(|(r, h)| (r as u8, *h)),
                    &stored,
                    &[],
                    &[],
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
