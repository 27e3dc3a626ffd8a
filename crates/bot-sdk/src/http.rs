//! The account endpoints of §5: register, login, logout.
//!
//! Each call opens one HTTP/1.1 connection (TLS for `https://`), sends one
//! JSON request and maps the answer to a typed result. Accounts are touched
//! rarely (once per process start), so connection reuse is not worth a pool.
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
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

pub use crate::net::ConnectError;
use crate::url::ServerUrl;

/// How long opening the connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take once connected (argon2 takes a while).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read.
const MAX_BODY_BYTES: usize = 1024 * 1024;

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
    let (status, bytes) = post(server, REGISTER_PATH, Some(&body), None).await?;
    match status {
        StatusCode::CREATED => decode(status, &bytes),
        _ => Err(error_from(status, &bytes)),
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
    let (status, bytes) = post(server, LOGIN_PATH, Some(&body), None).await?;
    match status {
        StatusCode::OK => decode(status, &bytes),
        _ => Err(error_from(status, &bytes)),
    }
}

/// Revokes `token` (§5.4); the server closes its sockets with 4410.
pub async fn logout(server: &ServerUrl, token: &str) -> Result<(), Error> {
    let (status, bytes) = post::<()>(server, LOGOUT_PATH, None, Some(token)).await?;
    match status {
        StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
        _ => Err(error_from(status, &bytes)),
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

async fn post<T: serde::Serialize>(
    server: &ServerUrl,
    path: &str,
    json: Option<&T>,
    bearer: Option<&str>,
) -> Result<(StatusCode, Bytes), Error> {
    let stream = crate::net::connect(server, CONNECT_TIMEOUT).await?;
    let transport = |message: String| Error::Transport {
        server: server.to_string(),
        message,
    };
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
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, server.authority())
            .header(
                header::USER_AGENT,
                concat!("confab-bot-sdk/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match json {
            Some(value) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                // Serializing a struct of strings cannot fail.
                Bytes::from(serde_json::to_vec(value).map_err(|err| transport(err.to_string()))?)
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|err| transport(err.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| transport(err.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|err| transport(err.to_string()))?
            .to_bytes();
        drop(sender);
        if let Err(err) = driver.await {
            tracing::debug!(error = %err, "HTTP connection task failed");
        }
        Ok((status, bytes))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| transport(format!("no answer within {REQUEST_TIMEOUT:?}")))?
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
