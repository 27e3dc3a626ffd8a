//! Shared helpers for the integration tests: start a real server on
//! 127.0.0.1:0 (in-process, or the binary as a child process), a minimal
//! HTTP/1.1 client, and a WebSocket test client that sends frames and waits
//! for frames by predicate, always under a timeout. Nothing here sleeps:
//! "nothing else arrived" is proven with Ping/Pong barriers (§12.1).

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use confab_protocol::codec::{decode_server_frame, encode_client_frame};
use confab_protocol::wire::{
    self, ClientFrame, ErrorCode, ServerFrame, client_frame::Body as C, server_frame::Body as S,
};
use confab_server::{Config, Server, ServerHandle};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for any single wait. Generous: it only matters when a test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A server running in-process on a fresh temporary data directory.
pub struct TestServer {
    pub handle: ServerHandle,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with test-friendly defaults, adjusted by `tune`.
    pub async fn start(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::for_data_dir(dir.path());
        // Fast enough that tests are never throttled unless they mean to be.
        config.limits.send_rate_per_sec = 10_000;
        config.limits.send_burst = 10_000;
        tune(&mut config);
        let handle = Server::bind(config).await.expect("server binds").spawn();
        let addr = handle.local_addr();
        Self { handle, addr, dir }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("confab.db")
    }

    pub async fn stop(self) -> tempfile::TempDir {
        within("graceful shutdown", self.handle.shutdown())
            .await
            .expect("server stops cleanly");
        self.dir
    }
}

/// Opens the server's SQLite file (read side; WAL allows a concurrent writer).
pub async fn open_db(path: &Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open test db")
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A response: status, headers, body bytes.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {:?}", self.body))
    }
}

/// A TCP connection to `server` from the loopback address `from`: other
/// addresses in 127.0.0.0/8 act as other clients for per-address limits.
pub async fn connect_from(from: std::net::Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    within("connect", socket.connect(server))
        .await
        .expect("connect")
}

/// One HTTP/1.1 request on a fresh connection, with hyper's client.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    http_on(stream, addr, method, path, body, headers).await
}

/// [`http`] from the loopback source address `from`.
pub async fn http_from(
    from: std::net::Ipv4Addr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let stream = connect_from(from, addr).await;
    http_on(stream, addr, method, path, body, headers).await
}

async fn http_on(
    stream: TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    within("HTTP response", async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let response = sender.send_request(request).await.expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        HttpResponse {
            status,
            headers,
            body,
        }
    })
    .await
}

fn credentials(user: &str, password: &str) -> String {
    serde_json::json!({ "username": user, "password": password }).to_string()
}

pub async fn register(addr: SocketAddr, user: &str, password: &str) -> HttpResponse {
    http(
        addr,
        "POST",
        "/v1/register",
        &credentials(user, password),
        &[],
    )
    .await
}

pub async fn login(addr: SocketAddr, user: &str, password: &str) -> HttpResponse {
    http(addr, "POST", "/v1/login", &credentials(user, password), &[]).await
}

/// `POST /v1/logout` with `Authorization: Bearer <token>`.
pub async fn logout(addr: SocketAddr, token: &str) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http(
        addr,
        "POST",
        "/v1/logout",
        "",
        &[("authorization", &bearer)],
    )
    .await
}

/// Logs in (with [`PASSWORD`]) and returns the token.
pub async fn login_token(addr: SocketAddr, user: &str) -> String {
    let r = login(addr, user, PASSWORD).await;
    assert_eq!(r.status, 200, "login {user}: {:?}", r.body);
    r.json()["token"].as_str().expect("token").to_owned()
}

pub const PASSWORD: &str = "correct horse battery";

/// Registers `user` and logs in; returns the token.
pub async fn register_and_login(addr: SocketAddr, user: &str) -> String {
    let r = register(addr, user, PASSWORD).await;
    assert_eq!(r.status, 201, "register {user}: {:?}", r.body);
    login_token(addr, user).await
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

/// What the client saw next.
#[derive(Debug)]
// A test helper's events live one at a time on the stack: boxing the frame
// would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Frame(ServerFrame),
    /// The server closed, with this code (None: no close frame, the TCP connection just ended).
    Closed(Option<u16>),
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A confab.v1 test client over tokio-tungstenite.
pub struct Client {
    pub ws: Ws,
    pub name: String,
    next_request: u64,
    /// Frames read while waiting for something else, in arrival order.
    buffered: VecDeque<ServerFrame>,
}

pub fn ws_request(addr: SocketAddr) -> tungstenite::handshake::client::Request {
    let mut request = format!("ws://{addr}/v1/ws")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("confab.v1"),
    );
    request
}

