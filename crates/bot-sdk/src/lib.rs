//! Confab bot SDK: write bots for Confab servers in a few lines, and reuse
//! the transport layer in other clients.
//!
//! # Quick start
//!
//! ```no_run
//! use confab_bot_sdk::{
//!     Client, Commands, Dice, Event, FileOutboxStore, FilePositionStore, ServerUrl,
//! };
//!
//! #[tokio::main]
//! async fn main() -> Result<(), confab_bot_sdk::Error> {
//!     let server: ServerUrl = "http://127.0.0.1:7420".parse().expect("valid URL");
//!     let client = Client::builder(server)
//!         .credentials("dicebot", "a long password")
//!         .register_if_missing(true)
//!         .join(["lobby"])
//!         .create_missing_rooms(true)
//!         .position_store(FilePositionStore::new("dicebot-positions.json"))
//!         .outbox_store(FileOutboxStore::new("dicebot-outbox.jsonl"))
//!         .connect()
//!         .await?;
//!
//!     let commands = Commands::new("!")
//!         .command("roll", "roll dice", |cmd, (dice,): (Dice,)| async move {
//!             let (rolls, total) = dice.roll();
//!             cmd.reply(&format!("{dice}: {rolls:?} = {total}")).await?;
//!             Ok(())
//!         })
//!         .on_event(|_ctx, event: Event| async move {
//!             if let Event::Connection(state) = event {
//!                 println!("connection: {state:?}");
//!             }
//!             Ok(())
//!         });
//!     // `!help` and usage messages for bad arguments come for free.
//!     client.run_until_ctrl_c(commands).await
//! }
//! ```
//!
//! What the SDK guarantees, with the protocol crate's session underneath:
//! - every message is handled once, in seq order per room, across
//!   reconnects (with backoff and full jitter) and, with a
//!   [`FilePositionStore`], across restarts: the position of a message is
//!   saved after its handler returns, and restored before connecting;
//! - [`Room::send`] resolves with the message's seq once the server stored
//!   it; the message is resent with the same id after a reconnect, and
//!   after `RATE_LIMITED` once `retry_after_ms` has passed, so neither
//!   surfaces as an error;
//! - with a [`FileOutboxStore`] ([`ClientBuilder::outbox_store`]), across
//!   restarts too: a send is queued only once it is in the file, leaves the
//!   file once the server acknowledged it (or refused it for good), and a
//!   bot killed with sends in flight resends them on its next start with
//!   their original ids, so each is stored exactly once (§8.5, §14.1);
//! - a bot's own messages are marked ([`Message::from_self`]) and never
//!   taken as commands.
//!
//! # Layout
//!
//! Bottom up:
//! - [`ServerUrl`]: where the server is (`http(s)://host:port`, and the
//!   derived `ws(s)://host:port/v1/ws`).
//! - [`net`]: opening connections: TCP, TLS and the WebSocket upgrade
//!   (`confab.v1`, Origin, timeouts), shared by every client in the
//!   workspace (the conformance suite and the bench use it too).
//! - [`http`]: the account endpoints of §5 (register, login, logout) with
//!   typed errors, and [`http::send`] for any other request.
//! - [`driver`]: a tokio task that owns a sans-IO
//!   [`ClientSession`](confab_protocol::session::ClientSession) and does all
//!   of its I/O (WebSocket, timers, reconnects). Other clients (the REPL)
//!   build on this layer directly.
//! - The bot layer: [`Client`] and its [`ClientBuilder`], typed [`Event`]s,
//!   [`Handler`]s, the [`Commands`] framework, [`PositionStore`]s and
//!   [`OutboxStore`]s (the latter's file format is the `confab` client's
//!   too, which uses [`FileOutboxStore`] for its outboxes).

#![warn(missing_docs)]

mod client;
mod commands;
pub mod driver;
mod error;
mod event;
pub mod http;
pub mod net;
mod store;
mod url;

pub use client::{Client, ClientBuilder, Context, Handler, Room};
pub use commands::{CommandContext, Commands, Dice, FromArg, FromArgs, Rest};
pub use error::{Error, HandlerError};
pub use event::{ErrorEvent, Event, Message, PresenceKind, ReadCounts, Relation, Target};
pub use store::{
    FileOutboxStore, FilePositionStore, MemoryPositionStore, OutboxEntry, OutboxStore,
    PositionStore, RoomPosition, StoreError, replace_file_atomically,
};
pub use url::{InvalidServerUrl, ServerUrl};

/// The protocol crate, re-exported for its wire types and session.
pub use confab_protocol as protocol;
