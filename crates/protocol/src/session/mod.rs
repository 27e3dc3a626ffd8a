//! The sans-IO client session state machine.
//!
//! Spec: §6 (authentication), §8-§10 (messages, history, resume), §12.1
//! (liveness) and §14 (client behaviour). The REPL client, the bot SDK and
//! the conformance suite all drive this one machine, in the style of
//! `quinn-proto`:
//!
//! - `handle_*` feeds in what happened: a transport opened or closed, a frame
//!   arrived, time passed. Time is always an argument (`now`), randomness an
//!   RNG argument; nothing here reads a clock or touches a socket.
//! - `poll_transmit` yields frames to write, `poll_event` things to show,
//!   `poll_timeout` the next instant `handle_timeout` must be called.
//! - Commands (`send_message`, `join`, ...) queue requests.
//!
//! It guarantees, for a correct server: every message is shown once, in seq
//! order per room, with gaps filled from history; sends survive reconnects in
//! the outbox and are resent in order with their original `client_msg_id`.

mod backoff;
mod outbox;
mod rooms;
mod sends;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand_core::RngCore;

pub use backoff::Backoff;
pub use outbox::{Outbox, OutboxEntry};
use rooms::{Accepted, FillNext, RoomTrack};
use sends::OwnSends;

use crate::error::CloseCode;
use crate::names::{ClientMsgId, MessageText, RoomName, Topic, ValidationError};
use crate::read::{ReadCounts, RoomRead};
use crate::wire::{
    self, ClientFrame, ErrorCode, FetchHistory, MessageKind, RoomInfo, RoomPosition, ServerFrame,
    client_frame::Body as C, fetch_history::Anchor, room_resume::Status as ResumeStatus,
    server_frame::Body as S,
};

/// Largest server frame a client accepts (§12.2).
pub const MAX_SERVER_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Settings of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Bearer token from the login endpoint.
    pub token: String,
    /// Optional capabilities to ask for (§3.4).
    pub capabilities: Vec<String>,
    /// Client name for the server's logs.
    pub client_name: String,
    /// How long a request may go unanswered before `RequestTimedOut`.
    pub request_timeout: Duration,
    /// How often to send a keepalive Ping while online (§12.1).
    pub keepalive_interval: Duration,
    /// Reconnect backoff (§14.2).
    pub backoff: Backoff,
    /// Page size used to fill gaps.
    pub gap_page: u32,
    /// Sends on the wire at once. 1 keeps per-sender order even when the
    /// server rejects a send as rate limited; more trades that for throughput.
    pub max_in_flight: usize,
    /// How long a send may wait for the server, while online, before it is
    /// reported pending (`SessionEvent::SendPending`): a quick delivery is
    /// shown once, as delivered, without a pending state flashing first.
    pub pending_after: Duration,
}

impl SessionConfig {
    /// Defaults with the given token.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            // Relations (§8.6) only for a client that applies them
            // (`crate::timeline`): without the capabilities it gets their
            // readable fallbacks.
            capabilities: crate::capability::WITHOUT_RELATIONS
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            client_name: "confab-protocol".to_owned(),
            request_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            backoff: Backoff::default(),
            gap_page: 100,
            max_in_flight: 1,
            pending_after: Duration::from_millis(400),
        }
    }
}

/// Connection state, as shown to users (§14.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// The driver should open a transport now and call `handle_connected`.
    Connecting,
    /// Transport open, Auth sent, waiting for Welcome.
    Authenticating,
    /// Welcome received; requests flow.
    Online,
    /// Waiting for the backoff timer before attempt `attempt`.
    Reconnecting {
        /// When the next attempt starts.
        at: Instant,
        /// Attempt number, from 0.
        attempt: u32,
    },
    /// Stopped for good; only a new session (new login) continues.
    Offline(OfflineReason),
}

/// Why a session stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfflineReason {
    /// The user closed the session.
    Closed,
    /// The token was rejected (invalid, expired or revoked); log in again.
    AuthRejected(ErrorCode),
    /// The session was logged out (close 4410).
    LoggedOut,
    /// The server closed with a code after which reconnecting would not help.
    ClosedByServer(u16),
}

/// What a request was for, reported with its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// Auth.
    Auth,
    /// Ping.
    Ping,
    /// ListRooms.
    ListRooms,
    /// CreateRoom.
    CreateRoom(String),
    /// JoinRoom.
    JoinRoom(String),
    /// LeaveRoom.
    LeaveRoom(String),
    /// ListMembers.
    ListMembers(String),
    /// SendMessage with this client_msg_id.
    Send(String),
    /// FetchHistory asked for by the user.
    History(String),
    /// FetchHistory filling a gap.
    GapFill(String),
    /// Resume.
    Resume,
    /// SetTyping.
    SetTyping(String),
    /// MarkRead of this room.
    MarkRead(String),
    /// The page that opens a view of this room ([`ClientSession::open_view`]).
    View(String),
}

