//! Server configuration: the plain [`Config`] the library runs from, and the
//! [`Cli`] that fills it from flags and environment variables.
//!
//! The two are separate so tests and other crates build a `Config` in code
//! (`Config::for_data_dir(dir)`) without clap reading the process's
//! environment behind their back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use confab_protocol::limits::ServerLimits;

/// Everything the server needs to run. Defaults are the reference server's
/// (notes: "Reference server constants").
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (see `BoundServer::local_addr`).
    pub listen: SocketAddr,
    /// Directory holding the SQLite database; created if missing.
    pub data_dir: PathBuf,
    /// Overrides the database location, e.g. `sqlite:///var/lib/confab/confab.db`,
    /// or selects PostgreSQL with `postgres://user@host:5432/db`.
    /// `None` means `<data_dir>/confab.db`.
    pub database_url: Option<String>,
    /// Protocol limits announced in Welcome and enforced (§12).
    pub limits: ServerLimits,
    /// Most simultaneous TCP connections (HTTP and WebSocket alike).
    pub max_connections: usize,
    /// Kernel send buffer per connection, in bytes (`None`: the OS default,
    /// which autotunes up to several MiB). Bounds what a slow reader pins.
    pub socket_send_buffer: Option<u32>,
    /// SetTyping frames per second per user, sustained (§11.2); beyond it
    /// (after `typing_burst`) SetTyping gets RATE_LIMITED.
    pub typing_rate_per_sec: u32,
    /// Burst of the per-user SetTyping limiter.
    pub typing_burst: u32,
    /// MarkRead frames per second per user, sustained (§11.3); beyond it
    /// (after `mark_read_burst`) MarkRead gets RATE_LIMITED. Each moves a
    /// stored marker, so it is a write.
    pub mark_read_rate_per_sec: u32,
    /// Burst of the per-user MarkRead limiter.
    pub mark_read_burst: u32,
    /// Rooms a user may create at once before the per-minute rate applies (§7.2).
    pub room_create_burst: u32,
    /// Rooms per minute per user, sustained, after the burst; beyond it
    /// CreateRoom gets RATE_LIMITED.
    pub room_create_per_min: u32,
    /// How long a new socket may take to send Auth (§6.2).
    pub auth_timeout: Duration,
    /// Most sockets one user may hold open at once (§6.2, R-6.2.8); an Auth
    /// beyond it gets TOO_MANY_CONNECTIONS and close 1013.
    pub max_sockets_per_user: u32,
    /// How long a client may take, from accept, to send its HTTP request
    /// headers (and TLS handshake).
    pub header_read_timeout: Duration,
    /// How long a new connection may stay silent, from accept, before it is
    /// closed (a kept-alive connection's idle limit is `keepalive_timeout`).
    pub first_byte_timeout: Duration,
    /// How long a request body may take to arrive once its head is read;
    /// a stalled body is answered 408 and the connection closed.
    pub body_timeout: Duration,
    /// How long a kept-alive HTTP connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// Most simultaneous connections from one source address (IPv6: one
    /// /64); 0 means no per-address cap. Beyond it: `503 unavailable` (§3.1).
    pub max_connections_per_ip: usize,
    /// Serve `GET /metrics` only on this address (and not on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Lifetime of a login token (§15).
    pub token_ttl: Duration,
    /// Browser origins allowed to open sockets (§15). Requests without an
    /// Origin header (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Serve TLS (`https://`, `wss://`) with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Failed logins per username before lockouts start (§15).
    pub login_free_failures: u32,
    /// First lockout after `login_free_failures`; each further failure doubles it.
    pub login_lockout_base: Duration,
    /// Longest lockout.
    pub login_lockout_max: Duration,
    /// Failed logins per client address, across all usernames, before its
    /// logins get 429 (a token bucket's burst; §15.3). A successful login
    /// gives its token back.
    pub login_address_burst: u32,
    /// Failed logins per client address per minute once the burst is used.
    pub login_address_per_min: u32,
    /// Registrations per client address before 429 (a token bucket's burst).
    pub register_address_burst: u32,
    /// Registrations per client address per minute once the burst is used.
    pub register_address_per_min: u32,
    /// Password hashes (logins and registrations) one client address may
    /// have running or queued; more get 429 at once.
    pub hash_queue_per_address: usize,
    /// Of those, how many run at once (the global cap is 4).
    pub hash_running_per_address: usize,
    /// Password hashes admitted server-wide (running or queued); more get
    /// 503 unavailable at once.
    pub hash_queue_total: usize,
    /// Most messages the storage writer commits in one transaction.
    pub write_batch_max: usize,
    /// Server name sent in Welcome.
    pub server_name: String,
    /// Cluster mode: join the other nodes over NATS (needs a PostgreSQL
    /// `database_url`). `None`: a single node.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Default listen address (notes: reference server constants).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./confab-data";
