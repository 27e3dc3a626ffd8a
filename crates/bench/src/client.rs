//! One generator connection: setup requests, then an event loop that sends
//! on command and records every push, ack and error.
//!
//! Frames are driven directly (no `ClientSession`): the generator needs
//! exact control of what is on the wire and as little of its own overhead
//! as possible. The one piece of session logic it keeps is per-room seq
//! tracking, which is what lets `reconnect-storm` prove nothing was lost.
//!
//! Two dialects share the loop: [`Dialect::Confab`] speaks confab.v1
//! protobuf frames (the reference server and the stack ceiling), and
//! [`Dialect::Json`] is the adapter for the Node.js `ws` baseline, whose
//! messages are small JSON objects carrying the same room, seq and text.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_protocol::codec::{decode_server_frame, encode_client_frame};
use confab_protocol::wire::{
    self, ClientFrame, ErrorCode, RoomPosition, client_frame::Body as ClientBody, room_resume,
    server_frame::Body as ServerBody,
};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use confab_bot_sdk::ServerUrl;
use confab_bot_sdk::net::{self, Stream, WebSocketOptions};

use crate::BenchError;
use crate::clock::{self, Tag};
use crate::stats::Recorder;

/// How long one setup request (connect, Auth, Join, Resume) may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection attempts after a deliberate drop before giving up.
const RECONNECT_ATTEMPTS: u32 = 20;

/// tungstenite read buffer per socket. tungstenite zero-fills the free part
/// of it before every read attempt (snapview/tungstenite-rs#547), and the
/// generator makes one or two attempts per push received, so its size is
/// paid per push: 16 KiB cost ~10% of the generator's CPU at 100k pushes/s.
/// A push is ~150 bytes, so 4 KiB still takes a backlog of ~25 per read,
/// and keeps 15k idle sockets cheap (the default is 128 KiB).
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Which wire format a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// confab.v1 protobuf frames.
    Confab,
    /// The Node baseline's JSON objects.
    Json,
}

/// A server under test, as the generator reaches it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Label in reports: `confab`, `ceiling`, `node-ws`.
    pub name: String,
    /// The server's base URL, e.g. `http://127.0.0.1:7420`.
    pub server: ServerUrl,
    /// WebSocket URL (the baselines' paths differ from Confab's).
    pub ws_url: String,
    /// Wire format.
    pub dialect: Dialect,
    /// Whether users register and log in over HTTP first (Confab only;
    /// the baselines have no accounts).
    pub login: bool,
}

/// Where a connection is in a room: what it last saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// Highest seq seen.
    pub last_seq: u64,
    /// The room's epoch (§10.2); empty for the JSON dialect.
    pub epoch: String,
}

/// A decoded server frame, reduced to what the generator looks at.
#[derive(Debug)]
enum Incoming {
    Message {
        room: String,
        seq: u64,
        text: String,
    },
    Ack {
        request_id: u64,
        duplicate: bool,
    },
    Error {
        request_id: u64,
        code: String,
    },
    Joined {
        request_id: u64,
        room: String,
        head_seq: u64,
        epoch: String,
    },
    Welcome {
        request_id: u64,
        rooms: Vec<(String, Position)>,
    },
    Resumed {
        request_id: u64,
        statuses: Vec<(String, i32)>,
    },
    Other,
    Closed {
        code: Option<u16>,
    },
}

/// JSON messages of the Node baseline (see `peers/server.js`).
#[derive(Debug, Serialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum JsonOut<'a> {
    Join {
        id: u64,
        room: &'a str,
    },
    Send {
        id: u64,
        room: &'a str,
        text: &'a str,
    },
}

/// Strings are borrowed from the message where they need no unescaping,
/// so a push costs no allocation (see [`crate::push`]).
#[derive(Debug, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum JsonIn<'a> {
    Msg {
        #[serde(borrow)]
        room: Cow<'a, str>,
        seq: u64,
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    Ack {
        id: u64,
    },
    Joined {
        id: u64,
        #[serde(borrow)]
        room: Cow<'a, str>,
        seq: u64,
    },
    Error {
        id: u64,
        #[serde(borrow)]
        message: Cow<'a, str>,
    },
}

/// An open, set-up connection.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<Stream>,
    dialect: Dialect,
    next_request_id: u64,
    /// Rooms this connection follows.
    pub positions: HashMap<String, Position>,
}

