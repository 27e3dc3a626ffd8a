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
    /// Per-user MarkRead limiter (§11.3).
    pub mark_read_rate: KeyedRateLimiter<confab_protocol::names::Username>,
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
    /// Cluster mode: the per-user and per-name budgets every node shares.
    pub shared_limits: Option<crate::cluster::limits::SharedLimits>,
}

impl AppState {
    /// Cluster mode: see `Cluster::announce_room`; nothing on one node.
    pub async fn announce_room(&self, room: &confab_protocol::names::RoomName) {
        if let Some(cluster) = &self.cluster {
            cluster.announce_room(room, &self.metrics).await;
        }
    }

    /// Cluster mode: see `Cluster::catch_up_room`; nothing on one node.
    pub async fn catch_up_room(&self, room: &confab_protocol::names::RoomName) {
        if let Some(cluster) = &self.cluster {
            cluster
                .catch_up_room(&self.hub, self.store.as_ref(), &self.metrics, room)
                .await;
        }
    }

    /// Cluster mode: see `Cluster::catch_up`; nothing on one node.
    pub async fn catch_up(&self, rooms: &[confab_protocol::names::RoomName]) {
        if let Some(cluster) = &self.cluster {
            cluster
                .catch_up(&self.hub, self.store.as_ref(), &self.metrics, rooms)
                .await;
        }
    }

    /// Takes a send token for `user` (§12.5): from the budget every node
    /// shares in cluster mode, else this node's. A PostgreSQL failure
    /// falls back to this node's limiter rather than lifting the limit.
    pub async fn take_send_token(
        &self,
        user: &confab_protocol::names::Username,
        now: std::time::Instant,
    ) -> Result<(), std::time::Duration> {
        if let Some(shared) = &self.shared_limits {
            let limits = &self.config.limits;
            let bucket = crate::cluster::limits::Bucket::Send(user.as_str());
            let rate = f64::from(limits.send_rate_per_sec.max(1));
            match shared
                .try_take(bucket, rate, limits.send_burst, crate::auth::now_ms())
                .await
            {
                Ok(taken) => return taken,
                Err(err) => {
                    tracing::warn!(error = %err, "shared send limit unavailable; using this node's")
                }
            }
        }
        self.send_rate.try_take(user, now)
    }

    /// Gives back a send token taken for what turned out to be a repeat.
    pub async fn refund_send_token(&self, user: &confab_protocol::names::Username) {
        if let Some(shared) = &self.shared_limits {
            let limits = &self.config.limits;
            let bucket = crate::cluster::limits::Bucket::Send(user.as_str());
            let rate = f64::from(limits.send_rate_per_sec.max(1));
            match shared
                .refund(bucket, rate, limits.send_burst, crate::auth::now_ms())
                .await
            {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "shared send limit unavailable; refunding this node's")
                }
            }
        }
        self.send_rate.refund(user, std::time::Instant::now());
    }

    /// Takes a CreateRoom token for `user` (§12.5), shared as sends are.
    pub async fn take_room_create_token(
        &self,
        user: &confab_protocol::names::Username,
        now: std::time::Instant,
    ) -> Result<(), std::time::Duration> {
        if let Some(shared) = &self.shared_limits {
            let bucket = crate::cluster::limits::Bucket::CreateRoom(user.as_str());
            let rate = f64::from(self.config.room_create_per_min.max(1)) / 60.0;
            match shared
                .try_take(
                    bucket,
                    rate,
                    self.config.room_create_burst,
                    crate::auth::now_ms(),
                )
                .await
            {
                Ok(taken) => return taken,
                Err(err) => {
                    tracing::warn!(error = %err, "shared room limit unavailable; using this node's")
                }
            }
        }
        self.room_create_rate.try_take(user, now)
    }

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
