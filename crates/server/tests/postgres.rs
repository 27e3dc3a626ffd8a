//! `PostgresStore` against a real PostgreSQL (`CONFAB_TEST_DATABASE_URL`,
//! see `pg/mod.rs`): what only PostgreSQL can get wrong (several stores on
//! one database acting as nodes, lock order, key races, durability
//! settings, connection errors), and one end-to-end run of a real server on
//! it, restarted. The semantics every store shares are in the store
//! contract suite.

mod common;
mod pg;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{Client, TestServer, message_seqs, register_and_login, within};
use confab_protocol::names::{ClientMsgId, RoomName, Username};
use confab_protocol::rules::HistoryRange;
use confab_protocol::wire::MessageKind;
use confab_server::storage::postgres::{OpenError, PostgresStore};
use confab_server::storage::{
    AppendOutcome, NewMessage, RoomId, Store, StoreError, StoredMessage, UserId,
};
use pg::TestSchema;
use sqlx::Connection;

fn summary(outcomes: &[AppendOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| match o {
            AppendOutcome::Stored(m) => format!("stored {} {}", m.room, m.seq),
            AppendOutcome::Duplicate(m) => format!("duplicate {} {}", m.room, m.seq),
            AppendOutcome::Conflict => "conflict".to_owned(),
            AppendOutcome::Refused(r) => format!("refused {r:?}"),
        })
        .collect()
}

type User = (UserId, Username);
type Room = (RoomId, RoomName);

async fn user(store: &PostgresStore, name: &str) -> User {
    let name = Username::parse(name).expect("name");
    let id = store.create_user(&name, "phc", 1).await.expect("user");
    (id, name)
}

async fn room(store: &PostgresStore, name: &str, creator: &User) -> Room {
    let name = RoomName::parse(name).expect("name");
    let id = store
        .create_room(&name, "", "epoch", creator.0, 1)
        .await
        .expect("room");
    (id, name)
}

fn message(sender: &User, room: &Room, id: &str, text: &str, ts: i64) -> NewMessage {
    NewMessage {
        room_id: room.0,
        room: room.1.clone(),
        sender_id: sender.0,
        sender: sender.1.clone(),
        client_msg_id: ClientMsgId::parse(id).expect("id"),
        text: text.to_owned(),
        kind: MessageKind::Text,
        server_ts_ms: ts,
        relation: None,
    }
}

async fn heads(store: &PostgresStore) -> Vec<(String, u64, i64)> {
    store
        .load_rooms()
        .await
        .expect("rooms")
        .into_iter()
        .map(|r| (r.name.as_str().to_owned(), r.head_seq, r.last_activity_ms))
        .collect()
}

async fn all_messages(store: &PostgresStore, room: &Room) -> Vec<StoredMessage> {
    store
        .messages_between(&room.1, 0, u64::MAX >> 1, 100_000)
        .await
        .expect("messages")
}

