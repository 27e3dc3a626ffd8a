//! Rooms (§7), history (§9), presence and typing (§11), liveness (§12.1)
//! and the operational endpoints (§5.6).

mod common;

use std::time::Duration;

use common::{Client, TestServer, error_code, http, message_seqs, register_and_login};
use confab_protocol::wire::{
    self, ErrorCode, ServerFrame, client_frame::Body as C, presence, room_list_update,
    server_frame::Body as S,
};

fn presences(frames: &[ServerFrame]) -> Vec<(String, String, presence::Kind)> {
    frames
        .iter()
        .filter_map(|f| match &f.body {
            Some(S::Presence(p)) => Some((
                p.room.clone(),
                p.username.clone(),
                presence::Kind::try_from(p.kind).expect("known kind"),
            )),
            _ => None,
        })
        .collect()
}

fn typings(frames: &[ServerFrame]) -> Vec<(String, bool)> {
    frames
        .iter()
        .filter_map(|f| match &f.body {
            Some(S::Typing(t)) => Some((t.username.clone(), t.active)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn room_list_members_and_history() {
    let server = TestServer::start(|c| c.limits.max_history_page = 4).await;
    let addr = server.addr;
    let (mut alice, _) = Client::new_user(addr, "alice").await;
    let bob_token = register_and_login(addr, "bob").await;
    let (mut bob, welcome) =
        Client::authed(addr, "bob", &bob_token, &["room-list-push", "teleport"]).await;
    assert_eq!(
        welcome.capabilities,
        vec!["room-list-push"],
        "the intersection (§3.4)"
    );
    assert_eq!(welcome.limits.as_ref().map(|l| l.max_history_page), Some(4));
    let list = bob
        .request(C::ListRooms(wire::ListRooms {
            subscribe: true,
            ..wire::ListRooms::default()
        }))
        .await;
    assert!(matches!(list.body, Some(S::RoomList(ref l)) if l.rooms.is_empty()));

    // ADDED on create, CHANGED on join and on new messages.
    alice.create_room("quiet").await;
    alice.create_room("busy").await;
    let update = |f: &ServerFrame, kind: room_list_update::Kind, room: &str| matches!(&f.body, Some(S::RoomListUpdate(u)) if u.kind == kind as i32 && u.room.as_ref().is_some_and(|r| r.name == room));
    bob.expect("ADDED quiet", |f| {
        update(f, room_list_update::Kind::Added, "quiet")
    })
    .await;
    bob.expect("ADDED busy", |f| {
        update(f, room_list_update::Kind::Added, "busy")
    })
    .await;
    let joined = bob.join_room("busy").await;
    assert_eq!((joined.member_count, joined.online_count), (2, 2));
    for i in 1..=10 {
        alice
            .say("busy", &format!("b{i}"), &format!("message {i}"))
            .await;
    }
    bob.expect("CHANGED busy", |f| {
        update(f, room_list_update::Kind::Changed, "busy")
    })
    .await;

    // Sorted by last activity, newest first.
    let list = bob.request(C::ListRooms(wire::ListRooms::default())).await;
    let Some(S::RoomList(list)) = list.body else {
        panic!("room list")
    };
    let names: Vec<&str> = list.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["busy", "quiet"]);
    assert_eq!(list.rooms[0].head_seq, 10);

    let members = bob
        .request(C::ListMembers(wire::ListMembers {
            room: "busy".into(),
        }))
        .await;
    let Some(S::MemberList(members)) = members.body else {
        panic!("member list")
    };
    let names: Vec<(&str, bool)> = members
        .members
        .iter()
        .map(|m| (m.username.as_str(), m.online))
        .collect();
    assert_eq!(names, [("alice", true), ("bob", true)]);

    // History: latest page, then backwards, then forwards (§9).
    let fetch = |anchor, limit| {
        C::FetchHistory(wire::FetchHistory {
            room: "busy".into(),
            anchor,
            limit,
        })
    };
    use wire::fetch_history::Anchor;
    let page = |frame: ServerFrame| match frame.body {
        Some(S::HistoryPage(p)) => (
            p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            p.has_more,
            p.head_seq,
        ),
        other => panic!("history page: {other:?}"),
    };
    assert_eq!(
        page(bob.request(fetch(None, 0)).await),
        (vec![7, 8, 9, 10], true, 10)
    );
    assert_eq!(
        page(bob.request(fetch(Some(Anchor::BeforeSeq(7)), 100)).await),
        (vec![3, 4, 5, 6], true, 10)
    );
    assert_eq!(
        page(bob.request(fetch(Some(Anchor::BeforeSeq(3)), 4)).await),
        (vec![1, 2], false, 10)
    );
    assert_eq!(
        page(bob.request(fetch(Some(Anchor::AfterSeq(8)), 4)).await),
        (vec![9, 10], false, 10)
    );

    // Leaving deactivates the room: no more messages, and no more access.
    let left = bob
        .request(C::LeaveRoom(wire::LeaveRoom {
            name: "busy".into(),
        }))
        .await;
    assert!(matches!(left.body, Some(S::RoomLeft(ref l)) if l.name == "busy"));
    bob.barrier().await;
    alice.say("busy", "b11", "bob is gone").await;
    assert!(
        message_seqs(&bob.barrier().await).is_empty(),
        "no messages after leaving"
    );
    let again = bob
        .request(C::LeaveRoom(wire::LeaveRoom {
            name: "busy".into(),
        }))
        .await;
    assert_eq!(error_code(&again), Some(ErrorCode::NotAMember));
    let missing = bob
        .request(C::JoinRoom(wire::JoinRoom {
            name: "nowhere".into(),
        }))
        .await;
    assert_eq!(error_code(&missing), Some(ErrorCode::RoomNotFound));
    let taken = bob
        .request(C::CreateRoom(wire::CreateRoom {
            name: "busy".into(),
            topic: String::new(),
        }))
        .await;
    assert_eq!(error_code(&taken), Some(ErrorCode::RoomExists));
    drop((alice, bob));
    server.stop().await;
}

#[tokio::test]
async fn presence_and_typing_reach_active_members_with_the_capability() {
    let server = TestServer::start(|c| c.limits.typing_ttl = Duration::from_millis(300)).await;
    let addr = server.addr;
    let caps = ["presence", "typing"];
    let alice_token = register_and_login(addr, "alice").await;
    let bob_token = register_and_login(addr, "bob").await;
    let (mut alice, _) = Client::authed(addr, "alice", &alice_token, &caps).await;
    let (mut bob, _) = Client::authed(addr, "bob", &bob_token, &caps).await;
    let (mut plain, _) = Client::authed(addr, "bob", &bob_token, &[]).await;
    alice.create_room("general").await;
    bob.join_room("general").await;
    plain.join_room("general").await;
    let seen = presences(&alice.barrier().await);
    assert_eq!(
        seen,
        [(
            "general".to_owned(),
            "bob".to_owned(),
            presence::Kind::Joined
        )],
        "one JOINED"
    );

    // A second socket of a user who is online: no ONLINE. Carol's first: ONLINE.
    let carol_token = register_and_login(addr, "carol").await;
    let (mut carol, _) = Client::authed(addr, "carol", &carol_token, &caps).await;
    carol.join_room("general").await;
    carol.barrier().await;
    drop(carol);
    let frames = alice.expect("carol OFFLINE", |f| matches!(&f.body, Some(S::Presence(p)) if p.username == "carol" && p.kind == presence::Kind::Offline as i32)).await;
    assert_eq!(frames.request_id, 0);
    let (mut carol, _) = Client::authed(addr, "carol", &carol_token, &caps).await;
    alice
        .expect("carol ONLINE", |f| matches!(&f.body, Some(S::Presence(p)) if p.username == "carol" && p.kind == presence::Kind::Online as i32))
        .await;
    // Carol's new socket has not activated the room: it gets nothing for it.
    assert!(presences(&carol.barrier().await).is_empty());

    // Typing: to the other members with the capability, not to the typer.
    let r = alice
        .send(C::SetTyping(wire::SetTyping {
            room: "general".into(),
            active: true,
        }))
        .await;
    let started = alice.barrier().await;
    assert!(
        started.iter().all(|f| f.request_id != r),
        "no reply to SetTyping"
    );
    assert!(typings(&started).is_empty(), "not to the typer");
    let typing = bob
        .expect("typing", |f| matches!(f.body, Some(S::Typing(_))))
        .await;
    let Some(S::Typing(t)) = typing.body else {
        unreachable!()
    };
    assert_eq!(
        (t.username.as_str(), t.active, t.ttl_ms),
        ("alice", true, 300)
    );
    // The TTL passes without a renewal: active=false is pushed.
    let stopped = bob
        .expect(
            "typing expiry",
            |f| matches!(&f.body, Some(S::Typing(t)) if !t.active),
        )
        .await;
    assert_eq!(stopped.request_id, 0);
    // A sent message ends typing.
    alice
        .send(C::SetTyping(wire::SetTyping {
            room: "general".into(),
            active: true,
        }))
        .await;
    alice.say("general", "t1", "done typing").await;
    let frames = bob.barrier().await;
    assert_eq!(
        typings(&frames),
        [("alice".to_owned(), true), ("alice".to_owned(), false)]
    );
    // The socket without capabilities got the message but no typing or presence.
    let frames = plain.barrier().await;
    assert!(typings(&frames).is_empty() && presences(&frames).is_empty());
    assert_eq!(message_seqs(&frames), [("general".to_owned(), 1)]);
    drop((alice, bob, plain, carol));
    server.stop().await;
}

#[tokio::test]
async fn a_silent_peer_is_closed_4504_and_pings_keep_a_reader_alive() {
    let server = TestServer::start(|c| {
        c.limits.heartbeat_interval = Duration::from_millis(50);
        c.limits.idle_timeout = Duration::from_millis(1000);
    })
    .await;
    let addr = server.addr;
    let token = register_and_login(addr, "alice").await;
    // A client that reads answers the server's WebSocket pings (tungstenite
    // does so automatically), which counts as liveness: it stays open
    // across several idle timeouts' worth of server pings.
    let (mut live, _) = Client::authed(addr, "alice", &token, &[]).await;
    let mut pings = 0;
    // 30 pings span 1.5 idle timeouts.
    while pings < 30 {
        match common::within("a server ping", futures_util::StreamExt::next(&mut live.ws)).await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    live.barrier().await;

    // A peer that never answers: a hand-rolled WebSocket client on a raw
    // TCP stream, which (unlike tungstenite) does not answer pings.
    let code = silent_peer_close_code(addr, &token).await;
    assert_eq!(code, 4504);
    drop(live);
    server.stop().await;
}

/// Opens a socket, authenticates, then only reads raw frames, never
/// answering a ping, until the server's Close; returns its code.
async fn silent_peer_close_code(addr: std::net::SocketAddr, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let upgrade = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: confab.v1\r\n\r\n"
    );
    tcp.write_all(upgrade.as_bytes())
        .await
        .expect("upgrade request");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(
            common::within("upgrade response", tcp.read_u8())
                .await
                .expect("read"),
        );
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // One masked binary frame with Auth (mask key 0: the payload is sent as is).
    let auth = confab_protocol::codec::encode_client_frame(&wire::ClientFrame::request(
        1,
        C::Auth(wire::Auth {
            token: token.to_owned(),
            ..Default::default()
        }),
    ));
    let mut frame = vec![0x82, 0x80 | 126];
    frame.extend_from_slice(&(auth.len() as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&auth);
    tcp.write_all(&frame).await.expect("auth frame");
    loop {
        let (opcode, payload) = common::within("a raw frame", async {
            let b0 = tcp.read_u8().await.expect("read");
            let b1 = tcp.read_u8().await.expect("read");
            let len = match b1 & 0x7f {
                126 => u64::from(tcp.read_u16().await.expect("read")),
                127 => tcp.read_u64().await.expect("read"),
                n => u64::from(n),
            };
            let mut payload = vec![0; len as usize];
            tcp.read_exact(&mut payload).await.expect("read payload");
            (b0 & 0x0f, payload)
        })
        .await;
        if opcode == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[tokio::test]
async fn health_and_metrics() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let health = http(addr, "GET", "/healthz", "", &[]).await;
    assert_eq!((health.status, &health.body[..]), (200, &b"ok"[..]));
    let (mut alice, _) = Client::new_user(addr, "alice").await;
    alice.create_room("general").await;
    alice.say("general", "m1", "counted").await;
    let metrics = http(addr, "GET", "/metrics", "", &[]).await;
    let text = String::from_utf8(metrics.body.to_vec()).expect("UTF-8");
    for line in [
        "confab_sockets_open 1",
        "confab_rooms 1",
        "confab_messages_stored_total 1",
        "confab_fanout_deliveries_total 1",
        "confab_send_to_deliver_seconds_count 1",
        "confab_slow_consumer_closes_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    drop(alice);
    server.stop().await;
}
