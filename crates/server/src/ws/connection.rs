//! The per-socket task (§6-§12).
//!
//! A socket lives in three phases:
//!
//! 1. **Authentication** (§6): the first frame must be Auth, within the auth
//!    deadline. Until then the task writes to the socket directly.
//! 2. **Session**: a *reader* half handles client frames strictly in order
//!    (§4.3) and a *writer* half, on its own task, drains the connection's
//!    bounded outbound queue (§12.4). The socket task awaits the writer after
//!    the reader, so neither outlives the socket and nothing needs `abort()`.
//! 3. **Teardown**: whoever decides to close says so explicitly: the reader
//!    queues [`Outbound::Close`] after its last reply, or anyone (hub on a
//!    full queue, logout, the writer on a dead socket) decides the
//!    connection's [`CloseSignal`], which both halves observe. The writer sends the Close
//!    frame; the reader keeps reading until the peer answers it (or a grace
//!    period passes), so unsent data is not cut off by a TCP reset.
//!
//! The protocol rules themselves live in `confab_protocol` (codec, rules,
//! names, limits); this file drives the socket, and [`super::cmd`] routes
//! each request to them and to the hub and storage.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use confab_protocol::codec::{decode_client_frame, encode_server_frame};
use confab_protocol::delivery::DeliveredSeqs;
use confab_protocol::error::{BadMessage, CloseCode, Refusal, Rejection, refuse};
use confab_protocol::names::RoomName;
use confab_protocol::relation::RelationCaps;
use confab_protocol::rules;
use confab_protocol::wire::{
    self, ClientFrame, ErrorCode, ServerFrame, client_frame::Body as ClientBody,
    server_frame::Body as ServerBody,
};
use futures_util::future::Either;
use futures_util::stream::{FuturesOrdered, SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio::time::{Duration, sleep_until};

use crate::auth::{now_ms, token_hash};
use crate::close::{CloseSignal, Half};
use crate::hub::{
    Activation, AuthedUser, Capabilities, ConnId, Ending, Outbound, OutboundRx, OutboundTx,
    Registration, ResumeBatch,
};
use crate::limit::ConnectionPermit;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::storage::StoreError;
use crate::storage::writer::AckResult;

/// After a close is decided, how long the socket may take to flush what is
/// being written and to answer our Close frame before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// At shutdown, how long we wait for a peer to answer our Close (1001): a
/// live client answers at once, and a dead one must not hold up the restart.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// After a close caused by input the WebSocket layer refused unread (an
/// oversize frame past what it buffers, or a text frame that is not UTF-8),
/// how long the socket is kept open, without reading, so that our Close
/// reaches the peer before the kernel resets a connection with unread data
/// . Oversize messages up to the drain allowance of `upgrade` are
/// read whole and discarded instead, which needs no such wait.
const UNREAD_GRACE: Duration = Duration::from_secs(2);

/// Messages read from storage per query while replaying a Resume.
const REPLAY_PAGE: u32 = 256;

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;
/// A SendAck on its way: the request id, whether the send took a rate-limit
/// token (given back if it turns out to be a repeat, §12.5), the outcome.
pub(super) type PendingAck = Pin<
    Box<
        dyn Future<Output = (u64, bool, Result<AckResult, oneshot::error::RecvError>)>
            + Send
            + Sync,
    >,
>;

fn close_message(code: CloseCode) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.as_u16(),
        reason: Utf8Bytes::from_static(code.reason()),
    }))
}

/// RATE_LIMITED with the limiter's wait, rounded up to a whole millisecond
/// (§12.5); `what` names the limited request, e.g. "CreateRoom".
pub(super) fn rate_limited(what: &str, wait: std::time::Duration) -> Rejection {
    let ms = u32::try_from(wait.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u32::MAX)
        .max(1);
    Rejection {
        message: format!("too many {what} requests; retry after {ms} ms"),
        ..Rejection::rate_limited(ms)
    }
}

pub(super) fn internal(err: StoreError) -> Rejection {
    tracing::error!(error = %err, "storage request failed");
    Rejection::new(ErrorCode::Internal, "storage failed; retry")
}

/// The bad message behind a read error, if it was one: tungstenite refusing
/// an oversize message (§12.2) or a text message that is not UTF-8 (§3.3).
/// Other errors mean the connection itself failed.
fn bad_read(err: axum::Error) -> Option<BadMessage> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match err.into_inner().downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => Some(BadMessage::TooBig),
        Some(WsError::Utf8(_)) => Some(BadMessage::InvalidUtf8Text),
        _ => None,
    }
}