/// Something to show or act on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The connection state changed. On `Connecting` the driver opens a transport.
    StateChanged(ConnectionState),
    /// Authenticated: who we are, what the server allows.
    Welcome(wire::Welcome),
    /// A room message, shown exactly once and in seq order per room.
    Message {
        /// The message.
        message: wire::Message,
        /// True when this user sent it (from any of its connections).
        from_self: bool,
        /// True when it is the echo of a send from this session: its
        /// `Delivered` event was (or is) reported, so front ends showing
        /// that need not show this one too.
        sent_here: bool,
        /// The room's epoch (§10.2) the seq counts in: with `message.seq`,
        /// the position a position store saves once the message is handled.
        /// Empty while the session knows no epoch of the room.
        epoch: String,
    },
    /// One of this session's sends has waited longer than
    /// [`SessionConfig::pending_after`], or was queued while not online, or
    /// was restored from an earlier run: show it as pending. At most once
    /// per send, and never after its `Delivered`.
    SendPending(OutboxEntry),
    /// One of this session's sends is stored, as its echo or its SendAck
    /// showed, whichever came first; once per send. (`Acked` still follows
    /// the SendAck: that is when the outbox lets go of it.)
    Delivered {
        /// The send.
        entry: OutboxEntry,
        /// Its seq in the room.
        seq: u64,
        /// The server's timestamp of it, ms since the Unix epoch.
        server_ts_ms: i64,
        /// Whether it was reported pending first.
        was_pending: bool,
    },
    /// The server durably stored one of our sends.
    Acked(wire::SendAck),
    /// The server refused a send for good; it left the outbox.
    SendFailed {
        /// The refused send.
        entry: OutboxEntry,
        /// Why.
        error: wire::Error,
    },
    /// The outbox changed (entry added or removed): drivers persisting it save now.
    OutboxChanged,
    /// Reply to ListRooms.
    RoomList(Vec<RoomInfo>),
    /// A pushed room-list change.
    RoomListUpdate(wire::RoomListUpdate),
    /// Joined (or created) a room.
    Joined(RoomInfo),
    /// Left a room.
    Left(String),
    /// Reply to ListMembers.
    Members(wire::MemberList),
    /// Reply to a user's FetchHistory.
    History(wire::HistoryPage),
    /// A view opened by [`ClientSession::open_view`] is ready: the room's
    /// newest messages, merged with those that arrived live while the page
    /// was read, in seq order, each once. Later `Message` events of the
    /// room continue after it, without repeating any of it.
    View {
        /// Room.
        room: String,
        /// The messages, ascending.
        messages: Vec<wire::Message>,
        /// Older messages exist (§9).
        has_more: bool,
    },
    /// How resuming a room went (§10.3).
    Resumed(wire::RoomResume),
    /// The room's history was reset on the server (§10.5): earlier
    /// messages shown for it belong to the old epoch.
    EpochChanged {
        /// Room.
        room: String,
        /// Its head seq in the new epoch.
        head_seq: u64,
    },
    /// Messages the server could not supply were skipped (a server bug).
    GapSkipped {
        /// Room.
        room: String,
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
    /// Presence push.
    Presence(wire::Presence),
    /// Typing push.
    Typing(wire::Typing),
    /// A room's read state changed (§11.3): a message counted, the user
    /// read (here or on another device), or Welcome brought the server's
    /// counts. Front ends show `counts`; [`ClientSession::read_state`] has
    /// the same.
    ReadState {
        /// Room.
        room: String,
        /// The marker and counts now.
        counts: ReadCounts,
    },
    /// Reply to a Ping this session's user sent.
    Pong(u64),
    /// A request failed with a typed error.
    RequestFailed {
        /// Request id.
        request_id: u64,
        /// What it was.
        kind: RequestKind,
        /// The server's error.
        error: wire::Error,
    },
    /// A request got no answer in time.
    RequestTimedOut {
        /// Request id.
        request_id: u64,
        /// What it was.
        kind: RequestKind,
    },
    /// A request was lost with the connection before it was answered.
    RequestAborted {
        /// Request id.
        request_id: u64,
        /// What it was.
        kind: RequestKind,
    },
    /// An error frame that answers no request of ours.
    ServerError(wire::Error),
    /// The keepalive Ping went unanswered: the driver should drop the
    /// transport and call `handle_disconnected`.
    TransportStale,
}

/// Why a command could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// A field failed validation.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The session is not online; only sends are queued while offline.
    #[error(
        "not connected; wait until the session is online, or send a message (those are queued)"
    )]
    NotOnline,
    /// The session stopped for good.
    #[error("the session has stopped; log in again")]
    Stopped,
    /// A deletion or a reaction was given text (§8.6).
    #[error("a {0} carries no text; send it with an empty text")]
    TextNotAllowed(&'static str),
}

#[derive(Debug)]
struct Pending {
    kind: RequestKind,
    deadline: Option<Instant>,
}

/// The client session state machine. See the module docs.
#[derive(Debug)]
pub struct ClientSession {
    config: SessionConfig,
    state: ConnectionState,
    attempt: u32,
    next_request_id: u64,
    transmit: VecDeque<ClientFrame>,
    events: VecDeque<SessionEvent>,
    pending: HashMap<u64, Pending>,
    outbox: Outbox,
    /// What the user was told of their sends: pending, delivered.
    sends: OwnSends,
    rooms: BTreeMap<String, RoomTrack>,
    welcome: Option<wire::Welcome>,
    max_text_bytes: usize,
    keepalive_at: Option<Instant>,
    keepalive_ping: Option<u64>,
    /// Sends wait until then after a retryable refusal (§12.5 retry_after_ms).
    sends_paused_until: Option<Instant>,
    /// Rooms of the RoomList pages received so far while following
    /// `next_cursor` (§7.1); reported as one `SessionEvent::RoomList` when
    /// the last page arrives.
    room_list: Vec<RoomInfo>,
    /// Per room, the read state (§11.3), with capability `read-state`.
    reads: BTreeMap<String, RoomRead>,
    /// Markers the user moved that the server has not confirmed: sent when
    /// online and no MarkRead of the room is in flight, so a reader
    /// scrolling through a room costs one request at a time, not one per
    /// message, and a read made offline reaches the server on reconnect.
    marks_wanted: BTreeMap<String, u64>,
    /// Views being opened: the live messages of each room held until its
    /// page arrives, so the view shows them in order after the page.
    views_loading: BTreeMap<String, Vec<wire::Message>>,
    /// Per room, the highest seq a view showed: a live message at or below
    /// it (stored before the page was read, pushed after it) is not shown
    /// again.
    view_floor: BTreeMap<String, u64>,
    user_closed: bool,
}

/// Most rooms a session collects while paging through the room list, so a
/// server that never ends the list cannot grow the client without bound.
pub const MAX_LISTED_ROOMS: usize = 100_000;

impl ClientSession {
    /// A session that wants to connect now.
    pub fn new(config: SessionConfig) -> Self {
        let mut session = Self {
            config,
            state: ConnectionState::Connecting,
            attempt: 0,
            next_request_id: 1,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            pending: HashMap::new(),
            outbox: Outbox::default(),
            sends: OwnSends::default(),
            rooms: BTreeMap::new(),
            welcome: None,
            max_text_bytes: crate::names::DEFAULT_MAX_TEXT_BYTES,
            keepalive_at: None,
            keepalive_ping: None,
            sends_paused_until: None,
            room_list: Vec::new(),
            reads: BTreeMap::new(),
            marks_wanted: BTreeMap::new(),
            views_loading: BTreeMap::new(),
            view_floor: BTreeMap::new(),
            user_closed: false,
        };
        session
            .events
            .push_back(SessionEvent::StateChanged(ConnectionState::Connecting));
        session
    }

    // ----- inspection -------------------------------------------------------

