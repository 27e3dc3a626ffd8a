//! Closes that must reach the client as close codes, never as a TCP reset:
//! oversize frames (1009), text that is not UTF-8 (1007), an expiring token
//! (TOKEN_EXPIRED then 4403), and the per-user socket cap (1013).
//!
//! Each close case is repeated on many sockets at once: a reset shows up as
//! `Closed(None)` on some of them, so one run exercises the race many times.

mod common;

use std::time::Duration;

use common::{Client, TestServer, error_code, error_of, register_and_login, within};
use confab_protocol::codec::DEFAULT_MAX_FRAME_BYTES;
use confab_protocol::wire::{self, ErrorCode, client_frame::Body as C, server_frame::Body as S};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Sockets per case.
const SOCKETS: usize = 50;

/// A text message whose payload is not UTF-8 (tungstenite's `Message::Text`
/// cannot carry one, so the frame is built by hand).
fn invalid_utf8_text() -> Message {
    Message::Frame(Frame::message(
        vec![b'h', b'i', 0xff, 0xfe],
        OpCode::Data(Data::Text),
        true,
    ))
}

/// Runs `SOCKETS` clients at once; each sends `message` (after Auth when
/// `token` is given) and must read close `code`.
async fn every_socket_reads_close(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    message: fn() -> Message,
    code: u16,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SOCKETS {
        let token = token.map(str::to_owned);
        tasks.spawn(async move {
            let mut client = match token {
                Some(token) => Client::authed(addr, "alice", &token, &[]).await.0,
                None => Client::connect(addr).await,
            };
            client.send_raw(message()).await;
            (i, client.expect_close().await)
        });
    }
    let mut closes = Vec::new();
    while let Some(result) = tasks.join_next().await {
        closes.push(result.expect("client task"));
    }
    let wrong: Vec<_> = closes.iter().filter(|(_, c)| *c != Some(code)).collect();
    assert!(
        wrong.is_empty(),
        "sockets that did not read close {code} (None: reset or no close frame): {wrong:?}"
    );
}