/// How a socket ends once we have sent our Close.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wind {
    /// Read (and discard) until the peer answers our Close or goes.
    Linger,
    /// The stream failed on refused input that stays unread; keep the socket
    /// open without reading for [`UNREAD_GRACE`].
    Hold,
}

async fn wind_down(stream: &mut Stream, wind: Wind, shutdown: &crate::shutdown::Shutdown) {
    match wind {
        Wind::Linger => linger(stream, CLOSE_GRACE, shutdown).await,
        Wind::Hold => {
            tokio::select! {
                () = tokio::time::sleep(UNREAD_GRACE) => {}
                () = shutdown.wait() => {}
            }
        }
    }
}

/// Runs one socket to completion.
///
/// This future lives as long as the socket, inside its task, and its size is
/// that of its largest state. So it is two futures in sequence, not one
/// async body: the once-only setup (authentication, opening the session)
/// runs boxed and is freed when it ends, and what stays for the socket's
/// life is [`Live::run`], whose idle state is the reader's wait
/// (BENCHMARKS.md, idle). One async body holding both kept the setup's
/// captures (the socket's write half alone is 56 bytes) and the room its
/// states needed beside the reader for as long as the socket was open.
pub fn run(
    socket: WebSocket,
    app: Arc<AppState>,
    permit: Option<ConnectionPermit>,
) -> impl Future<Output = ()> + Send {
    // Split before the future is made: an async fn keeps its arguments
    // for its whole life (the WebSocket alone is 368 bytes), an async
    // block only what it captures.
    let (sink, stream) = socket.split();
    Box::pin(setup(app, permit, sink, stream)).then(|live| match live {
        Some(live) => Either::Left(live.run()),
        None => Either::Right(std::future::ready(())),
    })
}

/// Authenticates and opens the session; `None` if the socket ended
/// instead (its close is then sent and waited for here).
async fn setup(
    app: Arc<AppState>,
    permit: Option<ConnectionPermit>,
    mut sink: Sink,
    mut stream: Stream,
) -> Option<Live> {
    Metrics::inc(&app.metrics.sockets_total);
    let session = match Box::pin(authenticate(&app, &mut sink, &mut stream)).await {
        Ok(session) => session,
        Err(wind) => {
            // The close frame (if any) is sent; give the peer a moment to read it.
            wind_down(&mut stream, wind, &app.shutdown).await;
            return None;
        }
    };
    let Opened {
        conn,
        user,
        outbound,
        queue,
        close,
        expires_ms,
    } = match Box::pin(open(&app, session)).await {
        Ok(opened) => opened,
        Err((request_id, rejection)) => {
            reject_and_close(&mut sink, request_id, rejection).await;
            linger(&mut stream, CLOSE_GRACE, &app.shutdown).await;
            return None;
        }
    };
    let writer = Writer {
        app: Arc::clone(&app),
        close: close.clone(),
        closing_since: None,
        delivered: DeliveredSeqs::new(),
    };
    // The writer runs on its own task so that a push waking it does not
    // also poll the reader (and tungstenite's read path) each time. Both
    // halves end on explicit signals; nothing is aborted.
    let writer = spawn_writer(writer, sink, queue, &app.metrics);
    Some(Live {
        app,
        _permit: permit,
        conn,
        user,
        outbound,
        close,
        expires_ms,
        writer,
        stream,
    })
}

/// An open session: what the reader needs, and the writer's task to wait
/// for after it.
struct Live {
    app: Arc<AppState>,
    /// Held until the socket is gone: the connection cap counts WebSockets.
    _permit: Option<ConnectionPermit>,
    conn: ConnId,
    user: AuthedUser,
    outbound: OutboundTx,
    close: CloseSignal,
    expires_ms: i64,
    writer: tokio::task::JoinHandle<()>,
    stream: Stream,
}

impl Live {
    // A plain fn returning an async block: an async fn would keep its
    // arguments and a moved copy of them for the socket's whole life.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice for the socket's life"
    )]
    fn run(self) -> impl Future<Output = ()> + Send {
        async move {
            // Fields are moved out or borrowed one by one; the permit stays
            // in `self` until the end.
            let conn = self.conn;
            let reader = Reader {
                app: &self.app,
                conn,
                user: &self.user,
                outbound: self.outbound,
                close: &self.close,
                pending: None,
                expires_ms: self.expires_ms,
            };
            reader.run(self.stream).await;
            if let Err(err) = self.writer.await {
                tracing::error!(conn, error = %err, "socket writer task failed");
            }

            self.app.hub.unregister(conn);
            self.app
                .metrics
                .sockets_open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let end = self.close.get();
            let user = &self.user;
            tracing::info!(user = %user.name, conn, end = ?end, "socket closed");
        }
    }
}

