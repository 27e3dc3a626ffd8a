//! The state every request handler and connection task shares.

use std::sync::Arc;

use crate::auth::{AddressBuckets, HashLimiter, LoginThrottle, Passwords};
use crate::config::Config;
use crate::hub::Hub;
use crate::limit::{ConnectionLimit, KeyedRateLimiter, SendRateLimiter};
use crate::metrics::{Gauges, Metrics};
use crate::shutdown::{Shutdown, TaskTracker};
use crate::storage::Store;
use crate::storage::writer::WriterHandle;

/// Shared server state, held as `Arc<AppState>`.
#[derive(Debug)]
pub struct AppState {
    /// The configuration the server started with.
    pub config: Config,
    /// Persistent storage.
    pub store: Arc<dyn Store>,
    /// Rooms, connections, fan-out.
    pub hub: Arc<Hub>,
    /// The group-commit writer for messages.
    pub writer: WriterHandle,
    /// Password hashing.
    pub passwords: Passwords,
    /// Failed-login throttle.
    pub login_throttle: LoginThrottle,
    /// Failed logins per client address, across usernames (§15.3).
    pub login_addresses: AddressBuckets,
    /// Registrations per client address.
    pub register_addresses: AddressBuckets,
    /// Admission to password hashing, fair across addresses.
    pub hash_limiter: HashLimiter,
    /// Per-user send rate limiter.
    pub send_rate: SendRateLimiter,
    /// Per-user SetTyping limiter (§11.2).
    pub typing_rate: KeyedRateLimiter<confab_protocol::names::Username>,
    /// Per-user CreateRoom limiter (§12.5).
    pub room_create_rate: KeyedRateLimiter<confab_protocol::names::Username>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Raised when the server stops.
    pub shutdown: Shutdown,
    /// Every WebSocket task, so shutdown can wait for their close handshakes.
    pub sockets: TaskTracker,
    /// The connection cap.
    pub connection_limit: ConnectionLimit,
    /// Cluster mode: this node's side of NATS; `None` on a single node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl AppState {
    /// The Prometheus text for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let (rooms, users_online) = self.hub.gauges();
        self.metrics.render(Gauges {
            rooms,
            users_online,
            connection_slots_free: self.connection_limit.available(),
        })
    }
}
