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
    /// Overrides the database location, e.g. `sqlite:///var/lib/confab/confab.db`.
    /// `None` means `<data_dir>/confab.db`.
    pub database_url: Option<String>,
    /// Protocol limits announced in Welcome and enforced (§12).
    pub limits: ServerLimits,
    /// Most simultaneous TCP connections (HTTP and WebSocket alike).
    pub max_connections: usize,
    /// Kernel send buffer per connection, in bytes (`None`: the OS default,
    /// which autotunes up to several MiB). Bounds what a slow reader pins.
    pub socket_send_buffer: Option<u32>,
    /// How long a new socket may take to send Auth (§6.2).
    pub auth_timeout: Duration,
    /// How long a client may take to send its HTTP request headers (and TLS handshake).
    pub header_read_timeout: Duration,
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
            auth_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
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
        help = "Database URL overriding <data-dir>/confab.db, e.g. sqlite:///srv/confab.db"
    )]
    pub database_url: Option<String>,

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

    /// Most simultaneous TCP connections; further clients wait in the listen backlog.
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS", default_value_t = Config::default().max_connections)]
    pub max_connections: usize,

    /// Kernel send buffer per connection in bytes; 0 keeps the OS default (autotuned, up to several MiB).
    /// Smaller buffers bound the memory a slow reader pins and let slow consumers be detected sooner.
    #[arg(long, env = "CONFAB_SOCKET_SEND_BUFFER", default_value_t = DEFAULT_SOCKET_SEND_BUFFER)]
    pub socket_send_buffer: u32,

    /// Milliseconds a new socket has to send Auth before it is closed with 4408 (§6.2).
    #[arg(long, env = "CONFAB_AUTH_TIMEOUT_MS", default_value_t = 10_000)]
    pub auth_timeout_ms: u64,

    /// Milliseconds a client has to send its HTTP request headers (and finish TLS).
    #[arg(long, env = "CONFAB_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

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
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        };
        Config {
            listen: self.listen,
            data_dir: self.data_dir,
            database_url: self.database_url,
            limits,
            max_connections: self.max_connections.max(1),
            socket_send_buffer: (self.socket_send_buffer > 0).then_some(self.socket_send_buffer),
            auth_timeout: Duration::from_millis(self.auth_timeout_ms),
            header_read_timeout: Duration::from_millis(self.header_timeout_ms),
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
