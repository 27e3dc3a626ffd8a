//! The hub: rooms, memberships, live connections, and fan-out.
//!
//! The hub is the in-memory side of the server. Storage is the truth for
//! what happened; the hub knows who is connected, which rooms each
//! connection has activated, and pushes to them.
//!
//! # Delivery to a connection (§10.6, §12.4)
//!
//! Every connection owns an [`outbound_queue`] of [`Outbound`] items,
//! drained by its writer half in order, and bounded twice: in items
//! (`outbound_queue_frames`) and in bytes of encoded frames
//! (`outbound_queue_bytes`). The hub only ever `try_send`s into it: a full
//! queue means the client reads too slowly, and that connection alone is
//! closed with 4429 (counted in metrics). Nobody waits for a slow reader.
//!
//! A room's live messages reach a connection only after the room is
//! *activated* on it, by Resume, CreateRoom or JoinRoom. Activation and the
//! enqueueing of its [`Outbound::Activate`] marker (which carries the replay
//! range) happen under the hub lock, and fan-out also runs under that lock
//! in seq order. So in every queue, the replay of `last_seq+1..=head` comes
//! before the first live message of the room, which has seq `head+1`: no
//! gap, no repeat. A Resume queues all of its activations and its Resumed
//! reply as ONE item ([`Outbound::Resume`]), so that a Resume of any number
//! of rooms costs one queue slot; the writer replays its rooms in order and
//! then sends Resumed, and the argument above holds for each room.
//!
//! # Locking
//!
//! One `std::sync::Mutex` guards all state. Every critical section is
//! in-memory bookkeeping plus non-blocking `try_send`s, never an await, so a
//! blocking mutex is both correct and cheaper than an async one; and one
//! lock gives every push a single global order, which the activation
//! argument above relies on.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use confab_protocol::codec::encode_server_frame;
use confab_protocol::error::{CloseCode, Rejection};
use confab_protocol::names::{RoomName, Username};
use confab_protocol::relation::{self, RelationCaps};
use confab_protocol::rules::{self, ResumeDecision, TypingTracker};
use confab_protocol::wire::{
    self, ErrorCode, Member, Presence, Resumed, RoomInfo, RoomListUpdate, RoomResume, ServerFrame,
    Typing, presence, room_list_update, room_resume, server_frame::Body,
};
use confab_protocol::{capability, limits::ServerLimits};
use tokio::sync::{Notify, mpsc};

use crate::close::CloseSignal;

use crate::metrics::Metrics;
use crate::queue::{Cost, QueueRx, QueueTx, Refused};
use crate::storage::writer::{CommitSink, Committed};
use crate::storage::{RoomId, RoomRecord, RoomVersion, StoredMessage, UserId};

/// Most out-of-order messages a room holds while the missing seqs before
/// them are read from storage (cluster mode). Beyond it newer ones are
/// dropped: the repair reads them too, so the cap bounds memory, not delivery.
const MAX_PENDING_PER_ROOM: usize = 4096;

/// One item of a connection's outbound queue.
#[derive(Debug)]
pub enum Outbound {
    /// An encoded reply or push, sent as is.
    Frame(Bytes),
    /// A live Message push, shared by every recipient. Skipped when the
    /// connection already delivered this seq of the room (§10.6).
    Message(Arc<Push>),
    /// The room became active on this connection: first send every stored
    /// message with `replay_after < seq <= head` (read from storage), then
    /// count the room as delivered up to `head`.
    Activate {
        /// Room.
        room: Arc<RoomName>,
        /// Client's last seen seq.
        replay_after: u64,
        /// Room head at activation.
        head: u64,
        /// The connection's relation capabilities: replayed messages are
        /// sent as their fallback where one applies (§8.6.1).
        caps: RelationCaps,
    },
    /// A Resume (§10): replay each activation in order, then send the
    /// encoded Resumed reply. Boxed, so one item of any size stays small.
    Resume(Box<ResumeBatch>),
    /// A heartbeat Ping (§12.1), queued by the reader when one is due.
    Ping,
    /// Close the socket with this code once everything before it is sent.
    Close(CloseCode),
}

/// One room activated by a Resume: as [`Outbound::Activate`].
#[derive(Debug)]
pub struct Activation {
    /// Room.
    pub room: Arc<RoomName>,
    /// Client's last seen seq.
    pub replay_after: u64,
    /// Room head at activation.
    pub head: u64,
    /// The connection's relation capabilities (§8.6.1).
    pub caps: RelationCaps,
}

/// Everything a Resume queues, as one item.
#[derive(Debug)]
pub struct ResumeBatch {
    /// Rooms to replay, in the Resume's order.
    pub activations: Vec<Activation>,
    /// The encoded Resumed reply, sent after the last replay.
    pub reply: Bytes,
}

impl Cost for Outbound {
    /// What the item counts against `outbound_queue_bytes` (§12.4): the
    /// bytes of the encoded frames it holds. Replayed messages are read
    /// from storage by the writer one page at a time and are not queued.
    fn cost(&self) -> usize {
        match self {
            Outbound::Frame(bytes) => bytes.len(),
            Outbound::Message(push) => push.frame.len(),
            Outbound::Resume(batch) => batch.reply.len(),
            Outbound::Activate { .. } | Outbound::Ping | Outbound::Close(_) => 0,
        }
    }
}

/// The sending end of a connection's outbound queue (§12.4), held by the
/// hub and the connection's reader.
pub type OutboundTx = QueueTx<Outbound>;

/// The receiving end, drained by the connection's writer, which calls
/// `written` once an item is on its way to the socket.
pub type OutboundRx = QueueRx<Outbound>;

/// A connection's outbound queue: at most `outbound_queue_frames` items and
/// `outbound_queue_bytes` bytes of encoded frames (a Close item always fits
/// the byte bound, so a close is never refused for want of bytes).
pub fn outbound_queue(limits: &ServerLimits, metrics: Arc<Metrics>) -> (OutboundTx, OutboundRx) {
    crate::queue::queue(
        limits.outbound_queue_frames as usize,
        limits.outbound_queue_bytes as usize,
        metrics,
    )
}

// A queue's buffer holds this per slot (see [`Push`]).
const _: () = assert!(std::mem::size_of::<Outbound>() <= 40);

/// One committed message, encoded once for all of its recipients. Behind
/// one `Arc` so that queueing it costs one reference count per recipient
/// and keeps [`Outbound`] small: every connection's queue allocates its
/// slots in blocks of 32 up front, so the item size is paid per socket.
#[derive(Debug)]
pub struct Push {
    /// Room.
    pub room: Arc<RoomName>,
    /// Seq of the message.
    pub seq: u64,
    /// The encoded push.
    pub frame: Bytes,
}

