//! The bot layer against a real confab-server over real sockets.
//!
//! Nothing here sleeps to synchronize: every wait is for an event, bounded
//! by `bot_support::within` so a hang fails instead of stalling CI.

mod bot_support;

use bot_support::{PASSWORD, TestServer, connected, next_message, within};
use confab_bot_sdk::driver::DriverOptions;
use confab_bot_sdk::protocol::session::ConnectionState;
use confab_bot_sdk::{
    Client, Commands, Context, Dice, ErrorEvent, Event, FilePositionStore, PositionStore,
    PresenceKind, RoomPosition, StoreError,
};
use tokio::sync::mpsc;

fn dice_commands() -> Commands {
    Commands::new("!")
        .command("roll", "roll dice", |cmd, (dice,): (Dice,)| async move {
            let (rolls, total) = dice.roll();
            cmd.reply(&format!("{dice}: {rolls:?} = {total}")).await?;
            Ok(())
        })
        .command("time", "the server's clock", |cmd, (): ()| async move {
            cmd.reply("it is now").await?;
            Ok(())
        })
}

async fn dicebot(server: &TestServer) -> Client {
    Client::builder(server.url())
        .credentials("dicebot", PASSWORD)
        .register_if_missing(true)
        .join(["lobby"])
        .create_missing_rooms(true)
        .connect()
        .await
        .expect("bot connects")
}

/// Sends `text` as `user` and returns the bot's next message after it.
async fn ask(user: &mut Client, text: &str) -> String {
    user.room("lobby").send(text).await.expect("sent");
    loop {
        let message = next_message(user).await;
        if message.sender() == "dicebot" {
            return message.text().to_owned();
        }
    }
}

#[tokio::test]
async fn bot_answers_commands_with_help_and_usage() {
    let server = TestServer::start().await;
    let bot = dicebot(&server).await;
    let bot_task = tokio::spawn(bot.run(dice_commands()));
    let mut alice = connected(&server.url(), "alice", &["lobby"]).await;

    let roll = ask(&mut alice, "!roll 2d6").await;
    assert!(roll.starts_with("2d6: ["), "{roll}");
    let total: u64 = roll.rsplit(" = ").next().unwrap().parse().unwrap();
    assert!((2..=12).contains(&total), "{roll}");

    assert_eq!(
        ask(&mut alice, "!help").await,
        "commands:\n!roll <dice> - roll dice\n!time - the server's clock\n!help - list the commands"
    );
    let usage = ask(&mut alice, "!roll banana").await;
    assert!(
        usage.starts_with("usage: !roll <dice>, e.g. !roll 2d6"),
        "{usage}"
    );
    assert_eq!(
        ask(&mut alice, "!dance").await,
        "unknown command !dance; try !help"
    );
    // Plain chat is not a command and gets no answer: the next bot message
    // is the answer to the command after it.
    alice.room("lobby").send("hello bot").await.unwrap();
    assert_eq!(ask(&mut alice, "!time").await, "it is now");

    alice.shutdown().await;
    bot_task.abort();
}

#[tokio::test]
async fn bot_does_not_answer_its_own_messages() {
    let server = TestServer::start().await;
    let bot = dicebot(&server).await;
    let bot_ctx: Context = bot.context();
    let bot_task = tokio::spawn(bot.run(dice_commands()));
    let mut alice = connected(&server.url(), "alice", &["lobby"]).await;

    // The bot says something that looks like a command.
    let own_seq = bot_ctx.room("lobby").send("!help").await.unwrap();
    let seen = next_message(&mut alice).await;
    assert_eq!((seen.seq(), seen.sender()), (own_seq, "dicebot"));

    // Then alice asks. The bot handles events in order and a reply is
    // stored before its handler returns, so an answer to its own "!help"
    // would come before the answer to alice's.
    alice.room("lobby").send("!help").await.unwrap();
    let mine = next_message(&mut alice).await;
    assert_eq!((mine.sender(), mine.text()), ("alice", "!help"));
    let reply = next_message(&mut alice).await;
    assert_eq!(reply.sender(), "dicebot");
    assert!(reply.text().starts_with("commands:"), "{}", reply.text());
    assert_eq!(reply.seq(), own_seq + 2, "exactly one reply, to alice");

    alice.shutdown().await;
    bot_task.abort();
}

/// A handler that reports every message from others, in handling order.
fn recorder(tx: mpsc::UnboundedSender<(u64, String)>) -> impl confab_bot_sdk::Handler {
    recorder_stuck_at(tx, None)
}

