//! A bot as a process of its own: the bot SDK's `announcer` example, which
//! sends each line written to its stdin and reports on stdout what became of
//! it (`restored N`, `online`, `queued TEXT`, `acked SEQ TEXT`). Unlike a bot
//! on a thread of the test, it can die by SIGKILL with nothing of it running
//! on the way out, as a crashed bot does.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;

/// How long one expected line may take; it only matters when a test fails.
pub const LINE_WAIT: Duration = Duration::from_secs(60);

/// A running announcer; killed (SIGKILL) when dropped.
pub struct BotProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl BotProcess {
    /// Starts the announcer as `username` (password `password`) for `room`
    /// of the server at `url`, keeping its outbox in `outbox`.
    pub fn start(url: &str, username: &str, password: &str, room: &str, outbox: &Path) -> Self {
        let binary = super::binary::announcer();
        let mut child = Command::new(&binary)
            .arg(url)
            .arg(room)
            .arg(outbox)
            .env("CONFAB_BOT_USER", username)
            .env("CONFAB_BOT_PASSWORD", password)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", binary.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        // Shown in the test's output, labelled, for when a test fails.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[bot] {line}");
            }
        });
        let (tx, lines) = mpsc::unbounded_channel();
        // Reads stdout for the life of the process, so the bot never blocks
        // on a full pipe; ends at EOF, when the process is gone.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[bot stdout] {line}");
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                    continue;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Waits for the line `expected`, skipping the others (connection
    /// states, acks the test does not wait for).
    pub async fn expect(&mut self, expected: &str) {
        let found = tokio::time::timeout(LINE_WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if line == expected {
                    return true;
                }
            }
            false
        })
        .await;
        match found {
            Ok(true) => {}
            Ok(false) => panic!("the bot exited before printing {expected:?}"),
            Err(_) => panic!("timed out waiting for the bot to print {expected:?}"),
        }
    }

    /// Waits for a line starting with `prefix` and returns it.
    pub async fn expect_prefix(&mut self, prefix: &str) -> String {
        let found = tokio::time::timeout(LINE_WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if line.starts_with(prefix) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the bot exited before printing a line starting {prefix:?}"),
            Err(_) => panic!("timed out waiting for a bot line starting {prefix:?}"),
        }
    }

    /// Writes `text` as one line for the bot to send.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("the bot's stdin is open");
        writeln!(stdin, "{text}").expect("write to the bot");
        stdin.flush().expect("flush the bot's stdin");
    }

    /// SIGKILL, then waits for the process to be gone: whatever the bot
    /// had not saved is lost, as in a crash.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the bot");
        self.child.wait().expect("reap the bot");
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        // After `kill` both fail harmlessly; otherwise the bot must not
        // outlive the test.
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
