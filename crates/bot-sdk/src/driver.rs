//! The connection driver: a tokio task that does all I/O for a
//! [`ClientSession`].
//!
//! The session (crate `confab-protocol`) holds every protocol rule and no
//! I/O; the driver is its only owner and does what it asks:
//!
//! - opens the WebSocket (`ws://` or `wss://`, subprotocol `confab.v1`, §3)
//!   whenever the session enters [`ConnectionState::Connecting`] (initially,
//!   and after the session's reconnect backoff with full jitter, §14.2);
//! - writes every frame of `poll_transmit` as one binary message (§3.3) and
//!   feeds every binary message it receives to `handle_bytes`;
//! - calls `handle_timeout` at `poll_timeout`, and `handle_disconnected` with
//!   the peer's close code when the socket ends (§13.2);
//! - drops the socket on [`SessionEvent::TransportStale`] (keepalive Ping
//!   unanswered, §12.1);
//! - sends every session event, in order, to a bounded channel;
//! - with an [`OutboxStore`] ([`DriverOptions::outbox_store`]), saves the
//!   session's outbox each time it changes (see [Durable sends](#durable-sends)).
//!
//! Commands run inside the task through [`DriverHandle::call`], which hands a
//! closure the session and the current time:
//!
//! ```no_run
//! # async fn example(server: confab_bot_sdk::ServerUrl, token: String) -> Result<(), Box<dyn std::error::Error>> {
//! use confab_bot_sdk::driver::{self, DriverEvent, DriverOptions};
//! use confab_protocol::session::{ClientSession, SessionConfig, SessionEvent};
//!
//! let session = ClientSession::new(SessionConfig::new(token));
//! let (handle, mut events) = driver::spawn(server, session, DriverOptions::default());
//! let receipt = handle.send_message("lobby", "hello", false).await?;
//! let ack = receipt.acked().await?; // stored, with this seq
//! println!("stored as seq {}", ack.seq);
//! handle.call(|session, now| session.list_rooms(now, true)).await??;
//! while let Some(event) = events.recv().await {
//!     if let DriverEvent::Session(SessionEvent::RoomList(rooms)) = event {
//!         println!("{} rooms", rooms.len());
//!         break;
//!     }
//! }
//! handle.shutdown().await; // closes the socket with 1000
//! # Ok(()) }
//! ```
//!
//! # Durable sends
//!
//! The session's outbox lives in memory: it survives reconnects, not a
//! crash. Given an [`OutboxStore`], the driver saves the whole outbox
//! whenever the session reports [`SessionEvent::OutboxChanged`] (a send
//! queued, acknowledged or refused for good), before it writes any frame.
//! [`DriverHandle::send_message`] returns only once the new entry is saved,
//! so a message whose [`PendingSend`] the caller got is either acknowledged
//! by the server or still in the store. An acknowledgement is saved after
//! it is reported; a crash in between leaves an entry that is resent after
//! the restart and recognised by the server as a repeat (§8.5), so it is
//! stored once. Restoring is the caller's part: load the store into the
//! session with [`ClientSession::restore_outbox`] before [`spawn`]
//! (`ClientBuilder::outbox_store` does both). When a save fails the send
//! stays queued in memory and [`DriverEvent::OutboxNotSaved`] says so.
//!
//! # Backpressure
//!
//! Events go through a bounded channel of [`DriverOptions::event_capacity`].
//! When the consumer falls behind, the driver stops reading the socket
//! rather than dropping or buffering without bound; the server then holds the
//! frames, and if its per-connection queue fills it closes with 4429 and the
//! session resumes without loss once the consumer catches up (§12.4).
//! Commands and timers keep being served meanwhile.
//!
//! One exception keeps a common pattern from deadlocking: a consumer that
//! awaits [`PendingSend::acked`] is not reading events, yet the SendAck it
//! waits for is behind them on the socket. While any send awaits its ack,
//! the driver keeps reading, buffering up to
//! [`DriverOptions::max_buffered_events`] events; acks resolve their
//! [`PendingSend`] as soon as the session reports them, without waiting for
//! the channel.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_protocol::codec::encode_client_frame;
use confab_protocol::names::ClientMsgId;
use confab_protocol::relation::ValidRelation;
use confab_protocol::session::{
    ClientSession, CommandError, ConnectionState, OfflineReason, SessionEvent,
};
use confab_protocol::wire;
use futures_util::{SinkExt, StreamExt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

pub use crate::net::ConnectError;
use crate::net::{self, Stream, WebSocketOptions};
use crate::store::{OutboxStore, StoreError};
use crate::url::ServerUrl;

/// Tunables of a driver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DriverOptions {
    /// Capacity of the event channel.
    pub event_capacity: usize,
    /// Most events held inside the driver while sends await their acks
    /// (see the module docs on backpressure).
    pub max_buffered_events: usize,
    /// How long opening a connection (TCP, TLS, upgrade) may take.
    pub connect_timeout: Duration,
    /// How long a graceful close waits for the server's close frame.
    pub close_timeout: Duration,
    /// Where the outbox is saved on every change; see
    /// [`DriverOptions::outbox_store`].
    pub(crate) outbox: Option<Arc<dyn OutboxStore>>,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self {
            event_capacity: 256,
            max_buffered_events: 16 * 1024,
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            outbox: None,
        }
    }
}

