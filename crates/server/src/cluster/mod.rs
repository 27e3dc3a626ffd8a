//! Cluster mode: several nodes on one PostgreSQL, with NATS between them
//! (ARCHITECTURE.md "Cluster mode"; the spec's guarantees, §8 and §10,
//! hold unchanged whichever node a client reaches).
//!
//! The invariant everything here builds on: **a seq is assigned only inside
//! the PostgreSQL transaction that stores its message**, and PostgreSQL is
//! the only source of truth. NATS is a fast path that may lose, repeat,
//! delay or reorder anything, and each node repairs that from PostgreSQL:
//!
//! - Committed messages are published on a JetStream stream and every node
//!   feeds them to [`Hub::accept`], which delivers each seq once and in
//!   order and reports gaps; gaps are read from PostgreSQL ([`sync`]).
//! - Every `sync_interval`, each node reads every room's head and
//!   membership version from PostgreSQL and repairs what it has not seen:
//!   a node that died between COMMIT and publish, a NATS restart, a lost
//!   event, a subscription that silently stopped. So anything committed
//!   reaches every node within one interval even with NATS down.
//! - Presence and typing go over core NATS ([`presence`]): a node announces
//!   its users' first and last sockets, and a snapshot every third of the
//!   presence TTL; a node silent for the TTL has its users marked offline.
//! - Room and token events ask other nodes to re-read a room or close a
//!   token's sockets.

pub mod event;
pub mod limits;
pub mod presence;
mod sync;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use confab_protocol::names::RoomName;
use tokio::sync::mpsc;

use crate::hub::{Hub, LocalChange};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::storage::Store;
use crate::storage::writer::{CommitSink, Committed};
use confab_protocol::wire;
use event::StreamEvent;

pub use sync::RepairQueue;

/// Default time between two storage polls of a node.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Default presence TTL: how long a silent node's users stay online elsewhere.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(15);
/// Default cluster name.
pub const DEFAULT_NAME: &str = "confab";

/// Changes queued for NATS before the publisher drops them (and counts it).
const OUTGOING_QUEUE: usize = 8192;
/// Users per presence snapshot chunk: keeps each NATS message small.
const SNAPSHOT_CHUNK: usize = 1000;
/// How long the stream keeps events: a node that fell this far behind
/// repairs from PostgreSQL instead. Memory storage: it is never the only copy.
const STREAM_MAX_AGE: Duration = Duration::from_secs(120);
/// Bytes the stream may hold before the oldest events go. NATS reserves
/// them for a memory stream as long as the stream exists (see
/// [`delete_stream`]), so this stays modest: two minutes of events fit.
const STREAM_MAX_BYTES: i64 = 64 * 1024 * 1024;

/// How a node joins its cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server (with JetStream), e.g. `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// Nodes with the same name form one cluster; it names the NATS
    /// subjects and the JetStream stream.
    pub name: String,
    /// Time between two polls of PostgreSQL's heads and memberships.
    pub sync_interval: Duration,
    /// How long another node's users stay online after it went silent.
    pub presence_ttl: Duration,
}

impl ClusterConfig {
    /// A cluster named [`DEFAULT_NAME`] on `nats_url`, with the default timers.
    pub fn new(nats_url: impl Into<String>) -> Self {
        Self {
            nats_url: nats_url.into(),
            name: DEFAULT_NAME.to_owned(),
            sync_interval: DEFAULT_SYNC_INTERVAL,
            presence_ttl: DEFAULT_PRESENCE_TTL,
        }
    }
}

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The name cannot name NATS subjects and a stream.
    #[error("invalid cluster name {0:?}: use 1 to 64 ASCII letters, digits, '-' or '_'")]
    InvalidName(String),
    /// Cluster mode was asked for without PostgreSQL.
    #[error(
        "cluster mode (--nats-url) needs a postgres:// --database-url: every node must share one PostgreSQL database"
    )]
    NeedsPostgres,
    /// NATS could not be reached.
    #[error(
        "cannot connect to NATS at {url}: {reason}; check that nats-server runs (with -js) and that the URL is right"
    )]
    Connect {
        /// The URL tried.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The JetStream stream or consumer could not be set up.
    #[error(
        "cannot set up JetStream stream {stream}: {reason}; NATS must run with JetStream enabled (nats-server -js)"
    )]
    JetStream {
        /// Stream name.
        stream: String,
        /// What the server said.
        reason: String,
    },
}

