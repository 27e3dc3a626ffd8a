//! Clusters of real `confab-server` processes for the cluster tests.
//!
//! - [`Services`]: PostgreSQL and NATS from `CONFAB_TEST_DATABASE_URL` and
//!   `CONFAB_TEST_NATS_URL`. Without them a test prints one line saying what
//!   to set and returns (skipped); with `CONFAB_REQUIRE_SERVICES=1` a
//!   missing variable fails it.
//! - [`TestDatabase`]: a database of its own per test (`confab_t_<hex>`),
//!   dropped `WITH (FORCE)` when the test ends, also when it fails.
//! - [`Cluster`]: nodes sharing that database and a cluster name of their
//!   own (`t<hex>`: the NATS subjects and JetStream stream derive from it,
//!   so concurrent tests never see each other), each a [`ServerProcess`]
//!   that can be SIGKILLed, optionally the `confab-server-fault` binary.
//!   When it is dropped the nodes are killed and the cluster's JetStream
//!   stream is deleted: each reserves memory in NATS, and a few dozen
//!   leftovers make NATS refuse new ones.
//! - [`WireSocket`]: a raw `confab.v1` connection that records every
//!   Message frame pushed to it, in arrival order. The bot SDK dedupes by
//!   seq and fills gaps from history, which hides a server that pushes a
//!   message twice or skips one; these sockets see what the server sent.
//! - [`SdkView`]: what a bot-SDK client handed out, per room.
//! - [`assert_matches_history`], [`assert_gapless`]: the invariants.
//!
//! Nothing here sleeps to synchronise: waits are for frames or events,
//! bounded by [`WAIT`].

#![allow(dead_code)] // Each test uses a different subset.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use confab_bot_sdk::{Client, ErrorEvent, Event, ServerUrl};
use confab_protocol::codec::{decode_server_frame, encode_client_frame};
use confab_protocol::wire::{
    self, ClientFrame, ServerFrame, client_frame::Body as C, fetch_history::Anchor,
    room_resume::Status, server_frame::Body as S,
};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub use crate::bot_support::{WAIT, user, within};
use crate::support::process::{ServerCommand, ServerProcess};

/// The PostgreSQL server the tests create their databases in.
pub const DATABASE_VAR: &str = "CONFAB_TEST_DATABASE_URL";
/// The NATS server (with JetStream) the nodes connect to.
pub const NATS_VAR: &str = "CONFAB_TEST_NATS_URL";
/// Set to `1` to turn a missing service variable into a failure.
pub const REQUIRE_VAR: &str = "CONFAB_REQUIRE_SERVICES";

/// PostgreSQL and NATS, as the environment names them.
#[derive(Debug, Clone)]
pub struct Services {
    /// A database URL the tests may `CREATE DATABASE` with.
    pub database_url: String,
    /// `nats://host:port`.
    pub nats_url: String,
}

impl Services {
    /// The services, or `None` (after printing why) to skip; see the module docs.
    pub fn from_env(test: &str) -> Option<Self> {
        let read = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
        };
        let (database_url, nats_url) = (read(DATABASE_VAR), read(NATS_VAR));
        let missing: Vec<String> = [
            (
                DATABASE_VAR,
                database_url.is_none(),
                "postgres://postgres@127.0.0.1:5432/test",
            ),
            (NATS_VAR, nats_url.is_none(), "nats://127.0.0.1:4222"),
        ]
        .into_iter()
        .filter(|(_, missing, _)| *missing)
        .map(|(name, _, example)| format!("{name} (e.g. {example})"))
        .collect();
        if let (Some(database_url), Some(nats_url)) = (database_url, nats_url) {
            return Some(Self {
                database_url,
                nats_url,
            });
        }
        let (verb, pronoun) = if missing.len() > 1 {
            ("are", "them")
        } else {
            ("is", "it")
        };
        let missing = missing.join(" and ");
        if std::env::var(REQUIRE_VAR).as_deref() == Ok("1") {
            panic!(
                "{test}: {REQUIRE_VAR}=1 but {missing} {verb} not set; set {pronoun} to run the \
                 cluster tests"
            );
        }
        println!("{test}: skipped: set {missing} to run it");
        None
    }

    /// The address of the NATS server, e.g. to put a [`Proxy`] in front of it.
    ///
    /// [`Proxy`]: crate::support::proxy::Proxy
    pub fn nats_addr(&self) -> SocketAddr {
        let (_, rest) = split_url(&self.nats_url);
        let host_port = rest
            .rsplit_once('@')
            .map_or(rest, |(_, host_port)| host_port)
            .trim_end_matches('/');
        host_port
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("{NATS_VAR}={}: no host:port in it", self.nats_url))
    }

    /// The NATS URL with its host and port replaced by `addr` (credentials kept).
    pub fn nats_url_via(&self, addr: SocketAddr) -> String {
        let (scheme, rest) = split_url(&self.nats_url);
        let credentials = rest
            .rsplit_once('@')
            .map_or(String::new(), |(credentials, _)| format!("{credentials}@"));
        format!("{scheme}://{credentials}{addr}")
    }
}

