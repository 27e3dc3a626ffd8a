//! A real `confab-server` process (not the library in-process) serving the
//! bot SDK, and what survives a SIGKILL of it. The first multi-process test;
//! the cluster tests of issue #12 build on `support::process`.

mod bot_support;
mod support;

use bot_support::{connected, next_message, within};
use confab_bot_sdk::{ServerUrl, http};
use support::process::ServerProcess;

#[tokio::test]
async fn acknowledged_messages_survive_a_sigkilled_server_process() {
    let data = tempfile::tempdir().expect("data dir");
    let server = ServerProcess::start(data.path(), &[]);
    let url: ServerUrl = server.url().parse().expect("server URL");
    let alice = connected(&url, "alice", &["lobby"]).await;
    let mut bob = connected(&url, "bob", &["lobby"]).await;

    let mut acked = Vec::new();
    for n in 1..=5 {
        let text = format!("before the crash {n}");
        let seq = within("an ack", alice.room("lobby").send(&text))
            .await
            .expect("sent");
        let seen = next_message(&mut bob).await;
        assert_eq!((seen.seq(), seen.text()), (seq, text.as_str()));
        acked.push(seq);
    }
    assert_eq!(acked, [1, 2, 3, 4, 5], "seqs are gapless from 1");

    // A crash: no graceful shutdown, nothing flushed on the way out.
    let pid = server.pid();
    server.kill();
    let gone = within(
        "a refused login",
        http::login(&url, "alice", bot_support::PASSWORD),
    )
    .await;
    assert!(
        gone.as_ref().is_err_and(http::Error::is_unreachable),
        "server pid {pid} still answers: {gone:?}"
    );
    alice.shutdown().await;
    bob.shutdown().await;

    // A new process on the same data directory: accounts, the room and
    // every acknowledged message are there, so the next seq follows the
    // last acknowledged one.
    let server = ServerProcess::start(data.path(), &[]);
    let url: ServerUrl = server.url().parse().expect("server URL");
    let alice = connected(&url, "alice", &["lobby"]).await;
    let mut bob = connected(&url, "bob", &["lobby"]).await;
    let seq = within("an ack", alice.room("lobby").send("after the restart"))
        .await
        .expect("sent after the restart");
    assert_eq!(seq, 6, "no acknowledged message was lost");
    let seen = within("the live message", async {
        loop {
            let message = next_message(&mut bob).await;
            if message.text() == "after the restart" {
                return message;
            }
        }
    })
    .await;
    assert_eq!(seen.seq(), 6);
    alice.shutdown().await;
    bob.shutdown().await;
}