/// Like [`recorder`], but handling the message `stuck_at` never finishes.
fn recorder_stuck_at(
    tx: mpsc::UnboundedSender<(u64, String)>,
    stuck_at: Option<String>,
) -> impl confab_bot_sdk::Handler {
    move |_ctx: Context, event: Event| {
        let tx = tx.clone();
        let stuck_at = stuck_at.clone();
        async move {
            if let Event::Message(message) = event
                && !message.from_self()
            {
                tx.send((message.seq(), message.text().to_owned()))?;
                if stuck_at.as_deref() == Some(message.text()) {
                    std::future::pending::<()>().await;
                }
            }
            Ok(())
        }
    }
}

async fn expect_handled(rx: &mut mpsc::UnboundedReceiver<(u64, String)>, texts: &[String]) {
    for text in texts {
        let (_, handled) = within("the bot to handle a message", rx.recv())
            .await
            .expect("bot alive");
        assert_eq!(&handled, text);
    }
}

fn texts(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("message {i}")).collect()
}

#[tokio::test]
async fn bot_resumes_after_server_restart_without_loss_or_duplicates() {
    let mut server = TestServer::start().await;
    let url = server.url();
    let bot = connected(&url, "recorder", &["lobby"]).await;
    let (tx, mut handled) = mpsc::unbounded_channel();
    let bot_task = tokio::spawn(bot.run(recorder(tx)));
    let alice = connected(&url, "alice", &["lobby"]).await;
    let lobby = alice.room("lobby");

    for text in texts(0..3) {
        lobby.send(&text).await.unwrap();
    }
    expect_handled(&mut handled, &texts(0..3)).await;

    // While the server is down, alice queues messages; they are stored
    // once the server is back, while the bot is reconnecting.
    server.stop().await;
    let mut pending = Vec::new();
    for text in texts(3..10) {
        let send = alice
            .context()
            .driver()
            .send_message("lobby", &text, false)
            .await;
        pending.push(send.expect("queued while offline"));
    }
    server.restart().await;
    for send in pending {
        within("ack after restart", send.acked()).await.unwrap();
    }
    for text in texts(10..12) {
        lobby.send(&text).await.unwrap();
    }
    expect_handled(&mut handled, &texts(3..12)).await;

    // Nothing more was handled: a barrier message is the next one.
    lobby.send("barrier").await.unwrap();
    expect_handled(&mut handled, &["barrier".to_owned()]).await;

    alice.shutdown().await;
    bot_task.abort();
}

/// A file store that also reports each save, so the test knows when a
/// handled message is durable before it kills the bot.
#[derive(Debug)]
struct ReportingStore {
    inner: FilePositionStore,
    saved: mpsc::UnboundedSender<u64>,
}

impl PositionStore for ReportingStore {
    fn load(&self) -> Result<Vec<RoomPosition>, StoreError> {
        self.inner.load()
    }

    fn save(&self, position: &RoomPosition) -> Result<(), StoreError> {
        self.inner.save(position)?;
        if self.saved.send(position.last_seq).is_err() {
            return Err(StoreError::Other("test ended".to_owned()));
        }
        Ok(())
    }
}

