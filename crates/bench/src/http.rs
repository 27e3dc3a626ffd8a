//! Register and log in over HTTP/1.1 (§5.2, §5.3), as a user's client does.
//!
//! One hyper HTTP/1.1 connection per call: setup makes a few thousand
//! requests at most, and a fresh connection per login is what clients do.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use confab_protocol::http::{
    LOGIN_PATH, LoginRequest, LoginResponse, REGISTER_PATH, RegisterRequest,
};
use http_body_util::{BodyExt as _, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

use crate::BenchError;

/// The password every generated account uses (§5.2: at least 15
/// characters, not a common password).
pub const PASSWORD: &str = "confab-bench-password";

/// `host:port` of an `http://host:port[/...]` URL.
pub fn authority(base_url: &str) -> Result<&str, BenchError> {
    let rest = base_url.strip_prefix("http://").ok_or_else(|| {
        BenchError::Config(format!(
            "{base_url} is not an http:// URL; the bench speaks plain HTTP on loopback"
        ))
    })?;
    Ok(rest.split('/').next().unwrap_or(rest))
}

/// Opens a TCP connection to the server of `base_url`, with Nagle off (a
/// chat client's small frames must not wait for company); returns it and
/// the `host:port` it reached.
pub(crate) async fn connect(base_url: &str) -> Result<(TcpStream, &str), BenchError> {
    connect_from(base_url, None).await
}

/// [`connect`] from source address `from` (e.g. 127.0.0.2, to act as
/// another client on loopback), or the OS's choice with `None`.
async fn connect_from(
    base_url: &str,
    from: Option<IpAddr>,
) -> Result<(TcpStream, &str), BenchError> {
    let addr = authority(base_url)?;
    let failed = |source| BenchError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let stream = match from {
        None => TcpStream::connect(addr).await.map_err(failed)?,
        Some(source) => {
            let target = tokio::net::lookup_host(addr)
                .await
                .map_err(failed)?
                .find(|a| a.is_ipv4() == source.is_ipv4())
                .ok_or_else(|| {
                    failed(std::io::Error::new(
                        std::io::ErrorKind::AddrNotAvailable,
                        "no server address of the source address's family",
                    ))
                })?;
            let socket = if source.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(failed)?;
            socket.bind(SocketAddr::new(source, 0)).map_err(failed)?;
            socket.connect(target).await.map_err(failed)?
        }
    };
    stream.set_nodelay(true).ok();
    Ok((stream, addr))
}

async fn call(
    base_url: &str,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), BenchError> {
    call_from(base_url, None, method, path, body).await
}

async fn call_from(
    base_url: &str,
    from: Option<IpAddr>,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), BenchError> {
    let failed = |reason: String| BenchError::Http {
        path: path.to_owned(),
        reason,
    };
    let (stream, addr) = connect_from(base_url, from).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    // The connection future drives the socket; it ends with the request.
    let driver = tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(e.to_string()))?
        .to_bytes();
    drop(sender);
    // The driver finishes once the sender is gone; its error (if any) was
    // already reported through the response.
    driver.await.ok();
    Ok((status, bytes))
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

/// POSTs `body`, retrying a few times, with growing pauses, while the
/// server answers 5xx ("try again later", §5.5): a server that is busy
/// committing messages can briefly fail an account write. A `429` with
/// `retry_after_ms` (the server's per-address limits, §15.3) is retried
/// after the wait it asks for, up to 10 s.
async fn call_retrying(
    base_url: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), BenchError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (status, reply) = call(base_url, http::Method::POST, path, body.clone()).await?;
        if attempt >= 5 {
            return Ok((status, reply));
        }
        let pause = if status == StatusCode::TOO_MANY_REQUESTS {
            match retry_after(&reply) {
                Some(wait) => wait.min(Duration::from_secs(10)),
                None => return Ok((status, reply)),
            }
        } else if status.is_server_error() {
            Duration::from_millis(100 * attempt)
        } else {
            return Ok((status, reply));
        };
        tokio::time::sleep(pause).await;
    }
}

/// `retry_after_ms` of an ErrorBody (§5.5).
fn retry_after(body: &[u8]) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(Duration::from_millis(
        value["error"]["retry_after_ms"].as_u64()?,
    ))
}

/// One login from source address `from` (no retries): its status and how
/// long it took, connection included, as a user would wait for it.
pub async fn timed_login(
    base_url: &str,
    from: IpAddr,
    username: &str,
    password: &str,
) -> Result<(StatusCode, Duration), BenchError> {
    let login = LoginRequest {
        username: username.to_owned(),
        password: password.to_owned(),
    };
    let started = Instant::now();
    let (status, _) = call_from(
        base_url,
        Some(from),
        http::Method::POST,
        LOGIN_PATH,
        json(&login),
    )
    .await?;
    Ok((status, started.elapsed()))
}

/// Registers `username` (an existing account is fine: reruns against a
/// kept data dir reuse it) and logs in; returns the token.
pub async fn register_and_login(base_url: &str, username: &str) -> Result<String, BenchError> {
    let credentials = RegisterRequest {
        username: username.to_owned(),
        password: PASSWORD.to_owned(),
    };
    let (status, body) = call_retrying(base_url, REGISTER_PATH, json(&credentials)).await?;
    if status != StatusCode::CREATED && status != StatusCode::CONFLICT {
        return Err(BenchError::Http {
            path: REGISTER_PATH.to_owned(),
            reason: format!("{status}: {}", String::from_utf8_lossy(&body)),
        });
    }
    let login = LoginRequest {
        username: credentials.username,
        password: credentials.password,
    };
    let (status, body) = call_retrying(base_url, LOGIN_PATH, json(&login)).await?;
    if status != StatusCode::OK {
        return Err(BenchError::Http {
            path: LOGIN_PATH.to_owned(),
            reason: format!("{status}: {}", String::from_utf8_lossy(&body)),
        });
    }
    let response: LoginResponse = serde_json::from_slice(&body).map_err(|e| BenchError::Http {
        path: LOGIN_PATH.to_owned(),
        reason: format!("login body is not a LoginResponse: {e}"),
    })?;
    Ok(response.token)
}

/// Reads one counter or gauge from the reference server's `/metrics`
/// (§5.6); `None` if the server has no such metric.
pub async fn metric(base_url: &str, name: &str) -> Result<Option<f64>, BenchError> {
    let (status, body) = call(base_url, http::Method::GET, "/metrics", Vec::new()).await?;
    if status != StatusCode::OK {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&body);
    Ok(text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    }))
}