#[tokio::test]
async fn oversize_frames_get_1009_on_every_socket() {
    let server = TestServer::start(|c| c.max_sockets_per_user = 10 * SOCKETS as u32).await;
    let addr = server.addr;
    let token = register_and_login(addr, "alice").await;
    let just_over = || Message::Binary(vec![0u8; DEFAULT_MAX_FRAME_BYTES + 1].into());
    let well_over = || {
        Message::Binary(vec![0x0au8; DEFAULT_MAX_FRAME_BYTES + DEFAULT_MAX_FRAME_BYTES / 2].into())
    };
    // Past twice the limit tungstenite refuses the frame from its header and
    // the payload stays unread: the server holds the socket briefly instead.
    let far_over = || Message::Binary(vec![0x0au8; 4 * DEFAULT_MAX_FRAME_BYTES].into());
    every_socket_reads_close(addr, Some(&token), just_over, 1009).await;
    every_socket_reads_close(addr, Some(&token), well_over, 1009).await;
    every_socket_reads_close(addr, Some(&token), far_over, 1009).await;
    every_socket_reads_close(addr, None, just_over, 1009).await;
    // The server still serves.
    let (mut alice, _) = Client::authed(addr, "alice", &token, &[]).await;
    alice.barrier().await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_text_gets_1007_and_valid_text_1003() {
    let server = TestServer::start(|c| c.max_sockets_per_user = 10 * SOCKETS as u32).await;
    let addr = server.addr;
    let token = register_and_login(addr, "alice").await;
    every_socket_reads_close(addr, Some(&token), invalid_utf8_text, 1007).await;
    every_socket_reads_close(addr, None, invalid_utf8_text, 1007).await;
    every_socket_reads_close(addr, Some(&token), || Message::Text("hello".into()), 1003).await;
    let (mut alice, _) = Client::authed(addr, "alice", &token, &[]).await;
    alice.barrier().await;
    server.stop().await;
}

#[tokio::test]
async fn a_socket_closes_when_its_token_expires() {
    // Long enough to register, log in and authenticate on a loaded machine;
    // the socket then outlives the token while the test waits on events.
    let server = TestServer::start(|c| c.token_ttl = Duration::from_secs(4)).await;
    let addr = server.addr;
    let token = register_and_login(addr, "alice").await;
    let (mut alice, welcome) = Client::authed(addr, "alice", &token, &[]).await;
    assert!(welcome.token_expires_at_ms > 0);
    // Still fully usable before the expiry.
    alice.barrier().await;
    let frame = within("TOKEN_EXPIRED", alice.next_frame()).await;
    assert_eq!(
        error_code(&frame),
        Some(ErrorCode::TokenExpired),
        "{frame:?}"
    );
    assert_eq!(frame.request_id, 0, "an expiry answers no request");
    assert!(!error_of(&frame).retryable);
    assert_eq!(alice.expect_close().await, Some(4403));
    // The expired token cannot open a new socket either.
    let mut late = Client::connect(addr).await;
    let reply = late
        .request(C::Auth(wire::Auth {
            token: token.clone(),
            ..Default::default()
        }))
        .await;
    assert_eq!(error_code(&reply), Some(ErrorCode::TokenExpired));
    assert_eq!(late.expect_close().await, Some(4403));
    server.stop().await;
}

/// Sends Auth on a new socket: the client on Welcome, else the Error, the
/// Auth's request id and the close code that followed.
async fn try_auth(
    addr: std::net::SocketAddr,
    token: &str,
) -> Result<Client, (wire::Error, u64, Option<u16>)> {
    let mut client = Client::connect(addr).await;
    let id = client
        .send(C::Auth(wire::Auth {
            token: token.to_owned(),
            ..Default::default()
        }))
        .await;
    let reply = client.next_frame().await;
    assert_eq!(
        reply.request_id, id,
        "the reply echoes the Auth's request id"
    );
    match reply.body {
        Some(S::Welcome(_)) => Ok(client),
        Some(S::Error(error)) => {
            let close = client.expect_close().await;
            Err((error, id, close))
        }
        other => panic!("expected Welcome or Error, got {other:?}"),
    }
}

#[tokio::test]
async fn sockets_beyond_the_per_user_cap_get_1013_atomically() {
    const CAP: u32 = 5;
    let server = TestServer::start(|c| c.max_sockets_per_user = CAP).await;
    let addr = server.addr;
    let token = register_and_login(addr, "alice").await;
    let bob_token = register_and_login(addr, "bob").await;

    // 4 × CAP concurrent Auths for one user: exactly CAP get Welcome.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 * CAP {
        let token = token.clone();
        tasks.spawn(async move { try_auth(addr, &token).await });
    }
    let mut open = Vec::new();
    let mut refused = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("auth task") {
            Ok(client) => open.push(client),
            Err((error, _, close)) => {
                assert_eq!(
                    ErrorCode::try_from(error.code),
                    Ok(ErrorCode::TooManyConnections)
                );
                assert!(error.retryable, "TOO_MANY_CONNECTIONS is retryable");
                assert_eq!(close, Some(1013));
                refused += 1;
            }
        }
    }
    assert_eq!(open.len(), CAP as usize, "sockets admitted");
    assert_eq!(refused, 3 * CAP as usize);

    // Another user is not affected.
    let (mut bob, _) = Client::authed(addr, "bob", &bob_token, &[]).await;
    bob.barrier().await;
    // The admitted sockets all work.
    for client in &mut open {
        client.barrier().await;
    }

    // Closing one frees a slot. The server forgets the socket just after
    // its TCP connection ends, so a retry may still be refused: retry a
    // bounded number of times, each a full round trip, never a sleep.
    let mut gone = open.pop().expect("an open socket");
    within("client close", gone.ws.close(None)).await.ok();
    while let Some(event) = within("server end", futures_util::StreamExt::next(&mut gone.ws)).await
    {
        if event.is_err() {
            break;
        }
    }
    let mut admitted = None;
    for _ in 0..1000 {
        match try_auth(addr, &token).await {
            Ok(client) => {
                admitted = Some(client);
                break;
            }
            Err((error, _, close)) => {
                assert_eq!(
                    ErrorCode::try_from(error.code),
                    Ok(ErrorCode::TooManyConnections)
                );
                assert_eq!(close, Some(1013));
            }
        }
    }
    let mut admitted = admitted.expect("a slot frees once a socket closes");
    admitted.barrier().await;
    // And the cap still holds.
    let Err((error, _, close)) = try_auth(addr, &token).await else {
        panic!("a sixth socket was admitted");
    };
    assert_eq!(
        ErrorCode::try_from(error.code),
        Ok(ErrorCode::TooManyConnections)
    );
    assert_eq!(close, Some(1013));
    server.stop().await;
}
