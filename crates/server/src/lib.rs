//! The Confab reference server.
//!
//! It serves the HTTP endpoints of §5 and the confab.v1 WebSocket protocol
//! of §3-§12, stores users, tokens, rooms and messages in SQLite (or in
//! PostgreSQL, with a `postgres://` database URL), and is
//! both the `confab-server` binary and a library, so tests and other crates
//! can run a real server in-process:
//!
//! ```no_run
//! # async fn example() -> Result<(), confab_server::StartError> {
//! let config = confab_server::Config::for_data_dir("/tmp/confab-test");
//! let server = confab_server::Server::bind(config).await?.spawn();
//! println!("ws endpoint: {}", server.ws_url());
//! // ... connect clients ...
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Layout, one concern per file:
//! - [`config`]: [`Config`] and the command-line flags that fill it.
//! - `server` (private): the accept loop (TLS, connection caps and 503s, graceful stop).
//! - `deadline` (private): first-byte, head, body and keep-alive deadlines of HTTP connections.
//! - [`http`]: the routes: register, login, logout, health, metrics.
//! - [`ws`]: the WebSocket endpoint: upgrade checks and the per-socket task.
//! - [`hub`]: rooms, live connections, fan-out, presence and typing.
//! - [`storage`]: the [`storage::Store`] trait, SQLite, PostgreSQL, and the group-commit writer.
//! - [`cluster`]: cluster mode: NATS fan-out between nodes, repaired from PostgreSQL.
//! - [`auth`]: password hashing, tokens, the login throttle.
//! - [`state`]: the shared [`state::AppState`] handlers and sockets use.
//! - [`limit`], [`metrics`], [`shutdown`], [`tls`]: the rest.