/// §8.2/§8.5 through the Postgres write path: in-batch repeats, repeats of
/// stored keys (same or other room and text), per-room gapless seqs, and a
/// duplicate returning the original unchanged.
#[tokio::test]
async fn batches_assign_gapless_seqs_and_judge_repeats() {
    let Some(schema) = TestSchema::create("batches_assign_gapless_seqs_and_judge_repeats").await
    else {
        return;
    };
    let store = schema.open().await;
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let one = room(&store, "one", &alice).await;
    let two = room(&store, "two", &alice).await;
    let first = store
        .append_batch(&[
            message(&alice, &one, "a", "hello", 10),
            message(&alice, &one, "a", "hello", 10),
            message(&alice, &one, "a", "changed", 10),
            message(&bob, &one, "a", "hello", 11),
            message(&alice, &two, "b", "other", 12),
        ])
        .await
        .expect("commit");
    assert_eq!(
        summary(&first),
        [
            "stored one 1",
            "duplicate one 1",
            "conflict",
            "stored one 2",
            "stored two 1"
        ]
    );
    let AppendOutcome::Stored(original) = &first[0] else {
        panic!("stored")
    };
    assert_eq!(
        uuid::Uuid::parse_str(&original.message_id)
            .expect("a UUID")
            .get_version_num(),
        7,
        "message ids are UUIDv7"
    );
    let second = store
        .append_batch(&[
            message(&alice, &two, "c", "new", 20),
            message(&alice, &one, "a", "changed", 21),
            message(&alice, &one, "a", "hello", 22),
            message(&alice, &two, "a", "hello", 23),
            message(&alice, &one, "d", "new", 24),
            message(&bob, &two, "b", "other", 25),
            message(&alice, &one, "d", "new", 26),
        ])
        .await
        .expect("commit");
    assert_eq!(
        summary(&second),
        [
            "stored two 2",
            "conflict",
            "duplicate one 1",
            "conflict",
            "stored one 3",
            "stored two 3",
            "duplicate one 3",
        ]
    );
    let AppendOutcome::Duplicate(again) = &second[2] else {
        panic!("duplicate")
    };
    assert_eq!(again, original, "a duplicate is the original, unchanged");
    assert_eq!(
        heads(&store).await,
        [("one".to_owned(), 3, 24), ("two".to_owned(), 3, 25)]
    );
    let sent = store
        .sent_message(alice.0, &ClientMsgId::parse("a").expect("id"))
        .await
        .expect("read");
    assert_eq!(sent.as_ref(), Some(original));
    // A batch of repeats only: nothing written, heads unchanged.
    let repeats = store
        .append_batch(&[message(&alice, &one, "a", "hello", 99)])
        .await
        .expect("commit");
    assert_eq!(summary(&repeats), ["duplicate one 1"]);
    assert_eq!(
        heads(&store).await,
        [("one".to_owned(), 3, 24), ("two".to_owned(), 3, 25)]
    );
    let page = store
        .history(&one.1, HistoryRange::Before(3), 1, 0)
        .await
        .expect("history");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        (seqs, page.has_more, page.head_seq, page.epoch.as_str()),
        (vec![2], true, 3, "epoch")
    );
    store.close().await.expect("close");
}

/// A batch naming a room that does not exist fails whole: nothing of it is
/// stored, no seq is used, and the next batch continues from the old head.
#[tokio::test]
async fn a_failed_batch_stores_nothing_and_uses_no_seq() {
    let Some(schema) = TestSchema::create("a_failed_batch_stores_nothing_and_uses_no_seq").await
    else {
        return;
    };
    let store = schema.open().await;
    let alice = user(&store, "alice").await;
    let one = room(&store, "one", &alice).await;
    store
        .append_batch(&[message(&alice, &one, "a", "hello", 10)])
        .await
        .expect("commit");
    let gone = (one.0 + 1000, RoomName::parse("gone").expect("name"));
    let failed = store
        .append_batch(&[
            message(&alice, &one, "b", "lost", 20),
            message(&alice, &gone, "c", "nowhere", 21),
        ])
        .await;
    assert!(matches!(failed, Err(StoreError::NotFound)), "{failed:?}");
    let ghost = (alice.0 + 1000, Username::parse("ghost").expect("name"));
    let failed = store
        .append_batch(&[
            message(&alice, &one, "b", "lost", 20),
            message(&ghost, &one, "c", "who", 21),
        ])
        .await;
    assert!(
        matches!(failed, Err(StoreError::Database(_))),
        "the foreign key refuses an unknown sender: {failed:?}"
    );
    assert_eq!(heads(&store).await, [("one".to_owned(), 1, 10)]);
    let retried = store
        .append_batch(&[message(&alice, &one, "b", "lost", 30)])
        .await
        .expect("commit");
    assert_eq!(summary(&retried), ["stored one 2"]);
    store.close().await.expect("close");
}

