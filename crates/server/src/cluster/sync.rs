//! The four tasks of a cluster node: publish, consume the stream, consume
//! live events, and poll PostgreSQL to repair what NATS did not bring.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use bytes::Bytes;
use confab_protocol::error::CloseCode;
use confab_protocol::names::{RoomName, Username};
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};

use super::event::{LiveEvent, StreamEvent};
use super::presence::{RemotePresence, Transition};
use super::{Cluster, SNAPSHOT_CHUNK, room_name};
use crate::hub::{Hub, LocalChange};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::storage::Store;
use crate::storage::StoredMessage;
use confab_protocol::wire;

/// Rows read from storage per repair query.
const REPAIR_PAGE: u32 = 1000;
/// How long to wait for JetStream to acknowledge a publish.
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before re-creating a consumer or subscription that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Everything a cluster task needs.
#[derive(Debug, Clone)]
pub(super) struct Context {
    pub(super) cluster: Arc<Cluster>,
    pub(super) hub: Arc<Hub>,
    pub(super) store: Arc<dyn Store>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shutdown: Shutdown,
}

/// Rooms waiting to be re-read or repaired from storage, each at most once.
/// Unbounded in count only up to the number of rooms, since a room already
/// waiting is not added again.
#[derive(Debug)]
pub struct RepairQueue {
    waiting: Mutex<Work>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Work {
    gaps: HashSet<RoomName>,
    reloads: HashSet<RoomName>,
}

impl RepairQueue {
    pub(super) fn new() -> Self {
        Self {
            waiting: Mutex::new(Work::default()),
            wake: Notify::new(),
        }
    }

    fn work(&self) -> std::sync::MutexGuard<'_, Work> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room has stored seqs not delivered here.
    pub fn schedule_gap(&self, room: RoomName) {
        if self.work().gaps.insert(room) {
            self.wake.notify_one();
        }
    }

    /// The room is unknown here or changed elsewhere.
    pub fn schedule_reload(&self, room: RoomName) {
        if self.work().reloads.insert(room) {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> Work {
        std::mem::take(&mut *self.work())
    }
}

/// Publishes this node's commits (JetStream) and changes (stream or core
/// NATS), and a presence snapshot every third of the TTL. On shutdown it
/// says NodeLeft, so other nodes need not wait for the TTL.
pub(super) async fn publish(
    ctx: Context,
    mut commits: mpsc::Receiver<Vec<wire::Message>>,
    mut changes: mpsc::Receiver<LocalChange>,
) {
    let cluster = &ctx.cluster;
    let mut snapshot =
        tokio::time::interval((cluster.config.presence_ttl / 3).max(Duration::from_millis(50)));
    snapshot.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut generation = 0u64;
    loop {
        tokio::select! {
            () = ctx.shutdown.wait() => break,
            Some(messages) = commits.recv() => {
                let event = StreamEvent::Messages { node: cluster.node.clone(), messages };
                publish_stream(cluster, &ctx.metrics, &event).await;
            }
            Some(change) = changes.recv() => {
                if let Some(event) = StreamEvent::from_change(&cluster.node, &change) {
                    publish_stream(cluster, &ctx.metrics, &event).await;
                } else if let Some(event) = LiveEvent::from_change(&cluster.node, &change) {
                    publish_live(&ctx, &event).await;
                }
            }
            _ = snapshot.tick() => {
                generation += 1;
                let users: Vec<Username> = ctx.hub.local_online_users();
                let chunks: Vec<&[Username]> = if users.is_empty() {
                    vec![&[]]
                } else {
                    users.chunks(SNAPSHOT_CHUNK).collect()
                };
                let count = chunks.len();
                for (i, chunk) in chunks.into_iter().enumerate() {
                    let event = LiveEvent::Snapshot {
                        node: cluster.node.clone(),
                        generation,
                        users: chunk.iter().map(|u| u.as_str().to_owned()).collect(),
                        last: i + 1 == count,
                    };
                    publish_live(&ctx, &event).await;
                }
            }
        }
    }
    let left = LiveEvent::NodeLeft {
        node: cluster.node.clone(),
    };
    publish_live(&ctx, &left).await;
    if let Err(err) = cluster.client.flush().await {
        tracing::debug!(error = %err, "NATS flush at shutdown failed");
    }
}

pub(super) async fn publish_stream(cluster: &Cluster, metrics: &Metrics, event: &StreamEvent) {
    let payload = match serde_json::to_vec(event) {
        Ok(payload) => Bytes::from(payload),
        Err(err) => {
            tracing::error!(error = %err, "cannot encode a cluster event");
            return;
        }
    };
    let acked = async {
        let ack: async_nats::jetstream::context::PublishAckFuture = cluster
            .js
            .publish(cluster.names.events.clone(), payload)
            .await
            .map_err(|e: async_nats::jetstream::context::PublishError| e.to_string())?;
        ack.await.map_err(|e| e.to_string()).map(|_| ())
    };
    match tokio::time::timeout(PUBLISH_ACK_TIMEOUT, acked).await {
        Ok(Ok(_ack)) => {}
        Ok(Err(err)) => publish_failed(metrics, &err),
        Err(_) => publish_failed(metrics, "no acknowledgement in time"),
    }
}

fn publish_failed(metrics: &Metrics, reason: &str) {
    Metrics::inc(&metrics.cluster_publish_failures);
    tracing::warn!(
        reason,
        "publishing to the cluster stream failed; other nodes repair from PostgreSQL"
    );
}

async fn publish_live(ctx: &Context, event: &LiveEvent) {
    match serde_json::to_vec(event) {
        Ok(payload) => {
            let cluster = &ctx.cluster;
            if let Err(err) = cluster
                .client
                .publish(cluster.names.live.clone(), payload.into())
                .await
            {
                Metrics::inc(&ctx.metrics.cluster_publish_failures);
                tracing::debug!(error = %err, "publishing a live cluster event failed");
            }
        }
        Err(err) => tracing::error!(error = %err, "cannot encode a cluster event"),
    }
}

/// Reads the stream with an ordered consumer from "now" (this node loaded
/// everything before from PostgreSQL, and the first poll covers the
/// moments in between). The consumer recreates itself when it sees a gap
/// in the stream's sequence or misses heartbeats, which is what keeps a
/// reconnected NATS client from silently receiving nothing; and a
/// consumer that fails for good is created again here.
pub(super) async fn consume_stream(ctx: Context) {
    let cluster = &ctx.cluster;
    while !ctx.shutdown.is_triggered() {
        let consumer = cluster
            .stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::New,
                filter_subject: cluster.names.events.clone(),
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(consumer) => match consumer.messages().await {
                Ok(messages) => messages,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the cluster stream; retrying");
                    pause(&ctx.shutdown).await;
                    continue;
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot create a cluster stream consumer; retrying");
                pause(&ctx.shutdown).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                () = ctx.shutdown.wait() => return,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => on_stream_event(&ctx, &message.payload).await,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "cluster stream consumer failed; recreating it");
                    break;
                }
                None => break,
            }
        }
        pause(&ctx.shutdown).await;
    }
}