fn protocol(what: impl Into<String>) -> BenchError {
    BenchError::Protocol(what.into())
}

impl Client {
    /// Connects and, for Confab, authenticates with `token` (§6).
    pub async fn connect(endpoint: &Endpoint, token: &str) -> Result<Self, BenchError> {
        tokio::time::timeout(SETUP_TIMEOUT, Self::connect_inner(endpoint, token))
            .await
            .map_err(|_| {
                BenchError::timeout(format!("connecting to {}", endpoint.ws_url), SETUP_TIMEOUT)
            })?
    }

    async fn connect_inner(endpoint: &Endpoint, token: &str) -> Result<Self, BenchError> {
        // The SDK's connector opens and upgrades (subprotocol confab.v1);
        // the frames on the socket are the generator's own.
        let options = WebSocketOptions::default()
            .timeout(SETUP_TIMEOUT)
            .url(endpoint.ws_url.clone())
            .config(WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES));
        let ws = net::connect_websocket(&endpoint.server, &options)
            .await?
            .stream;
        let mut client = Self {
            ws,
            dialect: endpoint.dialect,
            next_request_id: 1,
            positions: HashMap::new(),
        };
        if client.dialect == Dialect::Confab {
            let auth = ClientBody::Auth(wire::Auth {
                token: token.to_owned(),
                capabilities: Vec::new(),
                client_name: "confab-bench".to_owned(),
            });
            let id = client.request(auth).await?;
            match client.reply(id, &mut |_| {}).await? {
                Incoming::Welcome { rooms, .. } => client.positions = rooms.into_iter().collect(),
                other => {
                    return Err(protocol(format!(
                        "expected Welcome after Auth, got {other:?}"
                    )));
                }
            }
        }
        Ok(client)
    }

    async fn write(&mut self, message: Message) -> Result<(), BenchError> {
        self.ws
            .send(message)
            .await
            .map_err(|e| protocol(format!("write failed: {e}")))
    }

    fn take_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id += 1;
        id
    }

    /// Sends a Confab request; returns its request id.
    async fn request(&mut self, body: ClientBody) -> Result<u64, BenchError> {
        let id = self.take_request_id();
        let bytes = encode_client_frame(&ClientFrame::request(id, body));
        self.write(Message::Binary(bytes)).await?;
        Ok(id)
    }

    async fn json(&mut self, out: &JsonOut<'_>) -> Result<(), BenchError> {
        // Plain structs of strings and numbers always serialize.
        let text = serde_json::to_string(out).unwrap_or_default();
        self.write(Message::text(text)).await
    }

    /// Reads until the reply to `request_id`; anything else read meanwhile
    /// goes to `other` (replayed pushes during Resume, for instance).
    async fn reply(
        &mut self,
        request_id: u64,
        other: &mut (dyn FnMut(Incoming) + Send),
    ) -> Result<Incoming, BenchError> {
        loop {
            let incoming = self.next_incoming().await;
            let id = match &incoming {
                Incoming::Ack { request_id, .. }
                | Incoming::Error { request_id, .. }
                | Incoming::Joined { request_id, .. }
                | Incoming::Welcome { request_id, .. }
                | Incoming::Resumed { request_id, .. } => Some(*request_id),
                Incoming::Closed { code } => {
                    return Err(protocol(format!(
                        "server closed the socket (code {code:?}) during setup"
                    )));
                }
                Incoming::Message { .. } | Incoming::Other => None,
            };
            if id == Some(request_id) {
                return Ok(incoming);
            }
            other(incoming);
        }
    }

    async fn next_incoming(&mut self) -> Incoming {
        match self.ws.next().await {
            Some(Ok(message)) => decode(self.dialect, message),
            Some(Err(_)) | None => Incoming::Closed { code: None },
        }
    }

    /// Joins `room`, creating it if it does not exist (§7.2, §7.3); the room
    /// is then active on this connection from its head.
    pub async fn join(&mut self, room: &str) -> Result<(), BenchError> {
        tokio::time::timeout(SETUP_TIMEOUT, self.join_inner(room))
            .await
            .map_err(|_| BenchError::timeout(format!("joining room {room}"), SETUP_TIMEOUT))?
    }

    async fn join_inner(&mut self, room: &str) -> Result<(), BenchError> {
        // Confab: join; a missing room is created; losing the creation race
        // to another member means it exists now, so join again. The server
        // stores a new room before its hub knows it, so a join right after
        // ROOM_EXISTS can still find no room: retry a few times, backing
        // off. The JSON baseline creates rooms on join.
        let attempts: &[bool] = match self.dialect {
            Dialect::Confab => &[false, true, false, false, false, false, false],
            Dialect::Json => &[false],
        };
        for (attempt, &create) in (0u64..).zip(attempts) {
            if attempt >= 3 {
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            }
            let id = match (self.dialect, create) {
                (Dialect::Json, _) => {
                    let id = self.take_request_id();
                    self.json(&JsonOut::Join { id, room }).await?;
                    id
                }
                (Dialect::Confab, false) => {
                    let name = room.to_owned();
                    self.request(ClientBody::JoinRoom(wire::JoinRoom { name }))
                        .await?
                }
                (Dialect::Confab, true) => {
                    let (name, topic) = (room.to_owned(), "confab-bench".to_owned());
                    self.request(ClientBody::CreateRoom(wire::CreateRoom { name, topic }))
                        .await?
                }
            };
            match self.reply(id, &mut |_| {}).await? {
                Incoming::Joined {
                    room,
                    head_seq,
                    epoch,
                    ..
                } => {
                    let last_seq = head_seq;
                    self.positions.insert(room, Position { last_seq, epoch });
                    return Ok(());
                }
                Incoming::Error { code, .. } if code == "RoomNotFound" || code == "RoomExists" => {}
                other => return Err(protocol(format!("joining {room}: {other:?}"))),
            }
        }
        Err(protocol(format!(
            "room {room} could neither be joined nor created"
        )))
    }

    /// Activates `rooms`, which this user is already a member of, on this
    /// socket by resuming them from their current head (§10.1): what a
    /// user's second device does. The JSON baseline has no resume; it joins.
    pub async fn resume_rooms(&mut self, rooms: &[String]) -> Result<(), BenchError> {
        if self.dialect == Dialect::Json {
            for room in rooms {
                self.join(room).await?;
            }
            return Ok(());
        }
        let positions = rooms
            .iter()
            .map(|room| {
                let known = self.positions.get(room).cloned().unwrap_or_default();
                RoomPosition {
                    room: room.clone(),
                    last_seq: known.last_seq,
                    epoch: known.epoch,
                }
            })
            .collect();
        let id = self
            .request(ClientBody::Resume(wire::Resume { rooms: positions }))
            .await?;
        let reply = tokio::time::timeout(SETUP_TIMEOUT, self.reply(id, &mut |_| {}))
            .await
            .map_err(|_| BenchError::timeout("waiting for Resumed", SETUP_TIMEOUT))??;
        match reply {
            Incoming::Resumed { statuses, .. }
                if statuses
                    .iter()
                    .all(|(_, s)| *s == room_resume::Status::Replayed as i32) =>
            {
                Ok(())
            }
            other => Err(protocol(format!("resuming {rooms:?}: {other:?}"))),
        }
    }
}

