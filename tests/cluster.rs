//! Cluster mode: several `confab-server` processes sharing one PostgreSQL
//! database and one NATS server (`--nats-url`, `--cluster-name`), with
//! clients on different nodes, nodes SIGKILLed or crashing between COMMIT
//! and publish, and NATS cut off.
//!
//! What must hold across the cluster is what holds on one server: every
//! acknowledged message is stored once with a gapless seq, every socket on
//! which a room is active is pushed each message of it once and in seq
//! order (checked on raw sockets, which see duplicates and gaps the SDK
//! would hide), and presence follows a user's connections on all nodes.
//!
//! Needs `CONFAB_TEST_DATABASE_URL` and `CONFAB_TEST_NATS_URL` (see
//! `cluster_support`); each test skips without them.

mod bot_support;
mod cluster_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::{
    Cluster, ClusterOptions, NodeSpec, SdkView, Services, WireSocket, account, assert_gapless,
    assert_matches_history, sdk_client, within,
};
use confab_bot_sdk::protocol::session::SessionEvent;
use confab_bot_sdk::protocol::wire::{self, server_frame::Body as S};
use confab_bot_sdk::{Client, Event, PresenceKind, ServerUrl};
use support::proxy::Proxy;
use tokio::sync::watch;

/// Checks that every acknowledged `(text, seq)` of `sender` is in `history`
/// at that seq, from that sender.
fn assert_acks_stored(sender: &str, room: &str, acks: &[(String, u64)], history: &[wire::Message]) {
    for (text, seq) in acks {
        let stored = history.iter().find(|m| m.seq == *seq);
        assert!(
            stored.is_some_and(|m| m.text == *text && m.sender == sender),
            "{sender}: {text:?} was acknowledged with seq {seq} in room {room}, but history \
             holds {stored:?} there"
        );
    }
}

/// Checks that no text occurs twice in `history` (every send is unique).
fn assert_texts_unique(room: &str, history: &[wire::Message]) {
    let mut seen = BTreeMap::new();
    for message in history {
        if let Some(first) = seen.insert(message.text.as_str(), message.seq) {
            panic!(
                "room {room}: {:?} is stored twice, as seq {first} and seq {}",
                message.text, message.seq
            );
        }
    }
}

