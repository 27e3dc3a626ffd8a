//! Opening connections to a server: TCP, with TLS for `https`/`wss`, and
//! the WebSocket upgrade of §3.1 and §3.2 on top.
//!
//! The one place every Confab client in this workspace opens a socket (the
//! SDK's HTTP calls and driver, the CLI, the conformance suite's ordinary
//! connections, the bench's generator), so they resolve, time out, verify
//! certificates and negotiate `confab.v1` the same way. TLS uses rustls
//! with the ring provider and the Mozilla roots of `webpki-roots`.
//!
//! [`connect_websocket`] hands back the tungstenite [`WebSocketStream`]:
//! what is sent on it is the caller's business (the driver runs a
//! `ClientSession` on it, the bench drives frames itself).
//!
//! ```no_run
//! # async fn example() -> Result<(), confab_bot_sdk::net::ConnectError> {
//! use confab_bot_sdk::ServerUrl;
//! use confab_bot_sdk::net::{WebSocketOptions, connect_websocket};
//!
//! let server: ServerUrl = "http://127.0.0.1:7420".parse().expect("valid URL");
//! let socket = connect_websocket(&server, &WebSocketOptions::default()).await?;
//! assert_eq!(socket.subprotocol.as_deref(), Some("confab.v1"));
//! # Ok(()) }
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use confab_protocol::session::MAX_SERVER_FRAME_BYTES;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::{ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig};
use tokio_util::either::Either;

use crate::url::ServerUrl;

/// A plain or TLS stream.
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// How to open a stream: [`connect`]'s options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// How long TCP and TLS together may take.
    pub timeout: Duration,
    /// `host:port` to open TCP to instead of the server's own (a proxy in
    /// front of it); TLS still verifies the server's name.
    pub via: Option<String>,
    /// Local address to connect from (e.g. `127.0.0.2`, to act as another
    /// client on loopback); the OS's choice when `None`.
    pub local_addr: Option<IpAddr>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            via: None,
            local_addr: None,
        }
    }
}

impl ConnectOptions {
    /// Sets [`ConnectOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`ConnectOptions::via`].
    pub fn via(mut self, address: impl Into<String>) -> Self {
        self.via = Some(address.into());
        self
    }

    /// Sets [`ConnectOptions::local_addr`].
    pub fn local_addr(mut self, address: IpAddr) -> Self {
        self.local_addr = Some(address);
        self
    }
}

/// Why no stream could be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// DNS lookup failed, the connection was refused, or the network is unreachable.
    #[error("cannot reach {server}: {source}; check the address and that the server is running")]
    Unreachable {
        /// The server.
        server: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("connecting to {server} timed out after {after:?}")]
    TimedOut {
        /// The server.
        server: String,
        /// The timeout.
        after: Duration,
    },
    /// The TLS handshake failed (bad certificate, wrong host name, not a TLS server).
    #[error("TLS handshake with {server} failed: {source}")]
    Tls {
        /// The server.
        server: String,
        /// The handshake error.
        #[source]
        source: io::Error,
    },
    /// The server answered the upgrade with an HTTP status other than 101 (§3.1).
    #[error("WebSocket upgrade at {server} refused with HTTP {status} {message}")]
    Refused {
        /// The server.
        server: String,
        /// The HTTP status.
        status: u16,
        /// The ErrorBody message when the body is one, else empty.
        message: String,
        /// The response body as sent.
        body: Vec<u8>,
    },
    /// The WebSocket upgrade went wrong in another way (§3.1, §3.2).
    #[error("WebSocket upgrade at {server} failed: {message}")]
    Upgrade {
        /// The server.
        server: String,
        /// What went wrong, with the server's ErrorBody message when it sent one.
        message: String,
    },
}

fn tls_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        // The ring provider supports the default versions; this cannot fail.
        Arc::new(config.unwrap_or_else(|_| {
            unreachable!("ring supports rustls' safe default protocol versions")
        }))
    }))
}

/// Opens TCP (and TLS when the URL says so) within `options.timeout`.
pub async fn connect(server: &ServerUrl, options: &ConnectOptions) -> Result<Stream, ConnectError> {
    let name = server.to_string();
    let open = async {
        let target = options.via.clone().unwrap_or_else(|| server.authority());
        let tcp = open_tcp(&target, options.local_addr)
            .await
            .map_err(|source| ConnectError::Unreachable {
                server: name.clone(),
                source,
            })?;
        // Chat frames are small and latency matters more than batching.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        if !server.is_tls() {
            return Ok(Either::Left(tcp));
        }
        let server_name = ServerName::try_from(server.bare_host().to_owned()).map_err(|err| {
            ConnectError::Tls {
                server: name.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, err),
            }
        })?;
        let tls = TlsConnector::from(tls_config())
            .connect(server_name, tcp)
            .await
            .map_err(|source| ConnectError::Tls {
                server: name.clone(),
                source,
            })?;
        Ok(Either::Right(Box::new(tls)))
    };
    match tokio::time::timeout(options.timeout, open).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::TimedOut {
            server: name,
            after: options.timeout,
        }),
    }
}