fn decode(dialect: Dialect, message: Message) -> Incoming {
    match (dialect, message) {
        (Dialect::Confab, Message::Binary(bytes)) => decode_confab(&bytes),
        (Dialect::Json, Message::Text(text)) => decode_json(text.as_str()),
        (_, Message::Close(frame)) => Incoming::Closed {
            code: frame.map(|f| u16::from(f.code)),
        },
        _ => Incoming::Other,
    }
}

fn decode_json(text: &str) -> Incoming {
    match serde_json::from_str::<JsonIn>(text) {
        Ok(JsonIn::Msg { room, seq, text }) => Incoming::Message {
            room: room.into_owned(),
            seq,
            text: text.into_owned(),
        },
        Ok(JsonIn::Ack { id }) => Incoming::Ack {
            request_id: id,
            duplicate: false,
        },
        Ok(JsonIn::Joined { id, room, seq }) => Incoming::Joined {
            request_id: id,
            room: room.into_owned(),
            head_seq: seq,
            epoch: String::new(),
        },
        Ok(JsonIn::Error { id, message }) => Incoming::Error {
            request_id: id,
            code: message.into_owned(),
        },
        Err(_) => Incoming::Other,
    }
}

/// Handles `message` in the event loop: a Message push is read in place and
/// recorded at once (the hot path, no allocation); anything else is
/// decoded in full and returned.
fn receive(state: &mut LoopState, dialect: Dialect, message: Message) -> Option<Incoming> {
    match (dialect, &message) {
        (Dialect::Confab, Message::Binary(bytes)) => {
            if let Some(push) = crate::push::skim(bytes) {
                state.on_push(push.room, push.seq, push.text);
                return None;
            }
        }
        (Dialect::Json, Message::Text(text)) => {
            return match serde_json::from_str::<JsonIn>(text.as_str()) {
                Ok(JsonIn::Msg { room, seq, text }) => {
                    state.on_push(&room, seq, text.as_bytes());
                    None
                }
                // Rare: replies to setup and sends. Parsed twice, kept simple.
                _ => Some(decode_json(text.as_str())),
            };
        }
        _ => {}
    }
    Some(decode(dialect, message))
}