/// The subjects and stream of one cluster name.
#[derive(Debug, Clone)]
struct Names {
    stream: String,
    /// JetStream subject of [`StreamEvent`]s.
    events: String,
    /// Core NATS subject of [`event::LiveEvent`]s.
    live: String,
}

impl Names {
    fn new(name: &str) -> Result<Self, ClusterError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ClusterError::InvalidName(name.to_owned()));
        }
        Ok(Self {
            stream: format!("CONFAB_{name}"),
            events: format!("confab.{name}.events"),
            live: format!("confab.{name}.live"),
        })
    }
}

/// The JetStream stream of cluster `name` (`CONFAB_<name>`).
pub fn stream_name(name: &str) -> Result<String, ClusterError> {
    Ok(Names::new(name)?.stream)
}

/// Deletes the cluster's JetStream stream, once every node has stopped
/// (`confab-server --delete-cluster-stream`, tests, the bench): a memory
/// stream keeps its byte reservation in NATS until deleted. Returns whether
/// there was one.
pub async fn delete_stream(config: &ClusterConfig) -> Result<bool, ClusterError> {
    let names = Names::new(&config.name)?;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| ClusterError::Connect {
            url: config.nats_url.clone(),
            reason: e.to_string(),
        })?;
    let deleted = jetstream::new(client.clone())
        .delete_stream(&names.stream)
        .await;
    if let Err(err) = client.drain().await {
        tracing::debug!(error = %err, "draining the NATS connection failed");
    }
    match deleted {
        Ok(status) => Ok(status.success),
        Err(err)
            if matches!(
                err.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            Ok(false)
        }
        Err(err) => Err(ClusterError::JetStream {
            stream: names.stream,
            reason: err.to_string(),
        }),
    }
}

/// This node's membership of a cluster: the NATS connection and the
/// queues between the hub, the writer and the NATS tasks.
#[derive(Debug)]
pub struct Cluster {
    node: String,
    config: ClusterConfig,
    names: Names,
    client: async_nats::Client,
    stream: jetstream::stream::Stream,
    js: jetstream::Context,
    /// Committed batches on their way to the stream.
    commits: mpsc::Sender<Vec<wire::Message>>,
    /// Taken by [`Cluster::spawn`].
    receivers: Mutex<Option<Receivers>>,
    repair: RepairQueue,
    /// When the last on-demand read of the heads started.
    heads_synced: tokio::sync::Mutex<Option<std::time::Instant>>,
}

#[derive(Debug)]
struct Receivers {
    commits: mpsc::Receiver<Vec<wire::Message>>,
    changes: mpsc::Receiver<LocalChange>,
    changes_tx: mpsc::Sender<LocalChange>,
}