/// Why a socket ends; the first decision wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// We close with this code.
    Close(CloseCode),
    /// The peer closed or vanished; only flush what tungstenite owes it.
    PeerGone,
}

/// Identifies one authenticated socket.
pub type ConnId = u64;

/// Optional capabilities granted to a connection (§3.4).
#[derive(Debug, Clone, Copy, Default)]
pub struct Capabilities {
    /// Typing pushes.
    pub typing: bool,
    /// Presence pushes.
    pub presence: bool,
    /// Room-list pushes.
    pub room_list_push: bool,
    /// Read-state pushes (§11.3).
    pub read_state: bool,
    /// Which relations it gets as they are, not as their fallback (§8.6.1).
    pub relations: RelationCaps,
}

impl Capabilities {
    /// From the negotiated names.
    pub fn from_names(names: &[String]) -> Self {
        let has = |cap: &str| names.iter().any(|n| n == cap);
        Self {
            typing: has(capability::TYPING),
            presence: has(capability::PRESENCE),
            room_list_push: has(capability::ROOM_LIST_PUSH),
            read_state: has(capability::READ_STATE),
            relations: RelationCaps::from_names(names),
        }
    }
}

/// What a connection registers with once authenticated.
#[derive(Debug)]
pub struct Registration {
    /// User name.
    pub user: Username,
    /// SHA-256 hex of the token it authenticated with, for logout (§5.4).
    pub token_hash: String,
    /// Granted capabilities.
    pub caps: Capabilities,
    /// Its outbound queue.
    pub outbound: OutboundTx,
    /// Out-of-band close request, seen by both halves of the connection
    /// even when the queue is full.
    pub close: CloseSignal,
}

#[derive(Debug)]
struct Connection {
    reg: Registration,
    active_rooms: HashSet<RoomName>,
}

#[derive(Debug)]
struct Room {
    id: RoomId,
    name: Arc<RoomName>,
    topic: String,
    epoch: String,
    head_seq: u64,
    last_activity_ms: i64,
    members: BTreeSet<Username>,
    /// Connections that activated this room (all of them members' sockets):
    /// fan-out walks this set instead of members → users → connections →
    /// active rooms, so a delivery costs one lookup, not four string hashes.
    active: HashSet<ConnId>,
    /// Membership version of `members` (see `Store::add_member`).
    member_version: u64,
    /// Changes made on this node whose version is not `member_version + 1`
    /// (a change from another node came in between, not seen yet): (version,
    /// user, joined). A record read from storage before them must not undo
    /// them, so [`Hub::reconcile_room`] applies those newer than the record
    /// on top of it. Cluster mode only; bounded by the changes made here
    /// within one sync interval.
    local_changes: Vec<(u64, Username, bool)>,
    /// Highest seq known to be stored (cluster mode): above `head_seq`
    /// when a message arrived before one it follows.
    known_head: u64,
    /// Messages with seq > `head_seq + 1`, held until the gap before them
    /// is filled from storage (cluster mode; always empty on one node).
    pending: BTreeMap<u64, (StoredMessage, Option<Instant>)>,
}

impl Room {
    /// A membership change made on this node, at `version` in storage.
    fn note_local_change(&mut self, version: u64, user: &Username, joined: bool) {
        if version == self.member_version + 1 && self.local_changes.is_empty() {
            self.member_version = version;
        } else if version > self.member_version {
            self.local_changes.push((version, user.clone(), joined));
        }
    }
}

/// Seqs of a room this node knows are stored but has not delivered:
/// `after < seq <= up_to`, to be read from storage (cluster mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Room.
    pub room: RoomName,
    /// Delivered head.
    pub after: u64,
    /// Highest known stored seq.
    pub up_to: u64,
}

/// What the hub tells the other nodes of a cluster (see `cluster`):
/// changes that started on this node. Changes learnt from other nodes are
/// applied without producing these, so nothing echoes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalChange {
    /// The user's first socket on this node authenticated.
    Online(Username),
    /// The user's last socket on this node closed.
    Offline(Username),
    /// A typing indicator of a user on this node started or stopped.
    Typing {
        /// Room.
        room: RoomName,
        /// Typist.
        user: Username,
        /// Started (true) or stopped.
        active: bool,
    },
    /// A token was revoked here (logout).
    TokenRevoked(String),
    /// A user's read marker moved here (§11.3).
    ReadState {
        /// Whose.
        user: Username,
        /// The state after the move.
        state: wire::ReadState,
    },
}

/// What [`Hub::check_versions`] found to differ from storage.
#[derive(Debug, Default)]
pub struct Stale {
    /// Rooms to re-read (unknown here, or members changed elsewhere).
    pub reload: Vec<RoomName>,
    /// Seqs stored but not delivered here.
    pub gaps: Vec<Gap>,
}

#[derive(Debug, Default)]
struct State {
    rooms: HashMap<RoomName, Room>,
    connections: HashMap<ConnId, Connection>,
    /// Open connections per user; a user is online while this is non-empty.
    user_connections: HashMap<Username, Vec<ConnId>>,
    /// Rooms per member.
    memberships: HashMap<Username, BTreeSet<RoomName>>,
    /// Connections that sent ListRooms{subscribe:true} and were granted
    /// room-list-push (§7.1); kept apart so a message does not scan every
    /// connection to find them.
    room_list_subscribers: HashSet<ConnId>,
    /// Users with a socket on another node of the cluster (cluster mode).
    remote_online: HashSet<Username>,
    next_conn: ConnId,
}

/// Rooms registry and fan-out. Shared as `Arc<Hub>`.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    typing: Mutex<TypingTracker<(RoomName, Username)>>,
    typing_changed: Notify,
    limits: ServerLimits,
    metrics: Arc<Metrics>,
    /// Where [`LocalChange`]s go, set once in cluster mode.
    cluster: OnceLock<mpsc::Sender<LocalChange>>,
}

fn not_found(room: &RoomName) -> Rejection {
    Rejection::new(
        ErrorCode::RoomNotFound,
        format!("room {room} does not exist; list rooms or create it"),
    )
}

pub(crate) fn not_member(room: &RoomName) -> Rejection {
    Rejection::new(
        ErrorCode::NotAMember,
        format!("you are not a member of room {room}; join it first"),
    )
}