/// Three nodes, six users in three rooms; every user has two sockets on
/// two different nodes (a bot-SDK client on one, a raw socket on the
/// other) and sends through both, so senders are spread over all nodes.
/// Every message reaches every socket of every member exactly once, in seq
/// order, and history holds each acknowledged message once, gapless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_socket_of_every_member_once_in_order() {
    const TEST: &str = "every_message_reaches_every_socket_of_every_member_once_in_order";
    const USERS: usize = 6;
    /// Messages each member sends to each of its rooms.
    const PER_ROOM: usize = 8;
    /// Members per room: users i with i % 3 == r or (i + 1) % 3 == r.
    const MEMBERS: usize = 4;
    let Some(services) = Services::from_env(TEST) else {
        return;
    };
    let cluster = Cluster::start(services, 3, ClusterOptions::default()).await;
    let rooms_of = |user: usize| [format!("r{}", user % 3), format!("r{}", (user + 1) % 3)];
    let head = (MEMBERS * PER_ROOM) as u64;

    let mut tokens = Vec::new();
    for i in 0..USERS {
        tokens.push(account(&cluster.url(i % 3), &format!("u{i}")).await);
    }
    // The SDK clients create or join the rooms; then the raw sockets
    // resume them (from their heads, still 0).
    let mut clients = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let [first, second] = rooms_of(i);
        clients.push(sdk_client(&cluster.url(i % 3), token, &[&first, &second]).await);
    }
    let mut sockets = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let node = (i + 1) % 3;
        let mut socket = WireSocket::open(
            &cluster.url(node),
            token,
            format!("u{i}'s raw socket on node {node}"),
        )
        .await;
        let [first, second] = rooms_of(i);
        socket.resume(&[&first, &second]).await;
        assert_eq!(
            socket.welcome().rooms.len(),
            2,
            "u{i}'s Welcome on node {node} lists exactly the two rooms it joined on node {}: {:?}",
            i % 3,
            socket.welcome().rooms
        );
        sockets.push(socket);
    }

    // Everyone sends at once, alternating between its two sockets.
    let mut senders = Vec::new();
    for (i, mut socket) in sockets.into_iter().enumerate() {
        let ctx = clients[i].context();
        let rooms = rooms_of(i);
        senders.push(tokio::spawn(async move {
            let mut acks: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
            for n in 0..PER_ROOM {
                for room in &rooms {
                    let text = format!("u{i} to {room}, #{n}");
                    let seq = if n % 2 == 0 {
                        ctx.room(room.as_str())
                            .send(&text)
                            .await
                            .unwrap_or_else(|err| panic!("u{i} (SDK): sending {text:?}: {err}"))
                    } else {
                        let id = format!("u{i}-{room}-{n}");
                        socket
                            .send(room, &text, &id)
                            .await
                            .unwrap_or_else(|err| panic!("u{i} (raw): sending {text:?}: {err:?}"))
                            .seq
                    };
                    acks.entry(room.clone()).or_default().push((text, seq));
                }
            }
            (socket, acks)
        }));
    }
    let mut sockets = Vec::new();
    let mut acks = Vec::new();
    for (i, sender) in senders.into_iter().enumerate() {
        let (socket, sent) = within(&format!("u{i}'s sends to be acknowledged"), sender)
            .await
            .unwrap_or_else(|err| panic!("u{i}'s sender: {err}"));
        sockets.push(socket);
        acks.push(sent);
    }

    // History of room r, read on user r's raw socket (user r is a member).
    let mut histories = BTreeMap::new();
    for (r, socket) in sockets.iter_mut().take(3).enumerate() {
        let room = format!("r{r}");
        let history = socket.history(&room).await;
        assert_gapless(&room, &history);
        assert_eq!(
            history.len() as u64,
            head,
            "room {room}: {MEMBERS} members sent {PER_ROOM} messages each"
        );
        assert_texts_unique(&room, &history);
        histories.insert(room, history);
    }
    for (i, sent) in acks.iter().enumerate() {
        for (room, acks) in sent {
            assert_acks_stored(&format!("u{i}"), room, acks, &histories[room]);
        }
    }

    // Each socket's view, raw and through the SDK, is exactly the history.
    for (i, (socket, client)) in sockets.iter_mut().zip(clients.iter_mut()).enumerate() {
        let heads: BTreeMap<String, u64> = rooms_of(i).into_iter().map(|r| (r, head)).collect();
        let sdk_node = i % 3;
        let view = SdkView::collect(
            client,
            &heads,
            &format!("u{i}'s SDK client on node {sdk_node}"),
        )
        .await;
        assert!(
            view.anomalies.is_empty(),
            "u{i}'s SDK client on node {sdk_node}: {:?}",
            view.anomalies
        );
        for room in heads.keys() {
            socket.assert_pushed_history(room, &histories[room]).await;
            assert_matches_history(
                &format!("u{i}'s SDK client on node {sdk_node}"),
                room,
                view.room(room),
                &histories[room],
            );
        }
    }
    for client in clients {
        client.shutdown().await;
    }
}