impl DriverOptions {
    /// Sets [`DriverOptions::event_capacity`] (at least 1).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Sets [`DriverOptions::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Saves the session's outbox to `store` each time it changes, so sends
    /// survive a crash of the process (see [Durable sends](self#durable-sends)).
    /// The driver only saves: restore the store's entries into the session
    /// (`session.restore_outbox(store.load()?)`) before [`spawn`].
    pub fn outbox_store(mut self, store: impl OutboxStore) -> Self {
        self.outbox = Some(Arc::new(store));
        self
    }
}

/// What the driver reports, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum DriverEvent {
    /// An event of the session, including its connection state changes
    /// ([`SessionEvent::StateChanged`]).
    Session(SessionEvent),
    /// Opening a connection failed; the session backs off and retries.
    ConnectFailed(ConnectError),
    /// The socket ended; the session decides whether to reconnect.
    Disconnected {
        /// The server's close code, if it sent a close frame (§13.2).
        close_code: Option<u16>,
        /// The close reason or what broke.
        reason: String,
    },
    /// The server sent a message that is not a valid ServerFrame; it was skipped.
    InvalidFrame(String),
    /// Saving the outbox to the [`OutboxStore`] failed: the sends are still
    /// queued in memory, but a crash now may lose those not yet acknowledged.
    OutboxNotSaved(StoreError),
}

/// The driver task has ended (shut down, or every handle was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the connection driver has stopped")]
pub struct DriverClosed;

/// Why a send did not end with a SendAck.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The message was not queued: invalid room or text, or the session stopped.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The server refused the message for good (e.g. `NOT_A_MEMBER`,
    /// `TEXT_TOO_LONG`); rate limits are retried, not reported here.
    #[error("the server refused the message: {} ({:?})", .0.message, wire::ErrorCode::try_from(.0.code).unwrap_or(wire::ErrorCode::Unspecified))]
    Refused(wire::Error),
    /// The session stopped for good before the server acknowledged the message.
    #[error("the session stopped before the message was acknowledged: {0:?}")]
    Stopped(OfflineReason),
    /// The driver stopped before the server acknowledged the message.
    #[error(transparent)]
    DriverClosed(#[from] DriverClosed),
}

/// Why [`DriverHandle::request`] got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request was not queued (invalid argument, not online, stopped).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The session stopped for good, or the driver ended, before the reply.
    #[error("the session stopped before the reply arrived")]
    Interrupted,
}

impl From<DriverClosed> for RequestError {
    fn from(_: DriverClosed) -> Self {
        RequestError::Interrupted
    }
}

/// A queued message, waiting for its SendAck (§8.3).
#[derive(Debug)]
pub struct PendingSend {
    client_msg_id: String,
    ack: oneshot::Receiver<Result<wire::SendAck, SendError>>,
}

impl PendingSend {
    /// The message's idempotency key (§8.5).
    pub fn client_msg_id(&self) -> &str {
        &self.client_msg_id
    }

    /// Waits until the server has durably stored the message. Reconnects and
    /// rate limits are handled by the session meanwhile; they do not end the wait.
    pub async fn acked(self) -> Result<wire::SendAck, SendError> {
        self.ack
            .await
            .map_err(|_| SendError::DriverClosed(DriverClosed))?
    }
}