/// A frame did not fit a connection's queue (§12.4): count the drop and, the
/// first time, close the connection with 4429. The client resumes without
/// loss, and nobody else waits for it.
pub fn overflowed(metrics: &Metrics, close: &CloseSignal, user: &Username) {
    Metrics::inc(&metrics.queue_drops);
    if close.decide(Ending::Close(CloseCode::SlowConsumer)) {
        Metrics::inc(&metrics.slow_consumer_closes);
        tracing::warn!(%user, "outbound queue full; closing slow consumer with 4429");
    }
}

/// Queues one item without waiting; see [`overflowed`] for a full queue.
fn deliver(metrics: &Metrics, conn: &Connection, item: Outbound) -> bool {
    match conn.reg.outbound.try_send(item) {
        Ok(()) => true,
        Err(Refused::Full(_)) => {
            overflowed(metrics, &conn.reg.close, &conn.reg.user);
            false
        }
        // The connection is ending; it no longer needs anything.
        Err(Refused::Closed(_)) => false,
    }
}

impl State {
    fn insert_room(&mut self, record: RoomRecord) {
        for member in &record.members {
            self.memberships
                .entry(member.clone())
                .or_default()
                .insert(record.name.clone());
        }
        self.rooms.insert(
            record.name.clone(),
            Room {
                id: record.id,
                name: Arc::new(record.name),
                topic: record.topic,
                epoch: record.epoch,
                head_seq: record.head_seq,
                last_activity_ms: record.last_activity_ms,
                members: record.members.into_iter().collect(),
                active: HashSet::new(),
                member_version: record.member_version,
                local_changes: Vec::new(),
                known_head: record.head_seq,
                pending: BTreeMap::new(),
            },
        );
    }

    /// Online anywhere: a socket here or on another node.
    fn is_online(&self, user: &Username) -> bool {
        self.user_connections
            .get(user)
            .is_some_and(|c| !c.is_empty())
            || self.remote_online.contains(user)
    }

    fn gap(&self, name: &RoomName) -> Option<Gap> {
        let room = self.rooms.get(name)?;
        (room.known_head > room.head_seq).then(|| Gap {
            room: name.clone(),
            after: room.head_seq,
            up_to: room.known_head,
        })
    }

    fn room_info(&self, room: &Room) -> RoomInfo {
        let online = room.members.iter().filter(|m| self.is_online(m)).count();
        RoomInfo {
            name: room.name.as_str().to_owned(),
            topic: room.topic.clone(),
            member_count: room.members.len() as u32,
            online_count: online as u32,
            last_activity_ms: room.last_activity_ms,
            // The highest seq known stored: in cluster mode it can be ahead
            // of what this node has pushed yet (the rest is on its way).
            head_seq: room.known_head,
            epoch: room.epoch.clone(),
        }
    }

    fn member_room(&self, room: &RoomName, user: &Username) -> Result<&Room, Rejection> {
        let found = self.rooms.get(room).ok_or_else(|| not_found(room))?;
        if found.members.contains(user) {
            Ok(found)
        } else {
            Err(not_member(room))
        }
    }

    /// Connections that activated the room (only members' sockets can),
    /// optionally filtered by capability and excluding one user.
    fn room_audience<'a>(
        &'a self,
        room: &'a RoomName,
        exclude: Option<&'a Username>,
        wants: impl Fn(&Capabilities) -> bool + 'a,
    ) -> impl Iterator<Item = &'a Connection> + 'a {
        let active = self.rooms.get(room).map(|r| &r.active);
        active
            .into_iter()
            .flatten()
            .filter_map(|id| self.connections.get(id))
            .filter(move |c| Some(&c.reg.user) != exclude && wants(&c.reg.caps))
    }

    /// Presence of `user` to the other members' connections that have the
    /// room active and the presence capability (§11.1).
    fn push_presence(
        &self,
        metrics: &Metrics,
        room: &RoomName,
        user: &Username,
        kind: presence::Kind,
    ) {
        let frame = encode_server_frame(&ServerFrame::push(Body::Presence(Presence {
            room: room.as_str().to_owned(),
            username: user.as_str().to_owned(),
            kind: kind as i32,
        })));
        for conn in self.room_audience(room, Some(user), |c| c.presence) {
            deliver(metrics, conn, Outbound::Frame(frame.clone()));
        }
    }

    fn push_room_list(&self, metrics: &Metrics, room: &RoomName, kind: room_list_update::Kind) {
        let Some(found) = self.rooms.get(room) else {
            return;
        };
        if self.room_list_subscribers.is_empty() {
            return;
        }
        let frame = encode_server_frame(&ServerFrame::push(Body::RoomListUpdate(RoomListUpdate {
            kind: kind as i32,
            room: Some(self.room_info(found)),
        })));
        for conn in self
            .room_list_subscribers
            .iter()
            .filter_map(|id| self.connections.get(id))
        {
            deliver(metrics, conn, Outbound::Frame(frame.clone()));
        }
    }

    /// Pushes ONLINE/OFFLINE for every room of `user`, and CHANGED for the
    /// rooms' online counts.
    fn push_online_change(&self, metrics: &Metrics, user: &Username, kind: presence::Kind) {
        let Some(rooms) = self.memberships.get(user) else {
            return;
        };
        for room in rooms {
            self.push_presence(metrics, room, user, kind);
            self.push_room_list(metrics, room, room_list_update::Kind::Changed);
        }
    }
}

impl Hub {
    /// A hub seeded with the stored rooms.
    pub fn new(rooms: Vec<RoomRecord>, limits: ServerLimits, metrics: Arc<Metrics>) -> Self {
        let mut state = State::default();
        for record in rooms {
            state.insert_room(record);
        }
        Self {
            state: Mutex::new(state),
            typing: Mutex::new(TypingTracker::new(
                limits.typing_ttl,
                limits.typing_push_interval,
            )),
            typing_changed: Notify::new(),
            limits,
            metrics,
            cluster: OnceLock::new(),
        }
    }

    /// Cluster mode: from now on, changes that start here are also queued
    /// on `changes` for the other nodes. A full queue drops the change and
    /// counts it; the periodic presence snapshot and storage poll of
    /// `cluster` repair what a dropped change would have said.
    pub fn set_cluster(&self, changes: mpsc::Sender<LocalChange>) {
        if self.cluster.set(changes).is_err() {
            tracing::warn!("the hub's cluster queue was already set; keeping the first");
        }
    }