/// One `client_msg_id` sent to node 0 and again (same room, same text) to
/// node 1 gets the same seq and message id back, and is stored once; so is
/// one sent to both nodes at the same time (R-8.5.1, R-8.5.4), and each is
/// pushed once to a reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_msg_id_sent_to_two_nodes_is_stored_once() {
    const TEST: &str = "one_client_msg_id_sent_to_two_nodes_is_stored_once";
    const RACES: u64 = 5;
    let Some(services) = Services::from_env(TEST) else {
        return;
    };
    let cluster = Cluster::start(services, 2, ClusterOptions::default()).await;
    let token = account(&cluster.url(0), "sender").await;
    let reader_token = account(&cluster.url(1), "reader").await;
    let mut on_a = WireSocket::open(&cluster.url(0), &token, "sender on node 0").await;
    on_a.create_room("r").await;
    let mut on_b = WireSocket::open(&cluster.url(1), &token, "sender on node 1").await;
    on_b.resume(&["r"]).await;
    let mut reader = WireSocket::open(&cluster.url(1), &reader_token, "reader on node 1").await;
    reader.join_room("r").await;

    // One after the other: node 1 answers the repeat from what node 0 stored.
    let first = on_a
        .send("r", "hello", "same-id")
        .await
        .expect("node 0 stores the message");
    assert!(
        !first.duplicate,
        "a first send is not a duplicate: {first:?}"
    );
    let again = on_b
        .send("r", "hello", "same-id")
        .await
        .expect("node 1 answers the repeat");
    assert_eq!(
        (again.seq, &again.message_id, again.server_ts_ms),
        (first.seq, &first.message_id, first.server_ts_ms),
        "the repeat on node 1 must carry the original seq, message_id and server_ts_ms"
    );
    assert!(
        again.duplicate,
        "node 1 must mark the repeat a duplicate: {again:?}"
    );

    // At the same time, on both nodes.
    for race in 0..RACES {
        let (id, text) = (
            format!("race-{race}"),
            format!("sent to both nodes at once, #{race}"),
        );
        let (a, b) = tokio::join!(on_a.send("r", &text, &id), on_b.send("r", &text, &id));
        let a = a.unwrap_or_else(|err| panic!("{id} on node 0: {err:?}"));
        let b = b.unwrap_or_else(|err| panic!("{id} on node 1: {err:?}"));
        assert_eq!(
            (a.seq, &a.message_id),
            (b.seq, &b.message_id),
            "{id}, sent to both nodes at once, was acknowledged as two messages: {a:?} and {b:?}"
        );
        assert_eq!(
            u8::from(!a.duplicate) + u8::from(!b.duplicate),
            1,
            "{id}: exactly one of the two concurrent sends is the first: {a:?} and {b:?}"
        );
    }

    // The next new message takes the next seq: nothing else was stored.
    let after = on_b
        .send("r", "after the repeats", "after")
        .await
        .expect("a new message");
    assert_eq!(
        after.seq,
        RACES + 2,
        "seq after one message and {RACES} races"
    );
    let history = reader.history("r").await;
    assert_gapless("r", &history);
    for id in ["same-id", "race-0", "race-4", "after"] {
        let rows = history.iter().filter(|m| m.client_msg_id == id).count();
        assert_eq!(
            rows, 1,
            "history holds {rows} rows with client_msg_id {id}: {history:?}"
        );
    }
    for socket in [&mut reader, &mut on_a, &mut on_b] {
        socket.assert_pushed_history("r", &history).await;
    }
}

