//! HTTP for the suite: the bot SDK's client for requests a client would
//! send, and raw HTTP/1.1 bytes over TCP where a scenario needs what no
//! client library sends on purpose.
//!
//! Raw are: a `Content-Length` that announces bytes that never come
//! (§5.1), one keep-alive request whose connection is then held
//! ([`probe_admission`], §3.1), and connections stalled after a few bytes
//! ([`stall`], §3.1 deadlines). Raw responses are read to EOF or to their
//! `Content-Length`; chunked bodies are decoded.

use std::time::Duration;

use confab_bot_sdk::ServerUrl;
use confab_bot_sdk::http::{self as client, Method};
use confab_bot_sdk::net::ConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status, lowercase headers, body bytes.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers with lowercase names, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, or as a JSON string when it is not JSON.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&self.body).into_owned())
        })
    }
}

/// Why an HTTP exchange failed (transport, not status).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The SDK's client could not connect, send or read.
    #[error(transparent)]
    Client(client::Error),
    /// The method is not an HTTP token.
    #[error("{0:?} is not an HTTP method")]
    Method(String),
    /// Connecting, writing or reading failed.
    #[error("HTTP I/O with {authority}: {source}")]
    Io {
        /// Where.
        authority: String,
        /// The error.
        source: std::io::Error,
    },
    /// No complete response within the timeout.
    #[error("no HTTP response from {0} within the step timeout")]
    Timeout(String),
    /// The bytes are not an HTTP/1.x response.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

/// One request.
#[derive(Debug, Clone)]
pub struct HttpRequest<'a> {
    /// Method.
    pub method: &'a str,
    /// Path below the base URL's prefix.
    pub path: &'a str,
    /// Body bytes (sent as `application/json` unless `content_type` says otherwise).
    pub body: Option<Vec<u8>>,
    /// Bearer token.
    pub bearer: Option<&'a str>,
    /// `Content-Type` of the body instead of `application/json`; an empty
    /// string sends none (§5.1 media type checks).
    pub content_type: Option<&'a str>,
    /// `Content-Length` to declare instead of the body's length: a larger
    /// value announces bytes that never come (§5.1 size checks).
    pub declared_length: Option<u64>,
}

impl<'a> HttpRequest<'a> {
    /// A request with a JSON body or none, and nothing unusual.
    pub fn new(
        method: &'a str,
        path: &'a str,
        body: Option<Vec<u8>>,
        bearer: Option<&'a str>,
    ) -> Self {
        Self {
            method,
            path,
            body,
            bearer,
            content_type: None,
            declared_length: None,
        }
    }
}

/// Most times a registration refused with `429` is retried.
const REGISTER_RETRIES: usize = 5;

/// Longest wait honoured for one `429` before retrying a registration.
const MAX_REGISTER_WAIT: Duration = Duration::from_secs(30);

/// Sends one request and reads the whole response.
///
/// A registration answered `429` with `retry_after_ms` (a server's
/// per-address registration limit, §15.3) is retried after that wait, a few
/// times: a suite run registers a few hundred users from one address, and
/// which limit a server sets is its own business. Every other response,
/// including a `429` to any other request, is returned as it is, for the
/// scenario to judge.
pub async fn send(
    url: &ServerUrl,
    request: HttpRequest<'_>,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let authority = url.authority();
    let mut retries = 0;
    loop {
        let response = tokio::time::timeout(timeout, exchange(url, &request, timeout))
            .await
            .map_err(|_| HttpError::Timeout(authority.clone()))??;
        let wait = register_retry_after(&request, &response);
        match wait {
            Some(wait) if retries < REGISTER_RETRIES => {
                retries += 1;
                tokio::time::sleep(wait.min(MAX_REGISTER_WAIT)).await;
            }
            _ => return Ok(response),
        }
    }
}

/// The wait a `429` to a registration asks for, if this is one.
fn register_retry_after(request: &HttpRequest<'_>, response: &HttpResponse) -> Option<Duration> {
    if response.status != 429 || !request.path.ends_with(confab_protocol::http::REGISTER_PATH) {
        return None;
    }
    let ms = response.body_json()["error"]["retry_after_ms"].as_u64()?;
    Some(Duration::from_millis(ms.max(1)))
}

/// One exchange: the SDK's client unless the request lies about its length.
async fn exchange(
    url: &ServerUrl,
    request: &HttpRequest<'_>,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    if request.declared_length.is_some() {
        return raw_exchange(url, request).await;
    }
    let method = Method::from_bytes(request.method.as_bytes())
        .map_err(|_| HttpError::Method(request.method.to_owned()))?;
    let content_type = match request.content_type {
        Some("") => None,
        Some(media_type) => Some(media_type),
        None => request.body.as_ref().map(|_| "application/json"),
    };
    let mut sdk_request = client::Request::new(method, request.path)
        .body(request.body.clone().unwrap_or_default(), content_type)
        .connect(ConnectOptions::default().timeout(timeout))
        .timeout(timeout);
    if let Some(token) = request.bearer {
        sdk_request = sdk_request.bearer(token);
    }
    let response = client::send(url, sdk_request)
        .await
        .map_err(HttpError::Client)?;
    Ok(HttpResponse {
        status: response.status.as_u16(),
        headers: response
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect(),
        body: response.body.to_vec(),
    })
}

