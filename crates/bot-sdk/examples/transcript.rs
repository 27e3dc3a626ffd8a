//! Transcript bot: appends every message of its rooms to a JSON-lines file,
//! one `confab.v1.Message` per line in its canonical proto3 JSON mapping.
//!
//! ```text
//! cargo run -p confab-bot-sdk --example transcript -- [SERVER_URL] [FILE] [ROOM...]
//! ```
//!
//! Defaults: `http://127.0.0.1:7420`, `transcript.jsonl`, room `lobby`.
//! The account is `CONFAB_BOT_USER` / `CONFAB_BOT_PASSWORD` (default
//! `transcript-bot` / `transcript-bot-password`).
//!
//! Stop it (ctrl-c, or kill it) and start it again: it continues where it
//! stopped, with no gap and no repeat. Positions are kept next to the file
//! (`FILE.positions.json`, a `FilePositionStore`): after each line is
//! written and synced, the message's position is saved. A crash between
//! the two would write the line again on restart, so at start the bot also
//! reads the highest seq per room already in the file and skips up to it.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use confab_bot_sdk::protocol::wire;
use confab_bot_sdk::{Client, Context, Event, FilePositionStore, HandlerError, ServerUrl};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server: ServerUrl = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7420".to_owned())
        .parse()?;
    let path = PathBuf::from(args.next().unwrap_or_else(|| "transcript.jsonl".to_owned()));
    let mut rooms: Vec<String> = args.collect();
    if rooms.is_empty() {
        rooms.push("lobby".to_owned());
    }
    let user = std::env::var("CONFAB_BOT_USER").unwrap_or_else(|_| "transcript-bot".to_owned());
    let password = std::env::var("CONFAB_BOT_PASSWORD")
        .unwrap_or_else(|_| "transcript-bot-password".to_owned());

    let mut positions = path.as_os_str().to_owned();
    positions.push(".positions.json");
    let transcript = Transcript::open(&path)?;
    let client = Client::builder(server)
        .credentials(user, password)
        .register_if_missing(true)
        .join(rooms)
        .create_missing_rooms(true)
        .position_store(FilePositionStore::new(positions))
        .connect()
        .await?;
    println!(
        "{} is writing {}; ctrl-c to stop",
        client.username(),
        path.display()
    );
    let transcript = Arc::new(transcript);
    client
        .run_until_ctrl_c(move |_ctx: Context, event: Event| {
            let transcript = Arc::clone(&transcript);
            async move {
                if let Event::Message(message) = event {
                    transcript.append(message.wire())?;
                }
                Ok::<(), HandlerError>(())
            }
        })
        .await?;
    Ok(())
}

/// The JSON-lines file, with the highest seq written per room.
struct Transcript {
    file: Mutex<(std::fs::File, HashMap<String, u64>)>,
}

impl Transcript {
    fn open(path: &Path) -> std::io::Result<Self> {
        let mut written = HashMap::new();
        if let Ok(existing) = std::fs::File::open(path) {
            for line in std::io::BufReader::new(existing).lines() {
                // A torn last line (crash mid-write) is not a message; skip it.
                let Ok(message) = serde_json::from_str::<wire::Message>(&line?) else {
                    continue;
                };
                let seq = written.entry(message.room).or_insert(0);
                *seq = message.seq.max(*seq);
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            file: Mutex::new((file, written)),
        })
    }

    /// Appends `message` unless the file already holds it, and syncs.
    fn append(&self, message: &wire::Message) -> Result<(), HandlerError> {
        let mut guard = self.file.lock().map_err(|_| "transcript lock poisoned")?;
        let (file, written) = &mut *guard;
        if written
            .get(&message.room)
            .is_some_and(|seq| message.seq <= *seq)
        {
            return Ok(());
        }
        let mut line = serde_json::to_string(message)?;
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        written.insert(message.room.clone(), message.seq);
        Ok(())
    }
}