/// Default kernel send buffer per connection.
pub const DEFAULT_SOCKET_SEND_BUFFER: u32 = 256 * 1024;
/// Database file name inside the data directory.
pub const DATABASE_FILE: &str = "confab.db";
/// Default failed-login burst per address: generous, since many honest
/// users can share one address behind a NAT.
pub const DEFAULT_LOGIN_ADDRESS_BURST: u32 = 100;
/// Default failed logins per address per minute after the burst.
pub const DEFAULT_LOGIN_ADDRESS_PER_MIN: u32 = 20;
/// Default registration burst per address. A conformance run registers
/// about 150 users from one address; this leaves room for two.
pub const DEFAULT_REGISTER_ADDRESS_BURST: u32 = 300;
/// Default registrations per address per minute after the burst.
pub const DEFAULT_REGISTER_ADDRESS_PER_MIN: u32 = 30;
/// Default hashes running or queued per address.
pub const DEFAULT_HASH_QUEUE_PER_ADDRESS: usize = 16;
/// Default hashes running at once per address.
pub const DEFAULT_HASH_RUNNING_PER_ADDRESS: usize = 2;
/// Default hashes admitted server-wide.
pub const DEFAULT_HASH_QUEUE_TOTAL: usize = 256;

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            limits: ServerLimits::default(),
            max_connections: 10_000,
            socket_send_buffer: Some(DEFAULT_SOCKET_SEND_BUFFER),
            // A client renews typing every ttl/2 (3 s) and says stop when it
            // sends: well under one a second in one room. 5/s with a burst
            // of 20 leaves room for several rooms and fast switching.
            typing_rate_per_sec: 5,
            typing_burst: 20,
            // A client sends one MarkRead per room at a time (the session
            // coalesces): reading through rooms quickly stays well inside.
            mark_read_rate_per_sec: 10,
            mark_read_burst: 50,
            room_create_burst: 10,
            room_create_per_min: 10,
            auth_timeout: Duration::from_secs(10),
            max_sockets_per_user: 32,
            header_read_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(30),
            max_connections_per_ip: 256,
            metrics_listen: None,
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            allowed_origins: Vec::new(),
            tls: None,
            login_free_failures: 5,
            login_lockout_base: Duration::from_secs(1),
            login_lockout_max: Duration::from_secs(15 * 60),
            login_address_burst: DEFAULT_LOGIN_ADDRESS_BURST,
            login_address_per_min: DEFAULT_LOGIN_ADDRESS_PER_MIN,
            register_address_burst: DEFAULT_REGISTER_ADDRESS_BURST,
            register_address_per_min: DEFAULT_REGISTER_ADDRESS_PER_MIN,
            hash_queue_per_address: DEFAULT_HASH_QUEUE_PER_ADDRESS,
            hash_running_per_address: DEFAULT_HASH_RUNNING_PER_ADDRESS,
            hash_queue_total: DEFAULT_HASH_QUEUE_TOTAL,
            write_batch_max: 256,
            server_name: format!("confab-server/{}", env!("CARGO_PKG_VERSION")),
            cluster: None,
        }
    }
}

impl Config {
    /// The defaults, listening on `127.0.0.1:0`, storing in `data_dir`: what
    /// tests and embedding crates want.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            ..Self::default()
        }
    }

    /// The sqlx connection URL of the database.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join(DATABASE_FILE).display()),
        }
    }
}