pub mod auth;
pub mod close;
pub mod cluster;
pub mod config;
mod deadline;
#[cfg(feature = "fault-hooks")]
pub mod fault;
pub mod http;
pub mod hub;
pub mod limit;
pub mod metrics;
pub mod queue;
mod server;
pub mod shutdown;
pub mod state;
pub mod storage;
pub mod tls;
mod web;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{Cli, Config, TlsFiles};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::auth::{AddressBuckets, HashLimiter, LoginThrottle, Passwords};
use crate::hub::Hub;
use crate::limit::{ConnectionLimit, KeyedRateLimiter, SendRateLimiter};
use crate::metrics::Metrics;
use crate::shutdown::{Shutdown, TaskTracker};
use crate::state::AppState;
use crate::storage::Store;
use crate::storage::sqlite::{OpenError, SqliteStore};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Database(#[from] OpenError),
    /// The PostgreSQL database could not be reached, is not durable, or
    /// could not be migrated.
    #[error(transparent)]
    Postgres(#[from] storage::postgres::OpenError),
    /// Loading rooms failed.
    #[error("cannot load rooms: {0}")]
    Load(#[from] storage::StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Password hashing is unusable.
    #[error(transparent)]
    Hash(#[from] auth::HashError),
    /// Cluster mode could not start.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// The server task panicked.
    #[error("server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Most simultaneous connections to the `--metrics-listen` address.
const METRICS_CONNECTIONS: usize = 64;

/// Entry point: `Server::bind(config)` opens storage and the listening socket.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Opens (creating) the data directory and database, runs migrations,
    /// loads rooms, starts the storage writer and binds the listener. Nothing
    /// is served until [`BoundServer::serve`].
    pub async fn bind(config: Config) -> Result<BoundServer, StartError> {
        if config.database_url.is_none() {
            tokio::fs::create_dir_all(&config.data_dir)
                .await
                .map_err(|source| StartError::DataDir {
                    path: config.data_dir.display().to_string(),
                    source,
                })?;
        }
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let db_path = config.data_dir.join(config::DATABASE_FILE);
        // A postgres:// URL selects PostgreSQL; anything else (or none) SQLite.
        let postgres = config
            .database_url
            .as_deref()
            .is_some_and(storage::postgres::is_postgres_url);
        if config.cluster.is_some() && !postgres {
            return Err(cluster::ClusterError::NeedsPostgres.into());
        }
        let mut shared_limits = None;
        let store: Arc<dyn Store> = match config.database_url.as_deref() {
            Some(url) if storage::postgres::is_postgres_url(url) => {
                let store = storage::postgres::PostgresStore::open(url).await?;
                if config.cluster.is_some() {
                    shared_limits = Some(cluster::limits::SharedLimits::new(store.pool().clone()));
                }
                Arc::new(store)
            }
            url => Arc::new(SqliteStore::open(url, &db_path).await?),
        };
        let metrics = Arc::new(Metrics::default());
        // Joined before the rooms are loaded: whatever commits in between
        // is found by the first poll of the cluster's storage sync.
        let cluster = match &config.cluster {
            Some(cluster) => Some(Arc::new(cluster::Cluster::connect(cluster.clone()).await?)),
            None => None,
        };
        let rooms = store.load_rooms().await?;
        let hub = Arc::new(Hub::new(rooms, config.limits.clone(), Arc::clone(&metrics)));
        let sink: Arc<dyn storage::writer::CommitSink> = match &cluster {
            Some(cluster) => Arc::new(cluster::ClusterSink::new(
                Arc::clone(&hub),
                Arc::clone(cluster),
                Arc::clone(&metrics),
            )),
            None => Arc::clone(&hub) as Arc<dyn storage::writer::CommitSink>,
        };
        let passwords = Passwords::new().await?;
        let listener =
            server::listen(config.listen, config.socket_send_buffer).map_err(|source| {
                StartError::Bind {
                    addr: config.listen,
                    source,
                }
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let metrics_listener = match config.metrics_listen {
            None => None,
            Some(addr) => {
                let bind_error = |source| StartError::Bind { addr, source };
                let listener = server::listen(addr, None).map_err(bind_error)?;
                let local = listener.local_addr().map_err(bind_error)?;
                Some((listener, local))
            }
        };
        let (writer, writer_task) = storage::writer::spawn(
            Arc::clone(&store),
            sink,
            config.write_batch_max,
            Arc::clone(&metrics),
        );
        let app = Arc::new(AppState {
            login_throttle: LoginThrottle::new(
                config.login_free_failures,
                config.login_lockout_base,
                config.login_lockout_max,
            ),
            login_addresses: AddressBuckets::new(
                config.login_address_burst,
                config.login_address_per_min,
            ),
            register_addresses: AddressBuckets::new(
                config.register_address_burst,
                config.register_address_per_min,
            ),
            hash_limiter: HashLimiter::new(
                config.hash_queue_per_address,
                config.hash_running_per_address,
                config.hash_queue_total,
            ),
            send_rate: SendRateLimiter::new(
                config.limits.send_rate_per_sec,
                config.limits.send_burst,
            ),
            typing_rate: KeyedRateLimiter::new(config.typing_rate_per_sec, config.typing_burst),
            mark_read_rate: KeyedRateLimiter::new(
                config.mark_read_rate_per_sec,
                config.mark_read_burst,
            ),
            room_create_rate: KeyedRateLimiter::with_rate(
                f64::from(config.room_create_per_min.max(1)) / 60.0,
                config.room_create_burst,
            ),
            connection_limit: ConnectionLimit::new(
                config.max_connections,
                config.max_connections_per_ip,
            ),
            config,
            store,
            hub,
            writer,
            passwords,
            metrics,
            shutdown: Shutdown::new(),
            sockets: TaskTracker::new(),
            cluster: cluster.clone(),
            shared_limits,
        });
        Ok(BoundServer {
            listener,
            local_addr,
            metrics_listener,
            tls,
            app,
            writer_task,
            cluster,
        })
    }
}

/// A server with storage open and its socket bound, ready to serve.
pub struct BoundServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The `--metrics-listen` socket and its bound address.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    tls: Option<TlsAcceptor>,
    app: Arc<AppState>,
    writer_task: JoinHandle<()>,
    /// Cluster mode: this node's NATS side, started by `serve`.
    cluster: Option<Arc<cluster::Cluster>>,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("local_addr", &self.local_addr)
            .field("metrics_addr", &self.metrics_addr())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

fn urls(addr: SocketAddr, tls: bool) -> (String, String) {
    let (http, ws) = if tls {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    (
        format!("{http}://{addr}"),
        format!("{ws}://{addr}{}", confab_protocol::WEBSOCKET_PATH),
    )
}

impl BoundServer {
    /// The bound address (the real port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL of the HTTP endpoints, e.g. `http://127.0.0.1:7420`.
    pub fn url(&self) -> String {
        urls(self.local_addr, self.tls.is_some()).0
    }

    /// The bound `--metrics-listen` address, when `/metrics` has its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, addr)| *addr)
    }

    /// URL of the WebSocket endpoint, e.g. `ws://127.0.0.1:7420/v1/ws`.
    pub fn ws_url(&self) -> String {
        urls(self.local_addr, self.tls.is_some()).1
    }

    /// Serves until `shutdown` completes, then stops gracefully: stop
    /// accepting, close every socket with 1001 (after answering sends already
    /// being committed), let the storage writer commit everything queued,
    /// and close the database.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
        let BoundServer {
            listener,
            metrics_listener,
            tls,
            app,
            writer_task,
            cluster,
            ..
        } = self;
        let typing_task =
            tokio::spawn(Arc::clone(&app.hub).run_typing_expiry(app.shutdown.clone()));
        let cluster_tasks = match &cluster {
            Some(cluster) => cluster.spawn(&app.hub, &app.store, &app.metrics, &app.shutdown),
            None => Vec::new(),
        };
        let router = http::router(Arc::clone(&app));
        let accept = server::accept_loop(
            listener,
            tls,
            Arc::clone(&app),
            router,
            app.connection_limit.clone(),
        );
        // The metrics listener is for the operator's scraper: plain HTTP,
        // its own small cap, so a flood of the public port cannot keep
        // the operator from seeing it.
        let metrics_accept = async {
            if let Some((listener, _)) = metrics_listener {
                let router = http::metrics_router(Arc::clone(&app));
                let limit = limit::ConnectionLimit::new(METRICS_CONNECTIONS, 0);
                server::accept_loop(listener, None, Arc::clone(&app), router, limit).await;
            }
        };
        let flag = app.shutdown.clone();
        let trigger = async move {
            shutdown.await;
            tracing::info!("shutting down");
            flag.trigger();
        };
        // The accept loop ends once the flag is raised, after HTTP draining.
        tokio::join!(accept, metrics_accept, trigger);
        app.sockets.close();
        app.sockets.wait().await;
        app.writer.stop().await;
        writer_task.await?;
        typing_task.await?;
        for task in cluster_tasks {
            task.await?;
        }
        if let Err(err) = app.store.close().await {
            tracing::warn!(error = %err, "closing storage failed");
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Serves on a background task; the handle stops it.
    pub fn spawn(self) -> ServerHandle {
        let (local_addr, tls) = (self.local_addr, self.tls.is_some());
        let metrics_addr = self.metrics_addr();
        let stop = Shutdown::new();
        let wait = stop.clone();
        let task = tokio::spawn(self.serve(async move { wait.wait().await }));
        ServerHandle {
            local_addr,
            metrics_addr,
            tls,
            stop,
            task,
        }
    }
}

/// A server running on a background task (see [`BoundServer::spawn`]).
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    tls: bool,
    stop: Shutdown,
    task: JoinHandle<Result<(), StartError>>,
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL of the HTTP endpoints.
    pub fn url(&self) -> String {
        urls(self.local_addr, self.tls).0
    }

    /// The bound `--metrics-listen` address, when `/metrics` has its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// URL of the WebSocket endpoint.
    pub fn ws_url(&self) -> String {
        urls(self.local_addr, self.tls).1
    }

    /// Stops the server gracefully and waits until storage is closed.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.stop.trigger();
        self.task.await?
    }
}

/// Binds and serves `config` until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    Server::bind(config).await?.serve(shutdown).await
}
