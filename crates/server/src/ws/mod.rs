//! The confab.v1 WebSocket endpoint (§3, §6-§12).
//!
//! - [`upgrade`]: the HTTP side: Origin allow-list, subprotocol, size limits.
//! - [`connection`]: the per-socket task: authentication, then a reader half
//!   that handles frames in order and a writer half that drains the
//!   connection's outbound queue.
//! - [`cmd`]: one handler per request kind, and the dispatch between them.

mod cmd;
pub mod connection;
pub mod upgrade;