/// One request written as bytes and the response read to EOF.
async fn raw_exchange(
    url: &ServerUrl,
    request: &HttpRequest<'_>,
) -> Result<HttpResponse, HttpError> {
    let authority = url.authority();
    let io = |source| HttpError::Io {
        authority: authority.clone(),
        source,
    };
    let mut stream = TcpStream::connect(&authority).await.map_err(io)?;
    let body = request.body.clone().unwrap_or_default();
    let mut head = format!(
        "{} {}{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
        request.method,
        url.prefix(),
        request.path,
        authority,
        request.declared_length.unwrap_or(body.len() as u64)
    );
    match request.content_type {
        Some("") => {}
        Some(media_type) => head.push_str(&format!("Content-Type: {media_type}\r\n")),
        None if request.body.is_some() => head.push_str("Content-Type: application/json\r\n"),
        None => {}
    }
    if let Some(token) = request.bearer {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    stream.write_all(&bytes).await.map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.map_err(io)?;
    parse_response(&raw)
}

/// Opens a connection and sends one keep-alive `POST /v1/logout` without a
/// token. Returns the response and, when the server keeps the connection
/// open, the connection itself (for holding slots, §3.1).
pub async fn probe_admission(
    url: &ServerUrl,
    timeout: Duration,
) -> Result<(HttpResponse, Option<TcpStream>), HttpError> {
    let authority = url.authority();
    let io = |source| HttpError::Io {
        authority: authority.clone(),
        source,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(&authority).await.map_err(io)?;
        let head = format!(
            "POST {}/v1/logout HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\n\r\n",
            url.prefix()
        );
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        // Read exactly one response: the head, then Content-Length bytes.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let parsed = parse_response(&raw)?;
                let declared = parsed
                    .header("content-length")
                    .and_then(|v| v.parse::<usize>().ok());
                if declared.is_none_or(|len| raw.len() >= end + 4 + len) {
                    let closes = parsed
                        .header("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    return Ok((parsed, (!closes).then_some(stream)));
                }
            }
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                // Closed after (part of) an answer: the response is what came.
                return parse_response(&raw).map(|r| (r, None));
            }
            raw.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout(url.authority()))?
}

/// Why a stalled connection was not closed by the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StallError {
    /// Connecting or writing failed before the stall began.
    #[error("could not connect or send: {0}")]
    Io(std::io::Error),
    /// The server neither closed nor reset the connection in time.
    #[error("not closed within {0} ms")]
    NotClosed(u128),
}

/// Connects, sends `bytes` and then nothing more, and returns what the
/// server sent once it has closed (or reset) the connection.
pub async fn stall(
    url: &ServerUrl,
    bytes: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, StallError> {
    let mut stream = TcpStream::connect(url.authority())
        .await
        .map_err(StallError::Io)?;
    if !bytes.is_empty() {
        stream.write_all(&bytes).await.map_err(StallError::Io)?;
    }
    let read = async {
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                // EOF or a reset: either way the server let go.
                Ok(0) | Err(_) => return answer,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| StallError::NotClosed(timeout.as_millis()))
}

/// Half-closes every connection and reads each to its end, so that the
/// server has seen the close of all of them when this returns.
pub async fn close_all(streams: Vec<TcpStream>) {
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in streams {
        tasks.spawn(async move {
            // Errors mean the connection is gone already, which is the goal.
            if stream.shutdown().await.is_ok() {
                let mut sink = Vec::new();
                stream.read_to_end(&mut sink).await.ok();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Parses a complete HTTP/1.x response.
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, HttpError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| HttpError::Malformed("no end of headers".into()))?;
    let head = std::str::from_utf8(&raw[..end])
        .map_err(|_| HttpError::Malformed("headers are not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| HttpError::Malformed(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        decode_chunked(rest)?
    } else {
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(rest.len());
        rest[..len.min(rest.len())].to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn decode_chunked(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| HttpError::Malformed("truncated chunk size".into()))?;
        let size_text = std::str::from_utf8(&rest[..line_end]).unwrap_or_default();
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
                .map_err(|_| HttpError::Malformed(format!("bad chunk size {size_text:?}")))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(HttpError::Malformed("truncated chunk".into()));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_plain_and_chunked() {
        let r = parse_response(b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r.status, 409);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body_json(), serde_json::json!({}));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"garbage").is_err());
    }
}