impl Client {
    /// Opens a socket offering confab.v1; not yet authenticated.
    pub async fn connect(addr: SocketAddr) -> Self {
        let (ws, _) = within(
            "WebSocket connect",
            tokio_tungstenite::connect_async(ws_request(addr)),
        )
        .await
        .expect("WebSocket handshake");
        Self::from_ws(ws, "anonymous")
    }

    pub fn from_ws(ws: Ws, name: &str) -> Self {
        Self {
            ws,
            name: name.to_owned(),
            next_request: 0,
            buffered: VecDeque::new(),
        }
    }

    /// Connects and authenticates with `token`; returns the client and Welcome.
    pub async fn authed(
        addr: SocketAddr,
        name: &str,
        token: &str,
        caps: &[&str],
    ) -> (Self, wire::Welcome) {
        let mut client = Self::connect(addr).await;
        client.name = name.to_owned();
        let welcome = client.auth(token, caps).await;
        (client, welcome)
    }

    /// Sends Auth and expects Welcome.
    pub async fn auth(&mut self, token: &str, caps: &[&str]) -> wire::Welcome {
        let reply = self
            .request(C::Auth(wire::Auth {
                token: token.to_owned(),
                capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
                client_name: "confab-server-tests".into(),
            }))
            .await;
        match reply.body {
            Some(S::Welcome(w)) => w,
            other => panic!("{}: expected Welcome, got {other:?}", self.name),
        }
    }

    /// Registers, logs in and authenticates a new user.
    pub async fn new_user(addr: SocketAddr, name: &str) -> (Self, String) {
        let token = register_and_login(addr, name).await;
        let (client, _) = Self::authed(addr, name, &token, &[]).await;
        (client, token)
    }

    pub async fn send_raw(&mut self, message: Message) {
        within("send", self.ws.send(message)).await.expect("send");
    }

    /// Sends a request frame; returns its request id.
    pub async fn send(&mut self, body: C) -> u64 {
        self.next_request += 1;
        let id = self.next_request;
        let frame = ClientFrame::request(id, body);
        self.send_raw(Message::Binary(encode_client_frame(&frame)))
            .await;
        id
    }

