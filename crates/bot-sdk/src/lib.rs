//! Confab bot SDK.
//!
//! Layers, bottom up:
//! - [`http`]: the account endpoints of §5 (register, login, logout) with typed errors.
//! - [`driver`]: a tokio task that owns a sans-IO
//!   [`ClientSession`](confab_protocol::session::ClientSession) and does all
//!   of its I/O (WebSocket, timers, reconnects).
//! - [`ServerUrl`]: where the server is, for both.

#![warn(missing_docs)]

pub mod driver;
pub mod http;
mod net;
mod url;

pub use url::{InvalidServerUrl, ServerUrl};
