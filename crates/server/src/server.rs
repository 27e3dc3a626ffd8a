//! The accept loop: TCP (optionally TLS) connections handed to hyper.
//!
//! Defences that live here rather than in handlers:
//! - the connection cap is taken *before* `accept`, so at the cap clients
//!   wait in the kernel backlog and cost us nothing;
//! - hyper's `header_read_timeout` (and a deadline on the TLS handshake)
//!   so a client dribbling bytes cannot hold a connection slot forever;
//! - graceful shutdown: stop accepting, let in-flight HTTP requests finish,
//!   while WebSocket tasks (which outlive their HTTP connection after the
//!   upgrade) are drained separately by `serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::limit::ConnectionPermit;
use crate::state::AppState;

/// How long in-flight HTTP requests get to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// Backlog of not-yet-accepted connections; at the connection cap new
/// clients wait here (see `ConnectionLimit`).
const LISTEN_BACKLOG: u32 = 1024;

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
/// HTTP connections finish their current request.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Arc<AppState>,
    router: Router,
) {
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();

    loop {
        let permit = tokio::select! {
            () = app.shutdown.wait() => break,
            permit = app.connection_limit.acquire() => permit,
        };
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
        let task = ConnectionTask {
            builder: Arc::clone(&builder),
            router: router.clone(),
            permit,
            peer,
            handshake_timeout: app.config.header_read_timeout,
        };
        let watcher = graceful.watcher();
        match tls.clone() {
            None => {
                tokio::spawn(async move { task.serve(stream, watcher).await });
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(task.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls_stream)) => task.serve(tls_stream, watcher).await,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
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

struct ConnectionTask {
    builder: Arc<Builder<TokioExecutor>>,
    router: Router,
    permit: ConnectionPermit,
    peer: SocketAddr,
    handshake_timeout: Duration,
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
            ..
        } = self;
        // Every request carries the connection's permit, so a WebSocket
        // handler can keep the slot after hyper lets go of the connection.
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(permit.clone());
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        if let Err(err) = watcher.watch(connection.into_owned()).await {
            tracing::debug!(%peer, error = %err, "HTTP connection ended with an error");
        }
    }
}
