//! Graceful shutdown signalling.
//!
//! One [`Shutdown`] is created per server and cloned into every task that
//! must stop when the server stops: the accept loop, each connection, the
//! typing-expiry task. Cancellation is a broadcast flag, not a message, so a
//! task that subscribes late still sees it.
//!
//! Draining is the other half: every connection task is spawned on a
//! [`TaskTracker`] so `serve` can wait for all of them to finish their
//! close handshakes before the storage writer is flushed and stopped.

use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// A cloneable "the server is stopping" flag.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A flag that is not yet raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag; every waiter wakes up. Idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the flag is raised.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once the flag is raised (immediately if it already is).
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }
}
