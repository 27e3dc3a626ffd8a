//! §3.1 admission and the edge deadlines: connection caps answered with
//! `503 unavailable`, per source address and in total, and silent, stalled
//! or idle HTTP connections closed by the server. Other clients are other
//! loopback addresses (every address in 127.0.0.0/8 is loopback).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Client, TestServer, http, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `server` from the loopback address `127.0.0.<last>`.
async fn connect_from(last: u8, server: SocketAddr) -> TcpStream {
    common::connect_from(Ipv4Addr::new(127, 0, 0, last), server).await
}

/// One HTTP/1.1 request (JSON body) from `127.0.0.<last>`; status and JSON body.
async fn http_from(
    last: u8,
    server: SocketAddr,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let response = common::http_from(
        Ipv4Addr::new(127, 0, 0, last),
        server,
        "POST",
        path,
        body,
        &[],
    )
    .await;
    (
        response.status,
        serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null),
    )
}

/// Registers, logs in and authenticates `user` entirely from `127.0.0.<last>`.
async fn client_from(last: u8, server: SocketAddr, user: &str) -> Client {
    let credentials =
        serde_json::json!({"username": user, "password": common::PASSWORD}).to_string();
    let (status, _) = http_from(last, server, "/v1/register", &credentials).await;
    assert_eq!(status, 201, "register {user}");
    let (status, login) = http_from(last, server, "/v1/login", &credentials).await;
    assert_eq!(status, 200, "login {user}");
    let token = login["token"].as_str().expect("token").to_owned();
    let stream = connect_from(last, server).await;
    let (ws, _) = within(
        "WebSocket handshake",
        tokio_tungstenite::client_async(
            common::ws_request(server),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        ),
    )
    .await
    .expect("WebSocket handshake");
    let mut client = Client::from_ws(ws, user);
    client.auth(&token, &[]).await;
    client
}

/// Reads until the server closes its side (EOF, or a reset, which is the
/// server closing too); the bytes read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    within("the server to close the connection", async {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return bytes,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                // A reset is the server closing too.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return bytes,
                Err(e) => panic!("reading: {e}"),
            }
        }
    })
    .await
}

/// Status, lowercase headers and body of one raw HTTP/1.1 response.
fn parse_response(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).expect("UTF-8 head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, raw[end + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Asserts `raw` is a `503 unavailable` ErrorBody with retry_after_ms and
/// a matching Retry-After header (§3.1, §5.5).
fn assert_unavailable(raw: &[u8]) {
    let (status, headers, body) = parse_response(raw);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(raw));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let body: confab_protocol::http::ErrorBody =
        serde_json::from_slice(&body).expect("an ErrorBody");
    assert_eq!(
        body.error.code,
        confab_protocol::http::HttpErrorCode::Unavailable
    );
    let retry_ms = body.error.retry_after_ms.expect("retry_after_ms");
    let retry_after: u64 = header(&headers, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert_eq!(retry_after, retry_ms.div_ceil(1000));
}

/// A raw request on a connection refused at a cap: the 503 comes whatever
/// the request, and the connection then ends.
async fn refused_from(last: u8, server: SocketAddr) {
    let mut stream = connect_from(last, server).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: confab\r\n\r\n")
        .await
        .expect("write");
    let raw = read_until_closed(&mut stream).await;
    assert_unavailable(&raw);
}

#[tokio::test]
async fn one_address_at_its_cap_locks_nobody_else_out_and_its_silent_connections_are_closed() {
    const PER_ADDRESS: usize = 8;
    let server = TestServer::start(|c| {
        c.max_connections_per_ip = PER_ADDRESS;
        // Long enough for the honest client below to finish while the
        // silent connections still hold their slots; short for a test.
        c.first_byte_timeout = Duration::from_secs(4);
    })
    .await;
    let addr = server.addr;

    // 127.0.0.2 opens silent connections up to its cap...
    let mut silent = Vec::new();
    for _ in 0..PER_ADDRESS {
        silent.push(connect_from(2, addr).await);
    }
    // ...and one more from it is answered 503 at once: the silent ones hold
    // every slot of its share.
    refused_from(2, addr).await;

    // Another address still registers, logs in and chats over a WebSocket.
    let mut alice = client_from(3, addr, "alice").await;
    alice.create_room("lobby").await;
    let ack = alice.say("lobby", "m1", "still here").await;
    assert_eq!(ack.seq, 1);

    // The server closes every silent connection (first-byte deadline): each
    // reads an end of stream without having sent a byte, and got nothing.
    for mut stream in silent {
        let bytes = read_until_closed(&mut stream).await;
        assert!(bytes.is_empty(), "a silent connection gets no response");
    }
    // Their slots are free again: 127.0.0.2 can make requests.
    let mut again = connect_from(2, addr).await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: confab\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (status, _, _) = parse_response(&read_until_closed(&mut again).await);
    assert_eq!(status, 200);

    let metrics = http(addr, "GET", "/metrics", "", &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("confab_connections_refused_total{reason=\"max_connections_per_ip\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "confab_http_deadline_closes_total {PER_ADDRESS}\n"
        )),
        "{text}"
    );
    // The WebSocket is not subject to HTTP deadlines: it outlived them all.
    alice.barrier().await;
    server.stop().await;
}

