//! End-to-end tests: the real `confab` binary in a pseudo-terminal against
//! the real reference server (in-process). Every wait is an expectation on
//! the client's output with a timeout; nothing sleeps.

mod cli_support;
mod support;

use cli_support::{Client, Home, Lines, Proxy, Server, run, run_with_input};

const PASSWORD: &str = "correct horse battery";

/// A user logged in through the real login screen (`confab login`).
fn logged_in(server: &Server, username: &str) -> Home {
    logged_in_at(&server.url(), username)
}

/// A user logged in at `url` (a server, or a proxy in front of one).
fn logged_in_at(url: &str, username: &str) -> Home {
    let home = Home::new();
    let mut client = Client::spawn(&home, &["--server", url, "login"]);
    client.register(username, PASSWORD);
    client.expect(&format!("logged in as {username}"));
    client.expect_exit();
    home
}

/// Starts the chat for a logged-in user and waits until it is connected.
/// Lines typed from now on wait in the terminal until the prompt reads them.
fn chat(home: &Home) -> Client {
    let mut client = Client::spawn(home, &[]);
    client.expect("connected to");
    client
}

/// The words of `room`'s row in the last rooms table of `output`.
fn table_row(output: &str, room: &str) -> Vec<String> {
    let table = output
        .rsplit_once("LAST ACTIVITY")
        .unwrap_or_else(|| panic!("a rooms table: {output}"))
        .1;
    table
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|words| words.iter().take(2).any(|w| *w == room))
        .unwrap_or_else(|| panic!("{room} in the rooms table: {table}"))
}

#[test]
fn first_login_registers_then_the_cached_token_skips_login_and_logout_forgets_it() {
    let server = Server::start();
    let home = Home::new();

    let mut first = Client::spawn(&home, &["--server", &server.url()]);
    first.register("alice", PASSWORD);
    first.expect("logged in as alice");
    first.expect(&format!("connected to {} as alice", server.url()));
    first.expect("no rooms yet");
    first.quit();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.login_file())
            .expect("token saved")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the saved token is private");
    }
    let token = home.token();
    // `confab token` prints exactly the saved token, for CONFAB_TOKEN.
    let (ok, out, err) = run(home.command(&["token"]));
    assert!(ok, "confab token failed: {err}");
    assert_eq!(out, format!("{token}\n"), "only the token on stdout");

    // No --server, no prompts: the saved login is used.
    let mut second = Client::spawn(&home, &[]);
    let before = second.expect(&format!("connected to {} as alice", server.url()));
    assert!(!before.contains("Username"), "no login screen: {before}");
    second.expect("online");
    second.line("/logout");
    second.expect("logged out");
    second.expect_exit();
    assert!(!home.login_file().exists(), "the saved token is deleted");
    assert!(server.token_was_revoked(&token), "the token is revoked");
    let (ok, _, err) = run(home.command(&["token"]));
    assert!(!ok && err.contains("not logged in"), "after logout: {err}");
}

#[test]
fn a_revoked_saved_token_leads_back_to_the_login_screen() {
    let server = Server::start();
    let home = logged_in(&server, "alice");
    // Logged out elsewhere (e.g. `confab logout` on a copy of the token).
    assert!(!server.token_was_revoked(&home.token()));

    let mut client = Client::spawn(&home, &[]);
    client.expect("no longer accepts your saved login");
    client.expect("press Enter to log in again");
    client.line("");
    client.expect("Username [alice]:");
    client.line("");
    client.expect("Password:");
    client.line(PASSWORD);
    client.expect("logged in as alice");
    client.expect("connected to");
    client.quit();
}

#[test]
fn login_mistakes_get_a_sentence_and_a_retry() {
    let server = Server::start();
    let _alice = logged_in(&server, "alice");
    let home = Home::new();

    // A port nobody listens on: the server was stopped, so its port is free.
    let mut gone = Server::start();
    let dead_url = gone.url();
    gone.stop();

    let mut client = Client::spawn(&home, &["--server", &dead_url]);
    client.expect("Username:");
    client.line("alice");
    client.expect("Password:");
    client.line(PASSWORD);
    client.expect("cannot reach");
    client.expect("Server [");
    client.line(&server.url());
    client.expect("Username [alice]:");
    client.line("");
    client.expect("Password:");
    client.line("not the password");
    client.expect("No account 'alice' here or wrong password. Register it? [y/N]");
    client.line("n");
    client.expect("Username [alice]:");
    client.line("");
    client.expect("Password:");
    client.line(PASSWORD);
    let shown = client.expect("connected to");
    assert!(!shown.contains("panicked"), "{shown}");
    client.quit();
}

