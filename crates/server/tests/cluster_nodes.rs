//! Cluster mode, in-process: two nodes on one PostgreSQL schema and one
//! NATS, each a real server on 127.0.0.1:0. The budgets of §12.5 and §15.3
//! are the user's, not the node's (a user who spreads requests over nodes
//! gets one budget); logout, typing, Welcome and delivery cross nodes. (The multi-process cluster tests, with SIGKILL and a
//! cut NATS, are in the workspace's `tests/cluster.rs`.)

mod common;
mod pg;

use std::time::{Duration, Instant};

use common::{Client, PASSWORD, TestServer, within};
use confab_protocol::wire::{ErrorCode, server_frame::Body};
use confab_server::cluster::ClusterConfig;

/// The NATS URL, or `None` (after saying what to set) to skip.
fn nats_url(test: &str) -> Option<String> {
    match std::env::var("CONFAB_TEST_NATS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var(pg::REQUIRE_VAR).as_deref() == Ok("1") => panic!(
            "{test}: {}=1 but CONFAB_TEST_NATS_URL is not set; set it, e.g. nats://127.0.0.1:4222",
            pg::REQUIRE_VAR
        ),
        _ => {
            println!(
                "{test}: skipped: set CONFAB_TEST_NATS_URL (e.g. nats://127.0.0.1:4222) to run it"
            );
            None
        }
    }
}

/// Two nodes of a cluster of their own, on a schema of their own.
struct Nodes {
    a: TestServer,
    b: TestServer,
    cluster: ClusterConfig,
    /// Dropped (the schema with it) after the nodes stopped.
    _schema: pg::TestSchema,
}

/// Starts two nodes for `test`, or `None` (after saying what to set) when
/// PostgreSQL or NATS is not configured.
async fn two_nodes(test: &str, tune: impl Fn(&mut confab_server::Config)) -> Option<Nodes> {
    let nats = nats_url(test)?;
    let schema = pg::TestSchema::create(test).await?;
    let mut cluster = ClusterConfig::new(nats);
    cluster.name = format!("t{}", uuid::Uuid::new_v4().simple());
    cluster.sync_interval = Duration::from_millis(200);
    let start = || {
        TestServer::start(|config| {
            config.database_url = Some(schema.url());
            config.cluster = Some(cluster.clone());
            tune(config);
        })
    };
    let a = start().await;
    let b = start().await;
    Some(Nodes {
        a,
        b,
        cluster,
        _schema: schema,
    })
}

impl Nodes {
    /// Stops both nodes, then deletes the cluster's JetStream stream (NATS
    /// keeps a memory reservation for it until then).
    async fn finish(self) {
        self.a.stop().await;
        self.b.stop().await;
        within(
            "deleting the stream",
            confab_server::cluster::delete_stream(&self.cluster),
        )
        .await
        .expect("the cluster's stream is deleted");
    }
}