fn decode_confab(bytes: &Bytes) -> Incoming {
    let Ok(frame) = decode_server_frame(bytes, usize::MAX) else {
        return Incoming::Other;
    };
    let request_id = frame.request_id;
    match frame.body {
        Some(ServerBody::Message(m)) => Incoming::Message {
            room: m.room,
            seq: m.seq,
            text: m.text,
        },
        Some(ServerBody::SendAck(ack)) => Incoming::Ack {
            request_id,
            duplicate: ack.duplicate,
        },
        Some(ServerBody::Error(e)) => Incoming::Error {
            request_id,
            code: ErrorCode::try_from(e.code)
                .map_or_else(|_| e.code.to_string(), |c| format!("{c:?}")),
        },
        Some(ServerBody::RoomJoined(joined)) => {
            let info = joined.room.unwrap_or_default();
            Incoming::Joined {
                request_id,
                room: info.name,
                head_seq: info.head_seq,
                epoch: info.epoch,
            }
        }
        Some(ServerBody::Welcome(welcome)) => Incoming::Welcome {
            request_id,
            rooms: welcome
                .rooms
                .into_iter()
                .map(|r| {
                    let position = Position {
                        last_seq: r.head_seq,
                        epoch: r.epoch,
                    };
                    (r.name, position)
                })
                .collect(),
        },
        Some(ServerBody::Resumed(resumed)) => Incoming::Resumed {
            request_id,
            statuses: resumed
                .rooms
                .into_iter()
                .map(|r| (r.room, r.status))
                .collect(),
        },
        _ => Incoming::Other,
    }
}

/// What the event loop is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Send one tagged message to `room`, whose push `audience`
    /// connections should receive.
    Send {
        /// Room.
        room: Arc<str>,
        /// Phase and intended time.
        tag: Tag,
        /// Connections that should receive the push.
        audience: u32,
        /// Text size in bytes.
        text_bytes: usize,
    },
    /// Drop the socket without a goodbye, reconnect, Auth, Resume every
    /// followed room from its last seen seq, and report.
    Reconnect {
        /// Where to report.
        report: mpsc::UnboundedSender<Recovery>,
    },
    /// Close politely and end the loop.
    Close,
}

/// A connection's report after a [`Command::Reconnect`].
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Connection index.
    pub index: usize,
    /// Time from the command being handled to Resumed: the socket was gone
    /// for all of it.
    pub elapsed: Duration,
    /// Whether every room came back REPLAYED.
    pub replayed_all: bool,
    /// The error, if the connection did not come back.
    pub error: Option<String>,
}

/// What a connection saw over its life, returned when its loop ends.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Last seq seen per room.
    pub positions: HashMap<String, u64>,
    /// Seqs skipped on this connection (a gap is a loss).
    pub gaps: u64,
    /// Seqs received twice.
    pub duplicates: u64,
    /// Whether the server ended the connection (anything but our Close).
    pub lost: bool,
}

/// The event loop's bookkeeping, apart from the socket.
struct LoopState {
    index: usize,
    recorder: Arc<Recorder>,
    /// Sends waiting for their ack, by request id.
    pending: HashMap<u64, (Tag, u32)>,
    outcome: Outcome,
    epochs: HashMap<String, String>,
}