type Call = Box<dyn FnOnce(&mut ClientSession, Instant) + Send>;
type AckSender = oneshot::Sender<Result<wire::SendAck, SendError>>;
/// Looks at each session event until it sees the reply it waits for.
type ReplyWaiter = Box<dyn FnMut(&SessionEvent) -> Matched + Send>;

/// What a reply waiter made of an event.
#[derive(PartialEq, Eq)]
enum Matched {
    No,
    /// The reply; the event also goes to the channel.
    Reply,
    /// A failure of this request: reported to the requester only.
    Failure,
}

/// Whether `event` reports the failure of request `id`.
fn is_failure_of(id: u64, event: &SessionEvent) -> bool {
    matches!(event,
        SessionEvent::RequestFailed { request_id, .. }
        | SessionEvent::RequestTimedOut { request_id, .. }
        | SessionEvent::RequestAborted { request_id, .. } if *request_id == id)
}
type StartRequest = Box<dyn FnOnce(&mut ClientSession, Instant) -> Option<ReplyWaiter> + Send>;

enum Command {
    Call(Call),
    Request(StartRequest),
    Send {
        room: String,
        text: String,
        action: bool,
        relation: Option<ValidRelation>,
        client_msg_id: String,
        ack: AckSender,
        queued: oneshot::Sender<Result<(), CommandError>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// Controls a driver task. Clones share the task; when the last clone is
/// dropped the task shuts down gracefully.
#[derive(Clone)]
pub struct DriverHandle {
    commands: mpsc::Sender<Command>,
}

impl fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverHandle")
            .field("closed", &self.commands.is_closed())
            .finish()
    }
}