/// Runs a recorder bot on its own thread and runtime until `kill` fires;
/// then the runtime is dropped with everything in it (no graceful close).
fn run_killable_bot(
    url: confab_bot_sdk::ServerUrl,
    store_path: std::path::PathBuf,
    handled: mpsc::UnboundedSender<(u64, String)>,
    saved: mpsc::UnboundedSender<u64>,
    stuck_at: Option<String>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let bot = Client::builder(url)
                .credentials("archivist", PASSWORD)
                .register_if_missing(true)
                .join(["lobby"])
                .position_store(ReportingStore {
                    inner: FilePositionStore::new(store_path),
                    saved,
                })
                .connect()
                .await
                .expect("bot connects");
            tokio::select! {
                result = bot.run(recorder_stuck_at(handled, stuck_at)) => panic!("bot stopped: {result:?}"),
                _ = killed => {}
            }
        });
        drop(runtime);
    });
    (kill, thread)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_bot_restarts_from_its_file_store_exactly_once() {
    let server = TestServer::start().await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("positions.json");
    // The room exists before the bot's first start.
    let alice = connected(&url, "alice", &["lobby"]).await;
    let lobby = alice.room("lobby");
    lobby.send("before the bot").await.unwrap();

    let (handled_tx, mut handled) = mpsc::unbounded_channel();
    let (saved_tx, mut saved) = mpsc::unbounded_channel();
    let (kill, thread) =
        run_killable_bot(url.clone(), store_path.clone(), handled_tx, saved_tx, None);
    // The bot's join saved the head (seq 1): the earlier message is not for it.
    assert_eq!(within("join saved", saved.recv()).await, Some(1));

    // Run 1 handles 0..3 and is killed while idle, its last position durable.
    let mut last = 0;
    for text in texts(0..3) {
        last = lobby.send(&text).await.unwrap();
    }
    expect_handled(&mut handled, &texts(0..3)).await;
    while within("position saved", saved.recv()).await != Some(last) {}
    kill.send(()).unwrap();
    thread.join().unwrap();

    // While the bot is dead.
    for text in texts(3..8) {
        lobby.send(&text).await.unwrap();
    }

    // Run 2 catches up from its file, and is killed in the middle of
    // handling "message 5".
    let (handled_tx, mut handled) = mpsc::unbounded_channel();
    let (saved_tx, _saved) = mpsc::unbounded_channel();
    let stuck_at = Some("message 5".to_owned());
    let (kill, thread) = run_killable_bot(
        url.clone(),
        store_path.clone(),
        handled_tx,
        saved_tx,
        stuck_at,
    );
    expect_handled(&mut handled, &texts(3..6)).await;
    kill.send(()).unwrap();
    thread.join().unwrap();
    assert!(
        handled.try_recv().is_err(),
        "nothing handled after the stuck message"
    );

    // Run 3 handles "message 5" again (its handler never finished) and
    // everything after it, once.
    let (handled_tx, mut handled) = mpsc::unbounded_channel();
    let (saved_tx, _saved) = mpsc::unbounded_channel();
    let (kill, thread) = run_killable_bot(url.clone(), store_path, handled_tx, saved_tx, None);
    expect_handled(&mut handled, &texts(5..8)).await;
    for text in texts(8..10) {
        lobby.send(&text).await.unwrap();
    }
    expect_handled(&mut handled, &texts(8..10)).await;
    kill.send(()).unwrap();
    thread.join().unwrap();
    assert!(handled.try_recv().is_err(), "nothing handled twice");
    alice.shutdown().await;
}

#[tokio::test]
async fn a_handler_awaiting_its_send_does_not_stall_a_full_event_channel() {
    let server = TestServer::start().await;
    let url = server.url();
    // An event channel of one: every incoming message fills it while the
    // handler awaits the ack of its echo.
    let bot = Client::builder(url.clone())
        .credentials("echo", PASSWORD)
        .register_if_missing(true)
        .join(["lobby"])
        .create_missing_rooms(true)
        .driver_options(DriverOptions::default().event_capacity(1))
        .connect()
        .await
        .unwrap();
    let bot_task = tokio::spawn(bot.run(|ctx: Context, event: Event| async move {
        if let Event::Message(message) = event
            && !message.from_self()
        {
            let echo = format!("echo: {}", message.text());
            ctx.room(message.room()).send(&echo).await?;
        }
        Ok(())
    }));
    let mut alice = connected(&url, "alice", &["lobby"]).await;
    let driver = alice.context().driver().clone();
    let mut pending = Vec::new();
    for text in texts(0..25) {
        pending.push(driver.send_message("lobby", &text, false).await.unwrap());
    }
    for send in pending {
        within("ack", send.acked()).await.unwrap();
    }
    let mut echoes = Vec::new();
    while echoes.len() < 25 {
        let message = next_message(&mut alice).await;
        if message.sender() == "echo" {
            echoes.push(message.text().to_owned());
        }
    }
    let expected: Vec<String> = texts(0..25).iter().map(|t| format!("echo: {t}")).collect();
    assert_eq!(echoes, expected);
    alice.shutdown().await;
    bot_task.abort();
}

