//! Deliberately broken servers for the suite's self-test: the real
//! reference server behind a frame-rewriting WebSocket man-in-the-middle
//! that breaks exactly one behaviour. The breakage lives here, in the test
//! crate, never behind a flag of the real server.
//!
//! The MITM forwards the HTTP upgrade verbatim (so refusals such as 400 or
//! 403 pass through unchanged), then decodes every frame in both directions
//! and lets the [`Breakage`] rewrite, drop, duplicate or answer it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use confab_protocol::codec::{
    decode_client_frame, decode_server_frame, encode_client_frame, encode_server_frame,
};
use confab_protocol::wire::{self, ServerFrame, client_frame, server_frame};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The one behaviour a broken server gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakage {
    /// Forwards everything unchanged (proves the MITM itself is neutral).
    None,
    /// Drops every 10th live or replayed Message push on each connection.
    DropEveryTenthFanout,
    /// Sends the first replayed Message of each Resume twice.
    DuplicateOnResume,
    /// Acks a SendMessage at once with a made-up SendAck, never stores it,
    /// then "crashes": the connection is cut.
    AckBeforeStoreThenCrash,
    /// Answers frames sent before Auth (Pong, or an Error without closing)
    /// instead of closing the connection.
    AnswersBeforeAuth,
    /// Ignores client_msg_id: every send is stored under a fresh key, so
    /// repeats become new messages; keys are mapped back on the way out.
    IgnoresClientMsgId,
    /// `edit`: lets anyone edit: a NOT_AUTHOR refusal becomes a SendAck.
    AnyoneMayEdit,
    /// `redact`: keeps deleted text: history shows a deleted message with
    /// the text it had when it went by.
    KeepsDeletedText,
    /// `reply`: stores the quote the client sent instead of its own.
    TrustsClientQuote,
    /// `react`: a reaction that changes nothing is acked as a new one.
    ReactionsCountTwice,
    /// Ignores the relation capabilities: every connection gets relations
    /// as stored (never the fallback), and Welcome hides that it did.
    NoFallbacks,
}

#[derive(Debug, Default)]
struct Shared {
    /// IgnoresClientMsgId: fresh key -> the client's key.
    renamed: HashMap<String, String>,
    counter: u64,
    /// KeepsDeletedText: message_id -> the text it went by with.
    texts: HashMap<String, String>,
    /// TrustsClientQuote: client_msg_id of a reply -> the quote it sent.
    quotes: HashMap<String, String>,
}

/// A running MITM in front of `upstream`.
#[derive(Debug)]
pub struct Mitm {
    addr: SocketAddr,
}

impl Mitm {
    /// Starts listening on an ephemeral loopback port.
    pub async fn start(upstream: SocketAddr, breakage: Breakage) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind MITM");
        let addr = listener.local_addr().expect("MITM address");
        let shared = Arc::new(Mutex::new(Shared::default()));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    // A failing connection is the breakage's business, or the
                    // test's: either way there is nothing to report here.
                    serve(client, upstream, breakage, shared).await.ok();
                });
            }
        });
        Self { addr }
    }

    /// The WebSocket URL to give the suite.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// The base URL, for a MITM used as one node of a multi-server run
    /// (plain HTTP passes through it unchanged).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads an HTTP head (through the blank line); returns it and any bytes after it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    breakage: Breakage,
    shared: Arc<Mutex<Shared>>,
) -> std::io::Result<()> {
    let (request, client_rest) = read_head(&mut client).await?;
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&request).await?;
    server.write_all(&client_rest).await?;
    let (response, server_rest) = read_head(&mut server).await?;
    client.write_all(&response).await?;
    if !response.starts_with(b"HTTP/1.1 101") {
        // A refused upgrade (or plain HTTP): pass the rest through untouched.
        client.write_all(&server_rest).await?;
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        return Ok(());
    }
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let mut client_ws =
        WebSocketStream::from_partially_read(client, Vec::new(), Role::Server, Some(config)).await;
    let mut server_ws =
        WebSocketStream::from_partially_read(server, server_rest, Role::Client, Some(config)).await;
    let mut state = Connection {
        breakage,
        shared,
        authenticated: false,
        resuming: false,
        duplicated: false,
        pushes: 0,
        hidden: Vec::new(),
        reactions: std::collections::HashSet::new(),
    };
    loop {
        tokio::select! {
            msg = client_ws.next() => {
                let Some(Ok(msg)) = msg else { return Ok(()) };
                match state.handle_client_message(msg) {
                    Verdict::Forward(out) => {
                        for m in out {
                            if server_ws.send(m).await.is_err() { return Ok(()); }
                        }
                    }
                    Verdict::Answer(frames) => {
                        for f in frames {
                            if client_ws.send(Message::Binary(encode_server_frame(&f))).await.is_err() { return Ok(()); }
                        }
                    }
                    Verdict::AnswerThenCrash(frames) => {
                        for f in frames {
                            client_ws.send(Message::Binary(encode_server_frame(&f))).await.ok();
                        }
                        // Dropping both sockets without a close frame.
                        return Ok(());
                    }
                }
            }
            msg = server_ws.next() => {
                let Some(Ok(msg)) = msg else { return Ok(()) };
                for m in state.handle_server_message(msg) {
                    if client_ws.send(m).await.is_err() { return Ok(()); }
                }
            }
        }
    }
}

