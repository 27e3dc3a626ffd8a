//! TLS: with --tls-cert/--tls-key the same endpoints answer over https://
//! and wss:// (§3.1), here with a self-signed certificate.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{TestServer, within};
use confab_protocol::codec::{decode_server_frame, encode_client_frame};
use confab_protocol::wire::{self, ClientFrame, client_frame::Body as C, server_frame::Body as S};
use confab_server::TlsFiles;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Tls {
    connector: TlsConnector,
    addr: std::net::SocketAddr,
}

impl Tls {
    async fn connect(&self) -> TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let name = ServerName::try_from("localhost").expect("server name");
        within("TLS handshake", self.connector.connect(name, tcp))
            .await
            .expect("TLS handshake with the server's certificate")
    }

    async fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        let io = hyper_util::rt::TokioIo::new(self.connect().await);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        let request = http::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let response = within("HTTPS response", sender.send_request(request))
            .await
            .expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&body).expect("JSON"))
    }
}

/// A TLS server with a fresh self-signed certificate for `localhost`, and
/// a connector that trusts it.
async fn tls_server(tune: impl FnOnce(&mut confab_server::Config)) -> (TestServer, Tls) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let files = tempfile::tempdir().expect("tempdir");
    let cert = files.path().join("cert.pem");
    let key = files.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let server = TestServer::start(|c| {
        c.tls = Some(TlsFiles { cert, key });
        tune(c);
    })
    .await;
    // The server has read its certificate and key: the files may go.
    drop(files);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(certified.cert.der().clone())
        .expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = Tls {
        connector: TlsConnector::from(Arc::new(config)),
        addr: server.addr,
    };
    (server, tls)
}

#[tokio::test]
async fn at_the_cap_the_503_comes_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, tls) = tls_server(|c| c.max_connections = 1).await;
    let _held = tls.connect().await;
    let mut refused = tls.connect().await;
    refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    // The server closes after the 503 (a missing close_notify is fine).
    if let Err(e) = within("503 over TLS", refused.read_to_end(&mut raw)).await {
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    let body = &text[text.find("\r\n\r\n").expect("end of head") + 4..];
    let body: confab_protocol::http::ErrorBody = serde_json::from_str(body).expect("ErrorBody");
    assert_eq!(
        body.error.code,
        confab_protocol::http::HttpErrorCode::Unavailable
    );
    server.stop().await;
}

#[tokio::test]
async fn https_and_wss_with_a_pem_certificate() {
    let (server, tls) = tls_server(|_| {}).await;
    assert!(server.handle.url().starts_with("https://"));
    assert!(server.handle.ws_url().starts_with("wss://"));

    let credentials = r#"{"username":"alice","password":"correct horse battery"}"#;
    assert_eq!(tls.post("/v1/register", credentials).await.0, 201);
    let (status, login) = tls.post("/v1/login", credentials).await;
    assert_eq!(status, 200);
    let token = login["token"].as_str().expect("token").to_owned();

    let mut request = format!("wss://localhost:{}/v1/ws", server.addr.port())
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "confab.v1".parse().expect("header"),
    );
    let (mut ws, _) = within(
        "wss handshake",
        tokio_tungstenite::client_async(request, tls.connect().await),
    )
    .await
    .expect("WebSocket over TLS");
    let auth = ClientFrame::request(
        1,
        C::Auth(wire::Auth {
            token,
            ..Default::default()
        }),
    );
    ws.send(Message::Binary(encode_client_frame(&auth)))
        .await
        .expect("send Auth");
    let Some(Ok(Message::Binary(bytes))) = within("Welcome", ws.next()).await else {
        panic!("expected a binary frame");
    };
    let welcome = decode_server_frame(&bytes, usize::MAX).expect("decode");
    assert!(matches!(welcome.body, Some(S::Welcome(ref w)) if w.username == "alice"));
    ws.close(None).await.ok();
    server.stop().await;
}
