//! Fan-out across rooms (§8.4) and idempotent sends (§8.5), against a real
//! server with real SQLite.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Client, TestServer, error_code, message_seqs, messages, open_db};
use confab_protocol::wire::{ErrorCode, client_frame::Body as C, server_frame::Body as S};
use futures_util::future::join_all;

/// Three rooms, five users with overlapping memberships, everyone sending
/// concurrently: each message reaches every connection of its room's
/// members exactly once, in seq order, and nobody else.
#[tokio::test]
async fn every_member_gets_every_message_of_its_rooms_exactly_once_in_order() {
    let server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    let rooms: BTreeMap<&str, Vec<&str>> = [
        ("alpha", vec!["u1", "u2", "u3"]),
        ("beta", vec!["u3", "u4", "u5"]),
        ("gamma", vec!["u1", "u5"]),
    ]
    .into_iter()
    .collect();
    let users = ["u1", "u2", "u3", "u4", "u5"];
    let mut clients = Vec::new();
    for user in users {
        clients.push(Client::new_user(addr, user).await.0);
    }
    // The first member creates each room; the others join. Every membership
    // is made on the connection that will receive, which activates it.
    for (room, members) in &rooms {
        for (i, member) in members.iter().enumerate() {
            let client = clients
                .iter_mut()
                .find(|c| c.name == *member)
                .expect("member");
            let info = if i == 0 {
                client.create_room(room).await
            } else {
                client.join_room(room).await
            };
            assert_eq!(info.head_seq, 0);
        }
    }

    const PER_ROOM: usize = 6;
    let rooms_ref = &rooms;
    let clients = join_all(clients.into_iter().map(|mut client| async move {
        let my_rooms: Vec<&str> = rooms_ref
            .iter()
            .filter(|(_, m)| m.contains(&client.name.as_str()))
            .map(|(r, _)| *r)
            .collect();
        for i in 0..PER_ROOM {
            for room in &my_rooms {
                let id = format!("{}-{room}-{i}", client.name);
                client
                    .say(
                        room,
                        &id,
                        &format!("hello {room} #{i} from {}", client.name),
                    )
                    .await;
            }
        }
        client
    }))
    .await;

    // Every ack is in, so every push is queued ahead of the barrier's Pong.
    let expected_count: BTreeMap<&str, u64> = rooms
        .iter()
        .map(|(room, members)| (*room, (members.len() * PER_ROOM) as u64))
        .collect();
    for mut client in clients {
        let frames = client.barrier().await;
        let seen = message_seqs(&frames);
        let my_rooms: BTreeSet<&str> = rooms
            .iter()
            .filter(|(_, m)| m.contains(&client.name.as_str()))
            .map(|(r, _)| *r)
            .collect();
        for (room, _) in &seen {
            assert!(
                my_rooms.contains(room.as_str()),
                "{} got a message of {room}",
                client.name
            );
        }
        for room in &my_rooms {
            let seqs: Vec<u64> = seen
                .iter()
                .filter(|(r, _)| r == room)
                .map(|(_, s)| *s)
                .collect();
            let want: Vec<u64> = (1..=expected_count[room]).collect();
            assert_eq!(
                seqs, want,
                "{} in {room}: exactly once, in seq order",
                client.name
            );
        }
        // Each user's own texts came back with its name and client_msg_id.
        for m in messages(&frames).iter().filter(|m| m.sender == client.name) {
            assert!(m.client_msg_id.starts_with(&client.name));
        }
    }
    server.stop().await;
}

/// A repeated client_msg_id returns the original ack with duplicate=true and
/// stores one row; reusing it for other text is a conflict; two identical
/// sends pipelined into one batch still store once.
#[tokio::test]
async fn idempotent_resend_returns_the_original_and_stores_once() {
    let server = TestServer::start(|_| {}).await;
    let (mut alice, _) = Client::new_user(server.addr, "alice").await;
    let (mut bob, _) = Client::new_user(server.addr, "bob").await;
    alice.create_room("general").await;
    bob.join_room("general").await;

    let first = alice.say("general", "dup-1", "only once").await;
    assert!(!first.duplicate);
    assert_eq!(first.seq, 1);
    let again = alice.say("general", "dup-1", "only once").await;
    assert!(again.duplicate);
    assert_eq!(
        (again.seq, &again.message_id, again.server_ts_ms),
        (first.seq, &first.message_id, first.server_ts_ms)
    );
    let conflict = alice
        .send_message("general", "dup-1", "something else")
        .await;
    assert_eq!(error_code(&conflict), Some(ErrorCode::IdempotencyConflict));

    // Two identical sends without waiting: the writer may take both into
    // one transaction; the second must see the first.
    let send = |id: &str| {
        C::SendMessage(confab_protocol::wire::SendMessage {
            room: "general".into(),
            client_msg_id: id.into(),
            text: "pipelined".into(),
            kind: 0,
            relation: None,
        })
    };
    let r1 = alice.send(send("dup-2")).await;
    let r2 = alice.send(send("dup-2")).await;
    let a1 = alice
        .expect("first pipelined ack", |f| f.request_id == r1)
        .await;
    let a2 = alice
        .expect("second pipelined ack", |f| f.request_id == r2)
        .await;
    let (Some(S::SendAck(a1)), Some(S::SendAck(a2))) = (a1.body, a2.body) else {
        panic!("both pipelined sends are acked");
    };
    assert_eq!((a1.duplicate, a2.duplicate), (false, true));
    assert_eq!(a1.seq, a2.seq);

    // Bob saw seq 1 and 2 once each: repeats are not fanned out.
    let seen = message_seqs(&bob.barrier().await);
    assert_eq!(seen, vec![("general".into(), 1), ("general".into(), 2)]);

    // Another user may use the same key.
    let bobs = bob.say("general", "dup-1", "only once").await;
    assert!(!bobs.duplicate);
    assert_eq!(bobs.seq, 3);

    let db = open_db(&server.db_path()).await;
    let rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages m JOIN users u ON u.id = m.sender_id \
         WHERE u.username = 'alice' AND m.client_msg_id IN ('dup-1', 'dup-2')",
    )
    .fetch_one(&db)
    .await
    .expect("count");
    assert_eq!(rows, 2, "one row per (sender, client_msg_id)");
    db.close().await;
    server.stop().await;
}