impl DriverHandle {
    /// Runs `f` on the session inside the driver task, with the current
    /// time, and returns its result. Frames and events it causes are sent
    /// and delivered by the driver.
    pub async fn call<R, F>(&self, f: F) -> Result<R, DriverClosed>
    where
        F: FnOnce(&mut ClientSession, Instant) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |session, now| {
            if tx.send(f(session, now)).is_err() {
                tracing::debug!("the caller stopped waiting for a driver call");
            }
        });
        self.commands
            .send(Command::Call(call))
            .await
            .map_err(|_| DriverClosed)?;
        rx.await.map_err(|_| DriverClosed)
    }

    /// Starts a request and waits for its reply. `start` queues the request
    /// on the session and returns its request id (as the session's commands
    /// do); `reply` is shown every later session event with that id until it
    /// returns `Some`. The reply event reaches the event channel as well,
    /// but an error the requester receives (`RequestFailed`, `RequestTimedOut`
    /// or `RequestAborted` carrying the request's id) does not: it is
    /// reported once, to the requester.
    ///
    /// Unlike waiting on the event channel, this cannot deadlock when the
    /// caller is the channel's consumer: the driver keeps reading the socket
    /// while a reply is awaited. The reply's matcher should also accept the
    /// request's `RequestFailed`, `RequestTimedOut` and `RequestAborted`
    /// events, which carry the id.
    ///
    /// ```no_run
    /// # async fn example(handle: confab_bot_sdk::driver::DriverHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// use confab_protocol::session::SessionEvent;
    ///
    /// let members = handle
    ///     .request(
    ///         |session, now| session.list_members(now, "lobby"),
    ///         |id, event| match event {
    ///             SessionEvent::Members(list) if list.room == "lobby" => Some(Ok(list.clone())),
    ///             SessionEvent::RequestFailed { request_id, error, .. } if *request_id == id => {
    ///                 Some(Err(error.message.clone()))
    ///             }
    ///             _ => None,
    ///         },
    ///     )
    ///     .await??;
    /// println!("{} members", members.members.len());
    /// # Ok(()) }
    /// ```
    pub async fn request<R, S, M>(&self, start: S, mut reply: M) -> Result<R, RequestError>
    where
        S: FnOnce(&mut ClientSession, Instant) -> Result<u64, CommandError> + Send + 'static,
        M: FnMut(u64, &SessionEvent) -> Option<R> + Send + 'static,
        R: Send + 'static,
    {
        let (queued_tx, queued_rx) = oneshot::channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        let begin: StartRequest = Box::new(move |session, now| {
            let id = match start(session, now) {
                Ok(id) => id,
                Err(err) => {
                    if queued_tx.send(Err(err)).is_err() {
                        tracing::debug!("requester stopped waiting");
                    }
                    return None;
                }
            };
            if queued_tx.send(Ok(())).is_err() {
                return None;
            }
            let mut reply_tx = Some(reply_tx);
            Some(Box::new(move |event: &SessionEvent| {
                let Some(value) = reply(id, event) else {
                    return Matched::No;
                };
                if let Some(tx) = reply_tx.take()
                    && tx.send(value).is_err()
                {
                    tracing::debug!("requester stopped waiting for the reply");
                }
                if is_failure_of(id, event) {
                    Matched::Failure
                } else {
                    Matched::Reply
                }
            }))
        });
        self.commands
            .send(Command::Request(begin))
            .await
            .map_err(|_| RequestError::Interrupted)?;
        queued_rx.await.map_err(|_| RequestError::Interrupted)??;
        reply_rx.await.map_err(|_| RequestError::Interrupted)
    }

    /// Queues a message with a fresh `client_msg_id` (UUIDv7). It goes
    /// through the session's outbox, so it survives reconnects and is resent
    /// with the same id (§14.1). Await [`PendingSend::acked`] for the seq.
    pub async fn send_message(
        &self,
        room: &str,
        text: &str,
        action: bool,
    ) -> Result<PendingSend, SendError> {
        self.send(room, text, action, None).await
    }

    /// Queues an edit, deletion, reply or reaction (§8.6) with a fresh
    /// `client_msg_id`, through the outbox like [`DriverHandle::send_message`].
    /// `text` is an edit's new text or a reply's answer; empty otherwise.
    pub async fn send_relation(
        &self,
        room: &str,
        relation: ValidRelation,
        text: &str,
    ) -> Result<PendingSend, SendError> {
        self.send(room, text, false, Some(relation)).await
    }

    async fn send(
        &self,
        room: &str,
        text: &str,
        action: bool,
        relation: Option<ValidRelation>,
    ) -> Result<PendingSend, SendError> {
        let client_msg_id = uuid::Uuid::now_v7().to_string();
        let (ack, ack_rx) = oneshot::channel();
        let (queued, queued_rx) = oneshot::channel();
        self.commands
            .send(Command::Send {
                room: room.to_owned(),
                text: text.to_owned(),
                action,
                relation,
                client_msg_id: client_msg_id.clone(),
                ack,
                queued,
            })
            .await
            .map_err(|_| DriverClosed)?;
        queued_rx.await.map_err(|_| DriverClosed)??;
        Ok(PendingSend {
            client_msg_id,
            ack: ack_rx,
        })
    }

    /// Closes the session and the socket (close code 1000) and waits until
    /// the task has ended. Sends still awaiting acks fail with
    /// [`SendError::Stopped`]; they stay in the session's outbox, which the
    /// caller may have persisted. Returns at once if the task already ended.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            // An error means the task ended some other way: also done.
            if rx.await.is_err() {
                tracing::debug!("driver ended before confirming shutdown");
            }
        }
    }

    /// Whether the driver task has ended.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

/// Starts a driver task for `session` (which may carry restored positions
/// and outbox entries) on the current tokio runtime. Returns the handle and
/// the receiving end of the bounded event channel.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn spawn(
    server: ServerUrl,
    session: ClientSession,
    options: DriverOptions,
) -> (DriverHandle, mpsc::Receiver<DriverEvent>) {
    let (commands_tx, commands) = mpsc::channel(64);
    let (events, events_rx) = mpsc::channel(options.event_capacity.max(1));
    let driver = Driver {
        server,
        session,
        options,
        commands,
        events,
        events_closed: false,
        pending: VecDeque::new(),
        waiters: HashMap::new(),
        replies: Vec::new(),
        ws: None,
        connecting: None,
        close_code: None,
        close_reason: String::new(),
        rng: StdRng::from_os_rng(),
    };
    tokio::spawn(driver.run());
    (
        DriverHandle {
            commands: commands_tx,
        },
        events_rx,
    )
}

type Ws = WebSocketStream<Stream>;