    fn emit(&self, change: LocalChange) {
        if let Some(changes) = self.cluster.get()
            && changes.try_send(change).is_err()
        {
            Metrics::inc(&self.metrics.cluster_events_dropped);
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state for
        // a chat hub; keep serving rather than poisoning every connection.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an authenticated connection; pushes ONLINE if it is the
    /// user's first (§11.1). Refuses it when the user already holds
    /// `max_per_user` connections: the count and the insert happen
    /// under one lock, so concurrent Auths cannot overshoot the cap.
    pub fn register(&self, reg: Registration, max_per_user: u32) -> Result<ConnId, Rejection> {
        let mut state = self.state();
        let held = state.user_connections.get(&reg.user).map_or(0, Vec::len);
        if held >= max_per_user as usize {
            return Err(Rejection::too_many_connections(max_per_user));
        }
        state.next_conn += 1;
        let id = state.next_conn;
        let user = reg.user.clone();
        state.connections.insert(
            id,
            Connection {
                reg,
                active_rooms: HashSet::new(),
            },
        );
        let conns = state.user_connections.entry(user.clone()).or_default();
        conns.push(id);
        if conns.len() == 1 {
            if !state.remote_online.contains(&user) {
                state.push_online_change(&self.metrics, &user, presence::Kind::Online);
            }
            self.emit(LocalChange::Online(user));
        }
        Ok(id)
    }

    /// Forgets a connection; pushes OFFLINE if it was the user's last.
    pub fn unregister(&self, id: ConnId) {
        let mut state = self.state();
        let Some(conn) = state.connections.remove(&id) else {
            return;
        };
        state.room_list_subscribers.remove(&id);
        for room in &conn.active_rooms {
            if let Some(found) = state.rooms.get_mut(room) {
                found.active.remove(&id);
            }
        }
        let user = conn.reg.user;
        let now_offline = match state.user_connections.get_mut(&user) {
            Some(conns) => {
                conns.retain(|c| *c != id);
                conns.is_empty()
            }
            None => false,
        };
        if now_offline {
            state.user_connections.remove(&user);
            if !state.remote_online.contains(&user) {
                state.push_online_change(&self.metrics, &user, presence::Kind::Offline);
            }
            self.emit(LocalChange::Offline(user));
        }
    }

    /// Cluster mode: whether `user` has a socket on some other node. Pushes
    /// ONLINE or OFFLINE when that changes whether the user is online at
    /// all (a user with sockets here stays online whatever other nodes say).
    pub fn set_remote_online(&self, user: &Username, online: bool) {
        let mut state = self.state();
        let was = state.is_online(user);
        if online {
            state.remote_online.insert(user.clone());
        } else {
            state.remote_online.remove(user);
        }
        let now = state.is_online(user);
        if was != now {
            let kind = if now {
                presence::Kind::Online
            } else {
                presence::Kind::Offline
            };
            state.push_online_change(&self.metrics, user, kind);
        }
    }

    /// Users with at least one socket on this node.
    pub fn local_online_users(&self) -> Vec<Username> {
        self.state().user_connections.keys().cloned().collect()
    }

    /// Asks every socket authenticated with this token to close (logout,
    /// §5.4), here and, in cluster mode, on every other node.
    pub fn revoke_token(&self, token_hash: &str, code: CloseCode) -> usize {
        self.emit(LocalChange::TokenRevoked(token_hash.to_owned()));
        self.close_token(token_hash, code)
    }

    /// A user's read marker moved: pushes the new state to the
    /// user's connections granted `read-state`, but `except` (the one that
    /// asked, which gets it as the reply), and, in cluster mode, to the
    /// other nodes.
    pub fn read_state_moved(
        &self,
        user: &Username,
        except: Option<ConnId>,
        state: wire::ReadState,
    ) {
        self.push_read_state(user, except, &state);
        self.emit(LocalChange::ReadState {
            user: user.clone(),
            state,
        });
    }

    /// Pushes a read state to the user's connections here granted
    /// `read-state`, but `except`.
    pub fn push_read_state(
        &self,
        user: &Username,
        except: Option<ConnId>,
        state: &wire::ReadState,
    ) {
        let state_guard = self.state();
        let Some(ids) = state_guard.user_connections.get(user) else {
            return;
        };
        let frame = encode_server_frame(&ServerFrame::push(Body::ReadState(state.clone())));
        for conn in ids
            .iter()
            .filter(|id| Some(**id) != except)
            .filter_map(|id| state_guard.connections.get(id))
            .filter(|c| c.reg.caps.read_state)
        {
            deliver(&self.metrics, conn, Outbound::Frame(frame.clone()));
        }
    }

    /// Asks every socket of this node authenticated with this token to close.
    pub fn close_token(&self, token_hash: &str, code: CloseCode) -> usize {
        let state = self.state();
        let mut closed = 0;
        for conn in state
            .connections
            .values()
            .filter(|c| c.reg.token_hash == token_hash)
        {
            conn.reg.close.decide(Ending::Close(code));
            closed += 1;
        }
        closed
    }

    /// Names of the rooms the hub has `user` as a member of, sorted.
    pub fn room_names_of(&self, user: &Username) -> Vec<RoomName> {
        self.state()
            .memberships
            .get(user)
            .map(|rooms| rooms.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The user's rooms, for Welcome.rooms (§6.3), sorted by name.
    pub fn rooms_of(&self, user: &Username) -> Vec<RoomInfo> {
        let state = self.state();
        let Some(names) = state.memberships.get(user) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|n| state.rooms.get(n))
            .map(|r| state.room_info(r))
            .collect()
    }

    /// One page of every room, by last activity (newest first), then name
    /// (§7.1): the rooms after `cursor`, at most `limit` (already clamped by
    /// [`rules::room_list_limit`]). With `subscribe`, the connection gets
    /// RoomListUpdate pushes if it has the room-list-push capability.
    ///
    /// Only the page's rooms are turned into RoomInfo (which counts online
    /// members), so a page costs O(rooms) comparisons but O(limit) replies.
    pub fn room_list(
        &self,
        conn: ConnId,
        subscribe: bool,
        cursor: Option<&rules::RoomListCursor>,
        limit: usize,
    ) -> wire::RoomList {
        let mut state = self.state();
        if subscribe
            && state
                .connections
                .get(&conn)
                .is_some_and(|c| c.reg.caps.room_list_push)
        {
            state.room_list_subscribers.insert(conn);
        }
        let keys: Vec<(i64, &str, &Room)> = state
            .rooms
            .values()
            .map(|r| (r.last_activity_ms, r.name.as_str(), r))
            .collect();
        let (page, next) = rules::room_list_page(keys, cursor, limit);
        wire::RoomList {
            rooms: page.into_iter().map(|r| state.room_info(r)).collect(),
            next_cursor: next.map(|c| c.encode()).unwrap_or_default(),
        }
    }

    /// Id of an existing room.
    pub fn room_id(&self, room: &RoomName) -> Result<RoomId, Rejection> {
        self.state()
            .rooms
            .get(room)
            .map(|r| r.id)
            .ok_or_else(|| not_found(room))
    }

    /// Id of a room `user` is a member of (§8.1, §9, §11.2 authorization).
    pub fn member_room_id(&self, room: &RoomName, user: &Username) -> Result<RoomId, Rejection> {
        self.state().member_room(room, user).map(|r| r.id)
    }

    /// The relation capabilities of a connection (§8.6.1); none for a
    /// connection the hub no longer knows.
    pub fn relation_caps(&self, conn: ConnId) -> RelationCaps {
        self.state()
            .connections
            .get(&conn)
            .map(|c| c.reg.caps.relations)
            .unwrap_or_default()
    }

    /// Members of a room, sorted by name, for a member (§7.5).
    pub fn members(&self, room: &RoomName, user: &Username) -> Result<Vec<Member>, Rejection> {
        let state = self.state();
        let found = state.member_room(room, user)?;
        Ok(found
            .members
            .iter()
            .map(|m| Member {
                username: m.as_str().to_owned(),
                online: state.is_online(m),
            })
            .collect())
    }

    /// Marks `room` active on `conn` (§10.6) and returns what the writer
    /// must replay; the caller queues it before releasing the lock.
    fn mark_active(
        state: &mut State,
        conn: ConnId,
        room: &RoomName,
        replay_after: u64,
    ) -> Option<Activation> {
        let found = state.rooms.get_mut(room)?;
        let (name, head) = (Arc::clone(&found.name), found.head_seq);
        let c = state.connections.get_mut(&conn)?;
        c.active_rooms.insert(room.clone());
        found.active.insert(conn);
        Some(Activation {
            room: name,
            replay_after: replay_after.min(head),
            head,
            caps: c.reg.caps.relations,
        })
    }

    fn activate(&self, state: &mut State, conn: ConnId, room: &RoomName, replay_after: u64) {
        let Some(Activation {
            room,
            replay_after,
            head,
            caps,
        }) = Self::mark_active(state, conn, room, replay_after)
        else {
            return;
        };
        if let Some(c) = state.connections.get(&conn) {
            deliver(
                &self.metrics,
                c,
                Outbound::Activate {
                    room,
                    replay_after,
                    head,
                    caps,
                },
            );
        }
    }

    fn reply(&self, state: &State, conn: ConnId, frame: &ServerFrame) {
        if let Some(c) = state.connections.get(&conn) {
            deliver(
                &self.metrics,
                c,
                Outbound::Frame(encode_server_frame(frame)),
            );
        }
    }

    /// A room just stored by CreateRoom (§7.2): registers it with its
    /// creator, activates it on `conn` and queues RoomJoined there.
    pub fn room_created(&self, conn: ConnId, record: RoomRecord, request_id: u64) {
        let mut state = self.state();
        let name = record.name.clone();
        state.insert_room(record);
        self.activate(&mut state, conn, &name, 0);
        self.reply_joined(&state, conn, &name, request_id);
        // The creator is the only member, so there is nobody to tell JOINED (§11.1.5).
        state.push_room_list(&self.metrics, &name, room_list_update::Kind::Added);
    }

    fn reply_joined(&self, state: &State, conn: ConnId, room: &RoomName, request_id: u64) {
        if let Some(found) = state.rooms.get(room) {
            let info = state.room_info(found);
            let frame = ServerFrame::reply(
                request_id,
                Body::RoomJoined(wire::RoomJoined { room: Some(info) }),
            );
            self.reply(state, conn, &frame);
        }
    }

    /// A membership just stored by JoinRoom (§7.3): activates the room on
    /// `conn` from its current head and queues RoomJoined. Idempotent.
    ///
    /// `member_version` is what the store returned; the hub takes it only
    /// when it is the next version after its own, so that a change made on
    /// another node in between is still noticed by `check_versions`.
    pub fn member_joined(
        &self,
        conn: ConnId,
        room: &RoomName,
        user: &Username,
        request_id: u64,
        member_version: u64,
    ) -> Result<(), Rejection> {
        let mut state = self.state();
        let found = state.rooms.get_mut(room).ok_or_else(|| not_found(room))?;
        let newly = found.members.insert(user.clone());
        if newly {
            found.note_local_change(member_version, user, true);
        }
        state
            .memberships
            .entry(user.clone())
            .or_default()
            .insert(room.clone());
        let already_active = state
            .connections
            .get(&conn)
            .is_some_and(|c| c.active_rooms.contains(room));
        if !already_active {
            let head = state.rooms.get(room).map_or(0, |r| r.head_seq);
            self.activate(&mut state, conn, room, head);
        }
        self.reply_joined(&state, conn, room, request_id);
        if newly {
            // §11.1.5, §11.1.7: to the other members, only on a real change.
            state.push_presence(&self.metrics, room, user, presence::Kind::Joined);
            state.push_room_list(&self.metrics, room, room_list_update::Kind::Changed);
        }
        Ok(())
    }

    /// A membership just removed by LeaveRoom (§7.4): the room goes inactive
    /// on every connection of the user. `member_version` as in
    /// [`Hub::member_joined`].
    pub fn member_left(&self, room: &RoomName, user: &Username, member_version: u64) {
        let mut state = self.state();
        if let Some(found) = state.rooms.get_mut(room)
            && found.members.remove(user)
        {
            found.note_local_change(member_version, user, false);
        }
        Self::remove_member(&self.metrics, &mut state, room, user);
    }

    /// The rest of a leave, wherever it happened: tell the room, forget the
    /// membership, deactivate the room on the user's sockets here.
    fn remove_member(metrics: &Metrics, state: &mut State, room: &RoomName, user: &Username) {
        // §11.1.6: to the remaining members.
        state.push_presence(metrics, room, user, presence::Kind::Left);
        if let Some(rooms) = state.memberships.get_mut(user) {
            rooms.remove(room);
        }
        let conn_ids = state
            .user_connections
            .get(user)
            .cloned()
            .unwrap_or_default();
        for id in conn_ids {
            if let Some(c) = state.connections.get_mut(&id) {
                c.active_rooms.remove(room);
            }
            if let Some(found) = state.rooms.get_mut(room) {
                found.active.remove(&id);
            }
        }
        state.push_room_list(metrics, room, room_list_update::Kind::Changed);
    }

    /// §10.3 for every room of a Resume, then the Resumed reply, all queued
    /// on `conn` as one item under one lock, so no live message of a
    /// resumed room can come between its replay and the reply, and a
    /// Resume of any number of rooms takes one queue slot (§10.1).
    pub fn resume(
        &self,
        conn: ConnId,
        user: &Username,
        positions: &[wire::RoomPosition],
        request_id: u64,
    ) {
        let mut state = self.state();
        let mut results = Vec::with_capacity(positions.len());
        let mut activations = Vec::with_capacity(positions.len());
        for pos in positions {
            let not_a_member = RoomResume {
                room: pos.room.clone(),
                status: room_resume::Status::NotAMember as i32,
                ..RoomResume::default()
            };
            let Ok(room) = RoomName::parse(pos.room.as_str()) else {
                results.push(not_a_member);
                continue;
            };
            let Ok(found) = state.member_room(&room, user) else {
                results.push(not_a_member);
                continue;
            };
            let (head, epoch) = (found.head_seq, found.epoch.clone());
            let decision = rules::resume_decision(
                pos.last_seq,
                &pos.epoch,
                &epoch,
                head,
                self.limits.max_resume_replay,
            );
            let (status, replay_after) = match decision {
                ResumeDecision::Replay { after_seq } => (room_resume::Status::Replayed, after_seq),
                ResumeDecision::GapTooLarge => (room_resume::Status::GapTooLarge, head),
                ResumeDecision::EpochChanged => (room_resume::Status::EpochChanged, head),
            };
            activations.extend(Self::mark_active(&mut state, conn, &room, replay_after));
            let replayed = u32::try_from(head - replay_after).unwrap_or(u32::MAX);
            results.push(RoomResume {
                room: pos.room.clone(),
                status: status as i32,
                head_seq: head,
                epoch,
                replayed: if status == room_resume::Status::Replayed {
                    replayed
                } else {
                    0
                },
            });
        }
        let frame = ServerFrame::reply(request_id, Body::Resumed(Resumed { rooms: results }));
        if let Some(c) = state.connections.get(&conn) {
            let batch = ResumeBatch {
                activations,
                reply: encode_server_frame(&frame),
            };
            deliver(&self.metrics, c, Outbound::Resume(Box::new(batch)));
        }
    }

    /// §11.2: records SetTyping from a member and pushes the change to the
    /// other members' connections that have the typing capability.
    pub fn set_typing(
        &self,
        room: &RoomName,
        user: &Username,
        active: bool,
        now: Instant,
    ) -> Result<(), Rejection> {
        let state = self.state();
        state.member_room(room, user)?;
        let change = self
            .typing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handle_set((room.clone(), user.clone()), active, now);
        match change {
            Some(change) => {
                self.local_typing(&state, change.key.0, change.key.1, change.active);
                self.typing_changed.notify_one();
            }
            // A renewal inside the push interval: the timer moved, nobody is told.
            // The expiry task need not hear of it: waking at the old expiry,
            // it finds nothing due and sleeps until the new one.
            None if active => Metrics::inc(&self.metrics.typing_coalesced),
            None => {}
        }
        Ok(())
    }

    /// A typing change of a user on this node: pushed here and told to the
    /// other nodes.
    fn local_typing(&self, state: &State, room: RoomName, user: Username, active: bool) {
        self.push_typing(state, &room, &user, active);
        self.emit(LocalChange::Typing { room, user, active });
    }

    /// Cluster mode: a typing change of a user on another node, pushed to
    /// this node's audience (§11.2). Each client expires an indicator by its
    /// ttl_ms, so one whose stop was lost with a node still ends.
    pub fn remote_typing(&self, room: &RoomName, user: &Username, active: bool) {
        let state = self.state();
        if state.member_room(room, user).is_ok() {
            self.push_typing(&state, room, user, active);
        }
    }

    fn push_typing(&self, state: &State, room: &RoomName, user: &Username, active: bool) {
        let frame = encode_server_frame(&ServerFrame::push(Body::Typing(Typing {
            room: room.as_str().to_owned(),
            username: user.as_str().to_owned(),
            active,
            ttl_ms: u32::try_from(self.limits.typing_ttl.as_millis()).unwrap_or(u32::MAX),
        })));
        for conn in state.room_audience(room, Some(user), |c| c.typing) {
            deliver(&self.metrics, conn, Outbound::Frame(frame.clone()));
        }
    }

    /// Pushes active=false for expired typing indicators; returns when the
    /// next one expires.
    pub fn expire_typing(&self, now: Instant) -> Option<Instant> {
        let state = self.state();
        let mut typing = self.typing.lock().unwrap_or_else(|e| e.into_inner());
        for change in typing.handle_timeout(now) {
            self.local_typing(&state, change.key.0, change.key.1, false);
        }
        typing.poll_timeout()
    }

    /// Runs typing expiry until shutdown (§11.2).
    pub async fn run_typing_expiry(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        loop {
            let next = self.expire_typing(Instant::now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.wait() => return,
                () = self.typing_changed.notified() => {}
                () = sleep => {}
            }
        }
    }

    /// Counts for /metrics: (rooms, users online).
    pub fn gauges(&self) -> (usize, usize) {
        let state = self.state();
        (state.rooms.len(), state.user_connections.len())
    }
}

impl Hub {
    /// Takes committed messages, from this node's writer or (cluster mode)
    /// from other nodes and storage, and delivers each exactly once in seq
    /// order (§8.4, §10.6): a seq at or below the room's head was delivered
    /// already and is skipped; the next seq is delivered, then any held
    /// ones that follow it; a later one is held until the seqs before it
    /// arrive. Returns the rooms that now have a gap to read from storage,
    /// and the names of rooms this node does not know yet.
    pub fn accept<'m>(
        &self,
        messages: impl IntoIterator<Item = (&'m StoredMessage, Option<Instant>)>,
    ) -> Accepted {
        let mut state = self.state();
        let mut typing = self.typing.lock().unwrap_or_else(|e| e.into_inner());
        let mut accepted = Accepted::default();
        let mut touched: Vec<&RoomName> = Vec::new();
        for (message, received) in messages {
            let Some(room) = state.rooms.get_mut(&message.room) else {
                if !accepted.unknown_rooms.contains(&message.room) {
                    accepted.unknown_rooms.push(message.room.clone());
                }
                continue;
            };
            let head = room.head_seq;
            if message.seq <= head {
                Metrics::inc(&self.metrics.cluster_duplicates_skipped);
                continue;
            }
            room.known_head = room.known_head.max(message.seq);
            // The room list reports known_head; its activity goes with it,
            // even while the message waits here for the ones before it.
            room.last_activity_ms = room.last_activity_ms.max(message.server_ts_ms);
            touched.push(&message.room);
            if message.seq > head + 1 {
                if room.pending.len() < MAX_PENDING_PER_ROOM {
                    room.pending
                        .insert(message.seq, (message.clone(), received));
                }
                continue;
            }
            self.deliver_message(&mut state, &mut typing, message, received);
            // Then whatever was held waiting for it, in order.
            while let Some(room) = state.rooms.get_mut(&message.room) {
                let next = room.head_seq + 1;
                // Anything at or below the head can no longer be delivered.
                while room
                    .pending
                    .first_key_value()
                    .is_some_and(|(s, _)| *s < next)
                {
                    room.pending.pop_first();
                }
                let Some((held, received)) = room.pending.remove(&next) else {
                    break;
                };
                self.deliver_message(&mut state, &mut typing, &held, received);
            }
        }
        // Only the rooms this call touched: a batch costs O(its rooms).
        touched.sort_unstable();
        touched.dedup();
        accepted.gaps = touched.into_iter().filter_map(|r| state.gap(r)).collect();
        accepted
    }

    /// One message, next in its room's order: fan-out, head, typing.
    fn deliver_message(
        &self,
        state: &mut State,
        typing: &mut TypingTracker<(RoomName, Username)>,
        message: &StoredMessage,
        received: Option<Instant>,
    ) {
        let Some(room) = state.rooms.get_mut(&message.room) else {
            return;
        };
        room.head_seq = message.seq;
        room.known_head = room.known_head.max(message.seq);
        room.last_activity_ms = room.last_activity_ms.max(message.server_ts_ms);
        let wire = message.to_wire();
        let name = Arc::clone(&room.name);
        let push = |frame: Bytes| {
            Arc::new(Push {
                room: Arc::clone(&name),
                seq: message.seq,
                frame,
            })
        };
        // §8.6.1: a relation is encoded at most twice, as stored and as
        // its fallback; which one a connection gets depends only on its
        // capabilities.
        let mut fallbacks: Vec<(RelationCaps, Option<Arc<Push>>)> = Vec::new();
        // Encoded from the frame that owns the message, which is then taken
        // back for the fallbacks: a plain message is not copied.
        let frame = ServerFrame::push(Body::Message(wire));
        let as_stored = push(encode_server_frame(&frame));
        let Some(Body::Message(wire)) = frame.body else {
            return;
        };
        let fallback = |caps: RelationCaps| relation::fallback(&wire, caps);
        let mut delivered = 0u64;
        for conn in state.room_audience(&name, None, |_| true) {
            let caps = conn.reg.caps.relations;
            let item = if wire.relation.is_none() && !wire.redacted {
                Arc::clone(&as_stored)
            } else {
                let known = fallbacks.iter().find(|(c, _)| *c == caps);
                let chosen = match known {
                    Some((_, chosen)) => chosen.clone(),
                    None => {
                        let chosen = fallback(caps).map(|m| {
                            push(encode_server_frame(&ServerFrame::push(Body::Message(m))))
                        });
                        fallbacks.push((caps, chosen.clone()));
                        chosen
                    }
                };
                chosen.unwrap_or_else(|| Arc::clone(&as_stored))
            };
            if deliver(&self.metrics, conn, Outbound::Message(item)) {
                delivered += 1;
            }
        }
        self.metrics
            .fanout_deliveries
            .fetch_add(delivered, std::sync::atomic::Ordering::Relaxed);
        if let Some(received) = received {
            self.metrics.observe_send_to_deliver(received.elapsed());
        }
        // §11.2: a sent message ends the sender's typing (a typist on this
        // node; one on another node is ended by that node).
        if let Ok(sender) = Username::parse(message.sender.as_str())
            && typing
                .handle_set(
                    (message.room.clone(), sender.clone()),
                    false,
                    Instant::now(),
                )
                .is_some()
        {
            self.local_typing(state, message.room.clone(), sender, false);
        }
        state.push_room_list(
            &self.metrics,
            &message.room,
            room_list_update::Kind::Changed,
        );
    }

    /// Cluster mode: `seq` of `room` is stored; a repair will deliver it.
    pub fn note_stored(&self, room: &RoomName, seq: u64) {
        if let Some(found) = self.state().rooms.get_mut(room) {
            found.known_head = found.known_head.max(seq);
        }
    }

    /// The room's undelivered stored seqs, if any (cluster mode).
    pub fn gap(&self, room: &RoomName) -> Option<Gap> {
        self.state().gap(room)
    }

    /// Cluster mode: compares storage's heads and membership versions with
    /// this node's, and says what to re-read.
    pub fn check_versions(&self, versions: &[RoomVersion]) -> Stale {
        let mut state = self.state();
        let mut stale = Stale::default();
        for version in versions {
            let Some(room) = state.rooms.get_mut(&version.name) else {
                stale.reload.push(version.name.clone());
                continue;
            };
            if version.member_version > room.member_version {
                stale.reload.push(version.name.clone());
            }
            room.known_head = room.known_head.max(version.head_seq);
            // As in `accept`: a head the room list reports comes with its time.
            room.last_activity_ms = room.last_activity_ms.max(version.last_activity_ms);
            if room.known_head > room.head_seq {
                stale.gaps.extend(state.gap(&version.name));
            }
        }
        stale
    }

    /// Cluster mode: a room as storage has it now, read because it is new
    /// here or its members changed on another node. Applies what differs
    /// and tells this node's sockets as if it had happened here: RoomList
    /// ADDED or CHANGED, JOINED and LEFT presence. A record older than what
    /// the hub holds (read before a change made here) is ignored. Returns
    /// the room's gap, if its head moved past what was delivered here.
    pub fn reconcile_room(&self, record: RoomRecord) -> Option<Gap> {
        let mut state = self.state();
        let name = record.name.clone();
        let Some(room) = state.rooms.get_mut(&name) else {
            // Nobody here has it active yet: activation replays from storage
            // up to the head, so the head read with the record is delivered.
            state.insert_room(record);
            state.push_room_list(&self.metrics, &name, room_list_update::Kind::Added);
            return None;
        };
        room.known_head = room.known_head.max(record.head_seq);
        room.last_activity_ms = room.last_activity_ms.max(record.last_activity_ms);
        if record.member_version > room.member_version {
            room.member_version = record.member_version;
            room.topic = record.topic;
            let mut now: BTreeSet<Username> = record.members.into_iter().collect();
            // Changes made here after the record was read stay made.
            room.local_changes
                .retain(|(version, _, _)| *version > record.member_version);
            for (_, user, joined) in &room.local_changes {
                if *joined {
                    now.insert(user.clone());
                } else {
                    now.remove(user);
                }
            }
            let joined: Vec<Username> = now.difference(&room.members).cloned().collect();
            let left: Vec<Username> = room.members.difference(&now).cloned().collect();
            room.members = now;
            for user in &joined {
                state
                    .memberships
                    .entry(user.clone())
                    .or_default()
                    .insert(name.clone());
                state.push_presence(&self.metrics, &name, user, presence::Kind::Joined);
            }
            for user in &left {
                Self::remove_member(&self.metrics, &mut state, &name, user);
            }
            if !joined.is_empty() {
                state.push_room_list(&self.metrics, &name, room_list_update::Kind::Changed);
            }
        }
        state.gap(&name)
    }
}

/// What [`Hub::accept`] could not deliver yet.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Rooms with stored seqs not delivered here: read them from storage.
    pub gaps: Vec<Gap>,
    /// Rooms this node does not know: read their records.
    pub unknown_rooms: Vec<RoomName>,
}

impl CommitSink for Hub {
    /// Fan-out of this node's commits (§8.4): each push is encoded once and
    /// the shared bytes queued on every connection that activated the room.
    /// On one node the writer is the only source of messages, so they
    /// always come in seq order and nothing is ever held.
    fn publish(&self, committed: &[Committed]) {
        let accepted = self.accept(committed.iter().map(|c| (&c.message, Some(c.received))));
        if !accepted.gaps.is_empty() {
            tracing::debug!(
                gaps = accepted.gaps.len(),
                "commits arrived ahead of others"
            );
        }
    }
}

/// The id a connection uses for a user in storage calls.
#[derive(Debug, Clone)]
pub struct AuthedUser {
    /// Id.
    pub id: UserId,
    /// Name.
    pub name: Username,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Username {
        Username::parse(name).expect("valid user")
    }

    fn record(version: u64, head: u64, members: &[&str]) -> RoomRecord {
        RoomRecord {
            id: 1,
            name: RoomName::parse("lobby").expect("valid room"),
            topic: String::new(),
            epoch: "e".into(),
            head_seq: head,
            last_activity_ms: 0,
            members: members.iter().map(|m| user(m)).collect(),
            member_version: version,
        }
    }

    fn member_names(hub: &Hub) -> Vec<String> {
        let room = RoomName::parse("lobby").expect("valid room");
        hub.members(&room, &user("alice"))
            .expect("alice is a member")
            .into_iter()
            .map(|m| m.username)
            .collect()
    }

    fn message(seq: u64) -> StoredMessage {
        StoredMessage {
            room: RoomName::parse("lobby").expect("valid room"),
            seq,
            message_id: format!("m{seq}"),
            sender: "alice".into(),
            client_msg_id: format!("c{seq}"),
            text: "hi".into(),
            kind: 1,
            server_ts_ms: 0,
            redacted: false,
            relation: None,
        }
    }

    fn hub(record: RoomRecord) -> Hub {
        Hub::new(vec![record], ServerLimits::default(), Arc::default())
    }

    /// Cluster mode: a room record read from storage before a join made on
    /// this node (whose version came after another node's change) must not
    /// undo the join.
    #[test]
    fn a_stale_record_does_not_undo_a_membership_made_here() {
        let hub = hub(record(0, 0, &["alice"]));
        let lobby = RoomName::parse("lobby").expect("valid room");
        // Bob joined elsewhere (version 1, not seen yet); carol joins here at 2.
        hub.member_joined(999, &lobby, &user("carol"), 1, 2)
            .expect("room exists");
        // The record read before carol's join: bob, no carol.
        assert_eq!(hub.reconcile_room(record(1, 0, &["alice", "bob"])), None);
        assert_eq!(member_names(&hub), ["alice", "bob", "carol"]);
        // A record at or below what the hub holds changes nothing.
        hub.reconcile_room(record(1, 0, &["alice"]));
        assert_eq!(member_names(&hub), ["alice", "bob", "carol"]);
        // The record that includes it settles the version.
        hub.reconcile_room(record(2, 0, &["alice", "bob", "carol"]));
        let stale = hub.check_versions(&[RoomVersion {
            id: 1,
            name: lobby,
            head_seq: 0,
            last_activity_ms: 0,
            member_version: 2,
        }]);
        assert!(
            stale.reload.is_empty() && stale.gaps.is_empty(),
            "{stale:?}"
        );
    }

    /// Cluster mode: a head learned before its message arrives (from
    /// storage's versions, or a message held for the ones before it) is
    /// listed with that message's time, so the room list's order (§7.1,
    /// by last activity) agrees with the heads it shows.
    #[test]
    fn a_head_known_before_delivery_comes_with_its_time() {
        let hub = hub(record(0, 0, &["alice"]));
        let lobby = RoomName::parse("lobby").expect("valid room");
        let listed = |hub: &Hub| {
            let room = hub.rooms_of(&user("alice")).remove(0);
            (room.head_seq, room.last_activity_ms)
        };
        hub.check_versions(&[RoomVersion {
            id: 1,
            name: lobby.clone(),
            head_seq: 1,
            last_activity_ms: 500,
            member_version: 0,
        }]);
        assert_eq!(listed(&hub), (1, 500));
        let mut early = message(3);
        early.server_ts_ms = 900;
        hub.accept([(&early, None)]);
        assert_eq!(listed(&hub), (3, 900));
    }

    /// Messages from several sources: each seq delivered once, in order;
    /// a later one is held and its gap reported until the gap is filled.
    #[test]
    fn accept_holds_what_comes_early_and_skips_what_came_before() {
        let hub = hub(record(0, 0, &["alice"]));
        let lobby = RoomName::parse("lobby").expect("valid room");
        let (one, two, three) = (message(1), message(2), message(3));
        let early = hub.accept([(&three, None)]);
        assert_eq!(
            early.gaps,
            [Gap {
                room: lobby.clone(),
                after: 0,
                up_to: 3
            }]
        );
        let still = hub.accept([(&one, None)]);
        assert_eq!(still.gaps.len(), 1, "2 is still missing");
        let filled = hub.accept([(&two, None), (&one, None), (&three, None)]);
        assert!(filled.gaps.is_empty(), "{filled:?}");
        assert_eq!(hub.gap(&lobby), None);
        // Everything came: the head is 3 and a repeat changes nothing.
        assert!(hub.accept([(&two, None)]).gaps.is_empty());
        assert_eq!(hub.rooms_of(&user("alice"))[0].head_seq, 3);
        let unknown = StoredMessage {
            room: RoomName::parse("elsewhere").expect("valid room"),
            ..message(1)
        };
        assert_eq!(hub.accept([(&unknown, None)]).unknown_rooms.len(), 1);
    }
}
