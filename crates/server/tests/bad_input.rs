//! Bad input gets the spec's typed error or close code, and never disturbs
//! anyone else: after every case, two bystanders exchange a message.

mod common;

use common::{
    Client, TestServer, error_code, error_of, logout, open_db, register_and_login, ws_request,
};
use confab_protocol::codec::encode_client_frame;
use confab_protocol::wire::{
    self, ClientFrame, ErrorCode, client_frame::Body as C, server_frame::Body as S,
};
use tokio_tungstenite::tungstenite::{self, Message};

/// Carol and Dave chat in "lobby" throughout.
struct Bystanders {
    carol: Client,
    dave: Client,
    sent: u64,
}

impl Bystanders {
    async fn new(addr: std::net::SocketAddr) -> Self {
        let (mut carol, _) = Client::new_user(addr, "carol").await;
        let (mut dave, _) = Client::new_user(addr, "dave").await;
        carol.create_room("lobby").await;
        dave.join_room("lobby").await;
        Self {
            carol,
            dave,
            sent: 0,
        }
    }

    /// Carol says something; Dave receives it with the next seq.
    async fn still_chatting(&mut self, after: &str) {
        self.sent += 1;
        let ack = self
            .carol
            .say(
                "lobby",
                &format!("chat-{}", self.sent),
                &format!("still here after {after}"),
            )
            .await;
        assert_eq!(ack.seq, self.sent, "bystander send after {after}");
        let seq = self.sent;
        self.dave
            .expect(
                &format!("lobby message {seq} after {after}"),
                |f| matches!(&f.body, Some(S::Message(m)) if m.room == "lobby" && m.seq == seq),
            )
            .await;
    }
}