    /// Current connection state.
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// The Welcome of the current or last connection.
    pub fn welcome(&self) -> Option<&wire::Welcome> {
        self.welcome.as_ref()
    }

    /// Unacknowledged sends, oldest first.
    pub fn outbox(&self) -> impl Iterator<Item = &OutboxEntry> {
        self.outbox.entries()
    }

    /// Highest seq shown per room, with its epoch: what a position store saves.
    pub fn positions(&self) -> Vec<RoomPosition> {
        self.rooms
            .iter()
            .map(|(room, t)| RoomPosition {
                room: room.clone(),
                last_seq: t.last_seq,
                epoch: t.epoch.clone(),
            })
            .collect()
    }

    /// The read state of a room (§11.3): the marker and the unread and
    /// mention counts, kept current as messages arrive. `None` for a room
    /// the server reported none for (capability `read-state` not granted).
    pub fn read_state(&self, room: &str) -> Option<&RoomRead> {
        self.reads.get(room)
    }

    /// Every room's read state, by room name.
    pub fn read_states(&self) -> impl Iterator<Item = (&str, &RoomRead)> {
        self.reads.iter().map(|(room, read)| (room.as_str(), read))
    }

    // ----- restoring saved state -------------------------------------------

    /// Loads outbox entries saved by an earlier run; they are sent, in
    /// order and with their ids, once online. Entries already queued are skipped.
    /// Each is reported pending (`SessionEvent::SendPending`).
    pub fn restore_outbox(&mut self, entries: impl IntoIterator<Item = OutboxEntry>) {
        for entry in entries {
            if self.sends.queued(&entry.client_msg_id, None) {
                self.events
                    .push_back(SessionEvent::SendPending(entry.clone()));
            }
            self.outbox.push(entry);
        }
    }

    /// Loads room positions saved by an earlier run, so the next Resume
    /// replays exactly what came after them (§10.1).
    pub fn restore_positions(&mut self, positions: impl IntoIterator<Item = RoomPosition>) {
        for p in positions {
            self.rooms
                .insert(p.room, RoomTrack::new(p.last_seq, p.epoch));
        }
    }

    // ----- transport events -------------------------------------------------

    /// The transport is open: authenticate (§6.1).
    pub fn handle_connected(&mut self, now: Instant) {
        if matches!(self.state, ConnectionState::Offline(_)) {
            return;
        }
        self.set_state(ConnectionState::Authenticating);
        let auth = C::Auth(wire::Auth {
            token: self.config.token.clone(),
            capabilities: self.config.capabilities.clone(),
            client_name: self.config.client_name.clone(),
        });
        self.request(auth, RequestKind::Auth, now);
    }

    /// Opening the transport failed: back off and try again.
    pub fn handle_connect_failed(&mut self, now: Instant, rng: &mut impl RngCore) {
        self.handle_disconnected(now, None, rng);
    }

    /// The transport closed, with the peer's close code if there was one (§13.2).
    pub fn handle_disconnected(
        &mut self,
        now: Instant,
        close_code: Option<u16>,
        rng: &mut impl RngCore,
    ) {
        if matches!(self.state, ConnectionState::Offline(_)) {
            return;
        }
        self.forget_connection();
        if self.user_closed {
            self.set_state(ConnectionState::Offline(OfflineReason::Closed));
            return;
        }
        if let Some(code) = close_code.and_then(CloseCode::from_u16) {
            let reason = match code {
                CloseCode::LoggedOut => Some(OfflineReason::LoggedOut),
                CloseCode::AuthFailed => Some(OfflineReason::AuthRejected(ErrorCode::TokenInvalid)),
                c if c.should_reconnect() => None,
                c => Some(OfflineReason::ClosedByServer(c.as_u16())),
            };
            if let Some(reason) = reason {
                self.set_state(ConnectionState::Offline(reason));
                return;
            }
        }
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        let at = now + self.config.backoff.delay(attempt, rng);
        self.set_state(ConnectionState::Reconnecting { at, attempt });
    }

    /// Forgets what belonged to the connection that ended: frames not yet
    /// written, keepalive, which sends were on the wire (they go again on
    /// the next one), gap fills, and requests (aborted; the session's own
    /// are asked again on the next connection).
    fn forget_connection(&mut self) {
        self.transmit.clear();
        self.keepalive_at = None;
        self.keepalive_ping = None;
        self.outbox.reset_in_flight();
        for track in self.rooms.values_mut() {
            track.gap_fill = None;
        }
        let mut aborted: Vec<(u64, Pending)> = self.pending.drain().collect();
        aborted.sort_by_key(|(id, _)| *id);
        for (request_id, p) in aborted {
            self.release_view(&p.kind);
            if !matches!(
                p.kind,
                RequestKind::Send(_)
                    | RequestKind::GapFill(_)
                    | RequestKind::Resume
                    | RequestKind::Auth
                    | RequestKind::MarkRead(_)
            ) {
                self.events.push_back(SessionEvent::RequestAborted {
                    request_id,
                    kind: p.kind,
                });
            }
        }
    }

    /// Time passed: expire requests, start a due reconnect, send keepalives.
    pub fn handle_timeout(&mut self, now: Instant) {
        for client_msg_id in self.sends.due(now) {
            if let Some(entry) = self.outbox.get(&client_msg_id) {
                self.events
                    .push_back(SessionEvent::SendPending(entry.clone()));
            }
        }
        if let ConnectionState::Reconnecting { at, .. } = self.state {
            if now >= at {
                self.set_state(ConnectionState::Connecting);
            }
            return;
        }
        let mut expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        for request_id in expired {
            let Some(p) = self.pending.remove(&request_id) else {
                continue;
            };
            if self.keepalive_ping == Some(request_id) {
                self.keepalive_ping = None;
                self.events.push_back(SessionEvent::TransportStale);
                continue;
            }
            let mut resend = false;
            match &p.kind {
                // The send keeps its place in the outbox and goes out again
                // with the same client_msg_id: a late original and the resend
                // are one message to the server (§8.5).
                RequestKind::Send(_) => {
                    self.outbox.unsend(request_id);
                    resend = true;
                }
                // A gap fill that timed out is asked for again; otherwise
                // the room's held messages would wait for a reconnect.
                RequestKind::GapFill(room) => {
                    let room = room.clone();
                    if let Some(track) = self.rooms.get_mut(&room) {
                        track.gap_fill = None;
                        let after = track.last_seq;
                        self.start_gap_fill(now, &room, after);
                    }
                }
                _ => {}
            }
            self.release_view(&p.kind);
            self.events.push_back(SessionEvent::RequestTimedOut {
                request_id,
                kind: p.kind,
            });
            if resend {
                self.pump_outbox_at(now);
            }
        }
        if self.sends_paused_until.is_some_and(|until| until <= now) {
            self.pump_outbox_at(now);
        }
        if self.state == ConnectionState::Online
            && self.keepalive_at.is_some_and(|at| at <= now)
            && self.keepalive_ping.is_none()
        {
            let id = self.request(C::Ping(wire::Ping { nonce: 0 }), RequestKind::Ping, now);
            self.keepalive_ping = Some(id);
            self.keepalive_at = Some(now + self.config.keepalive_interval);
        }
    }