impl LoopState {
    /// Records a Message push: seq accounting per room, then the latency
    /// from the tag's intended send time.
    fn on_push(&mut self, room: &str, seq: u64, text: &[u8]) {
        // Allocates the room's key only the first time the room is seen.
        let last = match self.outcome.positions.get_mut(room) {
            Some(last) => last,
            None => self.outcome.positions.entry(room.to_owned()).or_insert(0),
        };
        let duplicate = seq <= *last;
        if duplicate {
            self.outcome.duplicates += 1;
        } else {
            self.outcome.gaps += seq - *last - 1;
            *last = seq;
        }
        let Some(tag) = Tag::parse_bytes(text) else {
            return;
        };
        let Some(phase) = self.recorder.phase(tag.phase) else {
            return;
        };
        if duplicate {
            // Not a delivery: counting it would hide a loss elsewhere.
            phase
                .duplicates
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            let latency = clock::now_ns().saturating_sub(tag.intended_ns);
            phase.on_delivery(Duration::from_nanos(latency));
        }
    }

    fn handle(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Message { room, seq, text } => self.on_push(&room, seq, text.as_bytes()),
            Incoming::Ack {
                request_id,
                duplicate,
            } => {
                if duplicate {
                    self.recorder.count("duplicate-ack");
                }
                if let Some((tag, audience)) = self.pending.remove(&request_id)
                    && let Some(phase) = self.recorder.phase(tag.phase)
                {
                    let latency = clock::now_ns().saturating_sub(tag.intended_ns);
                    phase.on_ack(Duration::from_nanos(latency), u64::from(audience));
                }
            }
            Incoming::Error { request_id, code } => {
                self.recorder.count(format!("error:{code}"));
                if let Some((tag, _)) = self.pending.remove(&request_id)
                    && let Some(phase) = self.recorder.phase(tag.phase)
                {
                    phase.on_send_error();
                }
            }
            Incoming::Joined { room, epoch, .. } => {
                self.epochs.insert(room, epoch);
            }
            Incoming::Welcome { .. }
            | Incoming::Resumed { .. }
            | Incoming::Other
            | Incoming::Closed { .. } => {}
        }
    }

    /// Every send still waiting for an ack is lost with the socket.
    fn fail_pending(&mut self) {
        for (_, (tag, _)) in self.pending.drain() {
            if let Some(phase) = self.recorder.phase(tag.phase) {
                phase.on_send_error();
            }
        }
    }

    fn resume_positions(&self) -> Vec<RoomPosition> {
        let mut rooms: Vec<RoomPosition> = self
            .outcome
            .positions
            .iter()
            .map(|(room, last_seq)| RoomPosition {
                room: room.clone(),
                last_seq: *last_seq,
                epoch: self.epochs.get(room).cloned().unwrap_or_default(),
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms
    }
}

/// Runs a connection until [`Command::Close`], the command channel closing,
/// or the server ending it. `index` identifies the connection in reports
/// and picks its histogram shard.
pub async fn run(
    mut client: Client,
    endpoint: Arc<Endpoint>,
    token: Arc<str>,
    index: usize,
    recorder: Arc<Recorder>,
    mut commands: mpsc::Receiver<Command>,
) -> Outcome {
    let mut state = LoopState {
        index,
        recorder,
        pending: HashMap::new(),
        outcome: Outcome::default(),
        epochs: HashMap::new(),
    };
    for (room, position) in std::mem::take(&mut client.positions) {
        state
            .outcome
            .positions
            .insert(room.clone(), position.last_seq);
        state.epochs.insert(room, position.epoch);
    }
    enum Step {
        Command(Option<Command>),
        Frame(Incoming),
    }
    loop {
        // Frames first, every one that is ready, pushes handled in place;
        // then commands. One wake-up thus costs one pass over both sources
        // instead of a `select!` (fresh futures, waker registration on
        // both) per frame. tokio's cooperative budget bounds the frame loop,
        // so a flood of pushes cannot starve the commands.
        let step = poll_fn(|cx| {
            loop {
                match client.ws.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(message))) => {
                        if let Some(incoming) = receive(&mut state, client.dialect, message) {
                            return Poll::Ready(Step::Frame(incoming));
                        }
                    }
                    Poll::Ready(Some(Err(_)) | None) => {
                        return Poll::Ready(Step::Frame(Incoming::Closed { code: None }));
                    }
                    Poll::Pending => break,
                }
            }
            commands.poll_recv(cx).map(Step::Command)
        })
        .await;
        match step {
            Step::Frame(Incoming::Closed { code }) => {
                let label =
                    code.map_or_else(|| "close:abrupt".to_owned(), |c| format!("close:{c}"));
                state.recorder.count(label);
                state.fail_pending();
                state.outcome.lost = true;
                return state.outcome;
            }
            Step::Frame(incoming) => state.handle(incoming),
            Step::Command(Some(Command::Send {
                room,
                tag,
                audience,
                text_bytes,
            })) => {
                if let Err(err) =
                    send(&mut client, &mut state, &room, tag, audience, text_bytes).await
                {
                    state.recorder.count(format!("send-failed:{err}"));
                    state.fail_pending();
                    state.outcome.lost = true;
                    return state.outcome;
                }
            }
            Step::Command(Some(Command::Reconnect { report })) => {
                let started = Instant::now();
                // Dropping the stream closes the TCP socket with no Close
                // frame: the server sees the peer vanish, as after a crash.
                drop(client);
                state.fail_pending();
                match reconnect(&endpoint, &token, &mut state).await {
                    Ok((next, replayed_all)) => {
                        client = next;
                        report
                            .send(Recovery {
                                index,
                                elapsed: started.elapsed(),
                                replayed_all,
                                error: None,
                            })
                            .ok();
                    }
                    Err(err) => {
                        report
                            .send(Recovery {
                                index,
                                elapsed: started.elapsed(),
                                replayed_all: false,
                                error: Some(err.to_string()),
                            })
                            .ok();
                        state.outcome.lost = true;
                        return state.outcome;
                    }
                }
            }
            Step::Command(Some(Command::Close) | None) => {
                close(&mut client).await;
                state.fail_pending();
                return state.outcome;
            }
        }
    }
}

