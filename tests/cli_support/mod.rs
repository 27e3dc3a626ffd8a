//! Helpers for driving the real `confab` binary against a real server.
//!
//! - The binary comes from `crate::support::binary::confab` (built on first
//!   use; see there why).
//! - [`Server`]: the reference server in-process, stoppable and restartable
//!   on the same port and data directory (for "server down" tests).
//! - [`Client`]: `confab` in a pseudo-terminal (rexpect), with its own
//!   config directory, no colour, and short reconnect delays.
//! - [`Lines`]: a non-interactive `confab` (send, tail) with stdout read line
//!   by line under a timeout.
//! - [`Proxy`] (from `support::proxy`): a TCP relay in front of the server
//!   whose connections can be cut, so one client loses the network while
//!   others stay online.
//!
//! Nothing here sleeps to synchronise: every wait is an expectation on
//! output with a timeout. rexpect reads the terminal byte by byte as Latin-1,
//! so expected text is kept ASCII (not "✓", not "…").

#![allow(dead_code)] // Not every test uses every helper.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use confab_server::{Config, Server as ServerLib, ServerHandle};
use rexpect::process::Signal;
use rexpect::reader::Options;
use rexpect::session::{PtySession, spawn_with_options};

pub use crate::support::proxy::Proxy;

/// Upper bound of any single wait; it only matters when a test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The reference server, in-process on 127.0.0.1.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    handle: Option<ServerHandle>,
    addr: SocketAddr,
    data: tempfile::TempDir,
}

impl Server {
    /// Starts on a free port with a fresh data directory.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let data = tempfile::tempdir().expect("tempdir");
        let config = Config::for_data_dir(data.path());
        let handle =
            runtime.block_on(async { ServerLib::bind(config).await.expect("bind").spawn() });
        let addr = handle.local_addr();
        Self {
            runtime,
            handle: Some(handle),
            addr,
            data,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gracefully (sockets closed with 1001, storage closed).
    pub fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.runtime
                .block_on(handle.shutdown())
                .expect("server stops cleanly");
        }
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.handle.is_none(), "stop the server first");
        let mut config = Config::for_data_dir(self.data.path());
        config.listen = self.addr;
        let handle = self.runtime.block_on(async {
            ServerLib::bind(config)
                .await
                .expect("rebind same port")
                .spawn()
        });
        self.handle = Some(handle);
    }

    /// Registers `username` and logs in through the HTTP API; returns the token.
    pub fn token_for(&self, username: &str, password: &str) -> String {
        let server: confab_bot_sdk::ServerUrl = self.url().parse().expect("url");
        self.runtime.block_on(async {
            match confab_bot_sdk::http::register(&server, username, password).await {
                Ok(_) | Err(confab_bot_sdk::http::Error::UsernameTaken { .. }) => {}
                Err(err) => panic!("register {username}: {err}"),
            }
            confab_bot_sdk::http::login(&server, username, password)
                .await
                .expect("login")
                .token
        })
    }

    /// Logs `token` out and says whether it had been revoked already (the
    /// server answers 401). Either way it is revoked afterwards.
    pub fn token_was_revoked(&self, token: &str) -> bool {
        let server: confab_bot_sdk::ServerUrl = self.url().parse().expect("url");
        matches!(
            self.runtime
                .block_on(confab_bot_sdk::http::logout(&server, token)),
            Err(confab_bot_sdk::http::Error::Unauthorized { .. })
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A config directory of its own for one user of the client.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    /// A fresh, empty config directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The saved-login file.
    pub fn login_file(&self) -> PathBuf {
        self.path().join("login.json")
    }

    /// The saved token.
    pub fn token(&self) -> String {
        let text = std::fs::read_to_string(self.login_file()).expect("login.json");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        json["token"].as_str().expect("token").to_owned()
    }

    /// The outbox file of `username` on `server`.
    pub fn outbox_file(&self, username: &str, server: &Server) -> PathBuf {
        self.path()
            .join("outbox")
            .join(format!("{username}@127.0.0.1_{}.jsonl", server.port()))
    }

    /// A `confab` command using this directory, no colour, fast reconnects.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(crate::support::binary::confab());
        command
            .args(args)
            .env("CONFAB_CONFIG_DIR", self.path())
            .env("NO_COLOR", "1")
            .env("TERM", "xterm-256color")
            .env("CONFAB_RECONNECT_CAP_MS", "400")
            .env_remove("CONFAB_SERVER")
            .env_remove("CONFAB_TOKEN");
        command
    }
}