/// Spawns the writer half. Its future is made here, outside [`run`], so
/// that it is never a local of the reader's task: a future moved into
/// `spawn` from an async body still keeps its slot in that body's state.
fn spawn_writer(
    writer: Writer,
    sink: Sink,
    queue: OutboundRx,
    metrics: &Metrics,
) -> tokio::task::JoinHandle<()> {
    let task = writer.run(sink, queue);
    metrics.socket_writer_task_bytes.store(
        std::mem::size_of_val(&task) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    tokio::spawn(task)
}

/// What the session phase needs from [`open`].
struct Opened {
    conn: ConnId,
    user: AuthedUser,
    outbound: OutboundTx,
    queue: OutboundRx,
    close: CloseSignal,
    expires_ms: i64,
}

/// Queues Welcome and registers the connection with the hub. A function of
/// its own so that Welcome and the rest of the session's request are
/// dropped here rather than kept for the socket's life. Fails, with the
/// Auth's request id, when the user is at the socket cap; the
/// queued Welcome is then dropped unsent with the queue.
async fn open(app: &AppState, session: Session) -> Result<Opened, (u64, Rejection)> {
    if let Some(cluster) = &app.cluster {
        cluster
            .refresh_user(
                &app.hub,
                app.store.as_ref(),
                session.user.id,
                &session.user.name,
            )
            .await;
    }
    let (outbound, queue) =
        crate::hub::outbound_queue(&app.config.limits, Arc::clone(&app.metrics));
    let close = CloseSignal::new();
    let granted =
        rules::negotiate_capabilities(&session.requested_caps, &confab_protocol::capability::ALL);
    let rooms = app.hub.rooms_of(&session.user.name);
    // one read state per room of Welcome.rooms, counted now.
    let read_states = if granted
        .iter()
        .any(|c| c == confab_protocol::capability::READ_STATE)
    {
        let mut states = app
            .store
            .read_states(session.user.id, &session.user.name)
            .await
            .map_err(|err| (session.request_id, internal(err)))?;
        // A set, so a user in many rooms costs one lookup per room.
        let names: std::collections::HashSet<&str> =
            rooms.iter().map(|room| room.name.as_str()).collect();
        states.retain(|state| names.contains(state.room.as_str()));
        states
    } else {
        Vec::new()
    };
    let welcome = ServerFrame::reply(
        session.request_id,
        ServerBody::Welcome(wire::Welcome {
            username: session.user.name.as_str().to_owned(),
            session_id: uuid::Uuid::new_v4().to_string(),
            server_name: app.config.server_name.clone(),
            limits: Some(app.config.limits.to_wire()),
            capabilities: granted.clone(),
            token_expires_at_ms: session.expires_ms,
            rooms,
            read_states,
        }),
    );
    // Queued before registering, so Welcome precedes every push. The queue
    // is new and has room for at least one item.
    outbound
        .try_send(Outbound::Frame(encode_server_frame(&welcome)))
        .ok();
    drop(welcome);
    let registered = app.hub.register(
        Registration {
            user: session.user.name.clone(),
            token_hash: session.token_hash.clone(),
            caps: Capabilities::from_names(&granted),
            outbound: outbound.clone(),
            close: close.clone(),
        },
        app.config.max_sockets_per_user,
    );
    let conn = match registered {
        Ok(conn) => conn,
        Err(rejection) => {
            Metrics::inc(&app.metrics.sockets_over_user_cap);
            tracing::info!(user = %session.user.name, "socket refused: user at max_sockets_per_user");
            return Err((session.request_id, rejection));
        }
    };
    Metrics::inc(&app.metrics.sockets_open);
    // A logout that revoked the token between our check and the register
    // above found no socket to close (§5.4); look once more now that the hub
    // knows this one, so the socket cannot outlive its token.
    if let Ok(Some(record)) = app.store.token(&session.token_hash).await
        && record.revoked
    {
        close.decide(Ending::Close(CloseCode::LoggedOut));
    }
    tracing::info!(user = %session.user.name, conn, client = %session.client_name.escape_debug(), "socket authenticated");
    Ok(Opened {
        conn,
        user: session.user,
        outbound,
        queue,
        close,
        expires_ms: session.expires_ms,
    })
}

// ---------------------------------------------------------------------------
// Phase 1: authentication (§6)
// ---------------------------------------------------------------------------

struct Session {
    user: AuthedUser,
    token_hash: String,
    expires_ms: i64,
    requested_caps: Vec<String>,
    client_name: String,
    request_id: u64,
}

async fn send_direct(sink: &mut Sink, frame: &ServerFrame) {
    // A failed write means the peer is gone; the read side will notice.
    sink.send(Message::Binary(encode_server_frame(frame)))
        .await
        .ok();
}

async fn reject_and_close(sink: &mut Sink, request_id: u64, rejection: Rejection) {
    let close = rejection.code.closes_with();
    send_direct(sink, &rejection.into_frame(request_id)).await;
    if let Some(code) = close {
        sink.send(close_message(code)).await.ok();
    }
}

/// Sends a [`Refusal`] before authentication: its Error, then its close.
async fn send_refusal(sink: &mut Sink, refusal: Refusal) {
    if let Some(frame) = &refusal.error {
        send_direct(sink, frame).await;
    }
    if let Some(code) = refusal.close {
        sink.send(close_message(code)).await.ok();
    }
}

/// After we sent Close, reads until the peer answers (or goes), bounded by
/// `grace`, or by `SHUTDOWN_GRACE` once the server is shutting down.
async fn linger(stream: &mut Stream, grace: Duration, shutdown: &crate::shutdown::Shutdown) {
    let mut deadline = tokio::time::Instant::now() + grace;
    let mut shutting_down = false;
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(_)) => continue,
                _ => return,
            },
            () = sleep_until(deadline) => return,
            () = shutdown.wait(), if !shutting_down => {
                shutting_down = true;
                deadline = deadline.min(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
        }
    }
}