async fn on_stream_event(ctx: &Context, payload: &[u8]) {
    let event: StreamEvent = match serde_json::from_slice(payload) {
        Ok(event) => event,
        Err(err) => {
            tracing::debug!(error = %err, "undecodable cluster event skipped");
            return;
        }
    };
    let own = event.node() == ctx.cluster.node;
    if !own {
        Metrics::inc(&ctx.metrics.cluster_events_received);
    }
    match event {
        StreamEvent::Messages { messages, .. } => {
            let stored: Vec<_> = messages
                .into_iter()
                .filter_map(StoredMessage::from_wire)
                .collect();
            let accepted = ctx.hub.accept(stored.iter().map(|m| (m, None)));
            for gap in accepted.gaps {
                ctx.cluster.repair.schedule_gap(gap.room);
            }
            for room in accepted.unknown_rooms {
                ctx.cluster.repair.schedule_reload(room);
            }
        }
        // Applied here when it happened; this node's own commits, though,
        // are delivered from the stream like everyone else's (ClusterSink).
        StreamEvent::Room { .. }
        | StreamEvent::TokenRevoked { .. }
        | StreamEvent::ReadState { .. }
            if own => {}
        StreamEvent::Room { room, .. } => {
            // Re-read now, before the events after it: a message committed
            // after a LeaveRoom was answered must not reach the leaver's
            // other sockets here (see `Cluster::announce_room`).
            if let Some(room) = room_name(room) {
                reload(ctx, &room).await;
            }
        }
        StreamEvent::TokenRevoked { token_hash, .. } => {
            ctx.hub.close_token(&token_hash, CloseCode::LoggedOut);
        }
        StreamEvent::ReadState { user, state, .. } => match Username::parse(user) {
            Ok(user) => ctx.hub.push_read_state(&user, None, &state),
            Err(err) => {
                tracing::debug!(error = %err, "read-state event names an invalid user; skipped");
            }
        },
    }
}

