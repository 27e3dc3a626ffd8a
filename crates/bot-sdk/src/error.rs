//! The bot layer's error type.

use std::time::Duration;

use confab_protocol::session::OfflineReason;
use confab_protocol::wire;

use crate::driver::{DriverClosed, RequestError, SendError};
use crate::store::StoreError;

/// What a handler may return: any error (`?` works on everything).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Why a bot operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder has neither credentials nor a token.
    #[error(
        "no credentials: call .credentials(username, password) or .token(token) on the builder"
    )]
    MissingCredentials,
    /// Registering or logging in failed (wrong password, unreachable server, ...).
    #[error(transparent)]
    Http(#[from] crate::http::Error),
    /// A message was not stored (refused by the server, invalid, or the session stopped).
    #[error(transparent)]
    Send(#[from] SendError),
    /// A request could not be made (invalid argument, offline, stopped).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The server refused a request, e.g. joining a room that does not exist.
    #[error("the server refused to {what}: {}", .error.message)]
    Refused {
        /// What was asked, e.g. "join room lobby".
        what: String,
        /// The server's error.
        error: wire::Error,
    },
    /// A request got no answer (timed out, or the connection was lost first); try again.
    #[error("no answer to {what} (timed out or the connection was lost); try again")]
    NoAnswer {
        /// What was asked.
        what: String,
    },
    /// The session stopped for good: the token was rejected or logged out, or
    /// the server closed with a code after which reconnecting would not help.
    #[error("the session stopped ({0:?}); log in again or check the server")]
    Stopped(OfflineReason),
    /// The first connection did not come up in time.
    #[error("could not connect within {0:?}; check that the server is running")]
    ConnectTimeout(Duration),
    /// Loading positions or the outbox failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The connection driver has ended (the client was shut down).
    #[error(transparent)]
    DriverClosed(#[from] DriverClosed),
}