/// Reads until a valid Auth. On failure the close (if any) is sent and the
/// result says how to wind the socket down.
async fn authenticate(
    app: &AppState,
    sink: &mut Sink,
    stream: &mut Stream,
) -> Result<Session, Wind> {
    let deadline = tokio::time::Instant::now() + app.config.auth_timeout;
    let max = app.config.limits.max_frame_bytes as usize;
    loop {
        let next = tokio::select! {
            biased;
            () = app.shutdown.wait() => {
                sink.send(close_message(CloseCode::GoingAway)).await.ok();
                return Err(Wind::Linger);
            }
            next = tokio::time::timeout_at(deadline, stream.next()) => next,
        };
        let message = match next {
            Err(_) => {
                // §6.2: no Auth in time.
                sink.send(close_message(CloseCode::AuthTimeout)).await.ok();
                return Err(Wind::Linger);
            }
            Ok(None) => return Err(Wind::Linger),
            Ok(Some(Err(err))) => {
                let Some(bad) = bad_read(err) else {
                    return Err(Wind::Linger);
                };
                send_refusal(sink, refuse(&bad, false)).await;
                return Err(Wind::Hold);
            }
            Ok(Some(Ok(message))) => message,
        };
        let bytes = match message {
            Message::Binary(bytes) => bytes,
            Message::Text(_) => {
                send_refusal(sink, refuse(&BadMessage::Text, false)).await;
                return Err(Wind::Linger);
            }
            Message::Close(_) => return Err(Wind::Linger),
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let frame = match decode_client_frame(&bytes, max) {
            Ok(frame) => frame,
            Err(err) => {
                send_refusal(sink, refuse(&BadMessage::Binary(err), false)).await;
                return Err(Wind::Linger);
            }
        };
        let ClientFrame { request_id, body } = frame;
        let Some(ClientBody::Auth(auth)) = body else {
            // §6.2: anything but Auth first.
            reject_and_close(sink, request_id, Rejection::unauthenticated()).await;
            return Err(Wind::Linger);
        };
        if let Err(rejection) = rules::check_request_id(request_id) {
            send_direct(sink, &rejection.into_frame(0)).await;
            continue;
        }
        match verify_token(app, &auth.token).await {
            Ok((user, expires_ms)) => {
                return Ok(Session {
                    user,
                    token_hash: token_hash(&auth.token),
                    expires_ms,
                    requested_caps: auth.capabilities,
                    client_name: auth.client_name,
                    request_id,
                });
            }
            Err(rejection) => {
                let close_code = rejection
                    .code
                    .closes_with()
                    .unwrap_or(CloseCode::InternalError);
                send_direct(sink, &rejection.into_frame(request_id)).await;
                sink.send(close_message(close_code)).await.ok();
                return Err(Wind::Linger);
            }
        }
    }
}

async fn verify_token(app: &AppState, token: &str) -> Result<(AuthedUser, i64), Rejection> {
    let record = app
        .store
        .token(&token_hash(token))
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            Rejection::new(
                ErrorCode::TokenInvalid,
                "unknown token; log in again with POST /v1/login",
            )
        })?;
    if record.revoked {
        return Err(Rejection::new(
            ErrorCode::TokenRevoked,
            "this token was logged out; log in again",
        ));
    }
    if record.expires_ms <= now_ms() {
        return Err(Rejection::token_expired());
    }
    Ok((
        AuthedUser {
            id: record.user_id,
            name: record.username,
        },
        record.expires_ms,
    ))
}

