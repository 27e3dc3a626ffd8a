//! Register and log in over HTTP/1.1 (§5.2, §5.3), as a user's client does.
//!
//! The requests are the bot SDK's ([`confab_bot_sdk::http`]): one
//! connection per call, which is what clients do and plenty for setup's few
//! thousand requests. What this module adds is the bench's patience: retries
//! while a loaded server asks for them, and raw statuses where a workload
//! counts them.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use confab_bot_sdk::ServerUrl;
use confab_bot_sdk::http::{self as account, Method, Request, StatusCode};
use confab_bot_sdk::net::ConnectOptions;
use confab_protocol::http::{LOGIN_PATH, LoginRequest, REGISTER_PATH};

use crate::BenchError;

/// The password every generated account uses (§5.2: at least 15
/// characters, not a common password).
pub const PASSWORD: &str = "confab-bench-password";

/// How long one request may take, connecting included: generous, because
/// a benchmark measures slow answers instead of cutting them off.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Attempts of one setup request before its error is reported.
const ATTEMPTS: u32 = 5;

/// Longest wait honoured for one `retry_after_ms`.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

fn options() -> ConnectOptions {
    ConnectOptions::default().timeout(TIMEOUT)
}

fn failed(path: &str, err: account::Error) -> BenchError {
    match err {
        account::Error::Connect(err) => BenchError::Connect(err),
        other => BenchError::Http {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// How long to wait before attempt `attempt + 1` after `err`, or `None` to
/// give up: a server busy committing messages can briefly fail an account
/// write ("try again later", §5.5), and one with per-address limits
/// (§15.3) says when to come back.
fn retry_pause(err: &account::Error, attempt: u32) -> Option<Duration> {
    if attempt >= ATTEMPTS {
        return None;
    }
    let backoff = Duration::from_millis(100 * u64::from(attempt));
    match err {
        account::Error::Throttled { retry_after, .. } => Some((*retry_after).min(MAX_RETRY_WAIT)),
        account::Error::Unavailable { retry_after, .. } => {
            Some(retry_after.map_or(backoff, |wait| wait.min(MAX_RETRY_WAIT)))
        }
        account::Error::Unexpected { status, .. } if *status >= 500 => Some(backoff),
        _ => None,
    }
}

/// Registers `username` (an existing account is fine: reruns against a
/// kept data dir reuse it) and logs in; returns the token.
pub async fn register_and_login(server: &ServerUrl, username: &str) -> Result<String, BenchError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match account::register(server, username, PASSWORD).await {
            Ok(_) | Err(account::Error::UsernameTaken { .. }) => break,
            Err(err) => match retry_pause(&err, attempt) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(failed(REGISTER_PATH, err)),
            },
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match account::login(server, username, PASSWORD).await {
            Ok(login) => return Ok(login.token),
            Err(err) => match retry_pause(&err, attempt) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(failed(LOGIN_PATH, err)),
            },
        }
    }
}

/// One login from source address `from` (no retries): its status and how
/// long it took, connection included, as a user would wait for it.
pub async fn timed_login(
    server: &ServerUrl,
    from: IpAddr,
    username: &str,
    password: &str,
) -> Result<(StatusCode, Duration), BenchError> {
    let login = LoginRequest {
        username: username.to_owned(),
        password: password.to_owned(),
    };
    let request = Request::post_json(LOGIN_PATH, &login)
        .connect(options().local_addr(from))
        .timeout(TIMEOUT);
    let started = Instant::now();
    let response = account::send(server, request)
        .await
        .map_err(|err| failed(LOGIN_PATH, err))?;
    Ok((response.status, started.elapsed()))
}

/// Reads one counter or gauge from the reference server's `/metrics`
/// (§5.6); `None` if the server has no such metric.
pub async fn metric(server: &ServerUrl, name: &str) -> Result<Option<f64>, BenchError> {
    let request = Request::new(Method::GET, "/metrics")
        .connect(options())
        .timeout(TIMEOUT);
    let response = account::send(server, request)
        .await
        .map_err(|err| failed("/metrics", err))?;
    if response.status != StatusCode::OK {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&response.body);
    Ok(text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    }))
}