async fn expect_error_then_close(
    client: &mut Client,
    code: ErrorCode,
    request_id: u64,
    close: u16,
) {
    let frame = client.next_frame().await;
    assert_eq!(error_code(&frame), Some(code), "{frame:?}");
    assert_eq!(frame.request_id, request_id);
    assert_eq!(client.expect_close().await, Some(close));
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_others_keep_chatting() {
    let server = TestServer::start(|c| {
        c.limits.send_rate_per_sec = 5;
        c.limits.send_burst = 20;
    })
    .await;
    let addr = server.addr;
    let mut bystanders = Bystanders::new(addr).await;
    bystanders.still_chatting("start").await;
    let (mut eve, eve_token) = Client::new_user(addr, "eve").await;

    // §3.3.3: bytes that are not a ClientFrame.
    let (mut bad, _) = Client::authed(addr, "eve", &eve_token, &[]).await;
    bad.send_raw(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await;
    expect_error_then_close(&mut bad, ErrorCode::MalformedFrame, 0, 4400).await;
    bystanders.still_chatting("malformed protobuf").await;

    // §3.3.2: a text message.
    let (mut bad, _) = Client::authed(addr, "eve", &eve_token, &[]).await;
    bad.send_raw(Message::Text("hello?".into())).await;
    assert_eq!(bad.expect_close().await, Some(1003));
    bystanders.still_chatting("text message").await;

    // §6.2.2: a frame before Auth.
    let mut bad = Client::connect(addr).await;
    bad.send(C::Ping(wire::Ping { nonce: 1 })).await;
    expect_error_then_close(&mut bad, ErrorCode::Unauthenticated, 1, 4401).await;
    bystanders.still_chatting("frame before auth").await;

    // §6.2.3: an unknown token.
    let mut bad = Client::connect(addr).await;
    let id = bad
        .send(C::Auth(wire::Auth {
            token: "0".repeat(64),
            ..Default::default()
        }))
        .await;
    expect_error_then_close(&mut bad, ErrorCode::TokenInvalid, id, 4403).await;
    bystanders.still_chatting("wrong token").await;

    // §6.2.4: an expired token (expiry moved into the past in the database).
    let expiring = common::login_token(addr, "eve").await;
    let db = open_db(&server.db_path()).await;
    sqlx::query("UPDATE tokens SET expires_ms = 0 WHERE token_hash = ?")
        .bind(confab_server::auth::token_hash(&expiring))
        .execute(&db)
        .await
        .expect("expire token");
    db.close().await;
    let mut bad = Client::connect(addr).await;
    let id = bad
        .send(C::Auth(wire::Auth {
            token: expiring,
            ..Default::default()
        }))
        .await;
    expect_error_then_close(&mut bad, ErrorCode::TokenExpired, id, 4403).await;
    bystanders.still_chatting("expired token").await;

    // §6.2.5: a revoked token.
    let revoked = register_and_login(addr, "mallory").await;
    assert_eq!(logout(addr, &revoked).await.status, 204);
    let mut bad = Client::connect(addr).await;
    let id = bad
        .send(C::Auth(wire::Auth {
            token: revoked,
            ..Default::default()
        }))
        .await;
    expect_error_then_close(&mut bad, ErrorCode::TokenRevoked, id, 4403).await;
    bystanders.still_chatting("revoked token").await;

    // §12.2.1: a message over max_frame_bytes.
    let (mut bad, _) = Client::authed(addr, "eve", &eve_token, &[]).await;
    let max = confab_protocol::codec::DEFAULT_MAX_FRAME_BYTES;
    bad.send_raw(Message::Binary(vec![0u8; max + 1].into()))
        .await;
    assert_eq!(bad.expect_close().await, Some(1009));
    bystanders.still_chatting("oversize frame").await;

    // Errors that keep the connection open, all on Eve's first socket.
    eve.create_room("eves-room").await;
    let long = "x".repeat(4097);
    let reply = eve.send_message("eves-room", "long-1", &long).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::TextTooLong));
    let reply = eve.send_message("no-such-room", "lost-1", "hello").await;
    assert_eq!(error_code(&reply), Some(ErrorCode::RoomNotFound));
    let reply = eve.send_message("lobby", "intrude-1", "let me in").await;
    assert_eq!(error_code(&reply), Some(ErrorCode::NotAMember));
    let reply = eve
        .request(C::FetchHistory(wire::FetchHistory {
            room: "lobby".into(),
            anchor: None,
            limit: 0,
        }))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::NotAMember));
    let reply = eve
        .request(C::ListMembers(wire::ListMembers {
            room: "lobby".into(),
        }))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::NotAMember));
    let reply = eve
        .request(C::SetTyping(wire::SetTyping {
            room: "lobby".into(),
            active: true,
        }))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::NotAMember));
    let reply = eve
        .request(C::JoinRoom(wire::JoinRoom {
            name: "Bad Name".into(),
        }))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::InvalidArgument));
    let reply = eve
        .request(C::Auth(wire::Auth {
            token: eve_token.clone(),
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::AlreadyAuthenticated));
    // §4.4.1: a frame with no body this server knows; §4.3.8: request_id 0.
    eve.send_raw(Message::Binary(encode_client_frame(&ClientFrame {
        request_id: 77,
        body: None,
    })))
    .await;
    let reply = eve
        .expect("UNSUPPORTED_FRAME", |f| f.request_id == 77)
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::UnsupportedFrame));
    eve.send_raw(Message::Binary(encode_client_frame(&ClientFrame::request(
        0,
        C::Ping(wire::Ping { nonce: 5 }),
    ))))
    .await;
    let reply = eve
        .expect("INVALID_ARGUMENT for request_id 0", |f| f.request_id == 0)
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::InvalidArgument));
    // Nothing was stored by any of the refused sends.
    let ok = eve.say("eves-room", "fine-1", "still works").await;
    assert_eq!(ok.seq, 1);
    bystanders
        .still_chatting("errors that keep the socket open")
        .await;

    // §12.5: flooding past the rate limit (burst 20, 5/s).
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            eve.send(C::SendMessage(wire::SendMessage {
                room: "eves-room".into(),
                client_msg_id: format!("flood-{i}"),
                text: format!("flood {i}"),
                kind: 0,
                relation: None,
            }))
            .await,
        );
    }
    let mut limited = 0;
    for id in ids {
        let reply = eve.expect("flood reply", |f| f.request_id == id).await;
        if error_code(&reply) == Some(ErrorCode::RateLimited) {
            let error = error_of(&reply);
            assert!(error.retry_after_ms > 0 && error.retryable, "{error:?}");
            limited += 1;
        } else {
            assert!(matches!(reply.body, Some(S::SendAck(_))), "{reply:?}");
        }
    }
    assert!(limited >= 15, "most of the flood was refused ({limited})");
    bystanders.still_chatting("a flood from another user").await;

    // §15.1: a foreign Origin is refused before the upgrade; no Origin is fine.
    let mut request = ws_request(addr);
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().expect("header"));
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 403);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("JSON");
            assert_eq!(body["error"]["code"], "forbidden_origin");
        }
        other => panic!("foreign origin must get 403, got {other:?}"),
    }
    // §3.2.3: no confab.v1 subprotocol.
    let request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/v1/ws"))
            .expect("request");
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 400),
        other => panic!("missing subprotocol must get 400, got {other:?}"),
    }
    bystanders.still_chatting("refused upgrades").await;
    drop(eve);
    server.stop().await;
}

#[tokio::test]
async fn silence_before_auth_closes_4408() {
    let server =
        TestServer::start(|c| c.auth_timeout = std::time::Duration::from_millis(200)).await;
    let mut client = Client::connect(server.addr).await;
    assert_eq!(client.expect_close().await, Some(4408));
    server.stop().await;
}
