//! Structural invariants over everything a scenario sent, got acked and
//! received, checked against the room history the server reports.
//!
//! These are the properties fault scenarios exist to protect (§8.2-§8.5,
//! §10): no acked message lost, none duplicated, none that was never sent,
//! per-room seq order without gaps, and per-sender order. They are checked
//! on identities and sequence numbers only, never on durations, so they hold
//! or fail the same way however slow the machine is.

use std::collections::{BTreeMap, BTreeSet};

/// A stored message as the suite sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Room (full name).
    pub room: String,
    /// Per-room sequence number.
    pub seq: u64,
    /// Server message id.
    pub message_id: String,
    /// Sender username.
    pub sender: String,
    /// Sender's idempotency key.
    pub client_msg_id: String,
    /// Text.
    pub text: String,
}

/// A SendMessage the suite sent.
#[derive(Debug, Clone)]
pub struct SendRecord {
    /// Actor that sent it.
    pub actor: String,
    /// Username of that actor.
    pub user: String,
    /// Connection number of the actor.
    pub connection: u32,
    /// Room.
    pub room: String,
    /// Idempotency key.
    pub client_msg_id: String,
    /// Text.
    pub text: String,
    /// Whether this was a resend of an earlier frame.
    pub resend: bool,
}

/// A SendAck the suite received.
#[derive(Debug, Clone)]
pub struct AckRecord {
    /// Username of the acked sender.
    pub user: String,
    /// Room.
    pub room: String,
    /// Idempotency key.
    pub client_msg_id: String,
    /// Assigned seq.
    pub seq: u64,
    /// Assigned id.
    pub message_id: String,
    /// Whether the server flagged it as a repeat.
    pub duplicate: bool,
}

/// Everything observed during one scenario.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Sends, in the order they were written.
    pub sends: Vec<SendRecord>,
    /// Acks, in arrival order.
    pub acks: Vec<AckRecord>,
    /// Message frames received: (actor, connection, message), in arrival order.
    pub received: Vec<(String, u32, MessageRecord)>,
    /// Per (actor, room): the seq after which the actor is entitled to every
    /// message (head at its first join, or last_seq of its first resume).
    pub starts: BTreeMap<(String, String), u64>,
}

impl Ledger {
    /// Records where an actor's entitlement to a room starts (first wins).
    pub fn record_start(&mut self, actor: &str, room: &str, after_seq: u64) {
        self.starts
            .entry((actor.to_owned(), room.to_owned()))
            .or_insert(after_seq);
    }
}

/// Checks every invariant; returns one line per violation.
pub fn check(
    ledger: &Ledger,
    history: &BTreeMap<String, Vec<MessageRecord>>,
    complete: &[String],
) -> Vec<String> {
    let mut violations = Vec::new();
    for (room, messages) in history {
        check_room(ledger, room, messages, complete, &mut violations);
    }
    violations
}