/// `confab` in a pseudo-terminal.
pub struct Client {
    pty: PtySession,
}

impl Client {
    /// Starts `confab ARGS` with `home` as its config directory.
    pub fn spawn(home: &Home, args: &[&str]) -> Self {
        let options = Options::default()
            .timeout_ms(Some(WAIT.as_millis() as u64))
            .strip_ansi_escape_codes(true);
        let pty = spawn_with_options(home.command(args), options).expect("spawn confab");
        Self { pty }
    }

    /// Waits for `needle`; returns everything printed before it.
    #[track_caller]
    pub fn expect(&mut self, needle: &str) -> String {
        match self.pty.exp_string(needle) {
            Ok(before) => before,
            Err(err) => panic!("expected {needle:?} from confab: {err}"),
        }
    }

    /// Waits for text matching `regex`; returns it.
    #[track_caller]
    pub fn expect_regex(&mut self, regex: &str) -> String {
        match self.pty.exp_regex(regex) {
            Ok((_, matched)) => matched,
            Err(err) => panic!("expected /{regex}/ from confab: {err}"),
        }
    }

    /// Types a line and Enter.
    pub fn line(&mut self, text: &str) {
        self.pty.send_line(text).expect("write to pty");
        self.pty.flush().expect("flush pty");
    }

    /// Types without Enter.
    pub fn type_text(&mut self, text: &str) {
        self.pty.send(text).expect("write to pty");
        self.pty.flush().expect("flush pty");
    }

    /// Ctrl-U: clears what was typed.
    pub fn clear_line(&mut self) {
        self.pty.send_control('u').expect("write to pty");
    }

    /// Goes through the login screen as a new user who registers.
    pub fn register(&mut self, username: &str, password: &str) {
        self.expect("Username:");
        self.line(username);
        self.expect("Password:");
        self.line(password);
        self.expect(&format!(
            "No account '{username}' here or wrong password. Register it? [y/N]"
        ));
        self.line("y");
        self.expect("Repeat the password:");
        self.line(password);
        self.expect(&format!("registered '{username}'"));
    }

    /// Joins (or creates) `room` and waits for the confirmation; its recent
    /// history follows, then the prompt.
    pub fn enter(&mut self, room: &str, create: bool) {
        if create {
            self.line(&format!("/create {room}"));
            self.expect(&format!("created #{room}"));
        } else {
            self.line(&format!("/join {room}"));
            self.expect(&format!("joined #{room}"));
        }
    }

    /// `/quit`, then waits for the process to end.
    pub fn quit(mut self) {
        self.line("/quit");
        self.pty.exp_eof().expect("confab exits after /quit");
    }

    /// Waits for the process to end by itself.
    pub fn expect_exit(mut self) {
        self.pty.exp_eof().expect("confab exits");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        self.pty
            .process_mut()
            .kill(Signal::SIGKILL)
            .expect("kill confab");
    }
}

/// A non-interactive `confab` whose stdout is read line by line.
pub struct Lines {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Lines {
    /// Starts `command` with stdout piped.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn confab");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line of stdout.
    #[track_caller]
    pub fn next(&mut self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .expect("a line from confab within the timeout")
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // It may have exited already; either way it must not outlive the test.
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Runs a non-interactive `confab` to completion; returns (success, stdout, stderr).
pub fn run(mut command: Command) -> (bool, String, String) {
    let output = command.stdin(Stdio::null()).output().expect("run confab");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `command` with `input` on stdin to completion; returns (success, stdout).
pub fn run_with_input(mut command: Command, input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn confab");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("confab exits");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