#[test]
fn the_rooms_list_shows_counts_and_updates_live() {
    let server = Server::start();
    let alice_home = logged_in(&server, "alice");
    let bob_home = logged_in(&server, "bob");

    let mut alice = chat(&alice_home);
    alice.line("/create general Everything and nothing");
    alice.expect("created #general - Everything and nothing (1 member, 1 online)");

    let mut bob = chat(&bob_home);
    let table = bob.expect("/join NAME to enter one");
    let row = table_row(&table, "#general");
    // ROOM MEMBERS ONLINE UNREAD LAST-ACTIVITY TOPIC
    assert_eq!(&row[..4], ["#general", "1", "1", "-"], "{table}");
    assert_eq!(
        row[4..].join(" "),
        "just now Everything and nothing",
        "{table}"
    );

    // Created while bob watches: pushed to him (RoomListUpdate ADDED).
    alice.line("/create ops");
    alice.expect("created #ops");
    bob.expect("new room #ops (/join ops)");

    // Counts follow membership (RoomListUpdate CHANGED).
    bob.enter("general", false);
    bob.line("/rooms");
    let table = bob.expect("/join NAME to enter one");
    // ">" marks the current room.
    let row = table_row(&table, "#general");
    assert_eq!(&row[..5], [">", "#general", "2", "2", "0"], "{table}");
    assert!(!table_row(&table, "#ops").is_empty());

    alice.quit();
    bob.quit();
}

#[test]
fn two_clients_chat_both_ways_with_typing_and_join_notices() {
    let server = Server::start();
    let alice_home = logged_in(&server, "alice");
    let bob_home = logged_in(&server, "bob");

    let mut alice = chat(&alice_home);
    alice.enter("general", true);
    alice.line("before bob came");
    alice.expect("<alice> before bob came");

    let mut bob = chat(&bob_home);
    bob.enter("general", false);
    // Recent history is shown on join.
    bob.expect("<alice> before bob came");
    alice.expect("bob joined #general");

    bob.line("hi alice");
    alice.expect("<bob> hi alice");
    alice.line("hey bob");
    bob.expect("<alice> hey bob");
    alice.line("/me waves");
    bob.expect("* alice waves");

    // Tab completes commands, then room names.
    bob.type_text("/sw\t");
    bob.expect("/switch ");
    bob.type_text("gen\t");
    bob.expect("/switch general");
    bob.clear_line();

    // Typing shows on the other side before anything is sent, in the
    // status line above the input row, not in the scrollback.
    bob.type_text("still typing");
    alice.expect_regex(r"\[online\] \[#general\] bob is typing.*\r?\n#general> ");

    alice.line("/who");
    alice.expect("members of #general (2; * online): alice*, bob*");

    // The sender sees its own line once: the server's echo of it is not
    // shown again (the one "<alice> just once" left is the history line).
    alice.line("just once");
    alice.expect("<alice> just once");
    alice.line("/history 3");
    let after = alice.expect("end of history");
    assert_eq!(after.matches("<alice> just once").count(), 1, "{after}");

    alice.quit();
    bob.clear_line();
    bob.quit();
}