/// `("nats", "host:port")` from `nats://host:port`.
fn split_url(url: &str) -> (&str, &str) {
    url.split_once("://").unwrap_or(("nats", url))
}

/// A database of its own, created in the server of [`DATABASE_VAR`] and
/// dropped (`WITH (FORCE)`, so lingering connections of killed nodes do not
/// keep it) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `confab_t_<random hex>`.
    pub async fn create(admin_url: &str) -> Self {
        let name = format!("confab_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|err| panic!("connect to {DATABASE_VAR}={admin_url}: {err}"));
        // The name is ours (hex), not input: safe to splice.
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("CREATE DATABASE {name}: {err}"));
        conn.close().await.ok();
        Self {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }

    /// Its URL, for `--database-url`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `url` with its database (the path) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{database}{query}", &base[..authority_end])
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside async (maybe while unwinding), so the cleanup
        // gets a thread and a runtime of its own.
        let url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let done = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("dropping test database {}: {e}", self.name),
            Err(_) => eprintln!("dropping test database {}: the cleanup panicked", self.name),
        }
    }
}

/// Settings every node of a cluster shares.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--cluster-sync-interval-ms`: how often a node repairs from PostgreSQL.
    pub sync_interval_ms: u64,
    /// `--presence-ttl-ms`: how long a silent node's users stay online elsewhere.
    pub presence_ttl_ms: u64,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            sync_interval_ms: 500,
            presence_ttl_ms: 2_000,
        }
    }
}

/// How one node differs from the rest.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// Connect to NATS here (e.g. through a proxy) instead of [`NATS_VAR`].
    pub nats_url: Option<String>,
    /// Run `confab-server-fault` with `CONFAB_FAULT_ABORT_AFTER_COMMIT=N`:
    /// it aborts right after committing its N-th message batch, before
    /// acknowledging or publishing it.
    pub abort_after_commit: Option<u32>,
}

/// Nodes of one cluster: one database, one cluster name.
#[derive(Debug)]
pub struct Cluster {
    // Declared first, so dropped (killed) before the database is dropped.
    nodes: Vec<Option<Node>>,
    name: String,
    services: Services,
    options: ClusterOptions,
    database: TestDatabase,
    /// Whether a node was started, so the stream may exist.
    started: bool,
}

#[derive(Debug)]
struct Node {
    process: ServerProcess,
    url: ServerUrl,
    _data: tempfile::TempDir,
}

impl Cluster {
    /// A fresh database and cluster name, no nodes yet.
    pub async fn new(services: Services, options: ClusterOptions) -> Self {
        let database = TestDatabase::create(&services.database_url).await;
        Self {
            nodes: Vec::new(),
            name: format!("t{}", uuid::Uuid::new_v4().simple()),
            services,
            options,
            database,
            started: false,
        }
    }

    /// A cluster of `count` ordinary nodes.
    pub async fn start(services: Services, count: usize, options: ClusterOptions) -> Self {
        let mut cluster = Self::new(services, options).await;
        for _ in 0..count {
            cluster.add_node(NodeSpec::default()).await;
        }
        cluster
    }

