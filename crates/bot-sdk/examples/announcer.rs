//! Announcer: sends each line of its standard input to a room, keeping the
//! sends the server has not acknowledged in a file, so a crash or a restart
//! loses none and repeats none.
//!
//! ```text
//! cargo run -p confab-bot-sdk --example announcer -- [SERVER_URL] [ROOM] [OUTBOX_FILE]
//! ```
//!
//! Defaults: `http://127.0.0.1:7420`, room `lobby`, `announcer-outbox.jsonl`.
//! The account is `CONFAB_BOT_USER` / `CONFAB_BOT_PASSWORD` (default
//! `announcer` / `announcer-password`), registered on first start.
//!
//! It prints `restored N` (the unacknowledged lines of the last run, sent
//! again now), `online`, then for each line `queued TEXT` once the line is
//! in the outbox file and `acked SEQ TEXT` once the server stored it. Kill
//! it at any point after `queued`: the next start delivers the line, once.
//! It ends at the end of its input; lines not yet acknowledged stay in the
//! file for the next start. The tests of `confab-tests` drive it this way.

use confab_bot_sdk::{Client, Event, FileOutboxStore, OutboxStore, ServerUrl};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server: ServerUrl = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7420".to_owned())
        .parse()?;
    let room = args.next().unwrap_or_else(|| "lobby".to_owned());
    let outbox = FileOutboxStore::new(
        args.next()
            .unwrap_or_else(|| "announcer-outbox.jsonl".to_owned()),
    );
    let user = std::env::var("CONFAB_BOT_USER").unwrap_or_else(|_| "announcer".to_owned());
    let password =
        std::env::var("CONFAB_BOT_PASSWORD").unwrap_or_else(|_| "announcer-password".to_owned());

    println!("restored {}", outbox.load()?.len());
    let mut client = Client::builder(server)
        .credentials(user, password)
        .register_if_missing(true)
        .join([room.as_str()])
        .create_missing_rooms(true)
        .outbox_store(outbox)
        .connect()
        .await?;
    println!("online");

    let mut lines = stdin_lines();
    let driver = client.context().driver().clone();
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(text) = line else { break };
                // Returns once the line is in the outbox file.
                let pending = driver.send_message(&room, &text, false).await?;
                println!("queued {text}");
                tokio::spawn(async move {
                    match pending.acked().await {
                        Ok(ack) => println!("acked {} {text}", ack.seq),
                        Err(err) => eprintln!("not sent: {text}: {err}"),
                    }
                });
            }
            event = client.next_event() => match event {
                Some(Event::Connection(state)) => println!("connection: {state:?}"),
                Some(Event::Error(error)) => eprintln!("error: {error:?}"),
                Some(_) => {}
                None => break,
            },
        }
    }
    client.shutdown().await;
    Ok(())
}

/// Standard input, line by line, read on a thread of its own (a blocking
/// read must not hold up the runtime).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