/// Eight clients send 30 messages each through failover proxies (each
/// client's first choice is "its" node); one node of three is SIGKILLed
/// partway. Its clients reconnect, through their proxy, to a survivor and
/// resend what was not acknowledged (the SDK's outbox). Afterwards every
/// message is acknowledged and stored once, each room's seqs are gapless
/// from 1, and every client's view (live, deduped by the SDK) and every raw
/// socket on a survivor equals the final history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_fail_over_and_nothing_is_lost_or_doubled() {
    const TEST: &str = "clients_of_a_killed_node_fail_over_and_nothing_is_lost_or_doubled";
    const CLIENTS: usize = 8;
    const SENDS: usize = 30;
    const KILL_AFTER_ACKS: usize = 60;
    const ROOMS: [&str; 2] = ["a", "b"];
    const VICTIM: usize = 0;
    let Some(services) = Services::from_env(TEST) else {
        return;
    };
    let mut cluster = Cluster::start(services, 3, ClusterOptions::default()).await;
    // Proxy k prefers node k, then the next ones: a load balancer whose
    // health check is "accepts a connection".
    let proxies: Vec<Proxy> = (0..3)
        .map(|home| Proxy::failover((0..3).map(|k| cluster.addr((home + k) % 3)).collect()))
        .collect();
    let head = (CLIENTS / ROOMS.len() * SENDS) as u64;

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let token = account(&cluster.url(i % 3), &format!("c{i}")).await;
        let via: ServerUrl = proxies[i % 3].url().parse().expect("proxy URL");
        clients.push(sdk_client(&via, &token, &[ROOMS[i % 2]]).await);
    }
    // Raw sockets on the survivors, never disconnected: what they are
    // pushed must be the history exactly, with no help from an SDK.
    let watcher = account(&cluster.url(1), "watcher").await;
    let mut watchers = Vec::new();
    for node in [1, 2] {
        let mut socket = WireSocket::open(
            &cluster.url(node),
            &watcher,
            format!("watcher on node {node}"),
        )
        .await;
        for room in ROOMS {
            socket.join_room(room).await;
        }
        watchers.push(socket);
    }

    let acked = Arc::new(watch::Sender::new(0usize));
    let mut senders = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let room = client.room(ROOMS[i % 2]);
        let acked = Arc::clone(&acked);
        senders.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for n in 0..SENDS {
                let text = format!("c{i} #{n}");
                let seq = room
                    .send(&text)
                    .await
                    .unwrap_or_else(|err| panic!("c{i}: sending {text:?}: {err}"));
                acks.push((text, seq));
                acked.send_modify(|count| *count += 1);
            }
            acks
        }));
    }
    let mut count = acked.subscribe();
    within(
        &format!("{KILL_AFTER_ACKS} acknowledgements before the kill"),
        count.wait_for(|n| *n >= KILL_AFTER_ACKS),
    )
    .await
    .expect("the ack counter lives");
    let before_kill = proxies[VICTIM].accepted();
    cluster.kill(VICTIM);
    let at_kill = *acked.borrow();
    assert!(
        at_kill < CLIENTS * SENDS,
        "node {VICTIM} was killed only after all {at_kill} sends were acknowledged: nothing was in flight"
    );

    let mut acks = Vec::new();
    for (i, sender) in senders.into_iter().enumerate() {
        acks.push(
            within(
                &format!("c{i}'s {SENDS} sends to be acknowledged after the kill"),
                sender,
            )
            .await
            .unwrap_or_else(|err| panic!("c{i}'s sender: {err}")),
        );
    }
    assert!(
        proxies[VICTIM].accepted() > before_kill,
        "the clients of node {VICTIM} never reconnected through their proxy"
    );
    let mut histories = BTreeMap::new();
    for room in ROOMS {
        let history = watchers[0].history(room).await;
        assert_gapless(room, &history);
        assert_texts_unique(room, &history);
        assert_eq!(
            history.len() as u64,
            head,
            "room {room}: {} clients sent {SENDS} messages each, all acknowledged",
            CLIENTS / ROOMS.len()
        );
        histories.insert(room, history);
    }
    for (i, acks) in acks.iter().enumerate() {
        assert_acks_stored(
            &format!("c{i}"),
            ROOMS[i % 2],
            acks,
            &histories[ROOMS[i % 2]],
        );
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let room = ROOMS[i % 2];
        let who = if i % 3 == VICTIM {
            format!("c{i} (first on killed node {VICTIM})")
        } else {
            format!("c{i} (on node {})", i % 3)
        };
        let heads = BTreeMap::from([(room.to_owned(), head)]);
        let view = SdkView::collect(client, &heads, &who).await;
        assert!(view.anomalies.is_empty(), "{who}: {:?}", view.anomalies);
        assert_matches_history(&who, room, view.room(room), &histories[room]);
    }
    for socket in &mut watchers {
        for room in ROOMS {
            socket.assert_pushed_history(room, &histories[room]).await;
        }
    }
    for client in clients {
        client.shutdown().await;
    }
}