/// What woke the driver loop.
enum Step {
    Command(Option<Command>),
    Delivered,
    Timeout,
    Connected(Result<Box<Ws>, ConnectError>),
    Received(Option<Result<Message, tungstenite::Error>>),
}
type Connecting = Pin<Box<dyn Future<Output = Result<Ws, ConnectError>> + Send>>;

struct Driver {
    server: ServerUrl,
    session: ClientSession,
    options: DriverOptions,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<DriverEvent>,
    /// The consumer dropped its receiver: events are no longer kept.
    events_closed: bool,
    /// Events taken from the session, not yet in the channel.
    pending: VecDeque<DriverEvent>,
    /// Sends awaiting their ack, by client_msg_id.
    waiters: HashMap<String, AckSender>,
    /// Requests awaiting their reply.
    replies: Vec<ReplyWaiter>,
    ws: Option<Ws>,
    connecting: Option<Connecting>,
    /// Close frame received on the current socket, if any.
    close_code: Option<u16>,
    close_reason: String,
    rng: StdRng,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    async fn run(mut self) {
        let done = loop {
            self.drain_session();
            if let Err(err) = self.flush_transmit().await {
                self.transport_lost(None, format!("write failed: {err}"));
                continue;
            }
            if matches!(self.session.state(), ConnectionState::Offline(_)) {
                self.connecting = None;
                if let Some(ws) = self.ws.take() {
                    close_ws(ws, self.options.close_timeout).await;
                }
            } else if *self.session.state() == ConnectionState::Connecting
                && self.ws.is_none()
                && self.connecting.is_none()
            {
                let server = self.server.clone();
                let timeout = self.options.connect_timeout;
                self.connecting = Some(Box::pin(open_ws(server, timeout)));
            }
            let deadline = self
                .session
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let may_read = self.may_read();
            let step = tokio::select! {
                biased;
                command = self.commands.recv() => Step::Command(command),
                permit = self.events.reserve(), if !self.pending.is_empty() && !self.events_closed => {
                    match permit {
                        Ok(permit) => {
                            if let Some(event) = self.pending.pop_front() {
                                permit.send(event);
                            }
                        }
                        Err(_) => {
                            tracing::debug!("event receiver dropped; events are no longer kept");
                            self.events_closed = true;
                            self.pending.clear();
                        }
                    }
                    Step::Delivered
                }
                () = sleep_until(deadline) => Step::Timeout,
                result = poll_connecting(&mut self.connecting) => Step::Connected(result.map(Box::new)),
                message = next_message(&mut self.ws), if may_read => Step::Received(message),
            };
            match step {
                Step::Command(Some(Command::Call(call))) => call(&mut self.session, now()),
                Step::Command(Some(Command::Request(start))) => {
                    if let Some(waiter) = start(&mut self.session, now()) {
                        self.replies.push(waiter);
                    }
                }
                Step::Command(Some(Command::Send {
                    room,
                    text,
                    action,
                    relation,
                    client_msg_id,
                    ack,
                    queued,
                })) => {
                    let result =
                        self.queue_send(&room, &text, action, relation.as_ref(), &client_msg_id);
                    if result.is_ok() {
                        self.waiters.insert(client_msg_id, ack);
                    }
                    // Saves the outbox with the new entry before the sender
                    // hears it is queued (see the module docs).
                    self.drain_session();
                    if queued.send(result).is_err() {
                        tracing::debug!("sender stopped waiting for its send to be queued");
                    }
                }
                Step::Command(Some(Command::Shutdown(done))) => break Some(done),
                Step::Command(None) => break None,
                Step::Delivered => {}
                Step::Timeout => self.session.handle_timeout(now()),
                Step::Connected(result) => {
                    self.connecting = None;
                    match result {
                        Ok(ws) => {
                            self.ws = Some(*ws);
                            self.close_code = None;
                            self.close_reason.clear();
                            self.session.handle_connected(now());
                        }
                        Err(err) => {
                            tracing::debug!(error = %err, "connect failed");
                            self.drain_session();
                            self.push(DriverEvent::ConnectFailed(err));
                            self.session.handle_connect_failed(now(), &mut self.rng);
                        }
                    }
                }
                Step::Received(message) => self.on_message(message),
            }
        };
        self.finish(done).await;
    }