#[tokio::test]
async fn bot_sees_presence_typing_and_connection_events() {
    let server = TestServer::start().await;
    let url = server.url();
    let mut bot = connected(&url, "watcher", &["lobby"]).await;
    let alice = connected(&url, "alice", &["lobby"]).await;
    alice.room("lobby").set_typing(true).await.unwrap();
    let mut joined = false;
    loop {
        match within("presence and typing", bot.next_event())
            .await
            .unwrap()
        {
            Event::Presence { room, user, kind } if user == "alice" => {
                assert_eq!(room, "lobby");
                joined |= kind == PresenceKind::Joined;
            }
            Event::Typing { room, user, active } => {
                assert_eq!(
                    (room.as_str(), user.as_str(), active),
                    ("lobby", "alice", true)
                );
                break;
            }
            _ => {}
        }
    }
    assert!(joined, "alice's join was seen before her typing");
    // The server going away shows as a disconnect and a reconnect.
    let mut server = server;
    server.restart().await;
    let mut states = Vec::new();
    loop {
        match within("reconnect", bot.next_event()).await.unwrap() {
            Event::Connection(state) => {
                let online = state == ConnectionState::Online;
                states.push(state);
                if online {
                    break;
                }
            }
            Event::Error(ErrorEvent::Disconnected { close_code, .. }) => {
                assert_eq!(close_code, Some(1001), "server shutdown closes with 1001");
            }
            _ => {}
        }
    }
    assert!(
        states
            .iter()
            .any(|s| matches!(s, ConnectionState::Reconnecting { .. })),
        "{states:?}"
    );
    alice.shutdown().await;
    bot.shutdown().await;
}

#[tokio::test]
async fn sends_faster_than_the_rate_limit_all_arrive_in_order_without_errors() {
    let server = TestServer::start_with(|config| {
        config.limits.send_rate_per_sec = 20;
        config.limits.send_burst = 3;
    })
    .await;
    let url = server.url();
    let mut bot = connected(&url, "chatty", &["lobby"]).await;
    let mut alice = connected(&url, "alice", &["lobby"]).await;

    // Queue 20 messages at once: far past the burst of 3.
    let driver = bot.context().driver().clone();
    let mut pending = Vec::new();
    for text in texts(0..20) {
        pending.push(driver.send_message("lobby", &text, false).await.unwrap());
    }
    let mut seqs = Vec::new();
    for send in pending {
        seqs.push(within("ack", send.acked()).await.expect("no error").seq);
    }
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());

    // Alice receives them all, in order.
    for (i, text) in texts(0..20).iter().enumerate() {
        let message = next_message(&mut alice).await;
        assert_eq!(
            (message.seq(), message.text()),
            (i as u64 + 1, text.as_str())
        );
    }
    // The bot's own stream shows its 20 messages and no error.
    let mut own = 0;
    while own < 20 {
        match within("bot event", bot.next_event()).await.unwrap() {
            Event::Message(m) => {
                assert!(m.from_self());
                own += 1;
            }
            Event::Error(err) => panic!("error surfaced to the bot author: {err:?}"),
            _ => {}
        }
    }
    alice.shutdown().await;
    bot.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_is_replaced_by_a_new_login_without_loss() {
    use confab_server::storage::Store;

    let mut server = TestServer::start().await;
    let url = server.url();
    confab_bot_sdk::http::register(&url, "keeper", PASSWORD)
        .await
        .unwrap();
    let token = confab_bot_sdk::http::login(&url, "keeper", PASSWORD)
        .await
        .unwrap()
        .token;
    let bot = Client::builder(url.clone())
        .token(token.clone())
        .credentials("keeper", PASSWORD)
        .join(["lobby"])
        .create_missing_rooms(true)
        .connect()
        .await
        .unwrap();
    let (tx, mut handled) = mpsc::unbounded_channel();
    let bot_task = tokio::spawn(bot.run(recorder(tx)));
    let alice = connected(&url, "alice", &["lobby"]).await;
    let lobby = alice.room("lobby");
    lobby.send("message 0").await.unwrap();
    expect_handled(&mut handled, &texts(0..1)).await;

    // Revoke the bot's token while the server is down; on reconnect the
    // server answers TOKEN_REVOKED and closes with 4403.
    server.stop().await;
    let db = server.data_dir().join(confab_server::config::DATABASE_FILE);
    let store = confab_server::storage::sqlite::SqliteStore::open(None, &db)
        .await
        .unwrap();
    let now_ms = confab_server::auth::now_ms();
    assert!(
        store
            .revoke_token(&confab_server::auth::token_hash(&token), now_ms)
            .await
            .unwrap()
    );
    store.close().await.unwrap();
    server.restart().await;

    for text in texts(1..4) {
        lobby.send(&text).await.unwrap();
    }
    expect_handled(&mut handled, &texts(1..4)).await;
    assert!(!bot_task.is_finished(), "the bot kept running");
    alice.shutdown().await;
    bot_task.abort();
}