/// The nodes reach NATS through a proxy. Two senders on two nodes send in
/// three phases: before the outage; while every proxied NATS connection is
/// cut and new ones are refused; after NATS is reachable again. While NATS
/// is down, readers on every node still get every acknowledged message
/// (each node repairs from PostgreSQL every sync interval); in the end each
/// reader has every message once, in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_get_every_message_once_in_order_across_a_nats_outage() {
    const TEST: &str = "readers_get_every_message_once_in_order_across_a_nats_outage";
    /// Messages each sender sends before, during and after the outage.
    const PHASES: [usize; 3] = [10, 15, 15];
    const SENDERS: usize = 2;
    let Some(services) = Services::from_env(TEST) else {
        return;
    };
    let nats = Proxy::start(services.nats_addr());
    let nats_url = services.nats_url_via(nats.addr());
    let mut cluster = Cluster::new(services, ClusterOptions::default()).await;
    for _ in 0..3 {
        cluster
            .add_node(NodeSpec {
                nats_url: Some(nats_url.clone()),
                ..NodeSpec::default()
            })
            .await;
    }
    let head = (SENDERS * PHASES.iter().sum::<usize>()) as u64;
    let mut senders_clients = Vec::new();
    for node in 0..SENDERS {
        let token = account(&cluster.url(node), &format!("s{node}")).await;
        senders_clients.push(sdk_client(&cluster.url(node), &token, &["r"]).await);
    }
    let reader = account(&cluster.url(2), "reader").await;
    let mut sdk_reader = sdk_client(&cluster.url(2), &reader, &["r"]).await;
    let mut readers = Vec::new();
    for node in 0..3 {
        let mut socket = WireSocket::open(
            &cluster.url(node),
            &reader,
            format!("reader on node {node}"),
        )
        .await;
        socket.resume(&["r"]).await;
        readers.push(socket);
    }

    // Each sender sends phase p's messages once the gate reads p.
    let gate = Arc::new(watch::Sender::new(0usize));
    let acked = Arc::new(watch::Sender::new(0usize));
    let mut senders = Vec::new();
    for (node, client) in senders_clients.iter().enumerate() {
        let room = client.room("r");
        let (acked, mut gate) = (Arc::clone(&acked), gate.subscribe());
        senders.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for (phase, count) in PHASES.into_iter().enumerate() {
                gate.wait_for(|open| *open >= phase)
                    .await
                    .expect("the gate lives");
                for n in 0..count {
                    let text = format!("s{node} phase {phase} #{n}");
                    let seq = room
                        .send(&text)
                        .await
                        .unwrap_or_else(|err| panic!("s{node}: sending {text:?}: {err}"));
                    acks.push((text, seq));
                    acked.send_modify(|count| *count += 1);
                }
            }
            acks
        }));
    }
    let mut count = acked.subscribe();
    let mut sent = 0;
    for (phase, per_sender) in PHASES.into_iter().enumerate().take(2) {
        sent += SENDERS * per_sender;
        within(
            &format!("the {sent} sends up to phase {phase} to be acknowledged"),
            count.wait_for(|n| *n >= sent),
        )
        .await
        .expect("the ack counter lives");
        if phase == 0 {
            nats.cut();
            gate.send_replace(1);
        }
    }
    // NATS is still down: what was acknowledged reaches every node anyway.
    let during = readers[2].history("r").await;
    assert_eq!(
        during.len(),
        sent,
        "history after the sends before and during the outage"
    );
    for socket in &mut readers {
        socket
            .assert_pushed_history_when("r", &during, "while NATS is unreachable")
            .await;
    }
    nats.restore();
    gate.send_replace(2);

    let mut acks = Vec::new();
    for (node, sender) in senders.into_iter().enumerate() {
        acks.push(
            within(&format!("s{node}'s sends to be acknowledged"), sender)
                .await
                .unwrap_or_else(|err| panic!("s{node}'s sender: {err}")),
        );
    }
    let history = readers[2].history("r").await;
    assert_gapless("r", &history);
    assert_texts_unique("r", &history);
    assert_eq!(
        history.len() as u64,
        head,
        "{SENDERS} senders sent {PHASES:?} messages each"
    );
    for (node, acks) in acks.iter().enumerate() {
        assert_acks_stored(&format!("s{node}"), "r", acks, &history);
    }
    for socket in &mut readers {
        socket.assert_pushed_history("r", &history).await;
    }
    let heads = BTreeMap::from([("r".to_owned(), head)]);
    let view = SdkView::collect(&mut sdk_reader, &heads, "the SDK reader on node 2").await;
    assert!(
        view.anomalies.is_empty(),
        "the SDK reader on node 2: {:?}",
        view.anomalies
    );
    assert_matches_history("the SDK reader on node 2", "r", view.room("r"), &history);
    for client in senders_clients.into_iter().chain([sdk_reader]) {
        client.shutdown().await;
    }
}