    /// Reads the next event from the socket (ignoring WebSocket pings).
    pub async fn read(&mut self) -> Event {
        within(&format!("{}: next frame", self.name), async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Binary(bytes))) => {
                        let frame =
                            decode_server_frame(&bytes, usize::MAX).expect("server frames decode");
                        return Event::Frame(frame);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Event::Closed(frame.map(|f: CloseFrame| u16::from(f.code)));
                    }
                    Some(Ok(Message::Text(t))) => panic!("server sent a text message: {t}"),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Event::Closed(None),
                }
            }
        })
        .await
    }

    /// The next frame (buffered first); panics on close.
    pub async fn next_frame(&mut self) -> ServerFrame {
        if let Some(frame) = self.buffered.pop_front() {
            return frame;
        }
        match self.read().await {
            Event::Frame(f) => f,
            Event::Closed(code) => {
                panic!("{}: closed ({code:?}) while waiting for a frame", self.name)
            }
        }
    }

    /// Reads until a frame matches; earlier frames stay buffered for later.
    pub async fn expect(
        &mut self,
        what: &str,
        matches: impl Fn(&ServerFrame) -> bool,
    ) -> ServerFrame {
        if let Some(pos) = self.buffered.iter().position(&matches) {
            return self.buffered.remove(pos).expect("position is valid");
        }
        loop {
            match self.read().await {
                Event::Frame(f) if matches(&f) => return f,
                Event::Frame(f) => self.buffered.push_back(f),
                Event::Closed(code) => {
                    panic!("{}: closed ({code:?}) while waiting for {what}", self.name)
                }
            }
        }
    }

    /// Sends a request and returns the reply that echoes its id.
    pub async fn request(&mut self, body: C) -> ServerFrame {
        let id = self.send(body).await;
        self.expect(&format!("reply to request {id}"), |f| f.request_id == id)
            .await
    }

    /// Reads until the server closes; returns the close code. Frames read
    /// on the way are buffered. Answers the server's Close, as a client should.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.read().await {
                Event::Frame(f) => self.buffered.push_back(f),
                Event::Closed(code) => {
                    // Flushes tungstenite's queued Close reply; errors mean
                    // the connection is already gone, which is fine too.
                    within("close reply", self.ws.close(None)).await.ok();
                    return code;
                }
            }
        }
    }

    /// A Ping/Pong round trip: returns every frame that arrived before the
    /// Pong (including buffered ones). Frames are processed in order (§12.1),
    /// so anything the server queued for us before handling the Ping is in
    /// the returned list.
    pub async fn barrier(&mut self) -> Vec<ServerFrame> {
        let nonce = rand_nonce();
        let id = self.send(C::Ping(wire::Ping { nonce })).await;
        let mut before: Vec<ServerFrame> = self.buffered.drain(..).collect();
        loop {
            match self.read().await {
                Event::Frame(f) if f.request_id == id => {
                    assert!(matches!(f.body, Some(S::Pong(wire::Pong { nonce: n })) if n == nonce));
                    return before;
                }
                Event::Frame(f) => before.push(f),
                Event::Closed(code) => panic!("{}: closed ({code:?}) during barrier", self.name),
            }
        }
    }

    /// Takes the buffered frames.
    pub fn take_buffered(&mut self) -> Vec<ServerFrame> {
        self.buffered.drain(..).collect()
    }

    // --- protocol conveniences -------------------------------------------

    pub async fn create_room(&mut self, room: &str) -> wire::RoomInfo {
        let reply = self
            .request(C::CreateRoom(wire::CreateRoom {
                name: room.into(),
                topic: format!("about {room}"),
            }))
            .await;
        match reply.body {
            Some(S::RoomJoined(j)) => j.room.expect("room info"),
            other => panic!("{}: create {room}: {other:?}", self.name),
        }
    }

    pub async fn join_room(&mut self, room: &str) -> wire::RoomInfo {
        let reply = self
            .request(C::JoinRoom(wire::JoinRoom { name: room.into() }))
            .await;
        match reply.body {
            Some(S::RoomJoined(j)) => j.room.expect("room info"),
            other => panic!("{}: join {room}: {other:?}", self.name),
        }
    }

    /// Sends a message and waits for its SendAck.
    pub async fn say(&mut self, room: &str, client_msg_id: &str, text: &str) -> wire::SendAck {
        match self.send_message(room, client_msg_id, text).await.body {
            Some(S::SendAck(ack)) => ack,
            other => panic!("{}: send to {room}: {other:?}", self.name),
        }
    }

    /// Sends a message and returns whatever replies (ack or error).
    pub async fn send_message(
        &mut self,
        room: &str,
        client_msg_id: &str,
        text: &str,
    ) -> ServerFrame {
        self.request(C::SendMessage(wire::SendMessage {
            room: room.into(),
            client_msg_id: client_msg_id.into(),
            text: text.into(),
            kind: wire::MessageKind::Text as i32,
            relation: None,
        }))
        .await
    }

    pub async fn resume(&mut self, positions: Vec<(&str, u64, &str)>) -> wire::Resumed {
        let rooms = positions
            .into_iter()
            .map(|(room, last_seq, epoch)| wire::RoomPosition {
                room: room.into(),
                last_seq,
                epoch: epoch.into(),
            })
            .collect();
        match self.request(C::Resume(wire::Resume { rooms })).await.body {
            Some(S::Resumed(r)) => r,
            other => panic!("{}: resume: {other:?}", self.name),
        }
    }
}

fn rand_nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The error code of an Error frame, or None.
pub fn error_code(frame: &ServerFrame) -> Option<ErrorCode> {
    match &frame.body {
        Some(S::Error(e)) => ErrorCode::try_from(e.code).ok(),
        _ => None,
    }
}

/// The Error body of a frame; panics otherwise.
pub fn error_of(frame: &ServerFrame) -> &wire::Error {
    match &frame.body {
        Some(S::Error(e)) => e,
        other => panic!("expected Error, got {other:?}"),
    }
}

/// The Message pushes among `frames`.
pub fn messages(frames: &[ServerFrame]) -> Vec<wire::Message> {
    frames
        .iter()
        .filter_map(|f| match &f.body {
            Some(S::Message(m)) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// `(room, seq)` of each Message push among `frames`.
pub fn message_seqs(frames: &[ServerFrame]) -> Vec<(String, u64)> {
    messages(frames)
        .into_iter()
        .map(|m| (m.room, m.seq))
        .collect()
}

/// A client whose socket has a tiny receive buffer, so that once it stops
/// reading the server's queue for it fills instead of the kernel's buffers.
pub async fn slow_client(addr: SocketAddr, name: &str, token: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = within("connect", socket.connect(addr))
        .await
        .expect("connect");
    let (ws, _) = within(
        "handshake",
        tokio_tungstenite::client_async(ws_request(addr), MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("WebSocket handshake");
    let mut client = Client::from_ws(ws, name);
    client.auth(token, &[]).await;
    client
}