    /// Decodes and handles one binary message from the server.
    pub fn handle_bytes(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<(), crate::codec::DecodeError> {
        let max = self
            .welcome
            .as_ref()
            .and_then(|w| w.limits.as_ref())
            .map_or(crate::codec::DEFAULT_MAX_FRAME_BYTES, |l| {
                l.max_frame_bytes as usize
            })
            // §12.2: max_frame_bytes bounds what clients send; a server frame
            // carries up to a full history page, so clients accept 16 MiB.
            .max(MAX_SERVER_FRAME_BYTES);
        let frame = crate::codec::decode_server_frame(bytes, max)?;
        self.handle_frame(now, frame);
        Ok(())
    }

    /// Handles one frame from the server.
    pub fn handle_frame(&mut self, now: Instant, frame: ServerFrame) {
        if matches!(self.state, ConnectionState::Offline(_)) {
            return;
        }
        let Some(body) = frame.body else { return };
        let pending = if frame.request_id == 0 {
            None
        } else {
            self.pending.remove(&frame.request_id)
        };
        if self.keepalive_ping == Some(frame.request_id) && frame.request_id != 0 {
            self.keepalive_ping = None;
            return;
        }
        match body {
            S::Welcome(welcome) => self.on_welcome(now, welcome),
            S::Error(error) => self.on_error(now, frame.request_id, pending, error),
            S::Message(message) => self.on_message(now, message),
            S::SendAck(ack) => self.on_ack(now, ack),
            S::HistoryPage(page) => self.on_history(now, pending, page),
            S::Resumed(resumed) => self.on_resumed(now, resumed),
            S::RoomJoined(joined) => {
                if let Some(room) = joined.room {
                    self.on_joined(now, &room);
                    self.events.push_back(SessionEvent::Joined(room));
                }
            }
            S::RoomLeft(left) => {
                self.rooms.remove(&left.name);
                self.reads.remove(&left.name);
                self.view_floor.remove(&left.name);
                self.marks_wanted.remove(&left.name);
                self.events.push_back(SessionEvent::Left(left.name));
            }
            S::RoomList(list) => self.on_room_list(now, pending, list),
            S::RoomListUpdate(update) => {
                self.events.push_back(SessionEvent::RoomListUpdate(update))
            }
            S::MemberList(members) => self.events.push_back(SessionEvent::Members(members)),
            S::Presence(p) => self.events.push_back(SessionEvent::Presence(p)),
            S::Typing(t) => self.events.push_back(SessionEvent::Typing(t)),
            S::ReadState(state) => self.on_read_state(now, pending, &state),
            S::Pong(pong) => {
                if pending.is_some() {
                    self.events.push_back(SessionEvent::Pong(pong.nonce));
                }
            }
        }
    }

    // ----- commands ---------------------------------------------------------

    /// Queues a message. It goes into the outbox at once (so it survives a
    /// disconnect) and is sent when the session is online. Returns its id.
    pub fn send_message(
        &mut self,
        now: Instant,
        room: &str,
        text: &str,
        action: bool,
        client_msg_id: ClientMsgId,
    ) -> Result<ClientMsgId, CommandError> {
        if matches!(self.state, ConnectionState::Offline(_)) {
            return Err(CommandError::Stopped);
        }
        let room = RoomName::parse(room)?;
        let text = MessageText::parse(text, self.max_text_bytes)?;
        self.queue_send(
            now,
            OutboxEntry {
                client_msg_id: client_msg_id.as_str().to_owned(),
                room: room.into_string(),
                text: text.into_string(),
                action,
                relation: None,
            },
        );
        Ok(client_msg_id)
    }

    /// Queues an edit, deletion, reply or reaction (§8.6) of the message
    /// `relation.target` in `room`, like [`ClientSession::send_message`]:
    /// through the outbox, resent with its id until acknowledged. `text` is
    /// the new text of an edit or the answer of a reply, and must be empty
    /// for a deletion or a reaction.
    pub fn send_relation(
        &mut self,
        now: Instant,
        room: &str,
        relation: &crate::relation::ValidRelation,
        text: &str,
        client_msg_id: ClientMsgId,
    ) -> Result<ClientMsgId, CommandError> {
        if matches!(self.state, ConnectionState::Offline(_)) {
            return Err(CommandError::Stopped);
        }
        let room = RoomName::parse(room)?;
        let text = if relation.kind.has_text() {
            MessageText::parse(text, self.max_text_bytes)?.into_string()
        } else if text.is_empty() {
            String::new()
        } else {
            return Err(CommandError::TextNotAllowed(relation.kind.name()));
        };
        self.queue_send(
            now,
            OutboxEntry {
                client_msg_id: client_msg_id.as_str().to_owned(),
                room: room.into_string(),
                text,
                action: false,
                relation: Some(relation.to_wire(0, "")),
            },
        );
        Ok(client_msg_id)
    }

    /// Puts a validated send in the outbox and on the wire when online.
    fn queue_send(&mut self, now: Instant, entry: OutboxEntry) {
        // Offline, it waits for a connection: pending at once. A repeated
        // id is known to `sends` already and reported nothing new.
        let pending_at =
            (self.state == ConnectionState::Online).then(|| now + self.config.pending_after);
        if self.sends.queued(&entry.client_msg_id, pending_at) {
            self.events
                .push_back(SessionEvent::SendPending(entry.clone()));
        }
        self.outbox.push(entry);
        self.events.push_back(SessionEvent::OutboxChanged);
        self.pump_outbox_at(now);
    }

    /// Lists every room, optionally subscribing to changes (§7.1). The
    /// session follows `RoomList.next_cursor` itself and reports the whole
    /// list as one `SessionEvent::RoomList` once the last page arrived.
    pub fn list_rooms(&mut self, now: Instant, subscribe: bool) -> Result<u64, CommandError> {
        let id = self.online_request(
            now,
            C::ListRooms(wire::ListRooms {
                subscribe,
                ..wire::ListRooms::default()
            }),
            RequestKind::ListRooms,
        )?;
        self.room_list.clear();
        Ok(id)
    }

    /// One RoomList page (§7.1): ask for the next one, or report them all.
    /// A room seen twice (its activity changed while paging moved it) is
    /// reported once, where it was first seen.
    fn on_room_list(&mut self, now: Instant, pending: Option<Pending>, list: wire::RoomList) {
        self.room_list.extend(list.rooms);
        let ours = pending.is_some_and(|p| p.kind == RequestKind::ListRooms);
        if ours && !list.next_cursor.is_empty() && self.room_list.len() < MAX_LISTED_ROOMS {
            self.request(
                C::ListRooms(wire::ListRooms {
                    subscribe: false,
                    cursor: list.next_cursor,
                    limit: 0,
                }),
                RequestKind::ListRooms,
                now,
            );
            return;
        }
        let mut seen = std::collections::HashSet::new();
        let mut rooms = std::mem::take(&mut self.room_list);
        rooms.retain(|room| seen.insert(room.name.clone()));
        self.events.push_back(SessionEvent::RoomList(rooms));
    }

    /// Creates a room and joins it (§7.2).
    pub fn create_room(
        &mut self,
        now: Instant,
        name: &str,
        topic: &str,
    ) -> Result<u64, CommandError> {
        let name = RoomName::parse(name)?;
        let topic = Topic::parse(topic)?;
        let kind = RequestKind::CreateRoom(name.to_string());
        let body = C::CreateRoom(wire::CreateRoom {
            name: name.into_string(),
            topic: topic.into_string(),
        });
        self.online_request(now, body, kind)
    }

    /// Joins a room (§7.3).
    pub fn join_room(&mut self, now: Instant, name: &str) -> Result<u64, CommandError> {
        let name = RoomName::parse(name)?;
        let kind = RequestKind::JoinRoom(name.to_string());
        self.online_request(
            now,
            C::JoinRoom(wire::JoinRoom {
                name: name.into_string(),
            }),
            kind,
        )
    }

    /// Leaves a room (§7.4).
    pub fn leave_room(&mut self, now: Instant, name: &str) -> Result<u64, CommandError> {
        let name = RoomName::parse(name)?;
        let kind = RequestKind::LeaveRoom(name.to_string());
        self.online_request(
            now,
            C::LeaveRoom(wire::LeaveRoom {
                name: name.into_string(),
            }),
            kind,
        )
    }

    /// Lists a room's members (§7.5).
    pub fn list_members(&mut self, now: Instant, room: &str) -> Result<u64, CommandError> {
        let room = RoomName::parse(room)?;
        let kind = RequestKind::ListMembers(room.to_string());
        self.online_request(
            now,
            C::ListMembers(wire::ListMembers {
                room: room.into_string(),
            }),
            kind,
        )
    }

    /// Fetches a page of history (§9); the reply comes as `SessionEvent::History`.
    pub fn fetch_history(
        &mut self,
        now: Instant,
        room: &str,
        anchor: Option<Anchor>,
        limit: u32,
    ) -> Result<u64, CommandError> {
        let room = RoomName::parse(room)?;
        let kind = RequestKind::History(room.to_string());
        let body = C::FetchHistory(FetchHistory {
            room: room.into_string(),
            anchor,
            limit,
        });
        self.online_request(now, body, kind)
    }

    /// Opens a view of `room`: its newest `limit` messages, then its live
    /// ones, with nothing repeated or out of order where they meet. The
    /// page comes as [`SessionEvent::View`]; until then the room's live
    /// messages are held (and come inside the view). This is what a front
    /// end showing one room at a time needs instead of tracking seqs.
    pub fn open_view(&mut self, now: Instant, room: &str, limit: u32) -> Result<u64, CommandError> {
        let name = RoomName::parse(room)?;
        let body = C::FetchHistory(FetchHistory {
            room: name.as_str().to_owned(),
            anchor: None,
            limit,
        });
        let id = self.online_request(now, body, RequestKind::View(name.to_string()))?;
        self.views_loading.entry(name.into_string()).or_default();
        Ok(id)
    }

    /// Says the user started or stopped typing (§11.2). No reply on success.
    pub fn set_typing(&mut self, room: &str, active: bool) -> Result<u64, CommandError> {
        let room = RoomName::parse(room)?;
        if self.state != ConnectionState::Online {
            return Err(CommandError::NotOnline);
        }
        let id = self.alloc_id();
        // Not tracked as pending: success has no reply. An error still
        // echoes the id and surfaces as ServerError.
        self.transmit.push_back(ClientFrame::request(
            id,
            C::SetTyping(wire::SetTyping {
                room: room.into_string(),
                active,
            }),
        ));
        Ok(id)
    }

    /// Says the user has read `room` up to `seq` (§11.3). The counts drop
    /// at once; the server is told when online, one MarkRead per room at a
    /// time (later marks wait for the reply and go as one), and again after
    /// a reconnect if it never answered. A seq at or below the marker does
    /// nothing.
    pub fn mark_read(&mut self, now: Instant, room: &str, seq: u64) -> Result<(), CommandError> {
        if matches!(self.state, ConnectionState::Offline(_)) {
            return Err(CommandError::Stopped);
        }
        let room = RoomName::parse(room)?.into_string();
        let read = self.reads.entry(room.clone()).or_default();
        if seq <= read.read_seq() {
            return Ok(());
        }
        read.read_up_to(seq);
        let counts = read.counts();
        let wanted = self.marks_wanted.entry(room.clone()).or_default();
        *wanted = (*wanted).max(seq);
        self.events.push_back(SessionEvent::ReadState {
            room: room.clone(),
            counts,
        });
        self.send_mark(now, &room);
        Ok(())
    }

    /// Sends a Ping (§12.1); the reply comes as `SessionEvent::Pong(nonce)`.
    pub fn ping(&mut self, now: Instant, nonce: u64) -> Result<u64, CommandError> {
        self.online_request(now, C::Ping(wire::Ping { nonce }), RequestKind::Ping)
    }

    /// Replaces the bearer token, e.g. after logging in again (§6.2: "a
    /// client receiving 4403 logs in again before reconnecting"). A session
    /// stopped by a rejected token (`Offline(AuthRejected)`) starts
    /// connecting again at once, keeping its room positions and outbox, so
    /// nothing is lost or shown twice across the new login. In other
    /// non-offline states the token is used from the next Auth on. A session
    /// that stopped for another reason stays stopped (`Stopped`).
    pub fn reauthenticate(&mut self, token: impl Into<String>) -> Result<(), CommandError> {
        match self.state {
            ConnectionState::Offline(OfflineReason::AuthRejected(_)) => {
                self.config.token = token.into();
                self.attempt = 0;
                // The refused connection is gone: a send that was on it
                // goes first on the next one, not after its request times out.
                self.forget_connection();
                self.set_state(ConnectionState::Connecting);
                Ok(())
            }
            ConnectionState::Offline(_) => Err(CommandError::Stopped),
            _ => {
                self.config.token = token.into();
                Ok(())
            }
        }
    }

    /// Ends the wait of a reconnect backoff (the user asked, or the driver
    /// learned the network is back): the session connects at once. Does
    /// nothing in any other state.
    pub fn reconnect_now(&mut self) {
        if matches!(self.state, ConnectionState::Reconnecting { .. }) {
            self.set_state(ConnectionState::Connecting);
        }
    }

    /// Closes the session for good; the driver closes the transport with 1000.
    pub fn close(&mut self) {
        self.user_closed = true;
        self.transmit.clear();
        self.set_state(ConnectionState::Offline(OfflineReason::Closed));
    }

    // ----- polling ----------------------------------------------------------

    /// The next frame to write to the transport.
    pub fn poll_transmit(&mut self) -> Option<ClientFrame> {
        self.transmit.pop_front()
    }

    /// The next event to show or act on.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The next instant at which `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ConnectionState::Reconnecting { at, .. } => {
                return [Some(at), self.sends.next_due()]
                    .into_iter()
                    .flatten()
                    .min();
            }
            // Stopped: nothing is due until a new token (`reauthenticate`).
            ConnectionState::Offline(_) => return None,
            _ => {}
        }
        let online = self.state == ConnectionState::Online;
        let requests = self.pending.values().filter_map(|p| p.deadline).min();
        // Keepalives and paused sends act only online: a deadline of theirs
        // left from the last connection would be due at once, over and over.
        let keepalive = self.keepalive_at.filter(|_| online);
        let resume_sends = self
            .sends_paused_until
            .filter(|_| online && !self.outbox.is_empty());
        [requests, keepalive, resume_sends, self.sends.next_due()]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- internals --------------------------------------------------------

    fn set_state(&mut self, state: ConnectionState) {
        if self.state != state {
            self.state = state.clone();
            self.events.push_back(SessionEvent::StateChanged(state));
        }
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    fn request(&mut self, body: C, kind: RequestKind, now: Instant) -> u64 {
        let id = self.alloc_id();
        self.pending.insert(
            id,
            Pending {
                kind,
                deadline: Some(now + self.config.request_timeout),
            },
        );
        self.transmit.push_back(ClientFrame::request(id, body));
        id
    }

    fn online_request(
        &mut self,
        now: Instant,
        body: C,
        kind: RequestKind,
    ) -> Result<u64, CommandError> {
        match self.state {
            ConnectionState::Online => Ok(self.request(body, kind, now)),
            ConnectionState::Offline(_) => Err(CommandError::Stopped),
            _ => Err(CommandError::NotOnline),
        }
    }

    /// Puts outbox entries on the wire, oldest first, up to `max_in_flight`.
    fn pump_outbox_at(&mut self, now: Instant) {
        if self.state != ConnectionState::Online {
            return;
        }
        if self.sends_paused_until.is_some_and(|until| now < until) {
            return;
        }
        self.sends_paused_until = None;
        while self.outbox.in_flight() < self.config.max_in_flight.max(1) {
            let id = self.next_request_id;
            let Some(entry) = self.outbox.next_unsent(id) else {
                break;
            };
            let body = C::SendMessage(wire::SendMessage {
                room: entry.room.clone(),
                client_msg_id: entry.client_msg_id.clone(),
                text: entry.text.clone(),
                relation: entry.relation.clone(),
                kind: if entry.action {
                    MessageKind::Action
                } else {
                    MessageKind::Text
                } as i32,
            });
            let kind = RequestKind::Send(entry.client_msg_id.clone());
            let sent = self.request(body, kind, now);
            debug_assert_eq!(sent, id);
        }
    }

    /// Sends the wanted MarkRead of `room`, unless one is in flight.
    fn send_mark(&mut self, now: Instant, room: &str) {
        if self.state != ConnectionState::Online {
            return;
        }
        let Some(&seq) = self.marks_wanted.get(room) else {
            return;
        };
        let in_flight = self
            .pending
            .values()
            .any(|p| matches!(&p.kind, RequestKind::MarkRead(r) if r == room));
        if in_flight {
            return;
        }
        let body = C::MarkRead(wire::MarkRead {
            room: room.to_owned(),
            seq,
        });
        self.request(body, RequestKind::MarkRead(room.to_owned()), now);
    }

    fn on_read_state(&mut self, now: Instant, pending: Option<Pending>, state: &wire::ReadState) {
        let taken = self
            .reads
            .entry(state.room.clone())
            .or_default()
            .handle_state(state);
        if let Some(wanted) = self.marks_wanted.get(&state.room).copied() {
            if wanted <= state.read_seq {
                self.marks_wanted.remove(&state.room);
            } else if let Some(read) = self.reads.get_mut(&state.room) {
                // The server counted from an older marker than the user's.
                read.read_up_to(wanted);
            }
        }
        if taken {
            self.push_counts(&state.room);
        }
        if pending.is_some() {
            let room = state.room.clone();
            self.send_mark(now, &room);
        }
    }

    fn push_counts(&mut self, room: &str) {
        if let Some(read) = self.reads.get(room) {
            self.events.push_back(SessionEvent::ReadState {
                room: room.to_owned(),
                counts: read.counts(),
            });
        }
    }

    fn on_welcome(&mut self, now: Instant, welcome: wire::Welcome) {
        self.attempt = 0;
        if let Some(limits) = &welcome.limits {
            self.max_text_bytes = limits.max_text_bytes as usize;
        }
        // §10.1: resume every room we know and every room we are a member of.
        let mut positions: BTreeMap<String, RoomPosition> = BTreeMap::new();
        for info in &welcome.rooms {
            let track = self
                .rooms
                .entry(info.name.clone())
                .or_insert_with(|| RoomTrack::new(info.head_seq, info.epoch.clone()));
            positions.insert(
                info.name.clone(),
                RoomPosition {
                    room: info.name.clone(),
                    last_seq: track.last_seq,
                    epoch: track.epoch.clone(),
                },
            );
        }
        for (room, track) in &self.rooms {
            positions
                .entry(room.clone())
                .or_insert_with(|| RoomPosition {
                    room: room.clone(),
                    last_seq: track.last_seq,
                    epoch: track.epoch.clone(),
                });
        }
        // The server's counts replace ours: they are exact as of Welcome,
        // which is newer than anything this session saw before it.
        if !welcome.read_states.is_empty() {
            self.reads = welcome
                .read_states
                .iter()
                .map(|state| (state.room.clone(), RoomRead::from_wire(state)))
                .collect();
            for (room, &wanted) in &self.marks_wanted {
                if let Some(read) = self.reads.get_mut(room) {
                    read.read_up_to(wanted);
                }
            }
        }
        let rooms: Vec<String> = self.reads.keys().cloned().collect();
        self.events
            .push_back(SessionEvent::Welcome(welcome.clone()));
        for room in rooms {
            self.push_counts(&room);
        }
        self.welcome = Some(welcome);
        self.set_state(ConnectionState::Online);
        let wanted: Vec<String> = self.marks_wanted.keys().cloned().collect();
        let resume = C::Resume(wire::Resume {
            rooms: positions.into_values().collect(),
        });
        self.request(resume, RequestKind::Resume, now);
        for room in wanted {
            self.send_mark(now, &room);
        }
        self.keepalive_at = Some(now + self.config.keepalive_interval);
        self.pump_outbox_at(now);
    }

    fn on_error(
        &mut self,
        now: Instant,
        request_id: u64,
        pending: Option<Pending>,
        error: wire::Error,
    ) {
        let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
        if matches!(
            code,
            ErrorCode::TokenInvalid | ErrorCode::TokenExpired | ErrorCode::TokenRevoked
        ) {
            self.set_state(ConnectionState::Offline(OfflineReason::AuthRejected(code)));
            self.events.push_back(SessionEvent::ServerError(error));
            return;
        }
        let Some(p) = pending else {
            self.events.push_back(SessionEvent::ServerError(error));
            return;
        };
        match p.kind {
            RequestKind::Send(_) if error.retryable => {
                // The send keeps its place at the head of the outbox and goes
                // out again once the server's retry_after_ms has passed (or
                // one backoff base, when the server gave no hint). Nothing is
                // surfaced: a retry the session handles is not the user's error.
                self.outbox.unsend(request_id);
                let wait = if error.retry_after_ms > 0 {
                    Duration::from_millis(u64::from(error.retry_after_ms))
                } else {
                    self.config.backoff.base
                };
                self.sends_paused_until = Some(now + wait);
            }
            RequestKind::Send(ref client_msg_id) => {
                if let Some(entry) = self.outbox.remove(client_msg_id) {
                    self.sends.refused(client_msg_id);
                    self.events.push_back(SessionEvent::OutboxChanged);
                    self.events
                        .push_back(SessionEvent::SendFailed { entry, error });
                }
                // Its slot on the wire is free: the next send goes now,
                // not at whatever event would pump the outbox next.
                self.pump_outbox_at(now);
            }
            // A refused mark is not tried again (NOT_A_MEMBER, a bad
            // name); one refused for the rate goes with the next mark or
            // reconnect.
            RequestKind::MarkRead(ref room) if !error.retryable => {
                self.marks_wanted.remove(room);
                self.events.push_back(SessionEvent::RequestFailed {
                    request_id,
                    kind: p.kind,
                    error,
                });
            }
            // Refused for the rate: the wanted mark stays and goes with the
            // next one or the next connection; not the user's error.
            RequestKind::MarkRead(_) => {}
            RequestKind::GapFill(ref room) => {
                if let Some(track) = self.rooms.get_mut(room) {
                    track.gap_fill = None;
                }
                self.events.push_back(SessionEvent::RequestFailed {
                    request_id,
                    kind: p.kind,
                    error,
                });
            }
            kind => {
                self.release_view(&kind);
                self.events.push_back(SessionEvent::RequestFailed {
                    request_id,
                    kind,
                    error,
                });
            }
        }
    }

    fn on_message(&mut self, now: Instant, message: wire::Message) {
        let room = message.room.clone();
        let track = self
            .rooms
            .entry(room.clone())
            // First sight of a room we hold no position for: start here.
            .or_insert_with(|| RoomTrack::new(message.seq.saturating_sub(1), String::new()));
        let mut out = Vec::new();
        let accepted = track.accept(message, &mut out);
        self.emit_messages(out);
        if let Accepted::Held { start_fill: true } = accepted {
            let after_seq = self.rooms.get(&room).map_or(0, |t| t.last_seq);
            self.start_gap_fill(now, &room, after_seq);
        }
    }

    fn start_gap_fill(&mut self, now: Instant, room: &str, after_seq: u64) {
        if self.state != ConnectionState::Online {
            return;
        }
        let body = C::FetchHistory(FetchHistory {
            room: room.to_owned(),
            anchor: Some(Anchor::AfterSeq(after_seq)),
            limit: self.config.gap_page,
        });
        let id = self.request(body, RequestKind::GapFill(room.to_owned()), now);
        if let Some(track) = self.rooms.get_mut(room) {
            track.gap_fill = Some(id);
        }
    }

    fn emit_messages(&mut self, messages: Vec<wire::Message>) {
        let me = self
            .welcome
            .as_ref()
            .map(|w| w.username.clone())
            .unwrap_or_default();
        for message in messages {
            if let Some(held) = self.views_loading.get_mut(&message.room) {
                if let Some(read) = self.reads.get_mut(&message.room) {
                    read.handle_message(&message, &me);
                }
                held.push(message);
                continue;
            }
            if self
                .view_floor
                .get(&message.room)
                .is_some_and(|&floor| message.seq <= floor)
            {
                continue;
            }
            let counted = self
                .reads
                .get_mut(&message.room)
                .is_some_and(|read| read.handle_message(&message, &me));
            let room = counted.then(|| message.room.clone());
            let from_self = !me.is_empty() && message.sender == me;
            let epoch = self
                .rooms
                .get(&message.room)
                .map(|track| track.epoch.clone())
                .unwrap_or_default();
            let sent_here = from_self && self.sends.is_known(&message.client_msg_id);
            if sent_here {
                self.delivered(&message.client_msg_id, message.seq, message.server_ts_ms);
            }
            self.events.push_back(SessionEvent::Message {
                from_self,
                sent_here,
                epoch,
                message,
            });
            if let Some(room) = room {
                self.push_counts(&room);
            }
        }
    }

    fn on_ack(&mut self, now: Instant, ack: wire::SendAck) {
        // An ack for an id not in the outbox (already acked, or never ours)
        // is ignored: acks are idempotent by construction.
        if self.outbox.contains(&ack.client_msg_id) {
            self.delivered(&ack.client_msg_id, ack.seq, ack.server_ts_ms);
            self.outbox.remove(&ack.client_msg_id);
            self.events.push_back(SessionEvent::OutboxChanged);
            self.events.push_back(SessionEvent::Acked(ack));
        }
        self.pump_outbox_at(now);
    }

    /// Reports a send of ours delivered, the first time a sign of its
    /// storage comes (echo or ack).
    fn delivered(&mut self, client_msg_id: &str, seq: u64, server_ts_ms: i64) {
        let Some(entry) = self.outbox.get(client_msg_id).cloned() else {
            return;
        };
        if let Some(was_pending) = self.sends.stored(client_msg_id) {
            self.events.push_back(SessionEvent::Delivered {
                entry,
                seq,
                server_ts_ms,
                was_pending,
            });
        }
    }

    fn on_history(&mut self, now: Instant, pending: Option<Pending>, page: wire::HistoryPage) {
        match pending.map(|p| p.kind) {
            Some(RequestKind::GapFill(room)) => {
                let Some(track) = self.rooms.get_mut(&room) else {
                    return;
                };
                let mut out = Vec::new();
                let next = track.fill(page.messages, page.has_more, &mut out);
                self.emit_messages(out);
                match next {
                    FillNext::Done => {}
                    FillNext::More { after_seq } => self.start_gap_fill(now, &room, after_seq),
                    FillNext::Skipped { from, to } => {
                        self.events
                            .push_back(SessionEvent::GapSkipped { room, from, to });
                    }
                }
            }
            Some(RequestKind::View(room)) => {
                let held = self.views_loading.remove(&room).unwrap_or_default();
                let mut merged: BTreeMap<u64, wire::Message> =
                    page.messages.into_iter().map(|m| (m.seq, m)).collect();
                for message in held {
                    merged.entry(message.seq).or_insert(message);
                }
                if let Some(&top) = merged.keys().next_back() {
                    let floor = self.view_floor.entry(room.clone()).or_default();
                    *floor = (*floor).max(top);
                }
                self.events.push_back(SessionEvent::View {
                    room,
                    messages: merged.into_values().collect(),
                    has_more: page.has_more,
                });
            }
            Some(_) => self.events.push_back(SessionEvent::History(page)),
            None => {}
        }
    }

    /// A view's page will not come: what was held for it is shown live.
    fn release_view(&mut self, kind: &RequestKind) {
        if let RequestKind::View(room) = kind
            && let Some(held) = self.views_loading.remove(room)
        {
            self.emit_messages(held);
        }
    }

    fn on_resumed(&mut self, now: Instant, resumed: wire::Resumed) {
        for outcome in resumed.rooms {
            let status =
                ResumeStatus::try_from(outcome.status).unwrap_or(ResumeStatus::Unspecified);
            match status {
                ResumeStatus::Replayed => {
                    if let Some(track) = self.rooms.get_mut(&outcome.room) {
                        track.epoch = outcome.epoch.clone();
                    }
                }
                ResumeStatus::GapTooLarge => {
                    let track = self.rooms.get_mut(&outcome.room);
                    if let Some(track) = track {
                        track.epoch = outcome.epoch.clone();
                        track.fill_until = track.fill_until.max(outcome.head_seq);
                        // §10.4: page forward unless a live message already started it.
                        if track.gap_fill.is_none() && track.last_seq < outcome.head_seq {
                            let after = track.last_seq;
                            self.start_gap_fill(now, &outcome.room, after);
                        }
                    }
                }
                ResumeStatus::EpochChanged => {
                    self.view_floor.remove(&outcome.room);
                    let track = self.rooms.entry(outcome.room.clone()).or_default();
                    track.reset_to(outcome.head_seq, outcome.epoch.clone());
                    self.events.push_back(SessionEvent::EpochChanged {
                        room: outcome.room.clone(),
                        head_seq: outcome.head_seq,
                    });
                }
                ResumeStatus::NotAMember | ResumeStatus::Unspecified => {
                    self.rooms.remove(&outcome.room);
                }
            }
            self.events.push_back(SessionEvent::Resumed(outcome));
        }
    }

    fn on_joined(&mut self, now: Instant, room: &RoomInfo) {
        let read_state = self.welcome.as_ref().is_some_and(|w| {
            w.capabilities
                .iter()
                .any(|c| c == crate::capability::READ_STATE)
        });
        if read_state && !self.reads.contains_key(&room.name) {
            // a new member's marker is the head at joining.
            let state = wire::ReadState {
                room: room.name.clone(),
                read_seq: room.head_seq,
                counted_seq: room.head_seq,
                ..wire::ReadState::default()
            };
            self.reads
                .insert(room.name.clone(), RoomRead::from_wire(&state));
        }
        match self.rooms.get_mut(&room.name) {
            // We held a position in this epoch: fetch what we missed.
            Some(track) if track.epoch == room.epoch && track.last_seq < room.head_seq => {
                if track.gap_fill.is_none() {
                    let after = track.last_seq;
                    self.start_gap_fill(now, &room.name, after);
                }
            }
            Some(track) if track.epoch == room.epoch => {}
            _ => {
                self.rooms.insert(
                    room.name.clone(),
                    RoomTrack::new(room.head_seq, room.epoch.clone()),
                );
            }
        }
    }
}