    /// Starts one more node; returns its index. Nodes start one at a time,
    /// so the first one migrates the fresh database alone.
    pub async fn add_node(&mut self, spec: NodeSpec) -> usize {
        let index = self.nodes.len();
        self.started = true;
        let nats_url = spec
            .nats_url
            .clone()
            .unwrap_or_else(|| self.services.nats_url.clone());
        let mut args: Vec<String> = [
            "--database-url",
            self.database.url(),
            "--nats-url",
            &nats_url,
            "--cluster-name",
            &self.name,
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        args.extend([
            "--cluster-sync-interval-ms".to_owned(),
            self.options.sync_interval_ms.to_string(),
            "--presence-ttl-ms".to_owned(),
            self.options.presence_ttl_ms.to_string(),
            // The tests send in bursts; rate limits are not under test.
            "--send-rate".to_owned(),
            "1000".to_owned(),
            "--send-burst".to_owned(),
            "1000".to_owned(),
        ]);
        let (binary, env, label): (PathBuf, _, _) = match spec.abort_after_commit {
            None => (
                crate::support::binary::confab_server(),
                Vec::new(),
                format!("node {index}"),
            ),
            Some(n) => (
                crate::support::binary::confab_server_fault(),
                vec![("CONFAB_FAULT_ABORT_AFTER_COMMIT".to_owned(), n.to_string())],
                format!("node {index}, aborts after commit {n}"),
            ),
        };
        let command = ServerCommand {
            binary,
            args,
            env,
            label,
        };
        let data = tempfile::tempdir().expect("node data dir");
        let dir = data.path().to_owned();
        let process =
            tokio::task::spawn_blocking(move || ServerProcess::start_with(&dir, &command))
                .await
                .unwrap_or_else(|err| panic!("starting node {index}: {err}"));
        let url = process
            .url()
            .parse()
            .unwrap_or_else(|err| panic!("node {index} reported URL {}: {err}", process.url()));
        self.nodes.push(Some(Node {
            process,
            url,
            _data: data,
        }));
        index
    }

    fn node(&self, index: usize) -> &Node {
        self.nodes
            .get(index)
            .and_then(Option::as_ref)
            .unwrap_or_else(|| panic!("node {index} is not running"))
    }

    /// The node's base URL.
    pub fn url(&self, index: usize) -> ServerUrl {
        self.node(index).url.clone()
    }

    /// The node's address (e.g. for a proxy in front of it).
    pub fn addr(&self, index: usize) -> SocketAddr {
        let url = &self.node(index).url;
        format!("{}:{}", url.host(), url.port())
            .parse()
            .expect("a node listens on an IP address")
    }

    /// The node's process (to poll its exit status, read its log).
    pub fn process(&mut self, index: usize) -> &mut ServerProcess {
        &mut self
            .nodes
            .get_mut(index)
            .and_then(Option::as_mut)
            .unwrap_or_else(|| panic!("node {index} is not running"))
            .process
    }

    /// SIGKILLs the node: a crash, nothing flushed or announced.
    pub fn kill(&mut self, index: usize) {
        let node = self.nodes[index]
            .take()
            .unwrap_or_else(|| panic!("node {index} is not running"));
        node.process.kill();
    }

    /// Forgets a node that ended by itself, returning its last log lines.
    pub fn reap(&mut self, index: usize) -> Vec<String> {
        let node = self.nodes[index]
            .take()
            .unwrap_or_else(|| panic!("node {index} is not running"));
        let log = node.process.log_tail();
        node.process.kill();
        log
    }

    /// The cluster name the nodes were started with.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Nodes first: none may recreate the stream or hold its consumers.
        self.nodes.clear();
        if self.started {
            delete_stream(&self.services.nats_url, &self.name);
        }
        // Then the fields: the database last.
    }
}

