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

#[tokio::test]
async fn https_and_wss_with_a_pem_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let server = TestServer::start(|c| c.tls = Some(TlsFiles { cert, key })).await;
    assert!(server.handle.url().starts_with("https://"));
    assert!(server.handle.ws_url().starts_with("wss://"));

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