/// Node A (`confab-server-fault`, `CONFAB_FAULT_ABORT_AFTER_COMMIT=1`)
/// aborts right after committing a message and before acknowledging or
/// publishing it. A reader on node B still gets the message (repaired from
/// PostgreSQL) and history holds it; the sender got no ack from A, and
/// resending the same client_msg_id to B returns the same seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_committed_by_a_node_that_died_before_publishing_still_arrives() {
    const TEST: &str = "a_message_committed_by_a_node_that_died_before_publishing_still_arrives";
    const ID: &str = "committed-then-crashed";
    const TEXT: &str = "stored, and then the node died";
    let Some(services) = Services::from_env(TEST) else {
        return;
    };
    let mut cluster = Cluster::new(services, ClusterOptions::default()).await;
    let b = cluster.add_node(NodeSpec::default()).await;
    let a = cluster
        .add_node(NodeSpec {
            abort_after_commit: Some(1),
            ..NodeSpec::default()
        })
        .await;
    let sender = account(&cluster.url(b), "sender").await;
    let reader = account(&cluster.url(b), "reader").await;
    let mut sender_on_b = WireSocket::open(&cluster.url(b), &sender, "sender on node B").await;
    sender_on_b.create_room("r").await;
    let mut reader_on_b = WireSocket::open(&cluster.url(b), &reader, "reader on node B").await;
    reader_on_b.join_room("r").await;
    let mut sender_on_a = WireSocket::open(&cluster.url(a), &sender, "sender on node A").await;
    sender_on_a.resume(&["r"]).await;

    let request = sender_on_a.send_message_request("r", TEXT, ID).await;
    let (frames, why) = sender_on_a.read_to_end().await;
    let answered: Vec<&wire::ServerFrame> = frames
        .iter()
        .filter(|f| f.request_id == request || matches!(f.body, Some(S::Message(_))))
        .collect();
    assert!(
        answered.is_empty(),
        "node A was to die after COMMIT and before answering or pushing; it sent {answered:?} \
         (the connection then ended: {why})"
    );
    let deadline = Instant::now() + cluster_support::WAIT;
    let status = loop {
        // No event says "the process exited": poll its status.
        if let Some(status) = cluster.process(a).try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "node A closed the connection ({why}) but did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let log = cluster.reap(a);
    assert!(
        !status.success(),
        "node A should have aborted, but exited with {status}; its last log lines: {log:#?}"
    );

    reader_on_b.wait_pushed("r", 1).await;
    let pushed = reader_on_b.pushes("r")[0].clone();
    assert_eq!(
        (
            pushed.seq,
            pushed.client_msg_id.as_str(),
            pushed.text.as_str(),
            pushed.sender.as_str()
        ),
        (1, ID, TEXT, "sender"),
        "the reader on node B must get the message node A committed: {pushed:?}"
    );
    let history = reader_on_b.history("r").await;
    assert_eq!(
        history,
        std::slice::from_ref(&pushed),
        "history holds the committed message once"
    );

    let resent = sender_on_b
        .send("r", TEXT, ID)
        .await
        .expect("node B answers the resend");
    assert_eq!(
        (resent.seq, resent.duplicate, &resent.message_id),
        (1, true, &pushed.message_id),
        "resending to node B must return the seq node A committed, as a duplicate: {resent:?}"
    );
    // The next message takes seq 2, and the reader is pushed nothing in between.
    let next = sender_on_b
        .send("r", "after the crash", "after-the-crash")
        .await
        .expect("a new message");
    assert_eq!(next.seq, 2, "the resend stored nothing: {next:?}");
    let history = reader_on_b.history("r").await;
    assert_gapless("r", &history);
    reader_on_b.assert_pushed_history("r", &history).await;
}