    /// Reads the socket unless the consumer is behind (see module docs).
    fn may_read(&self) -> bool {
        if self.ws.is_none() {
            return false;
        }
        let backlog = self.pending.len();
        backlog < self.options.event_capacity
            || ((!self.waiters.is_empty() || !self.replies.is_empty())
                && backlog < self.options.max_buffered_events)
    }

    fn queue_send(
        &mut self,
        room: &str,
        text: &str,
        action: bool,
        relation: Option<&ValidRelation>,
        client_msg_id: &str,
    ) -> Result<(), CommandError> {
        let id = ClientMsgId::parse(client_msg_id)?;
        match relation {
            Some(relation) => self
                .session
                .send_relation(now(), room, relation, text, id)
                .map(|_| ()),
            None => self
                .session
                .send_message(now(), room, text, action, id)
                .map(|_| ()),
        }
    }

    fn push(&mut self, event: DriverEvent) {
        if !self.events_closed {
            self.pending.push_back(event);
        }
    }

    /// Moves the session's events to `pending`, resolving send waiters and
    /// acting on `TransportStale`.
    fn drain_session(&mut self) {
        let mut outbox_changed = false;
        while let Some(event) = self.session.poll_event() {
            match &event {
                SessionEvent::OutboxChanged => outbox_changed = true,
                SessionEvent::Acked(ack) => {
                    if let Some(waiter) = self.waiters.remove(&ack.client_msg_id) {
                        resolve(waiter, Ok(ack.clone()));
                    }
                }
                SessionEvent::SendFailed { entry, error } => {
                    if let Some(waiter) = self.waiters.remove(&entry.client_msg_id) {
                        resolve(waiter, Err(SendError::Refused(error.clone())));
                    }
                }
                SessionEvent::StateChanged(ConnectionState::Offline(reason)) => {
                    for (_, waiter) in self.waiters.drain() {
                        resolve(waiter, Err(SendError::Stopped(*reason)));
                    }
                    // Dropping the waiters tells their requesters: Interrupted.
                    self.replies.clear();
                }
                _ => {}
            }
            let mut answered_failure = false;
            self.replies.retain_mut(|waiter| match waiter(&event) {
                Matched::No => true,
                Matched::Reply => false,
                Matched::Failure => {
                    answered_failure = true;
                    false
                }
            });
            let stale = matches!(event, SessionEvent::TransportStale);
            if !answered_failure {
                self.push(DriverEvent::Session(event));
            }
            if stale && self.ws.take().is_some() {
                // Dropping the socket without a close handshake: the peer is
                // not answering, so waiting for its close frame is pointless.
                self.push(DriverEvent::Disconnected {
                    close_code: None,
                    reason: "keepalive Ping unanswered; connection presumed dead".to_owned(),
                });
                self.session.handle_disconnected(now(), None, &mut self.rng);
            }
        }
        if outbox_changed {
            self.save_outbox();
        }
    }

    /// Writes the session's outbox to the store, if there is one. Called
    /// before the next `flush_transmit`, so no frame of a new send leaves
    /// before the store has it.
    fn save_outbox(&mut self) {
        let Some(store) = &self.options.outbox else {
            return;
        };
        let entries: Vec<_> = self.session.outbox().cloned().collect();
        if let Err(err) = store.save(&entries) {
            tracing::warn!(error = %err, "outbox not saved");
            self.push(DriverEvent::OutboxNotSaved(err));
        }
    }

    async fn flush_transmit(&mut self) -> Result<(), tungstenite::Error> {
        let mut wrote = false;
        while let Some(frame) = self.session.poll_transmit() {
            let Some(ws) = self.ws.as_mut() else {
                tracing::debug!(request_id = frame.request_id, "no socket; frame dropped");
                continue;
            };
            let bytes = encode_client_frame(&frame);
            ws.feed(Message::Binary(bytes)).await?;
            wrote = true;
        }
        if wrote && let Some(ws) = self.ws.as_mut() {
            ws.flush().await?;
        }
        Ok(())
    }