/// Command-line flags of the `confab-server` binary. Every flag can also be
/// set through the environment variable named in its help.
#[derive(Debug, clap::Parser)]
#[command(
    name = "confab-server",
    version,
    about = "Confab reference server: HTTP login endpoints and the confab.v1 WebSocket chat protocol, stored in SQLite.",
    long_about = None
)]
pub struct Cli {
    /// Address and port to listen on; port 0 picks a free port and prints it.
    #[arg(long, env = "CONFAB_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Directory for the SQLite database (created on first run).
    #[arg(long, env = "CONFAB_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    // Help given as an attribute: rustdoc would read `<data-dir>` as HTML.
    #[arg(
        long,
        env = "CONFAB_DATABASE_URL",
        help = "Database URL overriding <data-dir>/confab.db: sqlite:///srv/confab.db, or \
                postgres://user[:password]@host:5432/database to store everything in PostgreSQL \
                (plain TCP, no TLS: keep it on a trusted network; synchronous_commit must not be off)"
    )]
    pub database_url: Option<String>,

    /// Cluster mode: a NATS server with JetStream (nats://host:4222) shared
    /// by every node; needs a postgres:// --database-url shared by them too.
    #[arg(long, env = "CONFAB_NATS_URL")]
    pub nats_url: Option<String>,

    /// Nodes with the same cluster name (and NATS) form one cluster; it
    /// names the NATS subjects and JetStream stream (letters, digits, - and _).
    #[arg(long, env = "CONFAB_CLUSTER_NAME", default_value = crate::cluster::DEFAULT_NAME)]
    pub cluster_name: String,

    /// Cluster mode: how often a node compares room heads and memberships
    /// with PostgreSQL and repairs what NATS missed (the bound on how late
    /// a message can reach another node when NATS loses it).
    #[arg(long, env = "CONFAB_CLUSTER_SYNC_INTERVAL_MS", default_value_t = 1000)]
    pub cluster_sync_interval_ms: u64,

    /// Cluster mode: a node silent this long has its users marked offline
    /// on the other nodes.
    #[arg(long, env = "CONFAB_PRESENCE_TTL_MS", default_value_t = 15_000)]
    pub presence_ttl_ms: u64,

    /// Delete the cluster's JetStream stream (named by --nats-url and
    /// --cluster-name) and exit, after every node of the cluster stopped:
    /// NATS holds a memory reservation for it until then.
    #[arg(long, requires = "nats_url")]
    pub delete_cluster_stream: bool,

    /// Largest message text in UTF-8 bytes (§12.2); longer texts get TEXT_TOO_LONG.
    #[arg(long, env = "CONFAB_MAX_TEXT_BYTES", default_value_t = ServerLimits::default().max_text_bytes)]
    pub max_text_bytes: u32,

    /// Largest WebSocket message in bytes (§12.2); larger ones close the socket with 1009.
    #[arg(long, env = "CONFAB_MAX_FRAME_BYTES", default_value_t = ServerLimits::default().max_frame_bytes)]
    pub max_frame_bytes: u32,

    /// Largest FetchHistory page (§9).
    #[arg(long, env = "CONFAB_MAX_HISTORY_PAGE", default_value_t = ServerLimits::default().max_history_page)]
    pub max_history_page: u32,

    /// Most messages one Resume replays per room before answering GAP_TOO_LARGE (§10.3).
    #[arg(long, env = "CONFAB_MAX_RESUME_REPLAY", default_value_t = ServerLimits::default().max_resume_replay)]
    pub max_resume_replay: u32,

    /// Sustained messages per second per user (§12.5); faster sends get RATE_LIMITED.
    #[arg(long, env = "CONFAB_SEND_RATE", default_value_t = ServerLimits::default().send_rate_per_sec)]
    pub send_rate: u32,

    /// Burst of the per-user send rate limiter (§12.5).
    #[arg(long, env = "CONFAB_SEND_BURST", default_value_t = ServerLimits::default().send_burst)]
    pub send_burst: u32,

    /// Outbound frames queued per socket; a socket whose queue overflows is closed with 4429 (§12.4).
    #[arg(long, env = "CONFAB_OUTBOUND_QUEUE", default_value_t = ServerLimits::default().outbound_queue_frames)]
    pub outbound_queue: u32,

    /// Most simultaneous TCP connections; further clients get 503 unavailable and are closed.
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS", default_value_t = Config::default().max_connections)]
    pub max_connections: usize,

    /// Kernel send buffer per connection in bytes; 0 keeps the OS default (autotuned, up to several MiB).
    /// Smaller buffers bound the memory a slow reader pins and let slow consumers be detected sooner.
    #[arg(long, env = "CONFAB_SOCKET_SEND_BUFFER", default_value_t = DEFAULT_SOCKET_SEND_BUFFER)]
    pub socket_send_buffer: u32,

    /// Bytes of encoded frames queued per socket; a socket whose queue would pass this is closed
    /// with 4429 (§12.4). Keep it above the largest reply (a full history page, ~420 KiB by default).
    #[arg(long, env = "CONFAB_OUTBOUND_QUEUE_BYTES", default_value_t = ServerLimits::default().outbound_queue_bytes)]
    pub outbound_queue_bytes: u32,

    /// Largest RoomList page (§7.1); ListRooms with limit 0 or above it gets this many rooms per page.
    #[arg(long, env = "CONFAB_MAX_ROOM_LIST_PAGE", default_value_t = ServerLimits::default().max_room_list_page)]
    pub max_room_list_page: u32,

    /// Milliseconds between two typing pushes for one user in one room (§11.2); renewals sooner
    /// than this only extend the indicator's lifetime and are not pushed.
    #[arg(long, env = "CONFAB_TYPING_PUSH_INTERVAL_MS", default_value_t = 1_000)]
    pub typing_push_interval_ms: u64,

    /// SetTyping frames per second per user, sustained (§11.2); faster ones get RATE_LIMITED.
    #[arg(long, env = "CONFAB_TYPING_RATE", default_value_t = Config::default().typing_rate_per_sec)]
    pub typing_rate: u32,

    /// Burst of the per-user SetTyping limiter (§11.2).
    #[arg(long, env = "CONFAB_TYPING_BURST", default_value_t = Config::default().typing_burst)]
    pub typing_burst: u32,

    /// MarkRead frames per second per user, sustained (§11.3); faster ones get RATE_LIMITED.
    #[arg(long, env = "CONFAB_MARK_READ_RATE", default_value_t = Config::default().mark_read_rate_per_sec)]
    pub mark_read_rate: u32,

    /// Burst of the per-user MarkRead limiter (§11.3).
    #[arg(long, env = "CONFAB_MARK_READ_BURST", default_value_t = Config::default().mark_read_burst)]
    pub mark_read_burst: u32,

    /// Rooms a user may create at once (§7.2); after that --room-create-per-min applies and
    /// further CreateRoom requests get RATE_LIMITED with retry_after_ms.
    #[arg(long, env = "CONFAB_ROOM_CREATE_BURST", default_value_t = Config::default().room_create_burst)]
    pub room_create_burst: u32,

    /// Rooms per minute per user, sustained, after the burst (§7.2).
    #[arg(long, env = "CONFAB_ROOM_CREATE_PER_MIN", default_value_t = Config::default().room_create_per_min)]
    pub room_create_per_min: u32,

    /// Milliseconds a new socket has to send Auth before it is closed with 4408 (§6.2).
    #[arg(long, env = "CONFAB_AUTH_TIMEOUT_MS", default_value_t = 10_000)]
    pub auth_timeout_ms: u64,

    /// Most sockets one user may hold open at once (default 32, at least 1). An Auth beyond it
    /// gets Error TOO_MANY_CONNECTIONS and close 1013; clients reconnect with backoff (§6.2).
    #[arg(long, env = "CONFAB_MAX_SOCKETS_PER_USER", default_value_t = 32)]
    pub max_sockets_per_user: u32,

    /// Milliseconds a client has, counted from accept, to send its HTTP request headers (and finish TLS).
    #[arg(long, env = "CONFAB_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Milliseconds a new connection may stay silent; then it is closed. Counted from accept.
    #[arg(long, env = "CONFAB_FIRST_BYTE_TIMEOUT_MS", default_value_t = 5_000)]
    pub first_byte_timeout_ms: u64,

    /// Milliseconds a request body may take to arrive after its headers; then 408 and the connection is closed.
    #[arg(long, env = "CONFAB_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,

    /// Milliseconds an idle keep-alive HTTP connection waits for its next request; then it is closed.
    #[arg(long, env = "CONFAB_KEEPALIVE_TIMEOUT_MS", default_value_t = 30_000)]
    pub keepalive_timeout_ms: u64,

    /// Most simultaneous connections from one source address (IPv6: per /64), WebSockets included;
    /// 0 = no per-address cap. Further connections from it get 503 unavailable and are closed.
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Serve GET /metrics only on this address (e.g. 127.0.0.1:9420) and not on the public one.
    /// Unset: /metrics is public on the listen address; operators exposing the server should set this.
    #[arg(long, env = "CONFAB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Milliseconds between server WebSocket pings (§12.1).
    #[arg(long, env = "CONFAB_HEARTBEAT_MS", default_value_t = 20_000)]
    pub heartbeat_ms: u64,

    /// Milliseconds of client silence after which the socket is closed with 4504 (§12.1).
    #[arg(long, env = "CONFAB_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// Milliseconds a typing indicator lasts unless renewed (§11.2).
    #[arg(long, env = "CONFAB_TYPING_TTL_MS", default_value_t = 6_000)]
    pub typing_ttl_ms: u64,

    /// Hours a login token stays valid (§15).
    #[arg(long, env = "CONFAB_TOKEN_TTL_HOURS", default_value_t = 720)]
    pub token_ttl_hours: u64,

    // Help given as an attribute: rustdoc would flag the example URL.
    #[arg(
        long = "allowed-origin",
        env = "CONFAB_ALLOWED_ORIGINS",
        value_delimiter = ',',
        help = "Browser origin allowed to open sockets, e.g. https://chat.example.com; repeat for several. \
                Requests with another Origin header get 403; requests without one (non-browser clients) \
                are allowed. In the environment, separate origins with commas"
    )]
    pub allowed_origins: Vec<String>,

    /// PEM certificate chain; with --tls-key the server speaks https:// and wss://.
    #[arg(long, env = "CONFAB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "CONFAB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Failed logins one client address may make across all usernames before its logins get
    /// 429 too_many_attempts with retry_after_ms (a successful login gives its attempt back).
    #[arg(long, env = "CONFAB_LOGIN_ADDRESS_BURST", default_value_t = DEFAULT_LOGIN_ADDRESS_BURST)]
    pub login_address_burst: u32,

    /// Failed logins per client address per minute once --login-address-burst is used up.
    #[arg(long, env = "CONFAB_LOGIN_ADDRESS_PER_MIN", default_value_t = DEFAULT_LOGIN_ADDRESS_PER_MIN)]
    pub login_address_per_min: u32,

    /// Registrations one client address may make before further ones get 429 too_many_attempts.
    #[arg(long, env = "CONFAB_REGISTER_ADDRESS_BURST", default_value_t = DEFAULT_REGISTER_ADDRESS_BURST)]
    pub register_address_burst: u32,

    /// Registrations per client address per minute once --register-address-burst is used up.
    #[arg(long, env = "CONFAB_REGISTER_ADDRESS_PER_MIN", default_value_t = DEFAULT_REGISTER_ADDRESS_PER_MIN)]
    pub register_address_per_min: u32,

    /// Password hashes (logins, registrations) one client address may have running or queued;
    /// more get 429 too_many_attempts at once instead of queueing.
    #[arg(long, env = "CONFAB_HASH_QUEUE_PER_ADDRESS", default_value_t = DEFAULT_HASH_QUEUE_PER_ADDRESS)]
    pub hash_queue_per_address: usize,

    /// Password hashes one client address may have running at once (of 4 server-wide).
    #[arg(long, env = "CONFAB_HASH_RUNNING_PER_ADDRESS", default_value_t = DEFAULT_HASH_RUNNING_PER_ADDRESS)]
    pub hash_running_per_address: usize,

    /// Password hashes running or queued server-wide; more get 503 unavailable at once.
    #[arg(long, env = "CONFAB_HASH_QUEUE_TOTAL", default_value_t = DEFAULT_HASH_QUEUE_TOTAL)]
    pub hash_queue_total: usize,
}

