//! The accept loop: TCP (optionally TLS) connections handed to hyper.
//!
//! Defences that live here rather than in handlers:
//! - admission: every connection is accepted, then given a slot of the
//!   connection caps (total and per source address, `ConnectionLimit`) or
//!   answered `503 unavailable` at once and closed (§3.1), so clients beyond
//!   a cap get an answer instead of hanging in the kernel backlog, and a
//!   refused client that never reads costs a bounded task for a bounded time;
//! - deadlines from accept for the first byte, the request head, the body,
//!   keep-alive idleness and stalled writes (`deadline`), and one on the TLS
//!   handshake, so a silent or dribbling client cannot hold a slot;
//! - graceful shutdown: stop accepting, let in-flight HTTP requests finish,
//!   while WebSocket tasks (which outlive their HTTP connection after the
//!   upgrade) are drained separately by `serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use confab_protocol::http::{ErrorBody, HttpErrorCode};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::deadline::{ConnectionPhase, DeadlineIo, PhaseBody, Timeouts};
use crate::limit::{ConnectionLimit, ConnectionPermit, Refusal};
use crate::metrics::Metrics;
use crate::state::AppState;

/// How long in-flight HTTP requests get to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// Backlog of not-yet-accepted connections. The accept loop never waits
/// for a slot, so this only absorbs bursts.
const LISTEN_BACKLOG: u32 = 1024;

/// Most refused connections being answered at once. Each holds a task and
/// a file descriptor for at most [`REFUSAL_WRITE`] + [`REFUSAL_LINGER`]
/// (plus [`REFUSAL_WRITE`] for a TLS handshake); beyond this, refused
/// connections are closed without an answer, so a flood of them cannot
/// exhaust file descriptors.
const REFUSALS_IN_FLIGHT: usize = 1024;

/// Longest time to write a 503 (and, with TLS, to finish the handshake).
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// After a 503, how long the request is read and discarded before closing,
/// so the close does not turn into a reset that destroys the 503 in the
/// client's receive buffer (a lingering close, as nginx does it). Short:
/// the request is already on its way when the 503 is written, and with
/// [`REFUSALS_IN_FLIGHT`] this bounds refusals to about 4,000 answered per
/// second from clients that keep their side open.
const REFUSAL_LINGER: Duration = Duration::from_millis(250);

/// Most request bytes discarded during [`REFUSAL_LINGER`].
const REFUSAL_LINGER_BYTES: usize = 64 * 1024;

/// What a refused client is told to wait before retrying.
const REFUSAL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Binds the listening socket. Accepted sockets inherit its send buffer
/// size: a fixed kernel send buffer (instead of autotuning up to several
/// MiB) bounds the memory a slow reader can pin per connection, and makes
/// backpressure reach the bounded outbound queue (§12.4) after a few
/// hundred KiB instead of megabytes.
pub(crate) fn listen(addr: SocketAddr, send_buffer: Option<u32>) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restart must not fail because old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections until the shutdown flag is raised, then lets the
/// HTTP connections finish their current request. Connections take their
/// slot from `limit`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<AppState>,
    router: Router,
    limit: ConnectionLimit,
) {
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        // The deadlines of `crate::deadline` replace hyper's header timer,
        // which would start only after hyper-util's version sniffing has
        // read the first bytes, and would also cut kept-alive connections
        // at the head timeout instead of the keep-alive one.
        .header_read_timeout(None)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let timeouts = Timeouts {
        first_byte: app.config.first_byte_timeout,
        head: app.config.header_read_timeout,
        body: app.config.body_timeout,
        keep_alive: app.config.keepalive_timeout,
        // A response is at most a /metrics page: a client that takes
        // longer than a body deadline to accept any of it is not reading.
        write_stall: app.config.body_timeout,
    };

    loop {
        let (stream, peer) = tokio::select! {
            () = app.shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually EMFILE/ENFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small frames matter more than throughput for chat.
        stream.set_nodelay(true).ok();
        let permit = match limit.try_acquire(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                refuse(stream, peer, refusal, tls.clone(), &refusals, &app.metrics);
                continue;
            }
        };
        let phase = ConnectionPhase::new(timeouts);
        let stream = DeadlineIo::new(stream, phase.clone(), Arc::clone(&app.metrics));
        let task = ConnectionTask {
            builder: Arc::clone(&builder),
            router: router.clone(),
            permit,
            peer,
            phase,
        };
        let watcher = graceful.watcher();
        // Boxed, so that the task's own allocation is a pointer and a
        // header: after a WebSocket upgrade this task is done, but the
        // socket's I/O registration still holds its waker (the last write
        // it waited for), which keeps the task's memory until the socket
        // closes. Inline, that was the whole HTTP connection future
        // (2.8 KB per idle socket, BENCHMARKS.md, idle).
        match tls.clone() {
            None => {
                tokio::spawn(Box::pin(async move { task.serve(stream, watcher).await }));
            }
            Some(acceptor) => {
                let handshake_timeout = app.config.header_read_timeout;
                tokio::spawn(Box::pin(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => task.serve(tls_stream, watcher).await,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }));
            }
        }
    }
    drop(listener);
    tracing::info!("stopped accepting connections");
    if tokio::time::timeout(HTTP_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections did not finish in time");
    }
}

