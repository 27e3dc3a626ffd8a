//! The account endpoints of §5 (register, login, logout), and [`send`] for
//! any other request.
//!
//! Each call opens one HTTP/1.1 connection (TLS for `https://`), sends one
//! request and reads the whole answer; the account calls map it to a typed
//! result. Accounts are touched rarely (once per process start), so
//! connection reuse is not worth a pool.
//!
//! ```no_run
//! # async fn example() -> Result<(), confab_bot_sdk::http::Error> {
//! use confab_bot_sdk::{ServerUrl, http};
//!
//! let server: ServerUrl = "http://127.0.0.1:7420".parse().expect("valid URL");
//! match http::login(&server, "alice", "correct horse battery staple").await {
//!     Ok(login) => println!("token expires at {}", login.expires_at_ms),
//!     Err(http::Error::InvalidCredentials { .. }) => println!("wrong name or password"),
//!     Err(http::Error::Throttled { retry_after, .. }) => println!("wait {retry_after:?}"),
//!     Err(err) => return Err(err),
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use confab_protocol::http::{
    ErrorBody, HttpErrorCode, LOGIN_PATH, LOGOUT_PATH, LoginRequest, REGISTER_PATH, RegisterRequest,
};
pub use confab_protocol::http::{LoginResponse, RegisterResponse};
use http::header;
pub use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
pub use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

pub use crate::net::ConnectError;
use crate::net::ConnectOptions;
use crate::url::ServerUrl;

/// How long a whole request may take once connected (argon2 takes a while).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// One request for [`send`]: a path below the server's base URL and what
/// to send there.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path below the server's base URL, e.g. `/v1/login`.
    pub path: String,
    /// The body; none is sent with `Content-Length: 0`.
    pub body: Bytes,
    /// `Content-Type` of the body; none when `None`.
    pub content_type: Option<String>,
    /// Bearer token for `Authorization` (§5.4).
    pub bearer: Option<String>,
    /// How to connect (timeout, proxy, local address).
    pub connect: ConnectOptions,
    /// How long the exchange may take once connected.
    pub timeout: Duration,
}

impl Request {
    /// A request without a body.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            body: Bytes::new(),
            content_type: None,
            bearer: None,
            connect: ConnectOptions::default(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// A `POST` of `value` as JSON.
    pub fn post_json<T: serde::Serialize>(path: impl Into<String>, value: &T) -> Self {
        // Serializing the protocol's request structs cannot fail; were it
        // to, the server refuses the empty body, which says what happened.
        let body = serde_json::to_vec(value).unwrap_or_default();
        Self::new(Method::POST, path).body(body, Some("application/json"))
    }

    /// Sets the body and its `Content-Type` (none when `None`).
    pub fn body(mut self, body: impl Into<Bytes>, content_type: Option<&str>) -> Self {
        self.body = body.into();
        self.content_type = content_type.map(str::to_owned);
        self
    }

    /// Sets [`Request::bearer`].
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// Sets [`Request::connect`].
    pub fn connect(mut self, options: ConnectOptions) -> Self {
        self.connect = options;
        self
    }

    /// Sets [`Request::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What the server answered to a [`Request`], whatever the status.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body (at most 1 MiB).
    pub body: Bytes,
}

/// Why an account request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Unknown username or wrong password (§5.3, `invalid_credentials`).
    #[error("unknown username or wrong password: {message}")]
    InvalidCredentials {
        /// The server's explanation.
        message: String,
    },
    /// The username is registered already (§5.2, `username_taken`).
    #[error("that username is taken; pick another or log in: {message}")]
    UsernameTaken {
        /// The server's explanation.
        message: String,
    },
    /// Too many failed logins for this account (§5.3, `too_many_attempts`).
    #[error("too many failed logins; retry after {retry_after:?}")]
    Throttled {
        /// How long to wait before trying again.
        retry_after: Duration,
        /// The server's explanation.
        message: String,
    },
    /// The username, password or request was refused (§5.2: `invalid_username`,
    /// `invalid_password`, `invalid_request`).
    #[error("{message}")]
    InvalidInput {
        /// Which rule was broken.
        code: HttpErrorCode,
        /// The server's explanation: what to change.
        message: String,
    },
    /// The bearer token is missing, unknown, expired or revoked (§5.4, `unauthorized`).
    #[error("the token is not valid (unknown, expired or revoked); log in again: {message}")]
    Unauthorized {
        /// The server's explanation.
        message: String,
    },
    /// The server is at its connection limit or shutting down (§5.5, `unavailable`).
    #[error("the server is unavailable; try again later: {message}")]
    Unavailable {
        /// How long to wait, when the server said.
        retry_after: Option<Duration>,
        /// The server's explanation.
        message: String,
    },
    /// No connection could be opened: DNS failure, connection refused, timeout or TLS.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection broke or timed out during the request.
    #[error("the request to {server} failed: {message}")]
    Transport {
        /// The server.
        server: String,
        /// What happened.
        message: String,
    },
    /// The server answered something this client does not understand.
    #[error("unexpected response from the server (HTTP {status}): {body}")]
    Unexpected {
        /// HTTP status.
        status: u16,
        /// The body, or what was wrong with it.
        body: String,
    },
}

impl Error {
    /// Whether the server could not be reached at all (connection refused, DNS, timeout).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Connect(_))
    }
}