/// Presence and typing of other nodes, and the expiry of silent nodes.
pub(super) async fn consume_live(ctx: Context) {
    let cluster = &ctx.cluster;
    let mut presence = RemotePresence::new(cluster.config.presence_ttl);
    while !ctx.shutdown.is_triggered() {
        let mut subscription = match cluster.client.subscribe(cluster.names.live.clone()).await {
            Ok(subscription) => subscription,
            Err(err) => {
                tracing::warn!(error = %err, "cannot subscribe to live cluster events; retrying");
                pause(&ctx.shutdown).await;
                continue;
            }
        };
        loop {
            let expiry = presence.poll_timeout();
            let expired = async {
                match expiry {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = ctx.shutdown.wait() => return,
                () = expired => {
                    let transitions = presence.handle_timeout(Instant::now());
                    apply_presence(&ctx, transitions);
                }
                next = subscription.next() => match next {
                    Some(message) => on_live_event(&ctx, &mut presence, &message.payload),
                    None => break,
                },
            }
        }
        pause(&ctx.shutdown).await;
    }
}

fn on_live_event(ctx: &Context, presence: &mut RemotePresence, payload: &[u8]) {
    let event: LiveEvent = match serde_json::from_slice(payload) {
        Ok(event) => event,
        Err(err) => {
            tracing::debug!(error = %err, "undecodable live cluster event skipped");
            return;
        }
    };
    if event.node() == ctx.cluster.node {
        return;
    }
    Metrics::inc(&ctx.metrics.cluster_events_received);
    let now = Instant::now();
    let transitions = match event {
        LiveEvent::Presence { node, user, online } => match Username::parse(user) {
            Ok(user) => presence.handle_delta(&node, user, online, now),
            Err(_) => Vec::new(),
        },
        LiveEvent::Snapshot {
            node,
            generation,
            users,
            last,
        } => {
            let users = users
                .into_iter()
                .filter_map(|u| Username::parse(u).ok())
                .collect();
            presence.handle_snapshot(&node, generation, users, last, now)
        }
        LiveEvent::NodeLeft { node } => presence.handle_node_gone(&node),
        LiveEvent::Typing {
            room, user, active, ..
        } => {
            if let (Some(room), Ok(user)) = (room_name(room), Username::parse(user)) {
                ctx.hub.remote_typing(&room, &user, active);
            }
            Vec::new()
        }
    };
    apply_presence(ctx, transitions);
}

fn apply_presence(ctx: &Context, transitions: Vec<Transition>) {
    for Transition { user, online } in transitions {
        ctx.hub.set_remote_online(&user, online);
    }
}

/// Every `sync_interval`, compares PostgreSQL's heads and membership
/// versions with the hub's; in between, serves the repair queue.
pub(super) async fn poll_storage(ctx: Context) {
    let mut tick = tokio::time::interval(ctx.cluster.config.sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown.wait() => return,
            _ = tick.tick() => match ctx.store.room_versions().await {
                Ok(versions) => {
                    let stale = ctx.hub.check_versions(&versions);
                    for room in stale.reload {
                        ctx.cluster.repair.schedule_reload(room);
                    }
                    for gap in stale.gaps {
                        ctx.cluster.repair.schedule_gap(gap.room);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cluster poll of room heads failed"),
            },
            () = ctx.cluster.repair.wake.notified() => {}
        }
        let work = ctx.cluster.repair.take();
        for room in work.reloads {
            reload(&ctx, &room).await;
        }
        for room in work.gaps {
            repair(&ctx.hub, ctx.store.as_ref(), &ctx.metrics, &room).await;
        }
    }
}

async fn reload(ctx: &Context, room: &RoomName) {
    match ctx.store.room_record(room).await {
        Ok(Some(record)) => {
            if ctx.hub.reconcile_room(record).is_some() {
                repair(&ctx.hub, ctx.store.as_ref(), &ctx.metrics, room).await;
            }
        }
        Ok(None) => tracing::debug!(%room, "a cluster event named a room storage does not have"),
        Err(err) => {
            tracing::warn!(%room, error = %err, "re-reading a room failed; the next poll retries");
        }
    }
}

/// Reads the room's undelivered seqs from storage and delivers them.
pub(super) async fn repair(hub: &Hub, store: &dyn Store, metrics: &Metrics, room: &RoomName) {
    while let Some(gap) = hub.gap(room) {
        let rows = match store
            .messages_between(room, gap.after, gap.up_to, REPAIR_PAGE)
            .await
        {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(%room, error = %err, "repair read failed; the next poll retries");
                return;
            }
        };
        if rows.is_empty() {
            tracing::warn!(%room, after = gap.after, up_to = gap.up_to, "repair found no rows");
            return;
        }
        metrics
            .cluster_repaired_messages
            .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        hub.accept(rows.iter().map(|m| (m, None)));
        if hub.gap(room).is_some_and(|after| after.after == gap.after) {
            return; // no progress: leave it to the next poll
        }
    }
}

async fn pause(shutdown: &Shutdown) {
    tokio::select! {
        () = shutdown.wait() => {}
        () = tokio::time::sleep(RETRY_PAUSE) => {}
    }
}
