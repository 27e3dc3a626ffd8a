//! A real `confab-server` process (not the library in-process) serving the
//! bot SDK, and what survives a SIGKILL of it, or of a bot process. The
//! first multi-process test; the cluster tests of issue #12 build on
//! `support::process`.

mod bot_support;
mod support;

use bot_support::{connected, next_message, within};
use confab_bot_sdk::{FileOutboxStore, OutboxStore, ServerUrl, http};
use support::bot_process::BotProcess;
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

/// Reads `reader`'s messages until it has seen `count` of them; returns
/// their (seq, text), in the order they arrived.
async fn messages(reader: &mut confab_bot_sdk::Client, count: usize) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let message = next_message(reader).await;
        seen.push((message.seq(), message.text().to_owned()));
    }
    seen
}

/// Sends a last message from `reader` and checks it is the next one
/// `reader` sees, with seq `seq`: nothing else (no repeat of the bot's)
/// reached the room meanwhile.
async fn nothing_more_before(reader: &mut confab_bot_sdk::Client, seq: u64) {
    let barrier = within("the barrier's ack", reader.room("lobby").send("barrier"))
        .await
        .expect("barrier sent");
    assert_eq!(barrier, seq, "no other message was stored");
    let seen = next_message(reader).await;
    assert_eq!((seen.seq(), seen.text()), (seq, "barrier"));
}

#[tokio::test]
async fn a_bot_killed_with_unacked_sends_delivers_each_of_them_once_after_restart() {
    let data = tempfile::tempdir().expect("data dir");
    let bot_dir = tempfile::tempdir().expect("bot dir");
    let outbox = bot_dir.path().join("announcer.jsonl");
    let password = bot_support::PASSWORD;
    let server = ServerProcess::start(data.path(), &[]);
    let mut bot = BotProcess::start(server.url(), "announcer", password, "lobby", &outbox);
    bot.expect("restored 0").await;
    bot.expect("online").await;

    // Part 1: no ack can come, the server is gone. The bot queues every
    // line (each in its outbox file before `queued` is printed), then dies.
    server.kill();
    let offline: Vec<String> = (1..=5).map(|n| format!("while offline {n}")).collect();
    for text in &offline {
        bot.send(text);
        bot.expect(&format!("queued {text}")).await;
    }
    bot.kill();
    let kept: Vec<String> = FileOutboxStore::new(&outbox)
        .load()
        .expect("outbox file readable")
        .into_iter()
        .map(|entry| entry.text)
        .collect();
    assert_eq!(kept, offline, "the outbox file holds every unacked send");

    // The server restarts on the same SQLite file, a reader follows the
    // room, and the bot restarts with the same outbox file.
    let server = ServerProcess::start(data.path(), &[]);
    let url: ServerUrl = server.url().parse().expect("server URL");
    let mut reader = connected(&url, "reader", &["lobby"]).await;
    let mut bot = BotProcess::start(server.url(), "announcer", password, "lobby", &outbox);
    bot.expect("restored 5").await;
    bot.expect("online").await;
    let expected: Vec<(u64, String)> = (1..).zip(offline.iter().cloned()).collect();
    assert_eq!(
        messages(&mut reader, offline.len()).await,
        expected,
        "each restored send delivered once, in order"
    );

    // Part 2: the server is up, the bot dies right after queueing: some
    // lines may be stored and acked, some stored with the ack lost or not
    // yet saved, some not sent. The next start resends what the file still
    // holds with the original ids, and the server stores each line once.
    let online: Vec<String> = (1..=20).map(|n| format!("while online {n}")).collect();
    for text in &online {
        bot.send(text);
    }
    for text in &online {
        bot.expect(&format!("queued {text}")).await;
    }
    bot.kill();
    let mut bot = BotProcess::start(server.url(), "announcer", password, "lobby", &outbox);
    bot.expect_prefix("restored ").await;
    bot.expect("online").await;
    let first = expected.len() as u64 + 1;
    let expected: Vec<(u64, String)> = (first..).zip(online.iter().cloned()).collect();
    assert_eq!(
        messages(&mut reader, online.len()).await,
        expected,
        "each send delivered once, in order, whether acked before the kill or not"
    );
    nothing_more_before(&mut reader, first + online.len() as u64).await;
    bot.kill();
    reader.shutdown().await;
}

/// Folds `reader`'s live messages up to seq `head` into a timeline
/// (§8.6.6) and renders it (see [`render`]).
async fn final_state(reader: &mut confab_bot_sdk::Client, head: u64) -> Vec<String> {
    let mut timeline = confab_protocol::timeline::Timeline::new();
    let mut last = 0;
    while last < head {
        let message = next_message(reader).await;
        last = message.seq();
        timeline.apply(message.wire().clone());
    }
    render(&timeline)
}

/// The same, from the room's history, as a member who joined later reads it.
async fn final_state_from_history(reader: &confab_bot_sdk::Client, head: u64) -> Vec<String> {
    let page = within("history", reader.room("lobby").history(0, 100))
        .await
        .expect("history");
    assert_eq!(page.last().map(confab_bot_sdk::Message::seq), Some(head));
    let mut timeline = confab_protocol::timeline::Timeline::new();
    for message in page {
        timeline.apply(message.wire().clone());
    }
    render(&timeline)
}