/// Registers an account (§5.2). No token is issued: [`login`] next.
pub async fn register(
    server: &ServerUrl,
    username: &str,
    password: &str,
) -> Result<RegisterResponse, Error> {
    let body = RegisterRequest {
        username: username.to_owned(),
        password: password.to_owned(),
    };
    let Response { status, body, .. } =
        send(server, Request::post_json(REGISTER_PATH, &body)).await?;
    match status {
        StatusCode::CREATED => decode(status, &body),
        _ => Err(error_from(status, &body)),
    }
}

/// Logs in (§5.3) and returns the bearer token for `Auth` (§6.1).
pub async fn login(
    server: &ServerUrl,
    username: &str,
    password: &str,
) -> Result<LoginResponse, Error> {
    let body = LoginRequest {
        username: username.to_owned(),
        password: password.to_owned(),
    };
    let Response { status, body, .. } = send(server, Request::post_json(LOGIN_PATH, &body)).await?;
    match status {
        StatusCode::OK => decode(status, &body),
        _ => Err(error_from(status, &body)),
    }
}

/// Revokes `token` (§5.4); the server closes its sockets with 4410.
pub async fn logout(server: &ServerUrl, token: &str) -> Result<(), Error> {
    let request = Request::new(Method::POST, LOGOUT_PATH).bearer(token);
    let Response { status, body, .. } = send(server, request).await?;
    match status {
        StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
        _ => Err(error_from(status, &body)),
    }
}

fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|err| Error::Unexpected {
        status: status.as_u16(),
        body: format!("{err}: {}", String::from_utf8_lossy(bytes)),
    })
}

/// Maps a non-success answer to a typed error using its ErrorBody (§5.5).
fn error_from(status: StatusCode, bytes: &[u8]) -> Error {
    let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) else {
        return Error::Unexpected {
            status: status.as_u16(),
            body: String::from_utf8_lossy(bytes).into_owned(),
        };
    };
    let message = body.error.message;
    let retry_after = body.error.retry_after_ms.map(Duration::from_millis);
    match body.error.code {
        HttpErrorCode::InvalidCredentials => Error::InvalidCredentials { message },
        HttpErrorCode::UsernameTaken => Error::UsernameTaken { message },
        HttpErrorCode::TooManyAttempts => Error::Throttled {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            message,
        },
        code @ (HttpErrorCode::InvalidUsername
        | HttpErrorCode::InvalidPassword
        | HttpErrorCode::InvalidRequest) => Error::InvalidInput { code, message },
        HttpErrorCode::Unauthorized => Error::Unauthorized { message },
        HttpErrorCode::Unavailable => Error::Unavailable {
            retry_after,
            message,
        },
        other => Error::Unexpected {
            status: status.as_u16(),
            body: format!("{other:?}: {message}"),
        },
    }
}

/// Sends one request and reads the whole response, whatever its status.
/// Errors are only those of the transport: [`Error::Connect`] and
/// [`Error::Transport`].
pub async fn send(server: &ServerUrl, request: Request) -> Result<Response, Error> {
    let stream = crate::net::connect(server, &request.connect).await?;
    let transport = |message: String| Error::Transport {
        server: server.to_string(),
        message,
    };
    let timeout = request.timeout;
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| transport(err.to_string()))?;
        // The connection future drives the socket; it ends with the exchange.
        let driver = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
        });
        let mut builder = http::Request::builder()
            .method(request.method)
            .uri(server.path(&request.path))
            .header(header::HOST, server.authority())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("confab-bot-sdk/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &request.bearer {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(media_type) = &request.content_type {
            builder = builder.header(header::CONTENT_TYPE, media_type);
        }
        let http_request = builder
            .body(Full::new(request.body))
            .map_err(|err| transport(err.to_string()))?;
        let response = sender
            .send_request(http_request)
            .await
            .map_err(|err| transport(err.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|err| transport(err.to_string()))?
            .to_bytes();
        drop(sender);
        if let Err(err) = driver.await {
            tracing::debug!(error = %err, "HTTP connection task failed");
        }
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| transport(format!("no answer within {timeout:?}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_error_bodies() {
        type Check = fn(&Error) -> bool;
        let cases: [(u16, &str, Check); 6] = [
            (
                401,
                r#"{"error":{"code":"invalid_credentials","message":"m"}}"#,
                |e| matches!(e, Error::InvalidCredentials { .. }),
            ),
            (
                409,
                r#"{"error":{"code":"username_taken","message":"m"}}"#,
                |e| matches!(e, Error::UsernameTaken { .. }),
            ),
            (
                429,
                r#"{"error":{"code":"too_many_attempts","message":"m","retry_after_ms":1500}}"#,
                |e| matches!(e, Error::Throttled { retry_after, .. } if *retry_after == Duration::from_millis(1500)),
            ),
            (
                400,
                r#"{"error":{"code":"invalid_username","message":"m"}}"#,
                |e| {
                    matches!(
                        e,
                        Error::InvalidInput {
                            code: HttpErrorCode::InvalidUsername,
                            ..
                        }
                    )
                },
            ),
            (
                401,
                r#"{"error":{"code":"unauthorized","message":"m"}}"#,
                |e| matches!(e, Error::Unauthorized { .. }),
            ),
            (502, "<html>bad gateway</html>", |e| {
                matches!(e, Error::Unexpected { status: 502, .. })
            }),
        ];
        for (status, body, check) in cases {
            let err = error_from(StatusCode::from_u16(status).unwrap(), body.as_bytes());
            assert!(check(&err), "{status} {body} -> {err:?}");
        }
    }
}