/// Issue #16 in the terminal: numbered lines, /edit, /react, /reply and
/// /delete between two clients, each seen on the other side as it stands.
#[test]
fn edit_react_reply_and_delete_between_two_clients() {
    let server = Server::start();
    let alice_home = logged_in(&server, "alice");
    let bob_home = logged_in(&server, "bob");
    let mut alice = chat(&alice_home);
    alice.enter("general", true);
    let mut bob = chat(&bob_home);
    bob.enter("general", false);
    alice.expect("bob joined #general");

    alice.line("meet at 5");
    bob.expect("#1 <alice> meet at 5");
    alice.line("/edit meet at 6");
    bob.expect("#1 <alice> meet at 6 (edited)");
    // ASCII keys: the pseudo-terminal reader here reads bytes as Latin-1.
    bob.line("/react #1 +1");
    alice.expect("bob reacted +1 to #1 (\"meet at 6\"): +1 1");
    bob.line("/reply #1 see you then");
    alice.expect("<bob> [re #1 \"meet at 6\"] see you then");
    bob.line("/edit #1 bob was here");
    bob.expect("#1 is alice's message; you can only edit your own");
    alice.line("/delete #1");
    bob.expect("alice deleted #1");
    // History shows it as it stands.
    bob.line("/history 5");
    let page = bob.expect("end of history");
    assert!(page.contains("#1 <alice> (deleted)"), "{page}");
    assert!(page.contains("[re #1 (deleted)] see you then"), "{page}");
    assert!(
        !page.contains("meet at"),
        "the deleted text is gone: {page}"
    );

    alice.quit();
    bob.quit();
}

#[test]
fn a_second_room_receives_none_of_the_first_rooms_messages() {
    let server = Server::start();
    let alice_home = logged_in(&server, "alice");
    let bob_home = logged_in(&server, "bob");

    let mut alice = chat(&alice_home);
    alice.enter("alpha", true);
    alice.enter("beta", true);

    let mut bob = chat(&bob_home);
    bob.enter("beta", false);

    alice.line("/switch alpha");
    alice.expect("now in #alpha");
    alice.line("secret of alpha");
    alice.expect("<alice> secret of alpha");
    alice.line("/switch beta");
    alice.expect("now in #beta");
    alice.line("hello beta");

    let seen = bob.expect("<alice> hello beta");
    assert!(!seen.contains("secret of alpha"), "{seen}");
    bob.line("/rooms");
    let table = bob.expect("/join NAME to enter one");
    assert!(!table.contains("secret"), "{table}");

    alice.quit();
    bob.quit();
}

#[test]
fn a_message_typed_while_the_server_is_down_is_delivered_once_when_it_returns() {
    let mut server = Server::start();
    let alice_home = logged_in(&server, "alice");
    let bob_home = logged_in(&server, "bob");

    let mut alice = chat(&alice_home);
    alice.enter("general", true);
    let mut bob = chat(&bob_home);
    bob.enter("general", false);

    server.stop();
    alice.expect("connection lost");
    // The status line shows the state: the countdown to the next attempt
    // while waiting, "connecting" during it (retries come quickly in tests).
    alice.expect_regex(r"\[(reconnect in \d+s \(attempt \d+\)|connecting)\] \[#general\]");
    bob.expect("connection lost");

    alice.line("typed while down");
    alice.expect("<alice> typed while down (pending)");

    server.restart();
    let meanwhile = alice.expect("reconnected");
    // Attempts are the status line's; the chat said once that it was lost.
    assert!(
        !meanwhile.contains("next try") && !meanwhile.contains("connection lost"),
        "{meanwhile}"
    );
    alice.expect("delivered #general: typed while down");
    bob.expect("<alice> typed while down");

    // Exactly once: nothing repeats it before a later message, and the
    // stored history holds it once.
    alice.line("after the outage");
    let between = bob.expect("<alice> after the outage");
    assert!(!between.contains("typed while down"), "{between}");
    bob.line("/history 10");
    let history = bob.expect("end of history");
    assert_eq!(history.matches("typed while down").count(), 1, "{history}");
    assert!(!alice_home.outbox_file("alice", &server).exists());

    alice.quit();
    bob.quit();
}