/// Deletes cluster `name`'s JetStream stream (best effort: failures are
/// printed), with the server's own `cluster::delete_stream`. Runs on a
/// thread and runtime of its own, as it is called from `Drop`.
fn delete_stream(nats_url: &str, name: &str) {
    let mut config = confab_server::cluster::ClusterConfig::new(nats_url);
    config.name = name.to_owned();
    let done = std::thread::spawn(move || -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            match tokio::time::timeout(WAIT, confab_server::cluster::delete_stream(&config)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {WAIT:?}")),
            }
        })
    })
    .join();
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("deleting the JetStream stream of cluster {name}: {e}"),
        Err(_) => {
            eprintln!("deleting the JetStream stream of cluster {name}: the cleanup panicked")
        }
    }
}

/// Registers `username` on `server` and logs in; returns the token, which
/// every node accepts (accounts and tokens live in the shared database).
pub async fn account(server: &ServerUrl, username: &str) -> String {
    within(&format!("registering {username}"), user(server, username)).await
}

/// A bot-SDK client (pull API) on `server` with `token`, joining `rooms`
/// and creating those that do not exist yet.
pub async fn sdk_client(server: &ServerUrl, token: &str, rooms: &[&str]) -> Client {
    within(
        &format!("an SDK client connecting to {server}"),
        Client::builder(server.clone())
            .token(token)
            .join(rooms.iter().copied())
            .create_missing_rooms(true)
            .connect(),
    )
    .await
    .unwrap_or_else(|err| panic!("SDK client on {server}: {err}"))
}

/// What a bot-SDK client handed out: messages per room, in order, and the
/// error events that say the SDK had to paper over something.
#[derive(Debug, Default)]
pub struct SdkView {
    /// Messages per room, in the order `next_event` returned them.
    pub messages: BTreeMap<String, Vec<wire::Message>>,
    /// `GapSkipped`, `EpochChanged` and `SendFailed` events: none is
    /// expected from a correct cluster.
    pub anomalies: Vec<ErrorEvent>,
}

impl SdkView {
    /// Reads `client`'s events until every room of `heads` has been handed
    /// out up to its seq; `who` names the client in failures.
    pub async fn collect(client: &mut Client, heads: &BTreeMap<String, u64>, who: &str) -> Self {
        let mut view = Self::default();
        view.extend(client, heads, who).await;
        view
    }

    /// Like [`SdkView::collect`], adding to what was seen so far.
    pub async fn extend(&mut self, client: &mut Client, heads: &BTreeMap<String, u64>, who: &str) {
        let done = |view: &Self| {
            heads.iter().all(|(room, head)| {
                view.messages
                    .get(room)
                    .and_then(|seen| seen.last())
                    .map_or(*head == 0, |last| last.seq >= *head)
            })
        };
        let what = format!("{who} to be handed every message up to {heads:?}");
        within(&what, async {
            while !done(self) {
                match client.next_event().await {
                    Some(Event::Message(message)) => self
                        .messages
                        .entry(message.room().to_owned())
                        .or_default()
                        .push(message.wire().clone()),
                    Some(Event::Error(
                        error @ (ErrorEvent::GapSkipped { .. }
                        | ErrorEvent::EpochChanged { .. }
                        | ErrorEvent::SendFailed { .. }),
                    )) => self.anomalies.push(error),
                    Some(_) => {}
                    None => panic!("{who}: the SDK client ended while waiting for messages"),
                }
            }
        })
        .await;
    }

    /// The messages of `room` (empty if none).
    pub fn room(&self, room: &str) -> &[wire::Message] {
        self.messages.get(room).map_or(&[], Vec::as_slice)
    }
}

/// Something the reader task of a [`WireSocket`] passes on.
#[derive(Debug)]
enum Incoming {
    Frame(ServerFrame),
    Ended(String),
}

type Sink = SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    WsMessage,
>;

/// A raw, authenticated `confab.v1` connection recording, per room, every
/// Message frame it was pushed, in arrival order. Its reader task reads
/// continuously (an unbounded channel), so a socket that is not being
/// awaited is never a slow consumer.
#[derive(Debug)]
pub struct WireSocket {
    label: String,
    sink: Sink,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    reader: tokio::task::JoinHandle<()>,
    next_request: u64,
    welcome: wire::Welcome,
    pushes: BTreeMap<String, Vec<wire::Message>>,
    ended: Option<String>,
}