impl Cli {
    /// The configuration these flags describe.
    pub fn into_config(self) -> Config {
        let limits = ServerLimits {
            max_frame_bytes: self.max_frame_bytes,
            max_text_bytes: self.max_text_bytes,
            max_history_page: self.max_history_page,
            max_resume_replay: self.max_resume_replay,
            send_rate_per_sec: self.send_rate,
            send_burst: self.send_burst,
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            typing_ttl: Duration::from_millis(self.typing_ttl_ms),
            outbound_queue_frames: self.outbound_queue.max(1),
            outbound_queue_bytes: self.outbound_queue_bytes.max(1),
            max_room_list_page: self.max_room_list_page.max(1),
            typing_push_interval: Duration::from_millis(self.typing_push_interval_ms),
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        };
        let cluster = self.nats_url.map(|nats_url| crate::cluster::ClusterConfig {
            nats_url,
            name: self.cluster_name,
            sync_interval: Duration::from_millis(self.cluster_sync_interval_ms.max(10)),
            presence_ttl: Duration::from_millis(self.presence_ttl_ms.max(100)),
        });
        Config {
            cluster,
            listen: self.listen,
            data_dir: self.data_dir,
            database_url: self.database_url,
            limits,
            max_connections: self.max_connections.max(1),
            socket_send_buffer: (self.socket_send_buffer > 0).then_some(self.socket_send_buffer),
            typing_rate_per_sec: self.typing_rate.max(1),
            typing_burst: self.typing_burst.max(1),
            mark_read_rate_per_sec: self.mark_read_rate.max(1),
            mark_read_burst: self.mark_read_burst.max(1),
            room_create_burst: self.room_create_burst.max(1),
            room_create_per_min: self.room_create_per_min.max(1),
            auth_timeout: Duration::from_millis(self.auth_timeout_ms),
            max_sockets_per_user: self.max_sockets_per_user.max(1),
            header_read_timeout: Duration::from_millis(self.header_timeout_ms),
            first_byte_timeout: Duration::from_millis(self.first_byte_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            keepalive_timeout: Duration::from_millis(self.keepalive_timeout_ms),
            max_connections_per_ip: self.max_connections_per_ip,
            metrics_listen: self.metrics_listen,
            token_ttl: Duration::from_secs(self.token_ttl_hours.saturating_mul(3600)),
            allowed_origins: self.allowed_origins,
            tls,
            login_address_burst: self.login_address_burst,
            login_address_per_min: self.login_address_per_min,
            register_address_burst: self.register_address_burst,
            register_address_per_min: self.register_address_per_min,
            hash_queue_per_address: self.hash_queue_per_address,
            hash_running_per_address: self.hash_running_per_address,
            hash_queue_total: self.hash_queue_total,
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn cli_defaults_match_config_defaults() {
        let config = Cli::parse_from(["confab-server"]).into_config();
        let default = Config::default();
        assert_eq!(config.limits, default.limits);
        assert_eq!(config.auth_timeout, default.auth_timeout);
        assert_eq!(config.token_ttl, default.token_ttl);
        assert_eq!(config.listen, default.listen);
        assert_eq!(config.typing_rate_per_sec, default.typing_rate_per_sec);
        assert_eq!(config.typing_burst, default.typing_burst);
        assert_eq!(config.room_create_burst, default.room_create_burst);
        assert_eq!(config.room_create_per_min, default.room_create_per_min);
    }

    #[test]
    fn origins_repeat() {
        let cli = Cli::parse_from([
            "confab-server",
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://b.example",
        ]);
        assert_eq!(
            cli.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
    }
}