#[tokio::test]
async fn at_the_global_cap_a_new_client_gets_503() {
    let server = TestServer::start(|c| {
        c.max_connections = 4;
        c.max_connections_per_ip = 0;
        // The held connections must outlive the test's requests.
        c.first_byte_timeout = Duration::from_secs(60);
        c.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = server.addr;
    let mut held = Vec::new();
    for last in 2..6 {
        held.push(connect_from(last, addr).await);
    }
    // From a new address and from one already holding a slot alike.
    refused_from(7, addr).await;
    refused_from(2, addr).await;
    // A refused client that never reads and never writes is closed too,
    // after the 503 it was sent.
    let mut deaf = connect_from(8, addr).await;
    assert_unavailable(&read_until_closed(&mut deaf).await);
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_408_and_closed() {
    let server = TestServer::start(|c| c.body_timeout = Duration::from_millis(300)).await;
    let mut stream = connect_from(2, server.addr).await;
    // The head promises 1000 bytes of body; none follow.
    stream
        .write_all(
            b"POST /v1/login HTTP/1.1\r\nHost: confab\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"user",
        )
        .await
        .expect("write");
    let raw = read_until_closed(&mut stream).await;
    let (status, headers, body) = parse_response(&raw);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(header(&headers, "connection"), Some("close"));
    let body: confab_protocol::http::ErrorBody =
        serde_json::from_slice(&body).expect("an ErrorBody");
    assert_eq!(
        body.error.code,
        confab_protocol::http::HttpErrorCode::RequestTimeout
    );
    server.stop().await;
}

#[tokio::test]
async fn a_dribbled_request_head_is_closed_at_the_head_deadline() {
    let server = TestServer::start(|c| {
        c.first_byte_timeout = Duration::from_secs(60);
        c.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stream = connect_from(2, server.addr).await;
    // One byte of head, then nothing: the head deadline (from accept) ends it.
    stream.write_all(b"G").await.expect("write");
    let raw = read_until_closed(&mut stream).await;
    assert!(raw.is_empty() || raw.starts_with(b"HTTP/1.1 4"), "{raw:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = TestServer::start(|c| c.keepalive_timeout = Duration::from_millis(300)).await;
    let mut stream = connect_from(2, server.addr).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: confab\r\n\r\n")
        .await
        .expect("write");
    // The whole response ("ok", two bytes of body), and the connection
    // was kept alive, not closed with it.
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    while !raw.ends_with(b"\r\n\r\nok") {
        let n = within("response", stream.read(&mut buf))
            .await
            .expect("read");
        assert!(n > 0, "closed before the response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    }
    let (status, headers, _) = parse_response(&raw);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "connection"), None, "kept alive");
    // Then nothing more is sent, and the server ends the idle connection.
    let rest = read_until_closed(&mut stream).await;
    assert!(rest.is_empty(), "{rest:?}");
    server.stop().await;
}

#[tokio::test]
async fn websockets_are_exempt_from_the_http_deadlines() {
    let server = TestServer::start(|c| {
        c.first_byte_timeout = Duration::from_millis(200);
        c.header_read_timeout = Duration::from_millis(200);
        c.keepalive_timeout = Duration::from_millis(200);
        c.body_timeout = Duration::from_millis(200);
    })
    .await;
    let addr = server.addr;
    let token = common::register_and_login(addr, "alice").await;
    let (mut alice, _) = Client::authed(addr, "alice", &token, &[]).await;
    // A silent connection opened after the socket is closed by the
    // first-byte deadline; by then every HTTP deadline counted from the
    // socket's own accept has passed too.
    let mut silent = connect_from(2, addr).await;
    assert!(read_until_closed(&mut silent).await.is_empty());
    alice.create_room("lobby").await;
    assert_eq!(alice.say("lobby", "m1", "hello").await.seq, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_responses_is_closed() {
    // The write-stall deadline is the body deadline; small buffers on both
    // sides make the server's writes stall after a few responses.
    let server = TestServer::start(|c| {
        c.body_timeout = Duration::from_millis(300);
        c.socket_send_buffer = Some(4096);
    })
    .await;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    socket
        .bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 0))
        .expect("bind");
    let mut stream = within("connect", socket.connect(server.addr))
        .await
        .expect("connect");
    // Pipeline requests for a few KiB each and never read. Once the server
    // stops reading (its own writes are stuck), these writes block too,
    // until the server gives up on the connection: then a write fails.
    let request = b"GET /metrics HTTP/1.1\r\nHost: confab\r\n\r\n";
    let failed = within("the server to drop a connection that never reads", async {
        loop {
            if let Err(e) = stream.write_all(request).await {
                return e;
            }
        }
    })
    .await;
    assert!(
        matches!(
            failed.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{failed}"
    );
    let metrics = http(server.addr, "GET", "/metrics", "", &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("confab_http_deadline_closes_total 1\n"),
        "{text}"
    );
    server.stop().await;
}