/// A socket on `node`, authenticated with `token` and `caps`.
async fn connected(node: std::net::SocketAddr, token: &str, caps: &[&str]) -> Client {
    let mut client = Client::connect(node).await;
    client.auth(token, caps).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_send_budget_is_shared_by_every_node() {
    let test = "a_users_send_budget_is_shared_by_every_node";
    let Some(nodes) = two_nodes(test, |config| {
        config.limits.send_rate_per_sec = 1;
        config.limits.send_burst = 4;
    })
    .await
    else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let token = common::register_and_login(a.addr, "ann").await;
    let mut on_a = connected(a.addr, &token, &[]).await;
    on_a.create_room("lobby").await;
    let mut on_b = connected(b.addr, &token, &[]).await;

    let started = Instant::now();
    let mut accepted = 0u64;
    let mut limited = 0u64;
    for n in 0..12 {
        // Alternating nodes: a per-node budget would let 8 through at once.
        let client = if n % 2 == 0 { &mut on_a } else { &mut on_b };
        let reply = within(
            "a send reply",
            client.send_message("lobby", &format!("m{n}"), "hi"),
        )
        .await;
        match reply.body {
            Some(Body::SendAck(_)) => accepted += 1,
            Some(Body::Error(e)) if e.code == ErrorCode::RateLimited as i32 => limited += 1,
            other => panic!("send {n}: expected SendAck or RATE_LIMITED, got {other:?}"),
        }
    }
    // The burst, plus what one token a second refilled meanwhile.
    let refilled = started.elapsed().as_secs() + 1;
    assert!(
        accepted <= 4 + refilled,
        "{accepted} sends accepted over two nodes with a shared burst of 4 in {:?}",
        started.elapsed()
    );
    assert!(limited >= 12 - 4 - refilled, "{limited} sends refused");
    // A repeat is never refused for want of a token, on either node.
    let repeat = within("a repeat", on_b.send_message("lobby", "m0", "hi")).await;
    assert!(
        matches!(repeat.body, Some(Body::SendAck(ref ack)) if ack.duplicate),
        "the repeat of m0 on the other node: {repeat:?}"
    );
    nodes.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_a_name_on_every_node() {
    let test = "failed_logins_lock_a_name_on_every_node";
    let Some(nodes) = two_nodes(test, |config| {
        config.login_free_failures = 3;
        config.login_lockout_base = Duration::from_secs(60);
    })
    .await
    else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let r = common::register(a.addr, "bea", PASSWORD).await;
    assert_eq!(r.status, 201, "register: {:?}", r.body);
    // Three failures, spread over both nodes: the third starts the lockout.
    for node in [a.addr, b.addr, a.addr] {
        let r = common::login(node, "bea", "wrong password guess").await;
        assert_eq!(r.status, 401, "a wrong password: {:?}", r.body);
    }
    // Locked on both nodes, even with the right password.
    for node in [b.addr, a.addr] {
        let r = common::login(node, "bea", PASSWORD).await;
        assert_eq!(
            r.status, 429,
            "a locked name logging in on {node}: {:?}",
            r.body
        );
        assert_eq!(
            r.json()["error"]["code"],
            "too_many_attempts",
            "{:?}",
            r.body
        );
    }
    nodes.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_on_one_node_reaches_a_reader_on_the_other_once() {
    let test = "a_message_sent_on_one_node_reaches_a_reader_on_the_other_once";
    let Some(nodes) = two_nodes(test, |_| {}).await else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let ann = common::register_and_login(a.addr, "ann").await;
    let bob = common::register_and_login(b.addr, "bob").await;
    let mut writer = connected(a.addr, &ann, &[]).await;
    writer.create_room("lobby").await;
    let mut reader = connected(b.addr, &bob, &[]).await;
    // Created on a a moment ago: b re-reads it from storage to answer.
    reader.join_room("lobby").await;
    for n in 1..=20u64 {
        let ack = writer
            .say("lobby", &format!("c{n}"), &format!("text {n}"))
            .await;
        assert_eq!(ack.seq, n, "seqs are gapless from 1");
    }
    for n in 1..=20u64 {
        let frame = within("a message on the other node", reader.next_frame()).await;
        match frame.body {
            Some(Body::Message(m)) => assert_eq!((m.seq, m.text), (n, format!("text {n}"))),
            other => panic!("expected message {n} on node b, got {other:?}"),
        }
    }
    // Nothing more: no repeat of any of them (a Ping answers first).
    let extra = reader.barrier().await;
    assert!(extra.is_empty(), "node b pushed more: {extra:?}");
    nodes.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_on_one_node_lists_a_room_joined_on_the_other_a_moment_ago() {
    let test = "a_welcome_on_one_node_lists_a_room_joined_on_the_other_a_moment_ago";
    let Some(nodes) = two_nodes(test, |_| {}).await else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let ann = common::register_and_login(a.addr, "ann").await;
    let mut on_a = connected(a.addr, &ann, &[]).await;
    on_a.create_room("fresh").await;
    // Straight to the other node: its Welcome reads the membership from
    // PostgreSQL rather than waiting for NATS.
    let mut on_b = Client::connect(b.addr).await;
    let welcome = on_b.auth(&ann, &[]).await;
    let rooms: Vec<&str> = welcome.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(rooms, ["fresh"], "Welcome on node b");
    nodes.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_node_closes_the_tokens_sockets_on_every_node() {
    let test = "logout_on_one_node_closes_the_tokens_sockets_on_every_node";
    let Some(nodes) = two_nodes(test, |_| {}).await else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let token = common::register_and_login(a.addr, "ann").await;
    let other = common::login_token(a.addr, "ann").await;
    let mut on_b = connected(b.addr, &token, &[]).await;
    let mut other_on_b = connected(b.addr, &other, &[]).await;
    let r = common::logout(a.addr, &token).await;
    assert_eq!(r.status, 204, "logout on node a: {:?}", r.body);
    // §5.4: the token's socket on the other node closes with 4410 ...
    assert_eq!(
        within("a close on node b", on_b.expect_close()).await,
        Some(4410)
    );
    // ... the other token's stays open ...
    assert!(other_on_b.barrier().await.is_empty());
    // ... and the revoked token opens nothing anywhere.
    let r = common::login(b.addr, "ann", PASSWORD).await;
    assert_eq!(r.status, 200, "a new login still works: {:?}", r.body);
    let mut again = Client::connect(b.addr).await;
    let refused = again
        .request(confab_protocol::wire::client_frame::Body::Auth(
            confab_protocol::wire::Auth {
                token: token.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert!(
        matches!(refused.body, Some(Body::Error(ref e)) if e.code == ErrorCode::TokenRevoked as i32),
        "the revoked token on node b: {refused:?}"
    );
    nodes.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_on_one_node_is_pushed_on_the_other() {
    let test = "typing_on_one_node_is_pushed_on_the_other";
    let Some(nodes) = two_nodes(test, |_| {}).await else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let ann = common::register_and_login(a.addr, "ann").await;
    let bob = common::register_and_login(b.addr, "bob").await;
    let mut typist = connected(a.addr, &ann, &[]).await;
    typist.create_room("lobby").await;
    let mut watcher = Client::connect(b.addr).await;
    watcher
        .auth(&bob, &[confab_protocol::capability::TYPING])
        .await;
    watcher.join_room("lobby").await;
    typist
        .send(confab_protocol::wire::client_frame::Body::SetTyping(
            confab_protocol::wire::SetTyping {
                room: "lobby".into(),
                active: true,
            },
        ))
        .await;
    let frame = within("a Typing push on node b", watcher.next_frame()).await;
    match frame.body {
        Some(Body::Typing(t)) => {
            assert_eq!(
                (t.room.as_str(), t.username.as_str(), t.active),
                ("lobby", "ann", true)
            );
        }
        other => panic!("expected Typing from ann on node b, got {other:?}"),
    }
    nodes.finish().await;
}

/// §11.3 across nodes: a marker moved on one node is pushed to
/// the user's connection on the other, and that node's Welcome agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_marker_moved_on_one_node_is_pushed_on_the_other() {
    let test = "a_read_marker_moved_on_one_node_is_pushed_on_the_other";
    let Some(nodes) = two_nodes(test, |_| {}).await else {
        return;
    };
    let (a, b) = (&nodes.a, &nodes.b);
    let ann = common::register_and_login(a.addr, "ann").await;
    let bob = common::register_and_login(a.addr, "bob").await;
    let read_state = [confab_protocol::capability::READ_STATE];
    let mut talker = connected(a.addr, &ann, &[]).await;
    talker.create_room("lobby").await;
    let mut phone = connected(a.addr, &bob, &read_state).await;
    phone.join_room("lobby").await;
    let mut desk = connected(b.addr, &bob, &read_state).await;
    for (id, text) in [("m1", "hi @bob"), ("m2", "there")] {
        talker.send_message("lobby", id, text).await;
    }
    let reply = phone
        .request(confab_protocol::wire::client_frame::Body::MarkRead(
            confab_protocol::wire::MarkRead {
                room: "lobby".into(),
                seq: 1,
            },
        ))
        .await;
    match reply.body {
        Some(Body::ReadState(s)) => assert_eq!(
            (s.read_seq, s.unread_count, s.mention_count, s.counted_seq),
            (1, 1, 0, 2)
        ),
        other => panic!("expected the ReadState reply, got {other:?}"),
    }
    let pushed = desk
        .expect("a ReadState push on node b", |f| {
            matches!(f.body, Some(Body::ReadState(_)))
        })
        .await;
    match pushed.body {
        Some(Body::ReadState(s)) => {
            assert_eq!(
                (s.room.as_str(), s.read_seq, s.unread_count),
                ("lobby", 1, 1)
            );
        }
        other => panic!("expected ReadState, got {other:?}"),
    }
    let mut later = Client::connect(b.addr).await;
    let welcome = later.auth(&bob, &read_state).await;
    let states: Vec<_> = welcome
        .read_states
        .iter()
        .map(|s| (s.room.as_str(), s.read_seq, s.unread_count, s.mention_count))
        .collect();
    assert_eq!(states, [("lobby", 1, 1, 0)]);
    nodes.finish().await;
}
