//! §12.4: a client that stops reading is closed with 4429 once its bounded
//! queue fills, a fast member of the same room still gets every message,
//! and the slow one resumes without loss.

mod common;

use common::{Client, TestServer, http, messages, register_and_login, within};
use confab_protocol::wire::room_resume::Status;
use tokio::sync::mpsc;

const QUEUE: u32 = 16;
const TEXT_BYTES: usize = 60_000;
const MAX_MESSAGES: u64 = 2_000;

async fn slow_consumer_closes(addr: std::net::SocketAddr) -> u64 {
    let metrics = http(addr, "GET", "/metrics", "", &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("confab_slow_consumer_closes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("slow consumer counter")
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_4429_and_resumes_without_loss() {
    let server = TestServer::start(|c| {
        c.limits.outbound_queue_frames = QUEUE;
        c.limits.max_text_bytes = TEXT_BYTES as u32;
        c.limits.max_resume_replay = MAX_MESSAGES as u32;
    })
    .await;
    let addr = server.addr;
    let (mut alice, _) = Client::new_user(addr, "alice").await;
    let (mut bob, _) = Client::new_user(addr, "bob").await;
    let carol_token = register_and_login(addr, "carol").await;
    let info = alice.create_room("firehose").await;
    bob.join_room("firehose").await;

    // Carol's socket has a tiny receive buffer, and nobody reads it until
    // the end: the kernel buffers fill, then her queue on the server.
    let mut carol = common::slow_client(addr, "carol", &carol_token).await;
    carol.join_room("firehose").await;

    // Bob reads everything as it comes, on his own task.
    let (seqs_tx, mut seqs) = mpsc::unbounded_channel();
    let bob_task = tokio::spawn(async move {
        loop {
            let frame = bob.next_frame().await;
            for m in messages(std::slice::from_ref(&frame)) {
                if seqs_tx.send(m.seq).is_err() {
                    return bob;
                }
            }
        }
    });

    // Alice sends large messages until the server reports a slow-consumer
    // close, plus a few more that Carol can only get by resuming.
    let text = "z".repeat(TEXT_BYTES);
    let mut sent = 0;
    let mut extra = None;
    while extra != Some(0) {
        sent += 1;
        assert!(
            sent <= MAX_MESSAGES,
            "carol was never closed as a slow consumer"
        );
        let ack = alice.say("firehose", &format!("m{sent}"), &text).await;
        assert_eq!(ack.seq, sent);
        alice.take_buffered(); // her own pushes; keep memory flat
        extra = match extra {
            None if sent % 10 == 0 && slow_consumer_closes(addr).await >= 1 => Some(3),
            Some(n) => Some(n - 1),
            other => other,
        };
    }

    // Bob received every message, in order, once.
    for want in 1..=sent {
        let seq = within("bob's messages", seqs.recv())
            .await
            .expect("bob's task runs");
        assert_eq!(seq, want, "bob gets every seq in order");
    }
    drop(seqs);

    // Carol now reads: what fitted in before the close, then 4429.
    assert_eq!(carol.expect_close().await, Some(4429));
    let got: Vec<u64> = messages(&carol.take_buffered())
        .iter()
        .map(|m| m.seq)
        .collect();
    let last = got.last().copied().unwrap_or(0);
    assert_eq!(got, (1..=last).collect::<Vec<_>>(), "a gapless prefix");
    assert!(last < sent, "carol fell behind ({last} of {sent})");

    // She reconnects and resumes from her last seq: no loss, no repeat.
    let (mut carol, _) = Client::authed(addr, "carol", &carol_token, &[]).await;
    let resumed = carol.resume(vec![("firehose", last, &info.epoch)]).await;
    let room = &resumed.rooms[0];
    assert_eq!(Status::try_from(room.status), Ok(Status::Replayed));
    let replayed: Vec<u64> = messages(&carol.take_buffered())
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(replayed, (last + 1..=sent).collect::<Vec<_>>());

    // Nobody else was closed.
    alice.barrier().await;
    assert_eq!(slow_consumer_closes(addr).await, 1);
    // The send loop stops; bob's task ends at its next frame.
    alice.say("firehose", "last", "bye").await;
    let bob = within("bob's task", bob_task).await.expect("bob's task");
    drop((alice, bob, carol));
    server.stop().await;
}