/// An SDK client recording the presence pushes it gets.
struct Observer {
    client: Client,
    /// Presence pushes of the room, in order: (user, kind).
    presence: Vec<(String, PresenceKind)>,
}

impl Observer {
    /// Reads events until `pick` accepts one, within `limit`; presence
    /// pushes are recorded on the way.
    async fn until(&mut self, what: &str, limit: Duration, mut pick: impl FnMut(&Event) -> bool) {
        let wait = async {
            loop {
                let Some(event) = self.client.next_event().await else {
                    panic!("the observer's client ended while waiting for {what}");
                };
                if let Event::Presence { user, kind, .. } = &event {
                    self.presence.push((user.clone(), *kind));
                }
                if pick(&event) {
                    return;
                }
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            panic!(
                "the observer did not see {what} within {limit:?}; presence seen: {:?}",
                self.presence
            );
        }
    }

    async fn presence(&mut self, user: &str, kind: PresenceKind, limit: Duration) {
        let what = format!("{user} {kind:?}");
        self.until(&what, limit, |event| {
            matches!(event, Event::Presence { user: u, kind: k, .. } if u == user && *k == kind)
        })
        .await;
    }

    async fn message(&mut self, text: &str) {
        let what = format!("the message {text:?}");
        self.until(
            &what,
            cluster_support::WAIT,
            |event| matches!(event, Event::Message(m) if m.text() == text),
        )
        .await;
    }

    /// `user`'s presence pushes from index `since` on.
    fn of(&self, user: &str, since: usize) -> Vec<PresenceKind> {
        self.presence[since..]
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, kind)| *kind)
            .collect()
    }
}

/// A Ping round trip: everything the client asked before has been done.
async fn barrier(client: &Client) {
    let nonce = 0x00c1_u64;
    within(
        "a Pong",
        client.context().driver().request(
            move |session, now| session.ping(now, nonce),
            move |_, event| matches!(event, SessionEvent::Pong(n) if *n == nonce).then_some(()),
        ),
    )
    .await
    .expect("the Ping is answered");
}