#[test]
fn a_client_cut_off_from_the_network_catches_up_in_order_when_it_returns() {
    let server = Server::start();
    let proxy = Proxy::start(server.addr());
    let alice_home = logged_in_at(&proxy.url(), "alice");
    let bob_home = logged_in(&server, "bob");

    let mut alice = chat(&alice_home);
    alice.enter("general", true);
    alice.expect("say hello");
    let mut bob = chat(&bob_home);
    bob.enter("general", false);
    alice.expect("bob joined #general");

    // Only alice loses the network; bob keeps talking.
    proxy.cut();
    alice.expect("connection lost");
    for text in ["missed one", "missed two", "missed three"] {
        bob.line(text);
        bob.expect(&format!("<bob> {text}"));
    }
    alice.line("said in the dark");
    alice.expect("<alice> said in the dark (pending)");

    proxy.restore();
    // Resume replays what was missed, in order, each once (§10); then the
    // outbox goes out with its original id.
    let caught_up = alice.expect("<bob> missed three");
    let one = caught_up
        .find("<bob> missed one")
        .expect("missed one replayed");
    let two = caught_up
        .find("<bob> missed two")
        .expect("missed two replayed");
    assert!(one < two, "{caught_up}");
    assert_eq!(caught_up.matches("missed one").count(), 1, "{caught_up}");
    alice.expect("delivered #general: said in the dark");
    bob.expect("<alice> said in the dark");

    bob.line("welcome back");
    let between = alice.expect("<bob> welcome back");
    assert!(
        !between.contains("missed"),
        "nothing replayed twice: {between}"
    );

    alice.quit();
    bob.quit();
}

#[test]
fn the_outbox_survives_a_killed_client_and_is_flushed_on_the_next_start() {
    let mut server = Server::start();
    let alice_home = logged_in(&server, "alice");
    let bob_home = logged_in(&server, "bob");

    let mut alice = chat(&alice_home);
    alice.enter("general", true);
    let mut bob = chat(&bob_home);
    bob.enter("general", false);

    server.stop();
    alice.expect("connection lost");
    alice.line("written offline");
    alice.expect("<alice> written offline (pending)");
    let outbox = alice_home.outbox_file("alice", &server);
    let saved = std::fs::read_to_string(&outbox).expect("outbox file written");
    assert_eq!(saved.lines().count(), 1, "{saved}");
    let entry: serde_json::Value = serde_json::from_str(saved.trim()).expect("JSON line");
    assert_eq!(entry["room"], "general");
    assert_eq!(entry["text"], "written offline");
    let client_msg_id = entry["client_msg_id"].as_str().expect("id").to_owned();
    alice.kill();

    server.restart();
    bob.expect("reconnected");
    let mut alice = Client::spawn(&alice_home, &[]);
    alice.expect("1 unsent message from last time");
    alice.expect("<alice> written offline (pending)");
    alice.expect("delivered #general: written offline");
    bob.expect("<alice> written offline");
    assert!(!outbox.exists(), "the outbox is empty once delivered");

    // Stored once, with the id it was given before the kill.
    let mut tail =
        Lines::spawn(bob_home.command(&["tail", "--room", "general", "--json", "--history", "50"]));
    let line = tail.next();
    let message: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(message["text"], "written offline");
    assert_eq!(message["clientMsgId"], client_msg_id.as_str());
    bob.line("/history 10");
    let history = bob.expect("end of history");
    assert_eq!(history.matches("written offline").count(), 1, "{history}");

    alice.quit();
    bob.quit();
}