/// Two stores on one database act as two nodes. Each runs several writers
/// whose batches name both rooms, in opposite orders on the two nodes:
/// with the heads locked in id order nobody deadlocks, and every room's
/// seqs come out 1..=n without a gap or a repeat, one row per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_writing_the_same_rooms_keep_seqs_gapless() {
    let Some(schema) =
        TestSchema::create("two_nodes_writing_the_same_rooms_keep_seqs_gapless").await
    else {
        return;
    };
    const WRITERS_PER_NODE: usize = 3;
    const BATCHES: usize = 20;
    let nodes = [Arc::new(schema.open().await), Arc::new(schema.open().await)];
    let alice = user(&nodes[0], "alice").await;
    let one = room(&nodes[0], "one", &alice).await;
    let two = room(&nodes[0], "two", &alice).await;
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..WRITERS_PER_NODE {
            let node = Arc::clone(node);
            let (alice, one, two) = (alice.clone(), one.clone(), two.clone());
            tasks.push(tokio::spawn(async move {
                let (first, second) = if n == 0 { (&one, &two) } else { (&two, &one) };
                for b in 0..BATCHES {
                    let id = |k: usize| format!("n{n}-w{w}-b{b}-{k}");
                    let batch = [
                        message(&alice, first, &id(0), "x", 1),
                        message(&alice, second, &id(1), "y", 1),
                        message(&alice, first, &id(2), "z", 1),
                    ];
                    let outcomes = node.append_batch(&batch).await.expect("commit");
                    assert!(
                        outcomes
                            .iter()
                            .all(|o| matches!(o, AppendOutcome::Stored(_))),
                        "{outcomes:?}"
                    );
                }
            }));
        }
    }
    for task in tasks {
        within("a writer finishes", task).await.expect("no panic");
    }
    let total = 2 * WRITERS_PER_NODE * BATCHES * 3;
    let mut keys = BTreeSet::new();
    let mut count = 0;
    for room in [&one, &two] {
        let stored = all_messages(&nodes[1], room).await;
        let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "room {} is gapless", room.1);
        count += stored.len();
        keys.extend(stored.into_iter().map(|m| m.client_msg_id));
    }
    assert_eq!((count, keys.len()), (total, total), "one row per key");
    for node in nodes {
        node.close().await.expect("close");
    }
}

/// The race the head lock cannot serialise: another node's uncommitted
/// transaction holds the same key in another room. Our batch's INSERT waits
/// on the UNIQUE index; when the other commits, ours fails on the
/// constraint, rolls back whole, is planned again and answers Conflict
/// (§8.5), storing nothing and using no seq.
#[tokio::test]
async fn losing_a_key_race_to_another_node_replans_the_batch() {
    let Some(schema) =
        TestSchema::create("losing_a_key_race_to_another_node_replans_the_batch").await
    else {
        return;
    };
    let store = schema.open().await;
    let alice = user(&store, "alice").await;
    let one = room(&store, "one", &alice).await;
    let two = room(&store, "two", &alice).await;
    store
        .append_batch(&[message(&alice, &one, "before", "x", 1)])
        .await
        .expect("commit");

    // "Node B": stores key k in room two, and does not commit yet.
    let mut other = schema.connect().await;
    let other_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut other)
        .await
        .expect("pid");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query("SELECT head_seq FROM rooms WHERE id = $1 FOR UPDATE")
        .bind(two.0)
        .execute(&mut *tx)
        .await
        .expect("lock two");
    sqlx::query(
        "INSERT INTO messages (room_id, seq, message_id, sender_id, client_msg_id, text, kind, server_ts_ms) \
         VALUES ($1, 1, 'other-node', $2, 'k', 'from b', 1, 5)",
    )
    .bind(two.0)
    .bind(alice.0)
    .execute(&mut *tx)
    .await
    .expect("insert on b");
    sqlx::query("UPDATE rooms SET head_seq = 1, last_activity_ms = 5 WHERE id = $1")
        .bind(two.0)
        .execute(&mut *tx)
        .await
        .expect("head on b");

    // "Node A": the same key in room one, plus a new message.
    let batch = vec![
        message(&alice, &one, "k", "from a", 6),
        message(&alice, &one, "fresh", "also", 7),
    ];
    let store = Arc::new(store);
    let appending = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.append_batch(&batch).await }
    });
    // Wait until a backend is blocked by B. Of A's statements only the
    // INSERT can be (B locked no head of A's, and reads never block), so
    // A's first attempt read the key as unused and must replan.
    let mut watcher = schema.connect().await;
    within("node A's insert to wait for node B", async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(other_pid)
            .fetch_one(&mut watcher)
            .await
            .expect("pg_locks");
            if waiting > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    tx.commit().await.expect("commit on b");
    let outcomes = within("node A's batch", appending)
        .await
        .expect("no panic")
        .expect("the batch succeeds after replanning");
    assert_eq!(summary(&outcomes), ["conflict", "stored one 2"]);
    assert_eq!(
        heads(&store).await,
        [("one".to_owned(), 2, 7), ("two".to_owned(), 1, 5)]
    );
    let keys: Vec<String> = all_messages(&store, &one)
        .await
        .into_iter()
        .map(|m| m.client_msg_id)
        .collect();
    assert_eq!(keys, ["before", "fresh"], "k is stored once, by node B");
    store.close().await.expect("close");
}

