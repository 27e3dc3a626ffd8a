//! A real `confab-server` process on 127.0.0.1:0: the building block of the
//! multi-process (and later multi-node) tests. Unlike the in-process servers
//! of `bot_support` and `cli_support`, it can die by SIGKILL with no
//! destructor or graceful shutdown running, as a crashed node does.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to report its address; it only matters when
/// a test fails.
pub const START_WAIT: Duration = Duration::from_secs(60);

/// The line prefix `confab-server` prints on stdout once it accepts
/// connections (crates/server/src/main.rs; .ci/run parses it too).
const LISTENING: &str = "confab-server listening on ";

/// A running `confab-server` process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    /// Starts `confab-server --listen 127.0.0.1:0 --data-dir DATA_DIR ARGS`
    /// and waits until it prints the address it bound.
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(super::binary::confab_server());
        // The test decides every setting: none leaks in from the caller's
        // environment (CONFAB_LISTEN, limits, ...).
        for (name, _) in std::env::vars_os() {
            if name
                .to_str()
                .is_some_and(|name| name.starts_with("CONFAB_"))
            {
                command.env_remove(&name);
            }
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn confab-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        // Reads stdout for the life of the process so the server never
        // blocks on a full pipe; ends at EOF, when the process is gone.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                    continue;
                }
            }
        });
        let url = loop {
            match lines.recv_timeout(START_WAIT) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix(LISTENING) {
                        break url.trim().to_owned();
                    }
                }
                Err(err) => {
                    let status = child.try_wait().ok().flatten();
                    // Not left running if it hung instead of exiting.
                    child.kill().ok();
                    child.wait().ok();
                    panic!(
                        "confab-server did not report its address ({err}; exit status {status:?}); \
                         its stderr is above"
                    );
                }
            }
        };
        Self { child, url }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then waits for the process to be gone (no graceful
    /// shutdown, no flushing: a crash).
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL confab-server");
        self.child.wait().expect("reap confab-server");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // After `kill` both fail harmlessly; otherwise the server must not
        // outlive the test.
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