#[tokio::test]
async fn skip_backlog_ignores_what_was_sent_while_away() {
    let server = TestServer::start().await;
    let url = server.url();
    let store = std::sync::Arc::new(confab_bot_sdk::MemoryPositionStore::new());
    let alice = connected(&url, "alice", &["lobby"]).await;
    let lobby = alice.room("lobby");
    let start = |skip_backlog: bool| {
        Client::builder(url.clone())
            .credentials("skipper", PASSWORD)
            .register_if_missing(true)
            .join(["lobby"])
            .position_store(std::sync::Arc::clone(&store))
            .skip_backlog(skip_backlog)
            .connect()
    };

    let mut bot = start(false).await.unwrap();
    lobby.send("seen").await.unwrap();
    assert_eq!(next_message(&mut bot).await.text(), "seen");
    bot.shutdown().await;
    lobby.send("missed 1").await.unwrap();
    lobby.send("missed 2").await.unwrap();

    let mut bot = start(true).await.unwrap();
    lobby.send("after restart").await.unwrap();
    assert_eq!(next_message(&mut bot).await.text(), "after restart");
    bot.shutdown().await;

    // Without skip_backlog the same store resumes after the last handled one.
    lobby.send("while away").await.unwrap();
    let mut bot = start(false).await.unwrap();
    assert_eq!(next_message(&mut bot).await.text(), "while away");
    bot.shutdown().await;
    alice.shutdown().await;
}

/// Waits until `client`'s read state in `room` is `want` (marker, unread,
/// mentions), as its `Event::ReadState`s tell it.
async fn read_state_becomes(client: &mut Client, room: &str, want: (u64, u32, u32)) {
    within(&format!("read state {want:?} in {room}"), async {
        loop {
            match client.next_event().await {
                Some(Event::ReadState { room: r, counts })
                    if r == room && (counts.read_seq, counts.unread, counts.mentions) == want =>
                {
                    return;
                }
                Some(_) => {}
                None => panic!("client ended while waiting for its read state"),
            }
        }
    })
    .await;
}

/// §11.3 against a real server: reading on one connection clears the
/// counts on the user's other one, the counts survive a client restart,
/// and a mention counts only for the user it names.
#[tokio::test]
async fn read_markers_are_shared_across_connections_and_restarts() {
    let server = TestServer::start().await;
    let url = server.url();
    let alice = connected(&url, "alice", &["lobby"]).await;
    let mut bob_phone = connected(&url, "bob", &["lobby"]).await;
    let mut bob_desk = connected(&url, "bob", &["lobby"]).await;
    let mut carol = connected(&url, "carol", &["lobby"]).await;
    let lobby = alice.room("lobby");
    lobby.send("morning").await.expect("sent");
    lobby
        .send("@bob can you look at this?")
        .await
        .expect("sent");
    let last = lobby.send("thanks").await.expect("sent");

    read_state_becomes(&mut bob_phone, "lobby", (0, 3, 1)).await;
    read_state_becomes(&mut bob_desk, "lobby", (0, 3, 1)).await;
    read_state_becomes(&mut carol, "lobby", (0, 3, 0)).await;

    // Read on the phone: the desk's counts drop to 0 (a ReadState push).
    bob_phone
        .room("lobby")
        .mark_read(last)
        .await
        .expect("marked");
    read_state_becomes(&mut bob_phone, "lobby", (last, 0, 0)).await;
    read_state_becomes(&mut bob_desk, "lobby", (last, 0, 0)).await;
    bob_desk.shutdown().await;
    bob_phone.shutdown().await;

    // Carol never read; a fresh client (a restart) gets her counts from
    // the server, and bob's reading stays done.
    carol.shutdown().await;
    let mut carol = connected(&url, "carol", &["lobby"]).await;
    read_state_becomes(&mut carol, "lobby", (0, 3, 0)).await;
    let mut bob = connected(&url, "bob", &["lobby"]).await;
    read_state_becomes(&mut bob, "lobby", (last, 0, 0)).await;
    assert_eq!(
        bob.room("lobby").read_counts().await.expect("driver alive"),
        Some(confab_bot_sdk::ReadCounts {
            read_seq: last,
            unread: 0,
            mentions: 0
        })
    );
    alice.shutdown().await;
    bob.shutdown().await;
    carol.shutdown().await;
}