// ---------------------------------------------------------------------------
// Phase 2a: the reader half
// ---------------------------------------------------------------------------

pub(super) struct Reader<'a> {
    pub(super) app: &'a AppState,
    pub(super) conn: ConnId,
    pub(super) user: &'a AuthedUser,
    outbound: OutboundTx,
    close: &'a CloseSignal,
    /// SendAcks waiting for their commit, in request order (§4.3, §8.3).
    /// Created on the first send: an empty `FuturesOrdered` already holds
    /// an allocation, which most sockets (readers, idle devices) never use.
    pub(super) pending: Option<FuturesOrdered<PendingAck>>,
    /// The token's expiry (Unix ms): the socket closes then.
    expires_ms: i64,
}

/// The next SendAck whose commit finished, if any sends are pending.
async fn next_ack(
    pending: &mut Option<FuturesOrdered<PendingAck>>,
) -> Option<(u64, bool, Result<AckResult, oneshot::error::RecvError>)> {
    match pending {
        Some(pending) => pending.next().await,
        None => None,
    }
}

impl Reader<'_> {
    // A plain fn returning an async block: an async fn would keep its
    // arguments and a moved copy of them for the socket's whole life.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice for the socket's life"
    )]
    fn run(mut self, mut stream: Stream) -> impl Future<Output = ()> + Send {
        async move {
            let idle = self.app.config.limits.idle_timeout;
            let max = self.app.config.limits.max_frame_bytes as usize;
            // §12.1 idle timer: one Sleep for the socket's life, re-armed only
            // when it fires early; each frame just records when it came, so a
            // busy socket does not touch the timer wheel per frame.
            let mut last_frame = tokio::time::Instant::now();
            // the token's expiry shares the idle timer, which fires at
            // whichever comes first, so it costs neither a second timer in every
            // socket's future nor anything per frame.
            let remaining_ms = u64::try_from(self.expires_ms.saturating_sub(now_ms())).unwrap_or(0);
            // `None`: so far off that the Instant overflows, i.e. never.
            let expires_at = last_frame.checked_add(Duration::from_millis(remaining_ms));
            // the heartbeat shares it too. The Ping is queued for the
            // writer like any frame, so the writer needs no timer of its own
            // (an `Interval` boxes its `Sleep`: 112 bytes per socket).
            let heartbeat = self
                .app
                .config
                .limits
                .heartbeat_interval
                .max(Duration::from_millis(10));
            let mut next_ping = last_frame + heartbeat;
            let next_wake = |idle_deadline: tokio::time::Instant, ping: tokio::time::Instant| {
                let wake = idle_deadline.min(ping);
                match expires_at {
                    Some(at) => wake.min(at),
                    None => wake,
                }
            };
            let idle_timer = tokio::time::sleep_until(next_wake(last_frame + idle, next_ping));
            tokio::pin!(idle_timer);
            // Set when the stream failed on input it left unread.
            let mut wind = Wind::Linger;
            // One wait for the socket's life, its state in the shared signal.
            let close = self.close;
            let decided = close.decided(Half::Reader);
            tokio::pin!(decided);
            let ending = loop {
                tokio::select! {
                    biased;
                    // Someone else decided (hub, logout, writer); nothing to add.
                    _ = &mut decided => break None,
                    // Boxed, like request handling below: inline, the largest
                    // state of any await here is every idle socket's size.
                    () = self.app.shutdown.wait() => {
                        Box::pin(self.flush_pending_acks()).await;
                        break Some(CloseCode::GoingAway);
                    }
                    Some((request_id, charged, result)) = next_ack(&mut self.pending), if self.pending.as_ref().is_some_and(|p| !p.is_empty()) => {
                        Box::pin(self.answer_ack(request_id, charged, result)).await;
                    }
                    () = &mut idle_timer => {
                        let now = tokio::time::Instant::now();
                        if expires_at.is_some_and(|at| at <= now) {
                            self.send(&Rejection::token_expired().into_frame(0));
                            break Some(CloseCode::AuthFailed);
                        }
                        let deadline = last_frame + idle;
                        if deadline <= now {
                            break Some(CloseCode::IdleTimeout);
                        }
                        if next_ping <= now {
                            // The next one counts from this one, as a
                            // delayed `Interval` tick would.
                            next_ping = now + heartbeat;
                            self.queue(Outbound::Ping);
                        }
                        idle_timer.as_mut().reset(next_wake(deadline, next_ping));
                    }
                    next = stream.next() => {
                        // §12.1: any frame from the peer counts as liveness.
                        last_frame = tokio::time::Instant::now();
                        match next {
                            None => break None,
                            Some(Err(err)) => {
                                let Some(bad) = bad_read(err) else { break None };
                                wind = Wind::Hold;
                                if let Some(code) = self.refused(&bad) {
                                    break Some(code);
                                }
                            }
                            Some(Ok(Message::Binary(bytes))) => {
                                // Boxed: handling a request awaits storage and the
                                // hub, and inline those states would make every
                                // socket's task as large for its whole life.
                                if let Some(code) = Box::pin(self.handle_bytes(&bytes, max)).await {
                                    break Some(code);
                                }
                            }
                            Some(Ok(Message::Text(_))) => {
                                if let Some(code) = self.refused(&BadMessage::Text) {
                                    break Some(code);
                                }
                            }
                            Some(Ok(Message::Close(_))) => break None,
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        }
                    }
                }
            };
            match ending {
                // In-band, so replies queued before it are sent first.
                Some(code) => {
                    if self.outbound.try_send(Outbound::Close(code)).is_err() {
                        self.close.decide(Ending::Close(code));
                    }
                }
                None => {
                    self.close.decide(Ending::PeerGone);
                }
            }
            // Keep reading until the peer answers our Close or goes away, so the
            // kernel never resets a connection with unread data in it.
            if self.close.get() == Some(Ending::PeerGone) {
                return;
            }
            // Boxed: inline, the wind-down's state is the largest of the
            // reader's and so every idle socket's size.
            Box::pin(wind_down(&mut stream, wind, &self.app.shutdown)).await;
            // If the in-band Close is still stuck behind a write to a peer that
            // does not read, make the decision visible to the writer too: its
            // blocked write then gets CLOSE_GRACE more, and the socket ends.
            if let Some(code) = ending {
                self.close.decide(Ending::Close(code));
            }
        }
    }

    /// Queues a reply; a full queue closes the connection (§12.4).
    pub(super) fn send(&self, frame: &ServerFrame) {
        self.queue(Outbound::Frame(encode_server_frame(frame)));
    }

    /// Queues an item; a full queue closes the connection (§12.4). A closed
    /// one means the writer is gone and the socket is ending anyway.
    fn queue(&self, item: Outbound) {
        if let Err(crate::queue::Refused::Full(_)) = self.outbound.try_send(item) {
            crate::hub::overflowed(&self.app.metrics, self.close, &self.user.name);
        }
    }

    async fn answer_ack(
        &self,
        request_id: u64,
        charged: bool,
        result: Result<AckResult, oneshot::error::RecvError>,
    ) {
        let frame = match result {
            Ok(Ok(ack)) => {
                if ack.duplicate && charged {
                    // §12.5: a repeat costs no token; give back the one
                    // taken before storage could tell.
                    self.app.refund_send_token(&self.user.name).await;
                }
                ServerFrame::reply(request_id, ServerBody::SendAck(ack))
            }
            Ok(Err(rejection)) => rejection.into_frame(request_id),
            Err(_) => Rejection::new(
                ErrorCode::Unavailable,
                "the server is shutting down; resend after reconnecting",
            )
            .into_frame(request_id),
        };
        self.send(&frame);
    }

    /// Before closing for shutdown, answer every send still waiting for its
    /// commit: the writer is still running and will finish them.
    async fn flush_pending_acks(&mut self) {
        while let Some((request_id, charged, result)) = next_ack(&mut self.pending).await {
            self.answer_ack(request_id, charged, result).await;
        }
    }

    /// Handles one binary message; returns a close code to end the socket.
    async fn handle_bytes(&mut self, bytes: &Bytes, max: usize) -> Option<CloseCode> {
        match decode_client_frame(bytes, max) {
            Ok(frame) => {
                super::cmd::handle_frame(self, frame).await;
                None
            }
            Err(err) => self.refused(&BadMessage::Binary(err)),
        }
    }

    /// Queues the answer to a bad message (§3.3, §4.4); returns the close
    /// code if the connection ends.
    fn refused(&self, bad: &BadMessage) -> Option<CloseCode> {
        let refusal = refuse(bad, true);
        if let Some(frame) = &refusal.error {
            self.send(frame);
        }
        refusal.close
    }
}

