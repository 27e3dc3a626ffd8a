//! The typed errors of the library half of the bench crate.

use std::time::Duration;

/// Why a benchmark step failed. Every variant names the step; the message
/// says what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A connection could not be opened or upgraded to a WebSocket.
    #[error(transparent)]
    Connect(#[from] confab_bot_sdk::net::ConnectError),
    /// A server URL is not an `http(s)://host:port` base URL.
    #[error(transparent)]
    ServerUrl(#[from] confab_bot_sdk::InvalidServerUrl),
    /// An HTTP request failed or got an unexpected status.
    #[error("HTTP {path} failed: {reason}")]
    Http {
        /// Endpoint path.
        path: String,
        /// Status and body, or the transport error.
        reason: String,
    },
    /// The server broke the protocol or refused a setup request.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A step did not finish in time.
    #[error("{what} did not finish within {after:?}; the server may be overloaded or stuck")]
    Timeout {
        /// The step.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// A server process could not be started or did not report its address.
    #[error("cannot start {what}: {reason}")]
    Spawn {
        /// Which server.
        what: String,
        /// Why, with a hint.
        reason: String,
    },
    /// A local file operation failed (probes, fsync baseline).
    #[error("{what}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The workload's parameters make no sense together.
    #[error("invalid workload parameters: {0}")]
    Config(String),
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn timeout(what: impl Into<String>, after: Duration) -> Self {
        Self::Timeout {
            what: what.into(),
            after,
        }
    }
}