#[test]
fn tail_json_prints_history_then_live_messages_and_send_works_with_a_token() {
    let server = Server::start();
    let token = server.token_for("carol", PASSWORD);
    let nobody = Home::new();
    let with_token = |args: &[&str]| {
        let mut command = nobody.command(args);
        command
            .env("CONFAB_SERVER", server.url())
            .env("CONFAB_TOKEN", &token);
        command
    };
    // A room to talk in, then a first message: `send` joins as needed.
    let alice_home = logged_in(&server, "alice");
    let mut alice = chat(&alice_home);
    alice.enter("news", true);
    let (ok, _, err) = run(with_token(&["send", "--room", "news", "first", "post"]));
    assert!(ok, "send failed: {err}");
    alice.expect("<carol> first post");

    let mut tail = Lines::spawn(with_token(&["tail", "--room", "news", "--json"]));
    let first: serde_json::Value = serde_json::from_str(&tail.next()).expect("JSON line");
    assert_eq!(first["room"], "news");
    assert_eq!(first["sender"], "carol");
    assert_eq!(first["text"], "first post");
    assert_eq!(first["seq"], "1", "uint64 is a string in proto3 JSON");
    assert!(first["messageId"].as_str().is_some_and(|id| !id.is_empty()));

    alice.line("live one");
    let live: serde_json::Value = serde_json::from_str(&tail.next()).expect("JSON line");
    assert_eq!(live["text"], "live one");
    assert_eq!(live["sender"], "alice");
    assert_eq!(live["seq"], "2");

    // The saved login works for send too; --me sends an action.
    let (ok, _, err) = run(alice_home.command(&["send", "--room", "news", "--me", "nods"]));
    assert!(ok, "send failed: {err}");
    let action: serde_json::Value = serde_json::from_str(&tail.next()).expect("JSON line");
    assert_eq!(action["kind"], "MESSAGE_KIND_ACTION");

    // A bad token is a sentence, not a stack trace.
    let mut bad = nobody.command(&["send", "--room", "news", "x"]);
    bad.env("CONFAB_SERVER", server.url())
        .env("CONFAB_TOKEN", "nope");
    let (ok, _, err) = run(bad);
    assert!(!ok);
    assert!(err.contains("refused the token"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    alice.quit();
}

#[test]
fn piped_lines_wait_for_the_connection_and_quit_waits_for_the_ack() {
    let server = Server::start();
    let home = logged_in(&server, "alice");
    let (ok, shown) = run_with_input(home.command(&[]), "/create piped\nfrom a pipe\n/quit\n");
    assert!(ok, "{shown}");
    assert!(shown.contains("created #piped"), "{shown}");
    assert!(shown.contains("<alice> from a pipe"), "{shown}");
    assert!(!shown.contains("not yet delivered"), "{shown}");
    let mut tail = Lines::spawn(home.command(&["tail", "--room", "piped", "--json"]));
    let stored: serde_json::Value = serde_json::from_str(&tail.next()).expect("JSON line");
    assert_eq!(stored["text"], "from a pipe");
}

#[test]
fn help_lists_every_command() {
    let home = Home::new();
    let (ok, help, _) = run(home.command(&["--help"]));
    assert!(ok);
    for command in ["login", "logout", "send", "tail"] {
        assert!(
            help.contains(&format!("  {command} ")),
            "subcommand {command}: {help}"
        );
    }
    for slash in [
        "/join", "/create", "/switch", "/leave", "/who", "/history", "/me", "/rooms", "/help",
        "/logout", "/quit",
    ] {
        assert!(help.contains(slash), "slash command {slash}: {help}");
    }
    assert!(help.contains("NO_COLOR"), "{help}");
}

#[test]
fn the_binary_under_test_is_this_workspaces_confab() {
    // The binary comes from a nested `cargo build` (support/binary.rs),
    // not from this package: make sure it is confab-cli at this version and
    // not some other `confab` that happened to be found.
    let home = Home::new();
    let (ok, version, err) = run(home.command(&["--version"]));
    assert!(ok, "{err}");
    assert_eq!(
        version.trim(),
        concat!("confab ", env!("CARGO_PKG_VERSION")),
        "{version}"
    );
}

/// Issue #13: lines typed ahead (here 50, in one write to the terminal, as
/// a fast typist or a paste without bracketed-paste mode delivers them)
/// all arrive, in order, exactly once.
#[test]
fn fifty_lines_written_at_once_all_arrive_in_order_exactly_once() {
    let server = Server::start();
    let token = server.token_for("reader", PASSWORD);
    let alice_home = logged_in(&server, "alice");
    let mut alice = chat(&alice_home);
    alice.enter("burst", true);
    let nobody = Home::new();
    let mut tail_command = nobody.command(&["tail", "--room", "burst", "--json"]);
    tail_command
        .env("CONFAB_SERVER", server.url())
        .env("CONFAB_TOKEN", &token);
    let mut tail = Lines::spawn(tail_command);
    // Typing starts once tail follows the room: it prints a page of
    // history, then live lines, and a burst typed while it was still
    // connecting could fall before its page (seen once in CI).
    alice.line("tail, are you there?");
    loop {
        let line: serde_json::Value = serde_json::from_str(&tail.next()).expect("JSON line");
        if line["text"] == "tail, are you there?" {
            break;
        }
    }

    let lines: Vec<String> = (1..=50).map(|n| format!("typed ahead {n:02}")).collect();
    let mut keys: String = lines.iter().map(|l| format!("{l}\r")).collect();
    // One more after them: when it arrives, nothing typed before it can
    // still be on its way, so a repeat of any of the 50 would show up here.
    keys.push_str("the last line\r");
    alice.type_text(&keys);

    let mut seen = Vec::new();
    loop {
        let line: serde_json::Value = serde_json::from_str(&tail.next()).expect("JSON line");
        let text = line["text"].as_str().expect("a text").to_owned();
        if text == "the last line" {
            break;
        }
        seen.push(text);
    }
    assert_eq!(seen, lines, "every typed line once, in the order typed");
    alice.quit();
}

/// Issue #13: a bracketed paste of 10 lines is one message of 10 lines, not
/// ten messages (nor one line and nine lost).
#[test]
fn a_bracketed_paste_of_ten_lines_is_one_message() {
    let server = Server::start();
    let token = server.token_for("reader", PASSWORD);
    let alice_home = logged_in(&server, "alice");
    let mut alice = chat(&alice_home);
    alice.enter("paste", true);
    let nobody = Home::new();
    let mut tail_command = nobody.command(&["tail", "--room", "paste", "--json"]);
    tail_command
        .env("CONFAB_SERVER", server.url())
        .env("CONFAB_TOKEN", &token);
    let mut tail = Lines::spawn(tail_command);

    let pasted: Vec<String> = (1..=10).map(|n| format!("pasted line {n}")).collect();
    // What a terminal sends for a paste in bracketed-paste mode, then Enter.
    alice.type_text(&format!("\x1b[200~{}\x1b[201~\r", pasted.join("\n")));
    alice.line("after the paste");

    let first: serde_json::Value = serde_json::from_str(&tail.next()).expect("JSON line");
    assert_eq!(
        first["text"].as_str(),
        Some(pasted.join("\n").as_str()),
        "{first}"
    );
    let second: serde_json::Value = serde_json::from_str(&tail.next()).expect("JSON line");
    assert_eq!(second["text"], "after the paste");
    alice.quit();
}

#[test]
fn after_a_restart_the_unread_counts_come_from_the_server_and_the_last_room_reopens() {
    let server = Server::start();
    let alice_home = logged_in(&server, "alice");
    let bob_home = logged_in(&server, "bob");

    let mut bob = chat(&bob_home);
    bob.enter("ops", true);
    bob.enter("general", true);
    bob.quit();

    let mut alice = chat(&alice_home);
    alice.enter("ops", false);
    alice.line("one");
    alice.expect("<alice> one");
    alice.line("hey @bob, look");
    alice.expect("<alice> hey @bob, look");
    alice.line("three");
    alice.expect("<alice> three");
    alice.quit();

    // Nothing of ops was read in memory: the counts are the server's.
    let mut bob = chat(&bob_home);
    bob.expect("back in #general, where you were");
    // The activity list has the server's counts, the mention highlighted,
    // and the bell rang for it.
    bob.expect("\u{7}");
    bob.expect_regex(r"\[act: (\x1b\[[0-9;]*m)*ops 3@1");
    bob.line("/rooms");
    let table = bob.expect("/join NAME to enter one");
    let row = table_row(&table, "#ops");
    assert_eq!(&row[..5], ["*", "#ops", "2", "1", "3@1"], "{table}");
    let row = table_row(&table, "#general");
    assert_eq!(row[0], ">", "general is current again: {table}");

    // Entering ops marks where the unread start and reads them.
    bob.line("/switch ops");
    let view = bob.expect("<alice> three");
    let marker = view.find("new since you left").expect("the marker line");
    assert!(
        marker < view.find("<alice> one").expect("the first unread"),
        "{view}"
    );
    bob.line("/rooms");
    // The table the chat prints by itself when the room list first comes
    // can still be ahead in the output if the first /rooms above was
    // answered before it; the one asked for now has ops current.
    let table = loop {
        let table = bob.expect("/join NAME to enter one");
        if table_row(&table, "#ops")[0] == ">" {
            break table;
        }
    };
    assert_eq!(table_row(&table, "#ops")[4], "0", "{table}");
    bob.quit();

    // Read is read on the server too: the next start agrees.
    let mut bob = chat(&bob_home);
    bob.expect("back in #ops, where you were");
    bob.line("/rooms");
    let table = bob.expect("/join NAME to enter one");
    assert_eq!(table_row(&table, "#general")[4], "0", "{table}");
    assert_eq!(table_row(&table, "#ops")[4], "0", "{table}");
    bob.quit();
}
