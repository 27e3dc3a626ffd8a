//! The outbox: sends the server has not acknowledged yet.
//!
//! Spec: §8.5 and §14.1. An entry keeps its `client_msg_id` for life, so a
//! resend after a reconnect (or after the client itself restarted and
//! reloaded the outbox from disk) is recognised by the server as the same
//! message. Entries are serde types so drivers can persist them.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One unacknowledged send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Idempotency key, fixed when the user hit enter.
    pub client_msg_id: String,
    /// Target room.
    pub room: String,
    /// Text.
    pub text: String,
    /// True for an action (`/me`).
    #[serde(default)]
    pub action: bool,
    /// For an edit, deletion, reply or reaction (§8.6), what it does to
    /// which message; resent with the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<crate::wire::Relation>,
}

/// Unacknowledged sends, oldest first. Sends leave the outbox in order.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    entries: VecDeque<Slot>,
}

#[derive(Debug, Clone)]
struct Slot {
    entry: OutboxEntry,
    /// Request id of the copy on the current connection, if one was sent.
    in_flight: Option<u64>,
}

impl Outbox {
    /// Appends an entry; returns false (and adds nothing) if its id is already queued.
    pub fn push(&mut self, entry: OutboxEntry) -> bool {
        if self.contains(&entry.client_msg_id) {
            return false;
        }
        self.entries.push_back(Slot {
            entry,
            in_flight: None,
        });
        true
    }

    /// Whether an entry with this id is queued.
    pub fn contains(&self, client_msg_id: &str) -> bool {
        self.entries
            .iter()
            .any(|s| s.entry.client_msg_id == client_msg_id)
    }

    /// The entry with this id.
    pub fn get(&self, client_msg_id: &str) -> Option<&OutboxEntry> {
        self.entries
            .iter()
            .find(|s| s.entry.client_msg_id == client_msg_id)
            .map(|s| &s.entry)
    }

    /// Removes and returns the entry with this id.
    pub fn remove(&mut self, client_msg_id: &str) -> Option<OutboxEntry> {
        let idx = self
            .entries
            .iter()
            .position(|s| s.entry.client_msg_id == client_msg_id)?;
        self.entries.remove(idx).map(|s| s.entry)
    }

    /// The entry sent with `request_id` on the current connection.
    pub fn by_request(&self, request_id: u64) -> Option<&OutboxEntry> {
        self.entries
            .iter()
            .find(|s| s.in_flight == Some(request_id))
            .map(|s| &s.entry)
    }

    /// Number of entries on the wire.
    pub fn in_flight(&self) -> usize {
        self.entries
            .iter()
            .filter(|s| s.in_flight.is_some())
            .count()
    }

    /// The oldest entry not yet sent on this connection, to be sent with `request_id`.
    pub fn next_unsent(&mut self, request_id: u64) -> Option<&OutboxEntry> {
        let slot = self.entries.iter_mut().find(|s| s.in_flight.is_none())?;
        slot.in_flight = Some(request_id);
        Some(&slot.entry)
    }

    /// Marks the copy sent with `request_id` as not on the wire (to send again).
    pub fn unsend(&mut self, request_id: u64) {
        for slot in &mut self.entries {
            if slot.in_flight == Some(request_id) {
                slot.in_flight = None;
            }
        }
    }

    /// Forgets every in-flight mark: the connection they were sent on is gone.
    pub fn reset_in_flight(&mut self) {
        for slot in &mut self.entries {
            slot.in_flight = None;
        }
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &OutboxEntry> {
        self.entries.iter().map(|s| &s.entry)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the outbox is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