async fn send(
    client: &mut Client,
    state: &mut LoopState,
    room: &str,
    tag: Tag,
    audience: u32,
    text_bytes: usize,
) -> Result<(), BenchError> {
    let id = client.take_request_id();
    let text = tag.text(text_bytes);
    state.pending.insert(id, (tag, audience));
    match client.dialect {
        Dialect::Confab => {
            let body = ClientBody::SendMessage(wire::SendMessage {
                room: room.to_owned(),
                // Unique per user across connections and reruns (§8.5).
                client_msg_id: format!("b{}-{}-{}", state.index, id, tag.intended_ns),
                text,
                kind: wire::MessageKind::Text as i32,
                relation: None,
            });
            let bytes = encode_client_frame(&ClientFrame::request(id, body));
            client.write(Message::Binary(bytes)).await
        }
        Dialect::Json => {
            client
                .json(&JsonOut::Send {
                    id,
                    room,
                    text: &text,
                })
                .await
        }
    }
}

async fn reconnect(
    endpoint: &Endpoint,
    token: &str,
    state: &mut LoopState,
) -> Result<(Client, bool), BenchError> {
    let mut attempt = 0;
    let mut client = loop {
        attempt += 1;
        match Client::connect(endpoint, token).await {
            Ok(client) => break client,
            Err(err) if attempt >= RECONNECT_ATTEMPTS => return Err(err),
            // A storm of reconnects can overflow the listen backlog; back off
            // a little, as a real client does (§14.2), and retry.
            Err(_) => tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await,
        }
    };
    let rooms = state.resume_positions();
    let id = client
        .request(ClientBody::Resume(wire::Resume { rooms }))
        .await?;
    let reply = tokio::time::timeout(
        SETUP_TIMEOUT,
        client.reply(id, &mut |incoming| state.handle(incoming)),
    )
    .await
    .map_err(|_| BenchError::timeout("waiting for Resumed", SETUP_TIMEOUT))??;
    let Incoming::Resumed { statuses, .. } = reply else {
        return Err(protocol(format!("expected Resumed, got {reply:?}")));
    };
    let mut replayed_all = true;
    for (room, status) in statuses {
        if status != room_resume::Status::Replayed as i32 {
            replayed_all = false;
            state
                .recorder
                .count(format!("resume-not-replayed:{room}:{status}"));
        }
    }
    Ok((client, replayed_all))
}

/// Sends Close and waits (bounded) for the server's answer, so the server
/// sees an orderly goodbye rather than a reset.
async fn close(client: &mut Client) {
    if client.ws.close(None).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = client.ws.next().await {} };
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .ok();
}
