//! §5.1 and §5.5 at the HTTP edge: every non-2xx `/v1/` response is an
//! ErrorBody that validates against `spec/schemas/error_body.json` (404,
//! 405, 413 and 415 included), an over-cap body is refused before it is
//! read, login and register take only JSON, the security headers are set,
//! error messages do not echo input, and `/metrics` can move to its own
//! address.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{TestServer, http, within};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The checked-in schema of every error body.
fn error_schema() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/schemas/error_body.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read the schema")).expect("JSON")
}

/// Validates `body` against `spec/schemas/error_body.json`. The schema is
/// small (an object of an object with a string enum, a string and an
/// optional integer), so this walks it instead of pulling a JSON Schema
/// engine into the build: the field lists, the required fields and the
/// allowed codes are read from the file, and unknown fields are refused
/// as `deny_unknown_fields` would.
fn validate_error_body(body: &Value) -> String {
    let schema = error_schema();
    let defs = &schema["$defs"];
    let check_object = |value: &Value, schema: &Value, what: &str| {
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("{what} is an object: {value}"));
        let properties = schema["properties"].as_object().expect("properties");
        for key in object.keys() {
            assert!(
                properties.contains_key(key),
                "{what} has unknown field {key}: {value}"
            );
        }
        for required in schema["required"].as_array().expect("required") {
            let required = required.as_str().expect("name");
            assert!(
                object.contains_key(required),
                "{what} lacks {required}: {value}"
            );
        }
    };
    check_object(body, &schema, "the body");
    let detail = &body["error"];
    check_object(detail, &defs["ErrorDetail"], "error");
    let codes: Vec<&str> = defs["HttpErrorCode"]["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .map(|c| c["const"].as_str().expect("const"))
        .collect();
    let code = detail["code"].as_str().expect("code is a string");
    assert!(codes.contains(&code), "{code} is one of {codes:?}");
    assert!(detail["message"].is_string(), "message is a string");
    if let Some(retry) = detail.get("retry_after_ms") {
        assert!(retry.is_u64(), "retry_after_ms is a non-negative integer");
    }
    // The typed view agrees.
    let typed: confab_protocol::http::ErrorBody =
        serde_json::from_value(body.clone()).expect("deserializes as ErrorBody");
    assert_eq!(
        typed.error.message,
        detail["message"].as_str().unwrap_or_default()
    );
    code.to_owned()
}

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("JSON body ({e}): {:?}", String::from_utf8_lossy(&self.body))
        })
    }
}

/// Writes `request` as is and reads one response (the server closes after
/// it, or the request says `Connection: close`).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Raw {
    within("raw HTTP exchange", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        read_response(&mut stream).await
    })
    .await
}

/// Reads one response with a Content-Length body.
async fn read_response(stream: &mut TcpStream) -> Raw {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&raw[..end])
                .expect("UTF-8 head")
                .to_owned();
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .expect("status line");
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map(|(_, v)| v.parse().expect("length"))
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                let body = raw[end + 4..end + 4 + length].to_vec();
                return Raw {
                    status,
                    headers,
                    body,
                };
            }
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
}