impl WireSocket {
    /// Connects to `server`, authenticates with `token` (asking for no
    /// capabilities: no presence or typing pushes) and waits for Welcome.
    /// No room is active yet: see [`WireSocket::resume_all`].
    pub async fn open(server: &ServerUrl, token: &str, label: impl Into<String>) -> Self {
        let label = label.into();
        let mut request = server
            .ws_url()
            .into_client_request()
            .expect("a WebSocket request");
        request.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(confab_protocol::SUBPROTOCOL),
        );
        let (ws, _) = within(
            &format!("{label}: the WebSocket upgrade at {server}"),
            tokio_tungstenite::connect_async(request),
        )
        .await
        .unwrap_or_else(|err| panic!("{label}: WebSocket upgrade at {server}: {err}"));
        let (sink, mut stream) = ws.split();
        let (tx, incoming) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let item = match message {
                    Ok(WsMessage::Binary(bytes)) => match decode_server_frame(&bytes, usize::MAX) {
                        Ok(frame) => Incoming::Frame(frame),
                        Err(err) => Incoming::Ended(format!("undecodable frame: {err}")),
                    },
                    Ok(WsMessage::Close(frame)) => Incoming::Ended(format!(
                        "close frame {:?}",
                        frame.map(|f| (u16::from(f.code), f.reason.to_string()))
                    )),
                    Ok(WsMessage::Text(_)) => Incoming::Ended("a text message".to_owned()),
                    Ok(_) => continue, // Ping/Pong: tungstenite answers Pings
                    Err(err) => Incoming::Ended(err.to_string()),
                };
                let end = matches!(item, Incoming::Ended(_));
                if tx.send(item).is_err() || end {
                    return;
                }
            }
            // A receiver that is gone has nothing left to learn.
            tx.send(Incoming::Ended(
                "connection closed without a close frame".to_owned(),
            ))
            .ok();
        });
        let mut socket = Self {
            label,
            sink,
            incoming,
            reader,
            next_request: 1,
            welcome: wire::Welcome::default(),
            pushes: BTreeMap::new(),
            ended: None,
        };
        let auth = C::Auth(wire::Auth {
            token: token.to_owned(),
            capabilities: Vec::new(),
            client_name: "confab-tests/cluster".to_owned(),
        });
        let reply = socket.request(auth, "Welcome").await;
        match reply.body {
            Some(S::Welcome(welcome)) => socket.welcome = welcome,
            other => panic!("{}: Auth answered with {other:?}", socket.label),
        }
        socket
    }

    /// The name it goes by in failures.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The Welcome it got.
    pub fn welcome(&self) -> &wire::Welcome {
        &self.welcome
    }

    /// Writes a request; returns its request id without waiting for a reply.
    pub async fn send_request(&mut self, body: C) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        let frame = encode_client_frame(&ClientFrame::request(id, body));
        self.sink
            .send(WsMessage::Binary(frame))
            .await
            .unwrap_or_else(|err| panic!("{}: writing a request: {err}", self.label));
        id
    }

    /// Writes a request and waits for the frame answering it (a reply or an
    /// Error), recording pushes meanwhile.
    pub async fn request(&mut self, body: C, what: &str) -> ServerFrame {
        let id = self.send_request(body).await;
        self.reply(id, what).await
    }

    /// Waits for the frame answering request `id`.
    pub async fn reply(&mut self, id: u64, what: &str) -> ServerFrame {
        let label = self.label.clone();
        let what = format!("{label}: {what} (reply to request {id})");
        within(&what, async {
            loop {
                match self.next().await {
                    Some(frame) if frame.request_id == id => return frame,
                    Some(_) => {}
                    None => panic!(
                        "{what}: the connection ended first: {}",
                        self.ended.as_deref().unwrap_or("?")
                    ),
                }
            }
        })
        .await
    }

    /// The next frame, recording a Message push; `None` once the
    /// connection has ended.
    async fn next(&mut self) -> Option<ServerFrame> {
        if self.ended.is_some() {
            return None;
        }
        match self.incoming.recv().await {
            Some(Incoming::Frame(frame)) => {
                if let Some(S::Message(message)) = &frame.body {
                    self.pushes
                        .entry(message.room.clone())
                        .or_default()
                        .push(message.clone());
                }
                Some(frame)
            }
            Some(Incoming::Ended(reason)) => {
                self.ended = Some(reason);
                None
            }
            None => {
                self.ended = Some("the reader task ended".to_owned());
                None
            }
        }
    }

    /// Resumes `rooms` from their heads: they are active from now on
    /// (§10.6), and nothing is replayed. Each must be in Welcome, which
    /// lists every room the user is a member of, also those it
    /// joined through another node.
    pub async fn resume(&mut self, rooms: &[&str]) {
        let listed: Vec<&str> = self.welcome.rooms.iter().map(|r| r.name.as_str()).collect();
        let positions = rooms
            .iter()
            .map(|room| {
                let info = self
                    .welcome
                    .rooms
                    .iter()
                    .find(|info| info.name == *room)
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: Welcome lists rooms {listed:?}, not {room}, of which the user is a member (R-6.3.4)",
                            self.label
                        )
                    });
                wire::RoomPosition {
                    room: info.name.clone(),
                    last_seq: info.head_seq,
                    epoch: info.epoch.clone(),
                }
            })
            .collect();
        let reply = self
            .request(C::Resume(wire::Resume { rooms: positions }), "Resumed")
            .await;
        let Some(S::Resumed(resumed)) = reply.body else {
            panic!("{}: Resume answered with {reply:?}", self.label);
        };
        for room in &resumed.rooms {
            assert_eq!(
                room.status,
                Status::Replayed as i32,
                "{}: resuming room {} from its head: {room:?}",
                self.label,
                room.room
            );
        }
    }

    /// Creates `room` (active from seq 0 on this connection).
    pub async fn create_room(&mut self, room: &str) -> wire::RoomInfo {
        let body = C::CreateRoom(wire::CreateRoom {
            name: room.to_owned(),
            topic: String::new(),
        });
        self.joined(body, room).await
    }

    /// Joins `room` (active from its head on this connection).
    pub async fn join_room(&mut self, room: &str) -> wire::RoomInfo {
        let body = C::JoinRoom(wire::JoinRoom {
            name: room.to_owned(),
        });
        self.joined(body, room).await
    }

    async fn joined(&mut self, body: C, room: &str) -> wire::RoomInfo {
        let reply = self.request(body, &format!("RoomJoined {room}")).await;
        match reply.body {
            Some(S::RoomJoined(wire::RoomJoined { room: Some(info) })) => info,
            other => panic!("{}: joining {room} answered with {other:?}", self.label),
        }
    }

    /// SendMessage with this `client_msg_id`; the SendAck or the Error.
    pub async fn send(
        &mut self,
        room: &str,
        text: &str,
        client_msg_id: &str,
    ) -> Result<wire::SendAck, wire::Error> {
        let id = self.send_message_request(room, text, client_msg_id).await;
        let reply = self
            .reply(id, &format!("SendAck for {client_msg_id}"))
            .await;
        match reply.body {
            Some(S::SendAck(ack)) => Ok(ack),
            Some(S::Error(error)) => Err(error),
            other => panic!(
                "{}: SendMessage {client_msg_id} answered with {other:?}",
                self.label
            ),
        }
    }

    /// Writes a SendMessage without waiting; returns its request id.
    pub async fn send_message_request(
        &mut self,
        room: &str,
        text: &str,
        client_msg_id: &str,
    ) -> u64 {
        self.send_request(C::SendMessage(wire::SendMessage {
            room: room.to_owned(),
            client_msg_id: client_msg_id.to_owned(),
            text: text.to_owned(),
            kind: wire::MessageKind::Text as i32,
            relation: None,
        }))
        .await
    }

    /// The whole history of `room`, paged with `after_seq` (§9).
    pub async fn history(&mut self, room: &str) -> Vec<wire::Message> {
        let mut messages: Vec<wire::Message> = Vec::new();
        loop {
            let after_seq = messages.last().map_or(0, |m| m.seq);
            let body = C::FetchHistory(wire::FetchHistory {
                room: room.to_owned(),
                anchor: Some(Anchor::AfterSeq(after_seq)),
                limit: 0,
            });
            let reply = self
                .request(body, &format!("HistoryPage of {room} after {after_seq}"))
                .await;
            let Some(S::HistoryPage(page)) = reply.body else {
                panic!(
                    "{}: FetchHistory {room} answered with {reply:?}",
                    self.label
                );
            };
            let empty = page.messages.is_empty();
            messages.extend(page.messages);
            if !page.has_more || empty {
                return messages;
            }
        }
    }

    /// ListMembers of `room`.
    pub async fn members(&mut self, room: &str) -> Vec<wire::Member> {
        let body = C::ListMembers(wire::ListMembers {
            room: room.to_owned(),
        });
        let reply = self.request(body, &format!("MemberList of {room}")).await;
        match reply.body {
            Some(S::MemberList(list)) => list.members,
            other => panic!("{}: ListMembers {room} answered with {other:?}", self.label),
        }
    }

    /// Every room (ListRooms, following `next_cursor`).
    pub async fn rooms(&mut self) -> Vec<wire::RoomInfo> {
        let mut rooms = Vec::new();
        let mut cursor = String::new();
        loop {
            let body = C::ListRooms(wire::ListRooms {
                subscribe: false,
                cursor: cursor.clone(),
                limit: 0,
            });
            let reply = self.request(body, "RoomList").await;
            let Some(S::RoomList(list)) = reply.body else {
                panic!("{}: ListRooms answered with {reply:?}", self.label);
            };
            rooms.extend(list.rooms);
            if list.next_cursor.is_empty() {
                return rooms;
            }
            cursor = list.next_cursor;
        }
    }

    /// Waits until a Message of `room` with seq `seq` or above was pushed.
    pub async fn wait_pushed(&mut self, room: &str, seq: u64) {
        if !self.try_wait_pushed(room, seq, WAIT).await {
            panic!(
                "{}: not pushed up to seq {seq} of room {room} within {WAIT:?}; pushed: [{}]{}",
                self.label,
                seq_ranges(self.pushes(room).iter().map(|m| m.seq)),
                self.ended.as_ref().map_or(String::new(), |why| format!(
                    "; the connection ended: {why}"
                ))
            );
        }
    }

    /// Waits up to `limit` until a Message of `room` with seq `seq` or
    /// above was pushed; false if it was not (or the connection ended).
    pub async fn try_wait_pushed(
        &mut self,
        room: &str,
        seq: u64,
        limit: std::time::Duration,
    ) -> bool {
        let wait = async {
            while self.last_pushed(room) < seq {
                if self.next().await.is_none() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }

    /// Waits (up to [`WAIT`]) until the socket was pushed all of `history`,
    /// then checks that it was pushed exactly that: see
    /// [`assert_matches_history`].
    pub async fn assert_pushed_history(&mut self, room: &str, history: &[wire::Message]) {
        self.assert_pushed_history_when(room, history, "").await;
    }

    /// [`WireSocket::assert_pushed_history`], saying `when` in a failure.
    pub async fn assert_pushed_history_when(
        &mut self,
        room: &str,
        history: &[wire::Message],
        when: &str,
    ) {
        let head = history.last().map_or(0, |m| m.seq);
        let complete = self.try_wait_pushed(room, head, WAIT).await;
        let label = if when.is_empty() {
            self.label.clone()
        } else {
            format!("{}, {when},", self.label)
        };
        let who = if complete {
            label
        } else {
            format!(
                "{label} (still short of seq {head} after {WAIT:?}{})",
                self.ended.as_ref().map_or(String::new(), |why| format!(
                    "; the connection ended: {why}"
                ))
            )
        };
        assert_matches_history(&who, room, self.pushes(room), history);
    }

    /// Reads until the connection ends; returns every frame read meanwhile
    /// and why it ended.
    pub async fn read_to_end(&mut self) -> (Vec<ServerFrame>, String) {
        let what = format!("{}: the connection to end", self.label);
        let mut frames = Vec::new();
        within(&what, async {
            while let Some(frame) = self.next().await {
                frames.push(frame);
            }
        })
        .await;
        (frames, self.ended.clone().unwrap_or_default())
    }

    /// The highest seq of `room` pushed so far (0 if none).
    pub fn last_pushed(&self, room: &str) -> u64 {
        self.pushes(room).last().map_or(0, |m| m.seq)
    }

    /// Every Message of `room` pushed so far, in arrival order.
    pub fn pushes(&self, room: &str) -> &[wire::Message] {
        self.pushes.get(room).map_or(&[], Vec::as_slice)
    }

    /// Closes with 1000 and waits (bounded) for the connection to end.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        if self.sink.send(WsMessage::Close(Some(frame))).await.is_ok() {
            let wait = async { while self.next().await.is_some() {} };
            // Not answering the close is the server's problem, not this test's.
            tokio::time::timeout(std::time::Duration::from_secs(5), wait)
                .await
                .ok();
        }
    }
}