    fn on_message(&mut self, message: Option<Result<Message, tungstenite::Error>>) {
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                if let Err(err) = self.session.handle_bytes(now(), &bytes) {
                    self.drain_session();
                    self.push(DriverEvent::InvalidFrame(err.to_string()));
                }
            }
            Some(Ok(Message::Text(_))) => {
                self.drain_session();
                self.push(DriverEvent::InvalidFrame(
                    "text message received; confab.v1 uses binary messages only (§3.3)".to_owned(),
                ));
            }
            Some(Ok(Message::Close(frame))) => {
                // The stream ends after the close handshake; remember why.
                if let Some(frame) = frame {
                    self.close_code = Some(u16::from(frame.code));
                    self.close_reason = frame.reason.to_string();
                }
            }
            Some(Ok(_)) => {} // Ping/Pong: tungstenite answers Pings itself.
            Some(Err(err)) => {
                let reason = if self.close_code.is_some() {
                    self.close_reason.clone()
                } else {
                    err.to_string()
                };
                self.transport_lost(self.close_code, reason);
            }
            None => {
                let reason = if self.close_code.is_some() {
                    self.close_reason.clone()
                } else {
                    "connection closed without a close frame".to_owned()
                };
                self.transport_lost(self.close_code, reason);
            }
        }
    }

    fn transport_lost(&mut self, close_code: Option<u16>, reason: String) {
        self.ws = None;
        self.close_code = None;
        self.drain_session();
        tracing::debug!(?close_code, %reason, "disconnected");
        self.push(DriverEvent::Disconnected { close_code, reason });
        self.session
            .handle_disconnected(now(), close_code, &mut self.rng);
    }
}

/// Closes with 1000 and waits (bounded) for the server's close frame.
async fn close_ws(mut ws: Ws, close_timeout: Duration) {
    let frame = CloseFrame {
        code: WsCloseCode::Normal,
        reason: "bye".into(),
    };
    let close = async {
        if let Err(err) = ws.close(Some(frame)).await {
            tracing::debug!(error = %err, "sending close frame failed");
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    };
    if tokio::time::timeout(close_timeout, close).await.is_err() {
        tracing::debug!("server did not answer the close frame in time");
    }
}

impl Driver {
    async fn finish(mut self, done: Option<oneshot::Sender<()>>) {
        self.session.close();
        self.drain_session();
        self.connecting = None;
        if let Some(ws) = self.ws.take() {
            close_ws(ws, self.options.close_timeout).await;
        }
        for (_, waiter) in self.waiters.drain() {
            resolve(waiter, Err(SendError::DriverClosed(DriverClosed)));
        }
        self.replies.clear();
        // Deliver what fits without waiting: the consumer may be the one
        // awaiting shutdown.
        let mut undelivered = 0usize;
        for event in self.pending.drain(..) {
            if self.events.try_send(event).is_err() {
                undelivered += 1;
            }
        }
        if undelivered > 0 {
            tracing::debug!(
                undelivered,
                "events not delivered at shutdown (channel full)"
            );
        }
        if let Some(done) = done
            && done.send(()).is_err()
        {
            tracing::debug!("shutdown caller stopped waiting");
        }
    }
}

fn resolve(waiter: AckSender, result: Result<wire::SendAck, SendError>) {
    if waiter.send(result).is_err() {
        tracing::debug!("send outcome not awaited (PendingSend dropped)");
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn poll_connecting(connecting: &mut Option<Connecting>) -> Result<Ws, ConnectError> {
    match connecting.as_mut() {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn next_message(ws: &mut Option<Ws>) -> Option<Result<Message, tungstenite::Error>> {
    match ws.as_mut() {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

/// Opens the socket and upgrades with subprotocol `confab.v1` (§3.1, §3.2).
async fn open_ws(server: ServerUrl, timeout: Duration) -> Result<Ws, ConnectError> {
    let options = WebSocketOptions::default().timeout(timeout);
    let socket = net::connect_websocket(&server, &options).await?;
    // A server that selects no subprotocol does not speak confab.v1 (§3.2).
    if socket.subprotocol.as_deref() != Some(confab_protocol::SUBPROTOCOL) {
        return Err(ConnectError::Upgrade {
            server: server.to_string(),
            message: format!(
                "the server selected subprotocol {:?}, not {:?}",
                socket.subprotocol,
                confab_protocol::SUBPROTOCOL
            ),
        });
    }
    Ok(socket.stream)
}