enum Verdict {
    Forward(Vec<Message>),
    Answer(Vec<ServerFrame>),
    AnswerThenCrash(Vec<ServerFrame>),
}

struct Connection {
    breakage: Breakage,
    shared: Arc<Mutex<Shared>>,
    authenticated: bool,
    resuming: bool,
    duplicated: bool,
    pushes: u64,
    /// NoFallbacks: relation capabilities added to Auth behind the client's back.
    hidden: Vec<String>,
    /// ReactionsCountTwice: request ids of reactions.
    reactions: std::collections::HashSet<u64>,
}

impl Connection {
    fn handle_client_message(&mut self, msg: Message) -> Verdict {
        let Message::Binary(bytes) = &msg else {
            return Verdict::Forward(vec![msg]);
        };
        let Ok(mut frame) = decode_client_frame(bytes, usize::MAX) else {
            return Verdict::Forward(vec![msg]);
        };
        let request_id = frame.request_id;
        match (&mut frame.body, self.breakage) {
            (Some(client_frame::Body::Auth(auth)), Breakage::NoFallbacks) => {
                self.authenticated = true;
                let asked = auth.capabilities.clone();
                self.hidden = confab_protocol::capability::RELATIONS
                    .iter()
                    .filter(|c| !asked.iter().any(|a| a == *c))
                    .map(|c| (*c).to_owned())
                    .collect();
                auth.capabilities.extend(self.hidden.iter().cloned());
            }
            (Some(client_frame::Body::Auth(_)), _) => self.authenticated = true,
            (Some(client_frame::Body::Ping(ping)), Breakage::AnswersBeforeAuth)
                if !self.authenticated =>
            {
                return Verdict::Answer(vec![ServerFrame::reply(
                    request_id,
                    server_frame::Body::Pong(wire::Pong { nonce: ping.nonce }),
                )]);
            }
            (_, Breakage::AnswersBeforeAuth) if !self.authenticated => {
                let error = wire::Error {
                    code: wire::ErrorCode::Unauthenticated as i32,
                    message: "send Auth first (but this broken server keeps the connection open)"
                        .into(),
                    ..wire::Error::default()
                };
                return Verdict::Answer(vec![ServerFrame::reply(
                    request_id,
                    server_frame::Body::Error(error),
                )]);
            }
            (Some(client_frame::Body::Resume(_)), Breakage::DuplicateOnResume) => {
                self.resuming = true;
                self.duplicated = false;
            }
            (Some(client_frame::Body::SendMessage(send)), Breakage::AckBeforeStoreThenCrash) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let ack = wire::SendAck {
                    room: send.room.clone(),
                    client_msg_id: send.client_msg_id.clone(),
                    seq: 1,
                    message_id: format!("fabricated-{request_id}-{now}"),
                    server_ts_ms: now,
                    duplicate: false,
                };
                return Verdict::AnswerThenCrash(vec![ServerFrame::reply(
                    request_id,
                    server_frame::Body::SendAck(ack),
                )]);
            }
            (Some(client_frame::Body::SendMessage(send)), Breakage::TrustsClientQuote) => {
                if let Some(wire::Relation {
                    kind: Some(wire::relation::Kind::Reply(reply)),
                    ..
                }) = &send.relation
                {
                    self.shared
                        .lock()
                        .expect("MITM state")
                        .quotes
                        .insert(send.client_msg_id.clone(), reply.quote.clone());
                }
            }
            (Some(client_frame::Body::SendMessage(send)), Breakage::ReactionsCountTwice) => {
                if matches!(
                    send.relation.as_ref().and_then(|r| r.kind.as_ref()),
                    Some(wire::relation::Kind::React(_))
                ) {
                    self.reactions.insert(request_id);
                }
            }
            (Some(client_frame::Body::SendMessage(send)), Breakage::IgnoresClientMsgId) => {
                let mut shared = self.shared.lock().expect("MITM state");
                shared.counter += 1;
                let fresh = format!("{}~{}", send.client_msg_id, shared.counter);
                shared
                    .renamed
                    .insert(fresh.clone(), send.client_msg_id.clone());
                send.client_msg_id = fresh;
            }
            _ => {}
        }
        Verdict::Forward(vec![Message::Binary(encode_client_frame(&frame))])
    }

    fn handle_server_message(&mut self, msg: Message) -> Vec<Message> {
        let Message::Binary(bytes) = &msg else {
            return vec![msg];
        };
        let Ok(mut frame) = decode_server_frame(bytes, usize::MAX) else {
            return vec![msg];
        };
        match (&mut frame.body, self.breakage) {
            (Some(server_frame::Body::Message(_)), Breakage::DropEveryTenthFanout)
                if frame.request_id == 0 =>
            {
                self.pushes += 1;
                if self.pushes.is_multiple_of(10) {
                    return vec![];
                }
            }
            (Some(server_frame::Body::Message(_)), Breakage::DuplicateOnResume)
                if frame.request_id == 0 && self.resuming && !self.duplicated =>
            {
                self.duplicated = true;
                return vec![msg.clone(), msg];
            }
            (Some(server_frame::Body::Resumed(_)), Breakage::DuplicateOnResume) => {
                self.resuming = false
            }
            (Some(server_frame::Body::Error(error)), Breakage::AnyoneMayEdit)
                if error.code == wire::ErrorCode::NotAuthor as i32 =>
            {
                let ack = wire::SendAck {
                    seq: u64::MAX >> 12,
                    message_id: format!("let-through-{}", frame.request_id),
                    ..wire::SendAck::default()
                };
                frame.body = Some(server_frame::Body::SendAck(ack));
            }
            (Some(server_frame::Body::Message(m)), Breakage::KeepsDeletedText)
                if !m.text.is_empty() =>
            {
                self.shared
                    .lock()
                    .expect("MITM state")
                    .texts
                    .insert(m.message_id.clone(), m.text.clone());
            }
            (Some(server_frame::Body::HistoryPage(page)), Breakage::KeepsDeletedText) => {
                let shared = self.shared.lock().expect("MITM state");
                for m in page.messages.iter_mut().filter(|m| m.redacted) {
                    if let Some(text) = shared.texts.get(&m.message_id) {
                        m.text.clone_from(text);
                    }
                }
            }
            (Some(body), Breakage::TrustsClientQuote) => {
                let shared = self.shared.lock().expect("MITM state");
                let swap = |m: &mut wire::Message| {
                    if let Some(wire::Relation {
                        kind: Some(wire::relation::Kind::Reply(reply)),
                        ..
                    }) = &mut m.relation
                        && let Some(sent) = shared.quotes.get(&m.client_msg_id)
                    {
                        reply.quote.clone_from(sent);
                    }
                };
                match body {
                    server_frame::Body::Message(m) => swap(m),
                    server_frame::Body::HistoryPage(page) => {
                        page.messages.iter_mut().for_each(swap)
                    }
                    _ => {}
                }
            }
            (Some(server_frame::Body::SendAck(ack)), Breakage::ReactionsCountTwice)
                if self.reactions.remove(&frame.request_id) && ack.duplicate =>
            {
                ack.duplicate = false;
                ack.seq += 1;
            }
            (Some(server_frame::Body::Welcome(welcome)), Breakage::NoFallbacks) => {
                let hidden = std::mem::take(&mut self.hidden);
                welcome.capabilities.retain(|c| !hidden.contains(c));
            }
            (Some(body), Breakage::IgnoresClientMsgId) => {
                let shared = self.shared.lock().expect("MITM state");
                let restore = |id: &mut String| {
                    if let Some(original) = shared.renamed.get(id.as_str()) {
                        *id = original.clone();
                    }
                };
                match body {
                    server_frame::Body::SendAck(ack) => restore(&mut ack.client_msg_id),
                    server_frame::Body::Message(m) => restore(&mut m.client_msg_id),
                    server_frame::Body::HistoryPage(page) => page
                        .messages
                        .iter_mut()
                        .for_each(|m| restore(&mut m.client_msg_id)),
                    _ => {}
                }
            }
            _ => {}
        }
        vec![Message::Binary(encode_server_frame(&frame))]
    }
}