impl Cluster {
    /// Connects to NATS and creates (or finds) the cluster's stream.
    pub async fn connect(config: ClusterConfig) -> Result<Self, ClusterError> {
        let names = Names::new(&config.name)?;
        let node = uuid::Uuid::new_v4().simple().to_string();
        let connect_error = |reason: String| ClusterError::Connect {
            url: config.nats_url.clone(),
            reason,
        };
        let client = async_nats::ConnectOptions::new()
            .name(format!("confab-server {node}"))
            .connection_timeout(Duration::from_secs(5))
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let stream_error = |reason: String| ClusterError::JetStream {
            stream: names.stream.clone(),
            reason,
        };
        // Idempotent: every node creates it, the first one wins, the same
        // config is a no-op for the others.
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: names.stream.clone(),
                subjects: vec![names.events.clone()],
                storage: jetstream::stream::StorageType::Memory,
                max_age: STREAM_MAX_AGE,
                max_bytes: STREAM_MAX_BYTES,
                discard: jetstream::stream::DiscardPolicy::Old,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| stream_error(e.to_string()))?;
        let (commits, commits_rx) = mpsc::channel(OUTGOING_QUEUE);
        let (changes_tx, changes) = mpsc::channel(OUTGOING_QUEUE);
        tracing::info!(%node, cluster = %config.name, nats = %config.nats_url, "joined the cluster");
        Ok(Self {
            node,
            names,
            client,
            stream,
            js,
            commits,
            receivers: Mutex::new(Some(Receivers {
                commits: commits_rx,
                changes,
                changes_tx,
            })),
            repair: RepairQueue::new(),
            heads_synced: tokio::sync::Mutex::new(None),
            config,
        })
    }

    /// Re-reads one room from storage and applies it to the hub now, for a
    /// request about to be refused as ROOM_NOT_FOUND or NOT_A_MEMBER: the
    /// room or membership may be a moment old and made on another node.
    pub async fn refresh_room(&self, hub: &Hub, store: &dyn Store, room: &RoomName) {
        match store.room_record(room).await {
            Ok(Some(record)) => {
                if hub.reconcile_room(record).is_some() {
                    self.repair.schedule_gap(room.clone());
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(%room, error = %err, "re-reading a room failed"),
        }
    }

    /// Before a Welcome (§6.3): re-reads every room whose membership of
    /// `user` storage and the hub disagree on, so a room joined or left on
    /// another node a moment ago is listed as storage has it.
    pub async fn refresh_user(
        &self,
        hub: &Hub,
        store: &dyn Store,
        user: crate::storage::UserId,
        name: &confab_protocol::names::Username,
    ) {
        let stored = match store.rooms_of_user(user).await {
            Ok(rooms) => rooms,
            Err(err) => {
                tracing::warn!(error = %err, "reading a user's rooms failed; Welcome lists the hub's");
                return;
            }
        };
        let held = hub.room_names_of(name);
        let stored_set: std::collections::BTreeSet<&RoomName> = stored.iter().collect();
        let held_set: std::collections::BTreeSet<&RoomName> = held.iter().collect();
        for room in stored_set.symmetric_difference(&held_set) {
            self.refresh_room(hub, store, room).await;
        }
    }

    /// Brings the hub's view of every room's head and membership up to
    /// PostgreSQL's now (the periodic poll's work, on demand), for a reply
    /// that reports heads. Concurrent callers share one read: a caller
    /// returns without reading when a read started after it asked, so a
    /// flood of ListRooms costs PostgreSQL one query at a time.
    ///
    /// Returns the rooms whose members changed elsewhere (also queued for
    /// re-reading), so that a caller about to repair one of them re-reads
    /// it first.
    pub async fn sync_heads(&self, hub: &Hub, store: &dyn Store) -> Vec<RoomName> {
        let asked = std::time::Instant::now();
        let mut last = self.heads_synced.lock().await;
        if last.is_some_and(|started| started >= asked) {
            return Vec::new();
        }
        let started = std::time::Instant::now();
        match store.room_versions().await {
            Ok(versions) => {
                let stale = hub.check_versions(&versions);
                for room in &stale.reload {
                    self.repair.schedule_reload(room.clone());
                }
                for gap in stale.gaps {
                    self.repair.schedule_gap(gap.room);
                }
                *last = Some(started);
                stale.reload
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading room heads failed");
                Vec::new()
            }
        }
    }

    /// Tells every node that `room` was created or its members changed
    /// here, and returns once the stream holds the event (or publishing
    /// failed: then the poll tells them within an interval). Called before
    /// the request is answered, so anything a client does after the answer
    /// (a send on another node, say) comes after the event in the stream,
    /// whose consumers re-read the room before reading on.
    pub async fn announce_room(&self, room: &RoomName, metrics: &Metrics) {
        let event = StreamEvent::Room {
            node: self.node.clone(),
            room: room.as_str().to_owned(),
        };
        sync::publish_stream(self, metrics, &event).await;
    }

    /// Before a Resume or JoinRoom reads the rooms' heads: brings them up
    /// to PostgreSQL's and delivers what is missing, so a replay or an
    /// activation starts from everything committed before the request, as
    /// on one node, whichever node the messages were sent to.
    pub async fn catch_up(
        &self,
        hub: &Hub,
        store: &dyn Store,
        metrics: &Metrics,
        rooms: &[RoomName],
    ) {
        let reload = self.sync_heads(hub, store).await;
        for room in rooms {
            // Members first, then messages: a leave committed before a
            // message must be applied before the message is delivered.
            if reload.contains(room) {
                self.refresh_room(hub, store, room).await;
            }
            if hub.gap(room).is_some() {
                sync::repair(hub, store, metrics, room).await;
            }
        }
    }

    /// Before JoinRoom answers: re-reads the room (members and head) and
    /// delivers what is missing, so the RoomJoined counts and the
    /// activation's head are PostgreSQL's, whatever the other nodes did a
    /// moment ago.
    pub async fn catch_up_room(
        &self,
        hub: &Hub,
        store: &dyn Store,
        metrics: &Metrics,
        room: &RoomName,
    ) {
        self.refresh_room(hub, store, room).await;
        if hub.gap(room).is_some() {
            sync::repair(hub, store, metrics, room).await;
        }
    }

    /// This node's id in the cluster (random per start).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Starts the NATS tasks and connects the hub's changes to them. They
    /// stop when `shutdown` is raised; the publisher then says NodeLeft.
    pub fn spawn(
        self: &Arc<Self>,
        hub: &Arc<Hub>,
        store: &Arc<dyn Store>,
        metrics: &Arc<Metrics>,
        shutdown: &Shutdown,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(receivers) = self
            .receivers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            tracing::warn!("cluster tasks already started");
            return Vec::new();
        };
        hub.set_cluster(receivers.changes_tx);
        let ctx = sync::Context {
            cluster: Arc::clone(self),
            hub: Arc::clone(hub),
            store: Arc::clone(store),
            metrics: Arc::clone(metrics),
            shutdown: shutdown.clone(),
        };
        vec![
            tokio::spawn(sync::publish(
                ctx.clone(),
                receivers.commits,
                receivers.changes,
            )),
            tokio::spawn(sync::consume_stream(ctx.clone())),
            tokio::spawn(sync::consume_live(ctx.clone())),
            tokio::spawn(sync::poll_storage(ctx)),
        ]
    }
}

