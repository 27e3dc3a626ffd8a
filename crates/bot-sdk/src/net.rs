//! Opening a byte stream to a server: TCP, with TLS for `https`/`wss`.
//!
//! One place for both the HTTP calls and the WebSocket, so they resolve,
//! time out and verify certificates the same way. TLS uses rustls with the
//! ring provider and the Mozilla roots of `webpki-roots`.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};
use tokio_util::either::Either;

use crate::url::ServerUrl;

/// A plain or TLS stream.
pub(crate) type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

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
    /// The WebSocket upgrade was refused or went wrong (§3.1, §3.2).
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

/// Opens TCP (and TLS when the URL says so) within `timeout`.
pub(crate) async fn connect(server: &ServerUrl, timeout: Duration) -> Result<Stream, ConnectError> {
    let name = server.to_string();
    let open = async {
        let tcp = TcpStream::connect((server.bare_host(), server.port()))
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
    match tokio::time::timeout(timeout, open).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::TimedOut {
            server: name,
            after: timeout,
        }),
    }
}
