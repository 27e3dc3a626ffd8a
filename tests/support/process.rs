//! A real `confab-server` process on 127.0.0.1:0: the building block of the
//! multi-process and multi-node tests. Unlike the in-process servers of
//! `bot_support` and `cli_support`, it can die by SIGKILL with no destructor
//! or graceful shutdown running, as a crashed node does.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How long a server may take to report its address; it only matters when
/// a test fails.
pub const START_WAIT: Duration = Duration::from_secs(60);

/// The line prefix `confab-server` prints on stdout once it accepts
/// connections (crates/server/src/main.rs; .ci/run parses it too).
const LISTENING: &str = "confab-server listening on ";

/// How many of its last stderr lines a [`ServerProcess`] keeps for
/// [`ServerProcess::log_tail`].
const KEPT_LOG_LINES: usize = 200;

/// How to start a server: which binary, its flags and its environment.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    /// The executable (see `support::binary`).
    pub binary: PathBuf,
    /// Flags after `--listen 127.0.0.1:0 --data-dir DIR`.
    pub args: Vec<String>,
    /// Environment variables set for the child (every other `CONFAB_*`
    /// variable is removed).
    pub env: Vec<(String, String)>,
    /// Prefix of the child's stderr lines in the test output, e.g. `node 1`.
    pub label: String,
}

impl ServerCommand {
    /// `confab-server ARGS` with no extra environment.
    pub fn new(args: &[&str]) -> Self {
        Self {
            binary: super::binary::confab_server(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            env: Vec::new(),
            label: "confab-server".to_owned(),
        }
    }
}

/// A running `confab-server` process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    url: String,
    label: String,
    /// The last [`KEPT_LOG_LINES`] lines of its stderr.
    log: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    /// Starts `confab-server --listen 127.0.0.1:0 --data-dir DATA_DIR ARGS`
    /// and waits until it prints the address it bound.
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_with(data_dir, &ServerCommand::new(args))
    }

    /// Starts `spec.binary --listen 127.0.0.1:0 --data-dir DATA_DIR ARGS`
    /// with `spec.env` and waits until it prints the address it bound. Its
    /// stderr goes to the test's stderr, each line prefixed with the label.
    pub fn start_with(data_dir: &Path, spec: &ServerCommand) -> Self {
        let mut command = Command::new(&spec.binary);
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
            .args(&spec.args)
            .envs(spec.env.iter().map(|(name, value)| (name, value)))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {}: {err}", spec.binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (label, kept) = (spec.label.clone(), Arc::clone(&log));
        // Forwards stderr, labelled, and keeps its tail; ends at EOF.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{label}] {line}");
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() == KEPT_LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
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
                        "{} ({}) did not report its address ({err}; exit status {status:?}); \
                         its stderr is above, labelled [{}]",
                        spec.label,
                        spec.binary.display(),
                        spec.label
                    );
                }
            }
        };
        Self {
            child,
            url,
            label: spec.label.clone(),
            log,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The label its stderr lines carry.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The last lines of its stderr (at most 200), oldest first.
    pub fn log_tail(&self) -> Vec<String> {
        let kept = self.log.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().cloned().collect()
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll confab-server's status")
    }

    /// SIGKILL, then waits for the process to be gone (no graceful
    /// shutdown, no flushing: a crash).
    pub fn kill(mut self) {
        if let Err(err) = self.child.kill() {
            // Only a process that already exited cannot be signalled.
            assert!(
                self.try_wait().is_some(),
                "SIGKILL {} (pid {}): {err}",
                self.label,
                self.child.id()
            );
        }
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
