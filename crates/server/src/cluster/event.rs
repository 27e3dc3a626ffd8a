//! What nodes of one cluster send each other over NATS.
//!
//! Internal to the reference server (not part of confab.v1: another
//! implementation builds its own cluster), but versioned all the same: an
//! event a node cannot decode is counted and skipped, never fatal, so a
//! rolling upgrade that adds a kind degrades to the storage poll.
//!
//! Nothing here is a source of truth. A message event is a copy of rows
//! already committed to PostgreSQL, a room event says "re-read this room",
//! and the receiving node checks each against its own state (seq order,
//! membership versions), so losing, repeating or reordering any of them
//! costs latency, never correctness.

use confab_protocol::wire;
use serde::{Deserialize, Serialize};

/// Carried on the JetStream stream, in publish order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamEvent {
    /// Messages one node committed in one transaction.
    Messages {
        /// Sending node.
        node: String,
        /// The rows, as stored, in their wire form (and its proto3 JSON).
        messages: Vec<wire::Message>,
    },
    /// A room was created or its members changed: re-read it.
    Room {
        /// Sending node.
        node: String,
        /// Room name.
        room: String,
    },
    /// A token was revoked: close its sockets.
    TokenRevoked {
        /// Sending node.
        node: String,
        /// SHA-256 hex of the token.
        token_hash: String,
    },
    /// A user's read marker moved (§11.3): push the state to the user's
    /// connections. On the stream, not core NATS, so a brief outage delays
    /// it instead of losing it.
    ReadState {
        /// Sending node.
        node: String,
        /// Whose marker.
        user: String,
        /// The state after the move.
        state: wire::ReadState,
    },
}

/// Carried on core NATS: presence and typing, which are worth nothing late.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    /// The user's first socket on `node` opened, or its last closed.
    Presence {
        /// Sending node.
        node: String,
        /// User.
        user: String,
        /// Online there now.
        online: bool,
    },
    /// One chunk of the full list of `node`'s users.
    Snapshot {
        /// Sending node.
        node: String,
        /// Increases with every snapshot of the node.
        generation: u64,
        /// Users online there.
        users: Vec<String>,
        /// The snapshot's last chunk.
        last: bool,
    },
    /// The node is stopping: its users are gone from it.
    NodeLeft {
        /// Sending node.
        node: String,
    },
    /// A typing indicator of a user on `node` started or stopped.
    Typing {
        /// Sending node.
        node: String,
        /// Room.
        room: String,
        /// Typist.
        user: String,
        /// Started or stopped.
        active: bool,
    },
}

impl StreamEvent {
    /// The sending node.
    pub fn node(&self) -> &str {
        match self {
            Self::Messages { node, .. }
            | Self::Room { node, .. }
            | Self::TokenRevoked { node, .. }
            | Self::ReadState { node, .. } => node,
        }
    }
}

impl LiveEvent {
    /// The sending node.
    pub fn node(&self) -> &str {
        match self {
            Self::Presence { node, .. }
            | Self::Snapshot { node, .. }
            | Self::NodeLeft { node }
            | Self::Typing { node, .. } => node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding other nodes of the same or a newer version must read.
    #[test]
    fn events_round_trip_and_keep_their_tags() {
        let event = StreamEvent::Room {
            node: "n1".into(),
            room: "lobby".into(),
        };
        let json = serde_json::to_string(&event).expect("encodes");
        assert_eq!(json, r#"{"kind":"room","node":"n1","room":"lobby"}"#);
        assert_eq!(
            serde_json::from_str::<StreamEvent>(&json).expect("decodes"),
            event
        );
        let live = LiveEvent::NodeLeft { node: "n2".into() };
        let json = serde_json::to_string(&live).expect("encodes");
        assert_eq!(json, r#"{"kind":"node_left","node":"n2"}"#);
        assert!(serde_json::from_str::<LiveEvent>(r#"{"kind":"novel","node":"n3"}"#).is_err());
    }
}