/// Answers a connection that got no slot with `503 unavailable` (§3.1) on
/// a task of its own, or closes it at once when [`REFUSALS_IN_FLIGHT`]
/// answers are already being written.
fn refuse(
    stream: TcpStream,
    peer: SocketAddr,
    refusal: Refusal,
    tls: Option<TlsAcceptor>,
    refusals: &Arc<Semaphore>,
    metrics: &Arc<Metrics>,
) {
    Metrics::inc(match refusal {
        Refusal::AddressAtCapacity => &metrics.refused_per_address,
        _ => &metrics.refused_at_capacity,
    });
    let Ok(in_flight) = Arc::clone(refusals).try_acquire_owned() else {
        Metrics::inc(&metrics.refused_dropped);
        tracing::debug!(%peer, "refused connection closed unanswered: too many refusals in flight");
        return;
    };
    tracing::debug!(%peer, reason = %refusal, "connection refused with 503");
    tokio::spawn(async move {
        match tls {
            None => answer_refusal(stream, refusal, in_flight).await,
            Some(acceptor) => {
                match tokio::time::timeout(REFUSAL_WRITE, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => answer_refusal(tls_stream, refusal, in_flight).await,
                    Ok(Err(_)) | Err(_) => drop(in_flight),
                }
            }
        }
    });
}

/// The bytes of the 503 a refused connection gets.
pub(crate) fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let message = match refusal {
        Refusal::AddressAtCapacity => {
            "too many connections from your address; close some, or wait retry_after_ms and try again"
        }
        _ => "the server is at its connection limit; wait retry_after_ms and try again",
    };
    let mut body = ErrorBody::new(HttpErrorCode::Unavailable, message);
    let retry_ms = u64::try_from(REFUSAL_RETRY_AFTER.as_millis()).unwrap_or(u64::MAX);
    body.error.retry_after_ms = Some(retry_ms);
    // Serializing two strings and a number cannot fail.
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: {}\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Service Unavailable"),
        json.len(),
        retry_ms.div_ceil(1000),
    )
    .into_bytes();
    response.extend_from_slice(&json);
    response
}

/// Writes the 503 without waiting for the request (whatever it is, the
/// answer is the same), then closes after a short lingering drain. Every
/// step is under a deadline: a client that never reads holds nothing.
async fn answer_refusal<S>(mut stream: S, refusal: Refusal, in_flight: OwnedSemaphorePermit)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let response = refusal_response(refusal);
    let written = tokio::time::timeout(REFUSAL_WRITE, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        let mut discarded = 0;
        let mut buf = [0u8; 4096];
        let drain = async {
            while discarded < REFUSAL_LINGER_BYTES {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => discarded += n,
                }
            }
        };
        // Timing out here is the normal end for a client that keeps its side open.
        if tokio::time::timeout(REFUSAL_LINGER, drain).await.is_err() {
            tracing::trace!("refused client kept its connection open; closing");
        }
    }
    drop(stream);
    drop(in_flight);
}

struct ConnectionTask {
    builder: Arc<Builder<TokioExecutor>>,
    router: Router,
    permit: ConnectionPermit,
    peer: SocketAddr,
    phase: ConnectionPhase,
}

impl ConnectionTask {
    async fn serve<S>(self, stream: S, watcher: hyper_util::server::graceful::Watcher)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            builder,
            router,
            permit,
            peer,
            phase,
        } = self;
        // Every request carries the connection's permit, so a WebSocket
        // handler can keep the slot after hyper lets go of the connection.
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let router = router.clone();
            let phase = phase.clone();
            let permit = permit.clone();
            async move {
                phase.request_started(!request.body().is_end_stream());
                let mut request = request.map(|body| PhaseBody::request(body, phase.clone()));
                request.extensions_mut().insert(permit);
                request.extensions_mut().insert(ConnectInfo(peer));
                let response = router.oneshot(request).await?;
                let response = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    phase.upgraded();
                    response
                } else if phase.body_timed_out() {
                    crate::http::body_timeout_response()
                } else {
                    response
                };
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| PhaseBody::response(body, phase.clone())),
                )
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        if let Err(err) = watcher.watch(connection.into_owned()).await {
            tracing::debug!(%peer, error = %err, "HTTP connection ended with an error");
        }
    }
}