// ---------------------------------------------------------------------------
// Phase 2b: the writer half
// ---------------------------------------------------------------------------

struct Writer {
    app: Arc<AppState>,
    close: CloseSignal,
    /// When a close was decided while a write was blocked.
    closing_since: Option<tokio::time::Instant>,
    /// Highest seq delivered per room (§10.6): a seq is never sent twice.
    delivered: DeliveredSeqs<RoomName>,
}

/// The writer could not continue: the socket failed or the grace ran out.
struct WriteFailed;

/// Most frames fed to the socket before one flush. Frames already queued
/// are written together in one syscall (write coalescing); the bound keeps
/// a long queue from delaying the first of them for too long, and
/// tungstenite's own write buffer (128 KiB) flushes early anyway.
const MAX_BURST: usize = 64;

/// Whether the next step of a write is to queue bytes or to push them out.
#[derive(Clone, Copy)]
enum Step {
    /// `Sink::feed`: encode into tungstenite's write buffer; no syscall
    /// unless that buffer is full.
    Feed,
    /// `Sink::send`: feed, then flush to the socket.
    Send,
}

impl Writer {
    // A plain fn returning an async block, as for the reader.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice for the socket's life"
    )]
    fn run(mut self, mut sink: Sink, mut queue: OutboundRx) -> impl Future<Output = ()> + Send {
        async move {
            // One wait for the socket's life, its state in the shared signal.
            let close = self.close.clone();
            let decided = close.decided(Half::Writer);
            tokio::pin!(decided);
            let ending = loop {
                // Every write is boxed: a write's state (the frame, the sink's
                // feed, the close guard's timer) is several times the idle
                // wait's, and inline the largest state is every idle
                // socket's size. One allocation per burst, not per frame.
                let step = tokio::select! {
                    biased;
                    ending = &mut decided => break ending,
                    item = queue.recv() => match item {
                        Some(item) => Box::pin(self.write_burst(&mut sink, item, &mut queue)).await,
                        // Unreachable while the hub holds a sender; treat as a close.
                        None => Ok(Some(CloseCode::GoingAway)),
                    },
                };
                match step {
                    Ok(None) => {}
                    Ok(Some(code)) => break Ending::Close(code),
                    Err(WriteFailed) => {
                        self.close.decide(Ending::PeerGone);
                        return;
                    }
                }
            };
            self.close.decide(ending);
            match ending {
                Ending::Close(code) => {
                    self.closing_since
                        .get_or_insert_with(tokio::time::Instant::now);
                    Box::pin(self.write(&mut sink, close_message(code), Step::Send))
                        .await
                        .ok();
                }
                Ending::PeerGone => {
                    // Flush the Close reply tungstenite queued for the peer, if any.
                    self.closing_since
                        .get_or_insert_with(tokio::time::Instant::now);
                    let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
                    Box::pin(tokio::time::timeout_at(deadline, sink.flush()))
                        .await
                        .ok();
                }
            }
        }
    }

    /// Feeds `first` and whatever else is already queued (up to
    /// [`MAX_BURST`] items), then flushes once: under fan-out load a socket
    /// gets several pushes per wake-up, and one `sendto` for all of them
    /// instead of one each is most of the cost of a delivery (BENCHMARKS.md).
    /// Returns the close code if the burst reached [`Outbound::Close`]
    /// (everything before it is flushed first).
    ///
    /// Each item's bytes stop counting against `outbound_queue_bytes` once
    /// it is fed: from then on they sit in tungstenite's write buffer, whose
    /// own bound (and the kernel's send buffer) applies.
    async fn write_burst(
        &mut self,
        sink: &mut Sink,
        first: Outbound,
        queue: &mut OutboundRx,
    ) -> Result<Option<CloseCode>, WriteFailed> {
        let mut item = first;
        let mut fed = 0;
        let close = loop {
            if let Outbound::Close(code) = item {
                break Some(code);
            }
            let bytes = crate::queue::Cost::cost(&item);
            self.feed_item(sink, item).await?;
            queue.written(bytes);
            fed += 1;
            if fed == MAX_BURST {
                break None;
            }
            match queue.try_recv() {
                Some(next) => item = next,
                None => break None,
            }
        };
        self.flush(sink).await?;
        Ok(close)
    }

    async fn feed_item(&mut self, sink: &mut Sink, item: Outbound) -> Result<(), WriteFailed> {
        match item {
            Outbound::Frame(bytes) => self.write(sink, Message::Binary(bytes), Step::Feed).await,
            Outbound::Message(push) => {
                // One lookup per push: the seq is recorded before the write,
                // which is safe because a failed write ends the socket.
                // Activation already created the room's entry, so the insert
                // (which clones the name) is off the hot path.
                if !self.delivered.admit(&*push.room, push.seq) {
                    return Ok(());
                }
                self.write(sink, Message::Binary(push.frame.clone()), Step::Feed)
                    .await
            }
            // Boxed: a replay (storage reads, page encoding) is rare, and
            // inline its state would enlarge every idle socket's writer task.
            Outbound::Activate {
                room,
                replay_after,
                head,
                caps,
            } => Box::pin(self.replay(sink, &room, replay_after, head, caps)).await,
            // §10.1: every room's replay in the Resume's order, then Resumed.
            Outbound::Resume(batch) => {
                let ResumeBatch { activations, reply } = *batch;
                for Activation {
                    room,
                    replay_after,
                    head,
                    caps,
                } in activations
                {
                    Box::pin(self.replay(sink, &room, replay_after, head, caps)).await?;
                }
                self.write(sink, Message::Binary(reply), Step::Feed).await
            }
            // §12.1: queued by the reader when one is due.
            Outbound::Ping => {
                self.write(sink, Message::Ping(Bytes::new()), Step::Feed)
                    .await
            }
            // Handled by `write_burst`.
            Outbound::Close(_) => Ok(()),
        }
    }

    /// §10.3 REPLAYED and §10.6: sends stored messages `after < seq <= head`
    /// that this connection has not delivered, then counts the room as
    /// delivered up to `head`. Live messages of the room are queued behind
    /// this item, so they follow in seq order. Each page is flushed as one
    /// write.
    async fn replay(
        &mut self,
        sink: &mut Sink,
        room: &RoomName,
        after: u64,
        head: u64,
        caps: RelationCaps,
    ) -> Result<(), WriteFailed> {
        let mut cursor = after.max(self.delivered.mark(room));
        while cursor < head {
            let page = match self
                .app
                .store
                .messages_between(room, cursor, head, REPLAY_PAGE)
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    tracing::error!(error = %err, %room, "replay read failed");
                    self.close.decide(Ending::Close(CloseCode::InternalError));
                    return Ok(());
                }
            };
            let Some(last) = page.last().map(|m| m.seq) else {
                break;
            };
            for message in page {
                let frame = ServerFrame::push(ServerBody::Message(message.to_wire_for(caps)));
                self.write(
                    sink,
                    Message::Binary(encode_server_frame(&frame)),
                    Step::Feed,
                )
                .await?;
            }
            self.flush(sink).await?;
            cursor = last;
            self.delivered.advance(room, cursor);
        }
        self.delivered.advance(room, head);
        Ok(())
    }

    async fn flush(&mut self, sink: &mut Sink) -> Result<(), WriteFailed> {
        self.guarded(sink.flush()).await
    }

    async fn write(
        &mut self,
        sink: &mut Sink,
        message: Message,
        step: Step,
    ) -> Result<(), WriteFailed> {
        match step {
            Step::Feed => self.guarded(sink.feed(message)).await,
            Step::Send => self.guarded(sink.send(message)).await,
        }
    }

    /// Drives one sink operation. If a close is decided while it is blocked
    /// (typically a slow consumer whose socket buffer is full), it gets
    /// `CLOSE_GRACE` more to finish and then the connection is dropped.
    async fn guarded(
        &mut self,
        op: impl Future<Output = Result<(), axum::Error>>,
    ) -> Result<(), WriteFailed> {
        tokio::pin!(op);
        loop {
            let deadline = self.closing_since.map(|since| since + CLOSE_GRACE);
            // Biased, operation first: a write that completes at once (the
            // usual case) never registers with the close signal at all.
            tokio::select! {
                biased;
                result = &mut op => return result.map_err(|_| WriteFailed),
                _ = self.close.decided(Half::Writer), if deadline.is_none() => {
                    self.closing_since = Some(tokio::time::Instant::now());
                }
                () = sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    return Err(WriteFailed);
                }
            }
        }
    }
}