fn post(path: &str, content_type: Option<&str>, body: &str) -> Vec<u8> {
    let content_type = content_type
        .map(|t| format!("Content-Type: {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: confab\r\nConnection: close\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn credentials(user: &str, password: &str) -> String {
    serde_json::json!({"username": user, "password": password}).to_string()
}

#[tokio::test]
async fn unknown_paths_and_methods_get_error_bodies() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    for (method, path, status, code) in [
        ("GET", "/v1/nope", 404, "not_found"),
        ("POST", "/v1/nope", 404, "not_found"),
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/v1/login", 405, "method_not_allowed"),
        ("DELETE", "/v1/register", 405, "method_not_allowed"),
        ("POST", "/v1/ws", 405, "method_not_allowed"),
    ] {
        let response = http(addr, method, path, "", &[]).await;
        assert_eq!(response.status, status, "{method} {path}");
        assert_eq!(
            response.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..]),
            "{method} {path}"
        );
        assert_eq!(
            validate_error_body(&response.json()),
            code,
            "{method} {path}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_over_cap_content_length_is_refused_before_the_body_is_sent() {
    let server = TestServer::start(|_| {}).await;
    // Only the head: the body is never sent, so the 413 proves the server
    // answered from the declared length alone.
    let response = exchange(
        server.addr,
        b"POST /v1/login HTTP/1.1\r\nHost: confab\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 413);
    assert_eq!(validate_error_body(&response.json()), "payload_too_large");
    assert_eq!(response.header("connection"), Some("close"));
    server.stop().await;
}

#[tokio::test]
async fn a_sent_over_cap_body_gets_its_413_without_a_reset() {
    let server = TestServer::start(|_| {}).await;
    let body = serde_json::json!({"username": "alice", "password": "p".repeat(60_000)}).to_string();
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(&post("/v1/login", Some("application/json"), &body))
        .await
        .expect("write");
    // The body that did arrive is discarded before the close, so the close
    // is a clean end of stream, not a reset that could destroy the answer
    // in the client's buffer (read_to_end fails on a reset).
    let mut raw = Vec::new();
    within("413 and a clean close", stream.read_to_end(&mut raw))
        .await
        .expect("a clean end of stream");
    assert!(
        raw.starts_with(b"HTTP/1.1 413 "),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_chunked_body_growing_past_the_cap_gets_413() {
    let server = TestServer::start(|_| {}).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"POST /v1/register HTTP/1.1\r\nHost: confab\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("head");
    // 17 chunks of 1 KiB: past the 16 KiB cap. The server may answer and
    // close before all are written; then the writes fail, which is fine.
    let chunk = format!("400\r\n{}\r\n", "a".repeat(1024));
    for _ in 0..17 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let response = within("413", read_response(&mut stream)).await;
    assert_eq!(response.status, 413);
    assert_eq!(validate_error_body(&response.json()), "payload_too_large");
    server.stop().await;
}

#[tokio::test]
async fn login_and_register_take_only_json_and_refusals_are_not_failed_logins() {
    // One free failure: a single counted failure would lock the next login.
    let server = TestServer::start(|c| {
        c.login_free_failures = 1;
        c.login_lockout_base = Duration::from_secs(600);
    })
    .await;
    let addr = server.addr;
    let alice = credentials("alice", common::PASSWORD);
    let wrong = credentials("alice", "not the password at all");
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json; charset=latin1"),
        Some("application/jsonp"),
        None,
    ] {
        let register = exchange(addr, &post("/v1/register", content_type, &alice)).await;
        assert_eq!(register.status, 415, "register with {content_type:?}");
        assert_eq!(
            validate_error_body(&register.json()),
            "unsupported_media_type"
        );
        assert_eq!(register.header("cache-control"), Some("no-store"));
        for _ in 0..3 {
            let login = exchange(addr, &post("/v1/login", content_type, &wrong)).await;
            assert_eq!(login.status, 415, "login with {content_type:?}");
            assert_eq!(validate_error_body(&login.json()), "unsupported_media_type");
        }
    }
    // Nothing was registered, and no refused login counted as a failure.
    let json = Some("Application/JSON; Charset=\"UTF-8\"");
    assert_eq!(
        exchange(addr, &post("/v1/register", json, &alice))
            .await
            .status,
        201
    );
    let login = exchange(
        addr,
        &post("/v1/login", Some("application/json;charset=utf-8"), &alice),
    )
    .await;
    assert_eq!(login.status, 200, "{:?}", login.json());
    let metrics = http(addr, "GET", "/metrics", "", &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(text.contains("confab_login_failures_total 0\n"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn security_headers() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let register = http(
        addr,
        "POST",
        "/v1/register",
        &credentials("alice", common::PASSWORD),
        &[],
    )
    .await;
    let login = http(
        addr,
        "POST",
        "/v1/login",
        &credentials("alice", common::PASSWORD),
        &[],
    )
    .await;
    let failed = http(
        addr,
        "POST",
        "/v1/login",
        &credentials("alice", "wrong password!"),
        &[],
    )
    .await;
    let token = login.json()["token"].as_str().expect("token").to_owned();
    let bearer = format!("Bearer {token}");
    let logout = http(
        addr,
        "POST",
        "/v1/logout",
        "",
        &[("authorization", &bearer)],
    )
    .await;
    let logout_again = http(
        addr,
        "POST",
        "/v1/logout",
        "",
        &[("authorization", &bearer)],
    )
    .await;
    let auth = [
        (201, register),
        (200, login),
        (401, failed),
        (204, logout),
        (401, logout_again),
    ];
    for (status, response) in &auth {
        assert_eq!(response.status, *status);
        assert_eq!(
            response.headers.get("cache-control").map(|v| v.as_bytes()),
            Some(&b"no-store"[..]),
            "auth response {status}"
        );
    }
    let others = [
        http(addr, "GET", "/healthz", "", &[]).await,
        http(addr, "GET", "/metrics", "", &[]).await,
        http(addr, "GET", "/v1/nope", "", &[]).await,
        http(addr, "GET", "/v1/ws", "", &[]).await,
    ];
    for response in auth.iter().map(|(_, r)| r).chain(&others) {
        assert_eq!(
            response
                .headers
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "status {}",
            response.status
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn error_messages_do_not_echo_the_request() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let marker = "SECRET-MARKER-7f3a";
    for body in [
        format!(r#"{{"username":"{marker}","password":5}}"#),
        format!(r#"{{"username":"{marker}""#),
        format!(r#"{{"{marker}":1}}"#),
        format!(r#"["{marker}"]"#),
        marker.to_owned(),
    ] {
        for path in ["/v1/login", "/v1/register"] {
            let response = http(addr, "POST", path, &body, &[]).await;
            assert_eq!(response.status, 400, "{path} {body}");
            let json = response.json();
            assert_eq!(validate_error_body(&json), "invalid_request");
            let message = json["error"]["message"].as_str().expect("message");
            assert!(!message.contains(marker), "{path}: {message}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn metrics_can_live_on_their_own_address() {
    let server = TestServer::start(|c| {
        c.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let metrics_addr = server.handle.metrics_addr().expect("a metrics address");
    assert_ne!(metrics_addr, server.addr);
    let scraped = http(metrics_addr, "GET", "/metrics", "", &[]).await;
    assert_eq!(scraped.status, 200);
    assert!(String::from_utf8_lossy(&scraped.body).contains("confab_connection_slots_free"));
    // The public address no longer serves it, and the metrics address
    // serves nothing else.
    let public = http(server.addr, "GET", "/metrics", "", &[]).await;
    assert_eq!(public.status, 404);
    assert_eq!(validate_error_body(&public.json()), "not_found");
    let login = http(
        metrics_addr,
        "POST",
        "/v1/login",
        &credentials("a", "b"),
        &[],
    )
    .await;
    assert_eq!(login.status, 404);
    assert_eq!(
        http(server.addr, "GET", "/healthz", "", &[]).await.status,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn error_bodies_of_every_listed_status_validate() {
    // The bodies the other tests do not produce: 400, 401, 403, 409.
    let server =
        TestServer::start(|c| c.allowed_origins = vec!["https://chat.example".into()]).await;
    let addr = server.addr;
    let cases = [
        http(
            addr,
            "POST",
            "/v1/register",
            &credentials("A!", common::PASSWORD),
            &[],
        )
        .await,
        http(addr, "POST", "/v1/logout", "", &[]).await,
        http(
            addr,
            "GET",
            "/v1/ws",
            "",
            &[
                ("origin", "https://evil.example"),
                ("sec-websocket-protocol", "confab.v1"),
            ],
        )
        .await,
    ];
    for (response, (status, code)) in cases.iter().zip([
        (400, "invalid_username"),
        (401, "unauthorized"),
        (403, "forbidden_origin"),
    ]) {
        assert_eq!(response.status, status);
        assert_eq!(validate_error_body(&response.json()), code);
    }
    server.stop().await;
}