fn check_room(
    ledger: &Ledger,
    room: &str,
    messages: &[MessageRecord],
    complete: &[String],
    out: &mut Vec<String>,
) {
    // §8.2: seq starts at 1, strictly increasing, gapless.
    for (i, m) in messages.iter().enumerate() {
        let want = i as u64 + 1;
        if m.seq != want {
            out.push(format!("{room}: history position {} has seq {}, expected {want} (seqs must be 1, 2, 3, ... without gaps)", i + 1, m.seq));
            break;
        }
    }
    let by_seq: BTreeMap<u64, &MessageRecord> = messages.iter().map(|m| (m.seq, m)).collect();
    let mut ids = BTreeSet::new();
    let mut keys: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for m in messages {
        if !ids.insert(m.message_id.as_str()) {
            out.push(format!(
                "{room}: message_id {} appears twice in history",
                m.message_id
            ));
        }
        if let Some(first) = keys.insert((m.sender.as_str(), m.client_msg_id.as_str()), m.seq) {
            out.push(format!(
                "{room}: duplicated: {} sent client_msg_id {:?} once, but it is stored at seq {first} and seq {}",
                m.sender, m.client_msg_id, m.seq
            ));
        }
        // Never sent: every stored message must be one the suite sent.
        let sent = ledger.sends.iter().any(|s| {
            s.room == room
                && s.user == m.sender
                && s.client_msg_id == m.client_msg_id
                && s.text == m.text
        });
        if !sent {
            out.push(format!(
                "{room}: seq {} from {} (client_msg_id {:?}, text {:?}) was never sent by this scenario",
                m.seq, m.sender, m.client_msg_id, m.text
            ));
        }
    }
    // No acked message lost; acks agree with what is stored.
    for ack in ledger.acks.iter().filter(|a| a.room == room) {
        match by_seq.get(&ack.seq) {
            Some(m) if m.sender == ack.user && m.client_msg_id == ack.client_msg_id && m.message_id == ack.message_id => {}
            Some(m) => out.push(format!(
                "{room}: SendAck for {}/{:?} said seq {} id {}, but history has {}/{:?} id {} there",
                ack.user, ack.client_msg_id, ack.seq, ack.message_id, m.sender, m.client_msg_id, m.message_id
            )),
            None => out.push(format!(
                "{room}: lost: {}/{:?} was acked with seq {} but history (head {}) does not hold it",
                ack.user,
                ack.client_msg_id,
                ack.seq,
                messages.len()
            )),
        }
    }
    // Per-sender order: first sends of one connection are stored in send order.
    let mut streams: BTreeMap<(&str, u32), Vec<&str>> = BTreeMap::new();
    for s in ledger.sends.iter().filter(|s| s.room == room && !s.resend) {
        let ids = streams.entry((s.actor.as_str(), s.connection)).or_default();
        // A repeated key is the same message, not a new one (§8.5).
        if !ids.contains(&s.client_msg_id.as_str()) {
            ids.push(s.client_msg_id.as_str());
        }
    }
    for ((actor, connection), ids) in &streams {
        let user = ledger
            .sends
            .iter()
            .find(|s| s.actor == *actor)
            .map(|s| s.user.as_str())
            .unwrap_or_default();
        let seqs: Vec<u64> = ids
            .iter()
            .filter_map(|id| keys.get(&(user, *id)).copied())
            .collect();
        if seqs.windows(2).any(|w| w[0] >= w[1]) {
            out.push(format!(
                "{room}: {actor} (connection {connection}) sent {ids:?} in that order but they are stored at seqs {seqs:?}"
            ));
        }
    }
    // Per connection: what arrived is stored, in seq order, each seq once.
    let mut per_connection: BTreeMap<(&str, u32), Vec<&MessageRecord>> = BTreeMap::new();
    for (actor, connection, m) in ledger.received.iter().filter(|(_, _, m)| m.room == room) {
        per_connection
            .entry((actor.as_str(), *connection))
            .or_default()
            .push(m);
    }
    for ((actor, connection), got) in &per_connection {
        for pair in got.windows(2) {
            if pair[1].seq != pair[0].seq + 1 {
                out.push(format!(
                    "{room}: {actor} (connection {connection}) received seq {} then seq {}; a connection gets each seq once, in order, without gaps",
                    pair[0].seq, pair[1].seq
                ));
                break;
            }
        }
        for m in got {
            match by_seq.get(&m.seq) {
                Some(h) if *h == *m => {}
                Some(h) => out.push(format!(
                    "{room}: {actor} (connection {connection}) received seq {} as {}/{:?}/{:?} but history has {}/{:?}/{:?}",
                    m.seq, m.sender, m.client_msg_id, m.text, h.sender, h.client_msg_id, h.text
                )),
                None => out.push(format!(
                    "{room}: {actor} (connection {connection}) received seq {} which history does not hold",
                    m.seq
                )),
            }
        }
    }
    // No loss for actors that must be complete.
    let head = messages.last().map_or(0, |m| m.seq);
    for actor in complete {
        let Some(start) = ledger.starts.get(&(actor.clone(), room.to_owned())) else {
            out.push(format!("{room}: {actor} never joined or resumed the room, so completeness cannot be checked"));
            continue;
        };
        let got: BTreeSet<u64> = ledger
            .received
            .iter()
            .filter(|(a, _, m)| a == actor && m.room == room)
            .map(|(_, _, m)| m.seq)
            .collect();
        let missing: Vec<u64> = (start + 1..=head).filter(|s| !got.contains(s)).collect();
        if !missing.is_empty() {
            out.push(format!(
                "{room}: {actor} never received seqs {missing:?} (entitled to every seq after {start}, head {head})"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, sender: &str, id: &str) -> MessageRecord {
        MessageRecord {
            room: "r".into(),
            seq,
            message_id: format!("m{seq}"),
            sender: sender.into(),
            client_msg_id: id.into(),
            text: format!("t-{id}"),
        }
    }

    fn send(actor: &str, id: &str) -> SendRecord {
        SendRecord {
            actor: actor.into(),
            user: actor.into(),
            connection: 1,
            room: "r".into(),
            client_msg_id: id.into(),
            text: format!("t-{id}"),
            resend: false,
        }
    }

    fn ack(m: &MessageRecord) -> AckRecord {
        AckRecord {
            user: m.sender.clone(),
            room: m.room.clone(),
            client_msg_id: m.client_msg_id.clone(),
            seq: m.seq,
            message_id: m.message_id.clone(),
            duplicate: false,
        }
    }

    fn clean() -> (Ledger, BTreeMap<String, Vec<MessageRecord>>) {
        let history = vec![msg(1, "a", "c1"), msg(2, "a", "c2"), msg(3, "b", "c1")];
        let mut ledger = Ledger {
            sends: vec![send("a", "c1"), send("a", "c2"), send("b", "c1")],
            acks: history.iter().map(ack).collect(),
            ..Ledger::default()
        };
        ledger.record_start("b", "r", 0);
        for m in &history {
            ledger.received.push(("b".into(), 1, m.clone()));
        }
        (ledger, BTreeMap::from([("r".to_owned(), history)]))
    }

    #[test]
    fn a_clean_run_has_no_violations() {
        let (ledger, history) = clean();
        assert_eq!(
            check(&ledger, &history, &["b".into()]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_invariant_catches_its_violation() {
        type Breaker = fn(&mut Ledger, &mut Vec<MessageRecord>);
        let cases: [(&str, Breaker); 7] = [
            ("lost", |_, h| {
                h.pop();
            }),
            ("duplicated", |l, h| {
                let mut dup = h[0].clone();
                dup.seq = 4;
                dup.message_id = "m4".into();
                h.push(dup.clone());
                l.received.push(("b".into(), 1, dup));
            }),
            ("never sent", |l, h| {
                let m = msg(4, "z", "zz");
                h.push(m.clone());
                l.received.push(("b".into(), 1, m));
            }),
            ("without gaps", |_, h| h[2].seq = 5),
            ("in that order", |l, _| l.sends.swap(0, 1)),
            ("received seq 1 then seq 3", |l, _| {
                l.received.remove(1);
            }),
            ("never received", |l, _| {
                l.received.retain(|(_, _, m)| m.seq != 3);
            }),
        ];
        for (want, breaker) in cases {
            let (mut ledger, mut history) = clean();
            breaker(&mut ledger, history.get_mut("r").unwrap());
            let violations = check(&ledger, &history, &["b".into()]);
            assert!(
                violations.iter().any(|v| v.contains(want)),
                "{want}: {violations:?}"
            );
        }
    }
}
