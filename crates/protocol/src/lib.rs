//! Confab protocol v1, as specified in `spec/protocol.md`.
//!
//! This crate is the single implementation of the protocol's rules that every
//! other crate drives. It never touches a socket, a file or the clock: time
//! comes in as an `Instant` argument and randomness as an RNG argument.
//!
//! Layout:
//! - [`wire`]: the prost types generated from `proto/confab/v1/*.proto`.
//! - [`codec`]: size-capped encoding and decoding of frames (§3, §4).
//! - [`names`]: validated newtypes for user-supplied strings (§12.3).
//! - [`error`]: error codes, close codes and the [`error::Rejection`] a server sends (§13).
//! - [`limits`]: server limits and the token-bucket rate limiter (§12).
//! - [`batch`]: planning a batch of message appends: seqs and idempotency (§8.2, §8.5).
//! - [`delivery`]: the per-connection "never repeat a seq" marks (§10.6).
//! - [`read`]: read state: the mention rule, the marker rule and a
//!   client's per-room counts (§11.3).
//! - [`relation`]: one relation (edit, delete, reply, react) on its own:
//!   validation, the reply quote and the fallback (§8.6).
//! - [`timeline`]: a room's messages with relations applied, as a client
//!   shows them (§8.6.6).
//! - [`rules`]: pure server-side rules: request validation, history ranges,
//!   the resume decision and typing expiry (§7-§11).
//! - [`http`]: JSON bodies of the HTTP endpoints and their JSON Schemas (§5).
//! - [`session`]: the sans-IO client session state machine (§6-§10, §14).

pub mod batch;
pub mod codec;
pub mod delivery;
pub mod error;
pub mod frames;
pub mod http;
pub mod limits;
pub mod names;
pub mod read;
pub mod relation;
pub mod rules;
pub mod session;
pub mod timeline;

/// Prost types generated from `proto/confab/v1/*.proto` (package `confab.v1`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/confab.v1.rs"));
    // Canonical proto3 JSON mapping (serde) of every type, from pbjson-build.
    include!(concat!(env!("OUT_DIR"), "/confab.v1.serde.rs"));
}

/// WebSocket subprotocol a v1 client offers and a v1 server selects (§3.2).
pub const SUBPROTOCOL: &str = "confab.v1";

/// Path of the WebSocket endpoint (§3.1).
pub const WEBSOCKET_PATH: &str = "/v1/ws";

/// Names of the optional capabilities (§3.4).
pub mod capability {
    /// Typing indicators (§11.2).
    pub const TYPING: &str = "typing";
    /// Presence pushes (§11.1).
    pub const PRESENCE: &str = "presence";
    /// Room-list change pushes (§7.1).
    pub const ROOM_LIST_PUSH: &str = "room-list-push";
    /// Read-state pushes and counts (§11.3).
    pub const READ_STATE: &str = "read-state";
    /// Edits as they are, not their fallback (§8.6.2).
    pub const EDIT: &str = "edit";
    /// Deletions as they are (§8.6.3).
    pub const REDACT: &str = "redact";
    /// Replies as they are (§8.6.4).
    pub const REPLY: &str = "reply";
    /// Reactions as they are (§8.6.5).
    pub const REACT: &str = "react";
    /// The capabilities a client asks for by default
    /// (`session::SessionConfig::new`): all but the relation ones, which a
    /// client asks for once it applies relations (§8.6.1).
    pub const WITHOUT_RELATIONS: [&str; 4] = [TYPING, PRESENCE, ROOM_LIST_PUSH, READ_STATE];
    /// The relation capabilities (§8.6).
    pub const RELATIONS: [&str; 4] = [EDIT, REDACT, REPLY, REACT];
    /// Every optional capability this crate knows, in the order a server
    /// lists them.
    pub const ALL: [&str; 8] = [
        TYPING,
        PRESENCE,
        ROOM_LIST_PUSH,
        READ_STATE,
        EDIT,
        REDACT,
        REPLY,
        REACT,
    ];
}