/// Creators racing for one room name on two nodes: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_room_creations_have_exactly_one_winner() {
    let Some(schema) = TestSchema::create("racing_room_creations_have_exactly_one_winner").await
    else {
        return;
    };
    let nodes = [Arc::new(schema.open().await), Arc::new(schema.open().await)];
    let alice = user(&nodes[0], "alice").await;
    let name = RoomName::parse("contested").expect("name");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let node = Arc::clone(&nodes[i % 2]);
            let name = name.clone();
            let creator = alice.0;
            tokio::spawn(async move {
                node.create_room(&name, "", &format!("epoch-{i}"), creator, 1)
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match within("a creation", task).await.expect("no panic") {
            Ok(_) => won += 1,
            Err(StoreError::AlreadyExists) => {}
            Err(other) => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(won, 1);
    let rooms = nodes[1].load_rooms().await.expect("rooms");
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].members, std::slice::from_ref(&alice.1));
    for node in nodes {
        node.close().await.expect("close");
    }
}

/// Users, tokens and membership behave as on SQLite: duplicate names are
/// AlreadyExists, revocation happens once, add/remove are idempotent.
#[tokio::test]
async fn users_tokens_and_members() {
    let Some(schema) = TestSchema::create("users_tokens_and_members").await else {
        return;
    };
    let store = schema.open().await;
    let alice = user(&store, "alice").await;
    let again = store.create_user(&alice.1, "phc", 2).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists)), "{again:?}");
    let creds = store
        .user_credentials("alice")
        .await
        .expect("read")
        .expect("alice exists");
    assert_eq!((creds.id, creds.password_hash.as_str()), (alice.0, "phc"));
    assert!(
        store
            .user_credentials("nobody")
            .await
            .expect("read")
            .is_none()
    );

    store
        .insert_token("h1", alice.0, 10, 1000)
        .await
        .expect("token");
    let token = store.token("h1").await.expect("read").expect("token");
    assert_eq!(
        (token.user_id, token.expires_ms, token.revoked),
        (alice.0, 1000, false)
    );
    assert!(store.revoke_token("h1", 20).await.expect("revoke"));
    assert!(!store.revoke_token("h1", 20).await.expect("revoke"), "once");
    assert!(
        store
            .token("h1")
            .await
            .expect("read")
            .expect("token")
            .revoked
    );
    store
        .insert_token("h2", alice.0, 10, 15)
        .await
        .expect("token");
    assert!(
        !store.revoke_token("h2", 20).await.expect("revoke"),
        "an expired token is not live"
    );

    let bob = user(&store, "bob").await;
    let one = room(&store, "one", &alice).await;
    store.add_member(one.0, bob.0, 5).await.expect("add");
    store.add_member(one.0, bob.0, 6).await.expect("add again");
    let mut members = store.load_rooms().await.expect("rooms")[0].members.clone();
    members.sort();
    assert_eq!(members, [alice.1.clone(), bob.1.clone()]);
    store.remove_member(one.0, bob.0).await.expect("remove");
    store
        .remove_member(one.0, bob.0)
        .await
        .expect("remove again");
    assert_eq!(
        store.load_rooms().await.expect("rooms")[0].members,
        std::slice::from_ref(&alice.1)
    );
    store.close().await.expect("close");
}

/// An ack must mean durable: a session with synchronous_commit=off is
/// refused at open with a message saying what to change.
#[tokio::test]
async fn open_refuses_synchronous_commit_off() {
    let Some(schema) = TestSchema::create("open_refuses_synchronous_commit_off").await else {
        return;
    };
    let url = format!("{}&options[synchronous_commit]=off", schema.url());
    let err = PostgresStore::open(&url).await.expect_err("refused");
    assert!(matches!(err, OpenError::NotDurable { .. }), "{err:?}");
    assert!(err.to_string().contains("synchronous_commit"), "{err}");
}