/// The writer's sink in cluster mode: the stream, and only the stream.
///
/// This node's readers get its own commits back from the stream too, like
/// every other node's, so that every node delivers in the stream's one
/// order: a LeaveRoom announced (and acked) before a send committed comes
/// first on every node, and no node pushes the message to the leaver's
/// sockets. What cannot be queued for the stream is read back
/// from PostgreSQL at once instead.
#[derive(Debug)]
pub struct ClusterSink {
    hub: Arc<Hub>,
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
}

impl ClusterSink {
    /// A sink that delivers here and publishes to the cluster.
    pub fn new(hub: Arc<Hub>, cluster: Arc<Cluster>, metrics: Arc<Metrics>) -> Self {
        Self {
            hub,
            cluster,
            metrics,
        }
    }
}

impl CommitSink for ClusterSink {
    fn publish(&self, committed: &[Committed]) {
        if committed.is_empty() {
            return;
        }
        let records = committed.iter().map(|c| c.message.to_wire()).collect();
        if self.cluster.commits.try_send(records).is_err() {
            // Other nodes' polls find these rows; this node reads them now.
            Metrics::inc(&self.metrics.cluster_events_dropped);
            for c in committed {
                self.hub.note_stored(&c.message.room, c.message.seq);
                self.cluster.repair.schedule_gap(c.message.room.clone());
            }
        }
    }
}

/// Parses a room name from an event; `None` (and a debug line) when invalid.
fn room_name(name: String) -> Option<RoomName> {
    match RoomName::parse(name) {
        Ok(name) => Some(name),
        Err(err) => {
            tracing::debug!(error = %err, "cluster event names an invalid room; skipped");
            None
        }
    }
}

impl StreamEvent {
    /// The event for a change that started here, if it goes on the stream.
    fn from_change(node: &str, change: &LocalChange) -> Option<Self> {
        let node = node.to_owned();
        match change {
            LocalChange::TokenRevoked(token_hash) => Some(Self::TokenRevoked {
                node,
                token_hash: token_hash.clone(),
            }),
            LocalChange::ReadState { user, state } => Some(Self::ReadState {
                node,
                user: user.as_str().to_owned(),
                state: state.clone(),
            }),
            _ => None,
        }
    }
}

impl event::LiveEvent {
    /// The event for a change that started here, if it goes on core NATS.
    fn from_change(node: &str, change: &LocalChange) -> Option<Self> {
        let node = node.to_owned();
        match change {
            LocalChange::Online(user) | LocalChange::Offline(user) => Some(Self::Presence {
                node,
                user: user.as_str().to_owned(),
                online: matches!(change, LocalChange::Online(_)),
            }),
            LocalChange::Typing { room, user, active } => Some(Self::Typing {
                node,
                room: room.as_str().to_owned(),
                user: user.as_str().to_owned(),
                active: *active,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_checked_before_they_name_subjects() {
        assert!(Names::new("prod-eu_1").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(
                matches!(Names::new(bad), Err(ClusterError::InvalidName(_))),
                "{bad:?} accepted"
            );
        }
    }
}