/// A byte-transparent TCP forwarder in front of a server: a second address
/// ("another node") for the same server. Unlike [`Mitm`] it never decodes,
/// so even frames that only survive byte for byte (padding in unknown
/// fields) pass unchanged. It counts WebSocket upgrade requests, which
/// proves which actors were sent to it.
#[derive(Debug)]
pub struct Forwarder {
    addr: SocketAddr,
    upgrades: Arc<std::sync::atomic::AtomicUsize>,
}

impl Forwarder {
    /// Starts listening on an ephemeral loopback port.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind forwarder");
        let addr = listener.local_addr().expect("forwarder address");
        let upgrades = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&upgrades);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    // A connection that fails is the scenario's business
                    // (it sees the failure itself); nothing to report here.
                    forward(client, upstream, counter).await.ok();
                });
            }
        });
        Self { addr, upgrades }
    }

    /// `http://127.0.0.1:PORT` of the forwarder.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// WebSocket upgrade requests (`GET /v1/ws...`) forwarded so far.
    pub fn upgrades(&self) -> usize {
        self.upgrades.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    upgrades: Arc<std::sync::atomic::AtomicUsize>,
) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    // Only the first 10 bytes are inspected (one upgrade per connection).
    // A client that stalls before sending them stalls here: the suite sends
    // its stall probes to the first server, which tests never put behind a
    // forwarder for that reason.
    let mut first = [0u8; 10];
    let mut seen = 0;
    while seen < first.len() {
        let n = client.read(&mut first[seen..]).await?;
        if n == 0 {
            break;
        }
        seen += n;
    }
    if first[..seen].starts_with(b"GET /v1/ws") {
        upgrades.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    server.write_all(&first[..seen]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// The reference server, in-process on 127.0.0.1:0 with a fresh data dir.
pub struct TestServer {
    /// Keeps the data dir alive as long as the server.
    _dir: tempfile::TempDir,
    handle: Option<confab_server::ServerHandle>,
}

impl TestServer {
    /// Starts a server with the reference defaults.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` changed its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut confab_server::Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = confab_server::Config::for_data_dir(dir.path());
        adjust(&mut config);
        let handle = confab_server::Server::bind(config)
            .await
            .expect("server binds")
            .spawn();
        Self {
            _dir: dir,
            handle: Some(handle),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.handle.as_ref().expect("running").url()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.as_ref().expect("running").local_addr()
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await.expect("server shuts down cleanly");
        }
    }
}

/// Parses JUnit XML with quick-xml and checks its structure and counts.
pub fn check_junit(xml: &str, tests: usize, failures: usize, skipped: usize) {
    use quick_xml::Reader;
    use quick_xml::events::Event;

    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut testcases = 0;
    let mut failure_elements = 0;
    let mut skipped_elements = 0;
    let mut suite_counts = None;
    loop {
        let event = reader
            .read_event()
            .expect("JUnit report is well-formed XML");
        let (name, attrs, empty) = match &event {
            Event::Start(e) => (
                String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                Some(e.clone()),
                false,
            ),
            Event::Empty(e) => (
                String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                Some(e.clone()),
                true,
            ),
            Event::End(_) => {
                stack.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let parent = stack.last().cloned().unwrap_or_default();
        match name.as_str() {
            "testsuites" => assert!(parent.is_empty(), "testsuites is the root"),
            "testsuite" => {
                assert_eq!(parent, "testsuites");
                let attr = |key: &str| -> usize {
                    let a = attrs.as_ref().expect("attributes");
                    let v = a
                        .try_get_attribute(key)
                        .expect("attribute parses")
                        .unwrap_or_else(|| panic!("testsuite has {key}"));
                    String::from_utf8_lossy(&v.value).parse().expect("a count")
                };
                suite_counts = Some((
                    attr("tests"),
                    attr("failures"),
                    attr("skipped"),
                    attr("errors"),
                ));
            }
            "testcase" => {
                assert_eq!(parent, "testsuite");
                testcases += 1;
            }
            "failure" => {
                assert_eq!(parent, "testcase");
                failure_elements += 1;
            }
            "skipped" => {
                assert_eq!(parent, "testcase");
                skipped_elements += 1;
            }
            "properties" | "property" => {}
            other => panic!("unexpected element {other} in JUnit report"),
        }
        if !empty {
            stack.push(name);
        }
    }
    assert_eq!(
        suite_counts,
        Some((tests, failures, skipped, 0)),
        "testsuite counts"
    );
    assert_eq!(
        (testcases, failure_elements, skipped_elements),
        (tests, failures, skipped),
        "elements"
    );
}