/// TCP to `target` (`host:port`), from `local` when given.
async fn open_tcp(target: &str, local: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect(target).await;
    };
    let remote = tokio::net::lookup_host(target)
        .await?
        .find(|a| a.is_ipv4() == local.is_ipv4())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "the server has no address of the local address's family",
            )
        })?;
    let socket = if local.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(remote).await
}

/// How to open a WebSocket: [`connect_websocket`]'s options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebSocketOptions {
    /// TCP and TLS; its timeout bounds the upgrade too.
    pub connect: ConnectOptions,
    /// The URL of the request line and `Host` header instead of the
    /// server's [`ServerUrl::ws_url`] (e.g. with a query, or another path).
    pub url: Option<String>,
    /// Subprotocols offered (§3.2); `confab.v1` by default, none when empty.
    pub subprotocols: Vec<String>,
    /// `Origin` header, as a browser would send it (§15.1); none by default.
    pub origin: Option<String>,
    /// tungstenite's limits and buffers; by default frames are capped at
    /// the largest a server may send.
    pub config: WebSocketConfig,
}

impl Default for WebSocketOptions {
    fn default() -> Self {
        Self {
            connect: ConnectOptions::default(),
            url: None,
            subprotocols: vec![confab_protocol::SUBPROTOCOL.to_owned()],
            origin: None,
            config: WebSocketConfig::default()
                .max_message_size(Some(MAX_SERVER_FRAME_BYTES))
                .max_frame_size(Some(MAX_SERVER_FRAME_BYTES)),
        }
    }
}

impl WebSocketOptions {
    /// Sets the timeout of [`WebSocketOptions::connect`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.connect.timeout = timeout;
        self
    }

    /// Sets [`WebSocketOptions::config`].
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets [`WebSocketOptions::url`].
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }
}

/// An upgraded WebSocket.
#[derive(Debug)]
#[non_exhaustive]
pub struct WebSocket {
    /// The socket, for the caller to drive.
    pub stream: WebSocketStream<Stream>,
    /// The subprotocol the server selected, if any.
    pub subprotocol: Option<String>,
}

/// Opens a stream and upgrades it (§3.1, §3.2), all within the connect
/// timeout. A refusal with an HTTP status is [`ConnectError::Refused`],
/// with the body the server sent. Which subprotocol the server selected is
/// reported, not judged: tungstenite refuses one that was not offered, and
/// a client that needs `confab.v1` checks [`WebSocket::subprotocol`].
pub async fn connect_websocket(
    server: &ServerUrl,
    options: &WebSocketOptions,
) -> Result<WebSocket, ConnectError> {
    let upgrade_error = |message: String| ConnectError::Upgrade {
        server: server.to_string(),
        message,
    };
    let started = tokio::time::Instant::now();
    let timeout = options.connect.timeout;
    let stream = connect(server, &options.connect).await?;
    let url = options.url.clone().unwrap_or_else(|| server.ws_url());
    let mut request = url
        .into_client_request()
        .map_err(|err| upgrade_error(err.to_string()))?;
    let header = |value: &str| {
        HeaderValue::from_str(value).map_err(|err| upgrade_error(format!("{value:?}: {err}")))
    };
    if !options.subprotocols.is_empty() {
        let offered = header(&options.subprotocols.join(", "))?;
        request
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, offered);
    }
    if let Some(origin) = &options.origin {
        let origin = header(origin)?;
        request.headers_mut().insert(ORIGIN, origin);
    }
    let remaining = timeout.saturating_sub(started.elapsed());
    let handshake =
        tokio_tungstenite::client_async_with_config(request, stream, Some(options.config));
    let (stream, response) = match tokio::time::timeout(remaining, handshake).await {
        Err(_) => {
            return Err(ConnectError::TimedOut {
                server: server.to_string(),
                after: timeout,
            });
        }
        Ok(Err(tungstenite::Error::Http(response))) => {
            let body = response.body().clone().unwrap_or_default();
            let message = serde_json::from_slice::<confab_protocol::http::ErrorBody>(&body)
                .map(|body| body.error.message)
                .unwrap_or_default();
            return Err(ConnectError::Refused {
                server: server.to_string(),
                status: response.status().as_u16(),
                message,
                body,
            });
        }
        Ok(Err(err)) => return Err(upgrade_error(err.to_string())),
        Ok(Ok(pair)) => pair,
    };
    let subprotocol = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(WebSocket {
        stream,
        subprotocol,
    })
}