impl Drop for WireSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Panics unless `history` is seqs 1, 2, …, n without gaps (§8.2).
pub fn assert_gapless(room: &str, history: &[wire::Message]) {
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert!(
        seqs == expected,
        "room {room}: history seqs are not gapless from 1: {} ({} messages)",
        seq_ranges(seqs.iter().copied()),
        seqs.len()
    );
}

/// Panics unless `seen`, what `who` received for `room` in arrival order,
/// is exactly `history`: every message once, in seq order, none missing
/// and none altered (§8.4, R-8.2.8, §10.6).
pub fn assert_matches_history(
    who: &str,
    room: &str,
    seen: &[wire::Message],
    history: &[wire::Message],
) {
    let seqs: Vec<u64> = seen.iter().map(|m| m.seq).collect();
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for seq in &seqs {
        *counts.entry(*seq).or_default() += 1;
    }
    let duplicated: Vec<u64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(seq, _)| *seq)
        .collect();
    let out_of_order: Vec<String> = seqs
        .windows(2)
        .filter(|pair| pair[1] <= pair[0])
        .map(|pair| format!("{} after {}", pair[1], pair[0]))
        .collect();
    let stored: BTreeSet<u64> = history.iter().map(|m| m.seq).collect();
    let missing: Vec<u64> = stored
        .iter()
        .copied()
        .filter(|seq| !counts.contains_key(seq))
        .collect();
    let unknown: Vec<u64> = counts
        .keys()
        .copied()
        .filter(|seq| !stored.contains(seq))
        .collect();
    assert!(
        duplicated.is_empty()
            && out_of_order.is_empty()
            && missing.is_empty()
            && unknown.is_empty(),
        "{who}, room {room}: received {} messages, history holds {}: \
         received more than once: [{}]; out of order: {out_of_order:?}; \
         never received: [{}]; not in history: [{}]",
        seqs.len(),
        history.len(),
        seq_ranges(duplicated),
        seq_ranges(missing),
        seq_ranges(unknown),
    );
    for (got, stored) in seen.iter().zip(history) {
        assert_eq!(
            got, stored,
            "{who}, room {room}: seq {} as received differs from history",
            got.seq
        );
    }
}

/// `1-5, 7, 9-10`: seqs as ranges, for failure messages.
pub fn seq_ranges(seqs: impl IntoIterator<Item = u64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    for seq in seqs {
        run = match run {
            Some((start, end)) if seq == end + 1 => Some((start, seq)),
            Some((start, end)) => {
                out.push(range(start, end));
                Some((seq, seq))
            }
            None => Some((seq, seq)),
        };
    }
    if let Some((start, end)) = run {
        out.push(range(start, end));
    }
    out.join(", ")
}

fn range(start: u64, end: u64) -> String {
    if start == end {
        start.to_string()
    } else {
        format!("{start}-{end}")
    }
}