/// Presence across nodes: U has sockets on nodes A and C, the observer O
/// (presence capability) is on node B. Closing U's socket on A leaves U
/// online; closing the one on C makes O see OFFLINE. U then connects to C
/// only (O sees ONLINE) and C is SIGKILLed: O sees U OFFLINE within the
/// presence TTL (plus slack), and ListMembers and RoomInfo agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_a_users_connections_on_every_node() {
    const TEST: &str = "presence_follows_a_users_connections_on_every_node";
    const ROOM: &str = "lobby";
    /// U, whose presence is watched; O, the observer; W, a witness on node A.
    const U: &str = "roamer";
    const O: &str = "observer";
    const W: &str = "witness";
    let Some(services) = Services::from_env(TEST) else {
        return;
    };
    let options = ClusterOptions::default();
    let ttl = Duration::from_millis(options.presence_ttl_ms);
    // Slack for a loaded 2-core machine: a few sync intervals and more.
    let ttl_with_slack = ttl + Duration::from_secs(8);
    let mut cluster = Cluster::start(services, 3, options).await;
    let (a, b, c) = (0, 1, 2);
    let u = account(&cluster.url(b), U).await;
    let o = account(&cluster.url(b), O).await;
    let w = account(&cluster.url(b), W).await;
    // Memberships first, with nobody watching: ONLINE and OFFLINE are
    // pushed for the rooms a user is a member of.
    for token in [&o, &u, &w] {
        sdk_client(&cluster.url(b), token, &[ROOM])
            .await
            .shutdown()
            .await;
    }
    let mut observer = Observer {
        client: sdk_client(&cluster.url(b), &o, &[ROOM]).await,
        presence: Vec::new(),
    };
    barrier(&observer.client).await; // its Resume is done: the room is active
    let mut o_wire = WireSocket::open(&cluster.url(b), &o, "o's raw socket on node B").await;

    let u_on_a = sdk_client(&cluster.url(a), &u, &[ROOM]).await;
    observer
        .presence(U, PresenceKind::Online, cluster_support::WAIT)
        .await;
    let u_on_c = sdk_client(&cluster.url(c), &u, &[ROOM]).await;
    let w_on_a = sdk_client(&cluster.url(a), &w, &[ROOM]).await;
    observer
        .presence(W, PresenceKind::Online, cluster_support::WAIT)
        .await;
    let text = "u is connected on node C too";
    u_on_c.room(ROOM).send(text).await.expect("u sends on C");
    observer.message(text).await;
    assert_eq!(
        observer.of(U, 0),
        [PresenceKind::Online],
        "u's second connection (node C) must not push ONLINE again (R-11.1.3)"
    );

    // Closing one of two connections: u stays online.
    let mark = observer.presence.len();
    u_on_a.shutdown().await;
    for (client, text) in [
        (&w_on_a, "barrier through node A"),
        (&u_on_c, "barrier through node C"),
    ] {
        client.room(ROOM).send(text).await.expect("barrier message");
        observer.message(text).await;
    }
    assert_eq!(
        observer.of(U, mark),
        [],
        "closing u's socket on node A while its socket on node C stays open must push no presence"
    );
    // The last one: OFFLINE.
    u_on_c.shutdown().await;
    observer
        .presence(U, PresenceKind::Offline, cluster_support::WAIT)
        .await;

    // Online on node C only; then node C crashes.
    let u_on_c = sdk_client(&cluster.url(c), &u, &[ROOM]).await;
    observer
        .presence(U, PresenceKind::Online, cluster_support::WAIT)
        .await;
    let members = o_wire.members(ROOM).await;
    assert!(
        members.iter().any(|m| m.username == U && m.online),
        "ListMembers on node B must show u online while connected to node C: {members:?}"
    );
    let mark = observer.presence.len();
    cluster.kill(c);
    let killed = Instant::now();
    observer
        .presence(U, PresenceKind::Offline, ttl_with_slack)
        .await;
    let took = killed.elapsed();
    assert_eq!(
        observer.of(U, mark),
        [PresenceKind::Offline],
        "after node C died: one OFFLINE for u (seen after {took:?}, presence TTL {ttl:?})"
    );
    let members = o_wire.members(ROOM).await;
    let online: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.online)
        .map(|m| m.username.as_str())
        .collect();
    assert_eq!(
        online,
        BTreeSet::from([O, W]),
        "ListMembers on node B after node C died (u was only there): {members:?}"
    );
    let rooms = o_wire.rooms().await;
    let lobby = rooms
        .iter()
        .find(|room| room.name == ROOM)
        .unwrap_or_else(|| panic!("ListRooms on node B lacks {ROOM}: {rooms:?}"));
    assert_eq!(
        (lobby.member_count, lobby.online_count),
        (3, 2),
        "RoomInfo on node B after node C died: u, o and w are members, o and w online: {lobby:?}"
    );
    for client in [u_on_c, w_on_a, observer.client] {
        client.shutdown().await;
    }
}