/// A wrong URL or an unreachable server is a typed start error whose
/// message says where it tried, never the password.
#[tokio::test]
async fn open_errors_say_what_to_check_without_the_password() {
    let err = PostgresStore::open("postgres://confab:s3cret-pw@127.0.0.1:1/confab")
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(matches!(err, OpenError::Connect { .. }), "{err:?}");
    assert!(text.contains("127.0.0.1:1/confab"), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
    let err = PostgresStore::open("postgres://confab@127.0.0.1:notaport/confab")
        .await
        .expect_err("bad port");
    assert!(matches!(err, OpenError::Url(_)), "{err:?}");
    assert!(!err.to_string().contains("notaport/confab"), "{err}");
}

/// `--database-url postgres://…` selects PostgreSQL: the server's start
/// fails with the typed PostgreSQL error (not SQLite's "cannot open the
/// database") when nothing listens there. Needs no PostgreSQL.
#[tokio::test]
async fn a_postgres_url_selects_the_postgres_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = confab_server::Config::for_data_dir(dir.path());
    config.database_url = Some("postgresql://confab@127.0.0.1:1/confab".to_owned());
    let err = confab_server::Server::bind(config)
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(
            err,
            confab_server::StartError::Postgres(OpenError::Connect { .. })
        ),
        "{err:?}"
    );
    assert!(
        !dir.path().join("confab.db").exists(),
        "no SQLite file is created"
    );
}

/// End to end: a real server on a postgres:// URL, two clients chatting;
/// the server is restarted on the same database; the user's token still
/// works, Welcome shows the head, Resume replays exactly what was missed,
/// a resend gets the original seq, and new messages continue the seqs.
#[tokio::test]
async fn a_server_on_postgres_restarts_and_resume_loses_nothing() {
    let Some(schema) =
        TestSchema::create("a_server_on_postgres_restarts_and_resume_loses_nothing").await
    else {
        return;
    };
    let url = schema.url();
    let server = TestServer::start(|c| c.database_url = Some(url.clone())).await;
    let addr = server.addr;
    let alice_token = register_and_login(addr, "alice").await;
    let bob_token = register_and_login(addr, "bob").await;
    let (mut alice, _) = Client::authed(addr, "alice", &alice_token, &[]).await;
    let (mut bob, _) = Client::authed(addr, "bob", &bob_token, &[]).await;
    let epoch = alice.create_room("general").await.epoch;
    bob.join_room("general").await;
    for i in 1..=3 {
        alice
            .say("general", &format!("a{i}"), &format!("hi {i}"))
            .await;
    }
    let seen = message_seqs(&bob.barrier().await);
    assert_eq!(seen.last(), Some(&("general".to_owned(), 3)));
    drop(bob);
    for i in 4..=6 {
        alice
            .say("general", &format!("a{i}"), &format!("while away {i}"))
            .await;
    }
    drop(alice);
    server.stop().await;

    let url = schema.url();
    let server = TestServer::start(|c| c.database_url = Some(url.clone())).await;
    let addr = server.addr;
    let (mut bob, welcome) = Client::authed(addr, "bob", &bob_token, &[]).await;
    let listed = welcome
        .rooms
        .iter()
        .find(|r| r.name == "general")
        .expect("Welcome lists general after the restart");
    assert_eq!(
        (listed.head_seq, listed.epoch.as_str()),
        (6, epoch.as_str())
    );
    let resumed = bob.resume(vec![("general", 3, &epoch)]).await;
    assert_eq!(
        (resumed.rooms[0].head_seq, resumed.rooms[0].replayed),
        (6, 3)
    );
    let replayed = message_seqs(&bob.take_buffered());
    assert_eq!(
        replayed,
        (4..=6)
            .map(|s| ("general".to_owned(), s))
            .collect::<Vec<_>>()
    );
    let (mut alice, _) = Client::authed(addr, "alice", &alice_token, &[]).await;
    let resent = alice.say("general", "a6", "while away 6").await;
    assert_eq!(
        resent.seq, 6,
        "a resend after the restart gets the original seq"
    );
    let next = alice.say("general", "a7", "after the restart").await;
    assert_eq!(next.seq, 7);
    let live = message_seqs(&bob.barrier().await);
    assert_eq!(
        live,
        [("general".to_owned(), 7)],
        "the resend is not pushed again"
    );
    server.stop().await;
}