/// One line per shown message, with its edits, deletion, quote and
/// reactions.
fn render(timeline: &confab_protocol::timeline::Timeline) -> Vec<String> {
    timeline
        .iter()
        .map(|shown| {
            let mut line = format!("{} {}: {}", shown.seq(), shown.message.sender, shown.text);
            if shown.edited {
                line.push_str(" (edited)");
            }
            if shown.deleted {
                line.push_str(" (deleted)");
            }
            if let Some((to, quote)) = &shown.reply_to {
                line.push_str(&format!(" [re {to}: {quote}]"));
            }
            for (key, n, _) in shown.reactions("") {
                line.push_str(&format!(" {key}{n}"));
            }
            line
        })
        .collect()
}

/// Whether `needle` occurs in the bytes of the file at `path` (missing: no).
fn file_holds(path: &std::path::Path, needle: &str) -> bool {
    std::fs::read(path)
        .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Issue #16: two users edit, delete, reply and react; a third joining
/// later sees the same final state; after a SIGKILL and a restart it is
/// unchanged, and the deleted texts are in neither the SQLite file nor its
/// WAL.
#[tokio::test]
async fn edits_deletions_replies_and_reactions_survive_a_sigkill() {
    const SECRET: &str = "hunter2-XYZZY";
    const SECRET_EDIT: &str = "hunter2-PLUGH";
    let data = tempfile::tempdir().expect("data dir");
    let mut server = ServerProcess::start(data.path(), &[]);
    let url: ServerUrl = server.url().parse().expect("server URL");
    let alice = connected(&url, "alice", &["lobby"]).await;
    let mut bob = connected(&url, "bob", &["lobby"]).await;
    let lobby = alice.room("lobby");
    let bobs = bob.room("lobby");

    let (_, plan) = within("an ack", lobby.send_with_id("teh plan: meet at 5"))
        .await
        .expect("sent");
    let (_, secret) = within(
        "an ack",
        lobby.send_with_id(&format!("the password is {SECRET}")),
    )
    .await
    .expect("sent");
    within("edits", async {
        lobby
            .edit(&plan, "the plan: meet at 6")
            .await
            .expect("edit");
        lobby
            .edit(&secret, &format!("the password is {SECRET_EDIT}"))
            .await
            .expect("edit");
        bobs.reply_to(&plan, "ok, 6 it is").await.expect("reply");
        bobs.react(&plan, "👍").await.expect("react");
        lobby.react(&plan, "👍").await.expect("react");
        bobs.react(&secret, "😱").await.expect("react");
        lobby.react(&plan, "🎉").await.expect("react");
        lobby.unreact(&plan, "🎉").await.expect("unreact");
        lobby.delete(&secret).await.expect("delete");
    })
    .await;
    // Typed refusals: bob may not edit alice's message, nobody may touch
    // a deleted one.
    let refused = within("a refusal", bobs.edit(&plan, "bob was here")).await;
    assert!(
        format!("{refused:?}").contains("NotAuthor"),
        "editing another's message: {refused:?}"
    );
    let refused = within("a refusal", bobs.react(&secret, "👍")).await;
    assert!(
        format!("{refused:?}").contains("NotFound"),
        "reacting to a deleted message: {refused:?}"
    );
    let head = within("the deletion's ack", lobby.send("last words"))
        .await
        .expect("sent");
    let want = final_state(&mut bob, head).await;
    assert_eq!(
        want,
        [
            "1 alice: the plan: meet at 6 (edited) 👍2",
            "2 alice:  (deleted)",
            "5 bob: ok, 6 it is [re 1: the plan: meet at 6]",
            &format!("{head} alice: last words"),
        ]
    );

    let carol = connected(&url, "carol", &["lobby"]).await;
    assert_eq!(
        final_state_from_history(&carol, head).await,
        want,
        "a later member sees the same"
    );
    carol.shutdown().await;

    server.kill();
    alice.shutdown().await;
    bob.shutdown().await;
    let db = data.path().join("confab.db");
    assert!(db.exists(), "the database is at {}", db.display());
    for file in [db.clone(), data.path().join("confab.db-wal")] {
        for text in [SECRET, SECRET_EDIT] {
            assert!(
                !file_holds(&file, text),
                "{} still holds the deleted text {text:?}",
                file.display()
            );
        }
    }
    assert!(
        file_holds(&db, "last words")
            || file_holds(&data.path().join("confab.db-wal"), "last words"),
        "the check reads the right files"
    );

    server = ServerProcess::start(data.path(), &[]);
    let url: ServerUrl = server.url().parse().expect("server URL");
    let dave = connected(&url, "dave", &["lobby"]).await;
    assert_eq!(
        final_state_from_history(&dave, head).await,
        want,
        "unchanged by the restart"
    );
    dave.shutdown().await;
    drop(server);
}
