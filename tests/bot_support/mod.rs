//! A real confab-server in-process on 127.0.0.1, and helpers to wait for
//! things without sleeping.

#![allow(dead_code, missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use confab_bot_sdk::ServerUrl;
use confab_server::{Config, ServerHandle};

/// Generous bound on any single wait; a hang fails the test instead of CI.
pub const WAIT: Duration = Duration::from_secs(30);

/// Awaits `future`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A server with its data directory; restartable on the same port.
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    config: Config,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 with a fresh data directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestServer::start`], with the config adjusted first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_data_dir(dir.path());
        // Fast logins keep the tests quick; argon2 at full cost is not under test.
        adjust(&mut config);
        let handle = confab_server::Server::bind(config.clone())
            .await
            .expect("server binds")
            .spawn();
        let addr = handle.local_addr();
        Self {
            handle: Some(handle),
            addr,
            data_dir: dir.path().to_owned(),
            config,
            _dir: Some(dir),
        }
    }

    pub fn url(&self) -> ServerUrl {
        format!("http://{}", self.addr).parse().expect("server URL")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server gracefully (sockets closed with 1001).
    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            within("server shutdown", handle.shutdown())
                .await
                .expect("server stops cleanly");
        }
    }

    /// Starts the server again on the same address and data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut config = self.config.clone();
        config.listen = self.addr;
        let handle = confab_server::Server::bind(config)
            .await
            .expect("server binds its old address again")
            .spawn();
        self.handle = Some(handle);
    }
}

/// Registers `username` (password [`PASSWORD`]) and logs in; returns the token.
pub async fn user(server: &ServerUrl, username: &str) -> String {
    confab_bot_sdk::http::register(server, username, PASSWORD)
        .await
        .expect("register");
    confab_bot_sdk::http::login(server, username, PASSWORD)
        .await
        .expect("login")
        .token
}

pub const PASSWORD: &str = "bot sdk test passphrase";

/// Waits for the next message event from `client`, skipping other events.
pub async fn next_message(client: &mut confab_bot_sdk::Client) -> confab_bot_sdk::Message {
    within("a message", async {
        loop {
            match client.next_event().await {
                Some(confab_bot_sdk::Event::Message(message)) => return message,
                Some(_) => {}
                None => panic!("client ended while waiting for a message"),
            }
        }
    })
    .await
}

/// A client (pull API) that registers if needed and joins (creating) `rooms`.
pub async fn connected(
    server: &ServerUrl,
    username: &str,
    rooms: &[&str],
) -> confab_bot_sdk::Client {
    confab_bot_sdk::Client::builder(server.clone())
        .credentials(username, PASSWORD)
        .register_if_missing(true)
        .join(rooms.iter().copied())
        .create_missing_rooms(true)
        .connect()
        .await
        .expect("user connects")
}
