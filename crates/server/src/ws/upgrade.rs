//! `GET /v1/ws`: the checks before a socket exists (§3.1, §3.2, §15).
//!
//! Order matters: the Origin allow-list comes first, so a foreign web page
//! learns nothing else about the server; then the subprotocol, so a client
//! of another protocol version is refused with a readable HTTP error rather
//! than a socket it cannot speak.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confab_protocol::SUBPROTOCOL;
use confab_protocol::http::HttpErrorCode;
use futures_util::FutureExt;

use crate::http::error_response;
use crate::limit::ConnectionPermit;
use crate::state::AppState;

/// tungstenite's read buffer per socket. It is allocated when the socket
/// opens and kept for the socket's life, and zero-filled up to this size on
/// every read poll (upstream snapview/tungstenite-rs#547): its default, 128
/// KiB, made 65% of the server's instructions under fan-out and ~128 KiB of
/// RSS per idle socket, and 4 KiB was still the largest single item of an
/// idle socket's memory (BENCHMARKS.md, idle). Client frames are small —
/// Auth, Resume, a SendMessage of at most max_text_bytes — and arrive a few
/// per second at most (§12.5), so 512 bytes holds a typical frame or a few
/// pipelined ones. A larger frame is still read whole: tungstenite reserves
/// the frame's full length once its header is parsed, and only the bytes
/// read per syscall stay capped at this size.
const READ_BUFFER_BYTES: usize = 512;

/// tungstenite buffers outgoing frames up to this size before writing; the
/// connection's writer flushes after every frame anyway, so this only
/// coalesces a frame's header with its payload.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Hard cap on tungstenite's write buffer. The writer awaits each flush, so
/// the buffer holds about one frame while the kernel's socket buffer is
/// full; the cap only has to exceed the largest frame we send (server frames
/// may exceed max_frame_bytes, §12.2: a full HistoryPage or a long RoomList;
/// clients accept at least 16 MiB). Flow control is the bounded outbound
/// queue (§12.4), not this buffer.
const MAX_WRITE_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// Whether a browser Origin may open a socket (§15.1). No Origin header
/// means a non-browser client, which the Origin mechanism does not concern
/// . Otherwise the Origin must equal an allow-list entry, or name
/// this server itself: `http(s)://` + the request's `Host` (the browser app
/// served by this server; behind a proxy the server cannot know its public
/// origin, but the browser's Host names it). Both comparisons are ASCII
/// case-insensitive after removing one trailing `/`.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = without_trailing_slash(origin.trim());
    if allowed
        .iter()
        .any(|entry| without_trailing_slash(entry.trim()).eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    host.is_some_and(|host| same_origin(origin, host.trim()))
}

fn without_trailing_slash(origin: &str) -> &str {
    origin.strip_suffix('/').unwrap_or(origin)
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was
/// sent to.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    scheme_ok
        && !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@'])
        && authority.eq_ignore_ascii_case(host)
}

/// Whether the client offered `confab.v1` (§3.2).
fn offers_subprotocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
}

/// Handles `GET /v1/ws`.
pub async fn handle(
    State(app): State<Arc<AppState>>,
    permit: Option<Extension<ConnectionPermit>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !origin_allowed(&headers, &app.config.allowed_origins) {
        tracing::info!(origin = ?headers.get(header::ORIGIN), "refused socket from a foreign origin");
        return error_response(
            StatusCode::FORBIDDEN,
            HttpErrorCode::ForbiddenOrigin,
            "this Origin may not open sockets here; the server operator lists allowed origins with --allowed-origin",
        );
    }
    if !offers_subprotocol(&headers) {
        return error_response(
            StatusCode::BAD_REQUEST,
            HttpErrorCode::InvalidRequest,
            format!("offer the WebSocket subprotocol {SUBPROTOCOL} (Sec-WebSocket-Protocol)"),
        );
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                HttpErrorCode::InvalidRequest,
                format!("not a WebSocket upgrade: {}", rejection.body_text()),
            );
        }
    };
    if app.shutdown.is_triggered() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            HttpErrorCode::Unavailable,
            "the server is shutting down; reconnect shortly",
        );
    }
    let max_frame = app.config.limits.max_frame_bytes as usize;
    // tungstenite reads messages up to twice max_frame_bytes whole, and the
    // codec refuses those over max_frame_bytes (1009): the refused message is
    // then consumed, so the close that follows is not turned into a TCP reset
    // by unread input. Bigger ones tungstenite refuses from the
    // frame header, unread, and the socket task holds the socket a moment
    // instead. Twice bounds what one refused message can pin.
    let read_limit = max_frame.saturating_mul(2);
    // Held by the socket task: serve() waits for it before stopping storage.
    let task_token = app.sockets.token();
    let permit = permit.map(|Extension(p)| p);
    upgrade
        .max_message_size(read_limit)
        .max_frame_size(read_limit)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .protocols([SUBPROTOCOL])
        .on_failed_upgrade(|err| tracing::debug!(error = %err, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| {
            let metrics = Arc::clone(&app.metrics);
            // A combinator, not an async block: a block holds what it
            // captures in every state, so one around `run(socket, ..)` kept
            // the WebSocket (368 bytes) beside the running future, and one
            // awaiting a captured future kept that future twice.
            let task = super::connection::run(socket, app, permit).map(move |()| drop(task_token));
            // Every open socket holds this much for its life (issue #15).
            metrics
                .socket_reader_task_bytes
                .store(std::mem::size_of_val(&task) as u64, Ordering::Relaxed);
            task
        })
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(origin: Option<&'static str>, host: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
        }
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_static(host));
        }
        headers
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://chat.example".to_owned()];
        // (Origin, Host, allow-list, allowed?)
        type Case<'a> = (
            Option<&'static str>,
            Option<&'static str>,
            &'a [String],
            bool,
        );
        let cases: &[Case<'_>] = &[
            // No Origin: not a browser.
            (None, Some("chat.example"), &allowed, true),
            (None, None, &[], true),
            // On the allow-list, ASCII case-insensitive, one trailing `/` ignored.
            (Some("https://chat.example"), None, &allowed, true),
            (Some("HTTPS://Chat.Example"), None, &allowed, true),
            (Some("https://chat.example/"), None, &allowed, true),
            (
                Some("https://evil.example"),
                Some("chat.example:7420"),
                &allowed,
                false,
            ),
            // The scheme and port are part of the origin.
            (Some("http://chat.example"), None, &allowed, false),
            (Some("https://chat.example:8443"), None, &allowed, false),
            (Some("https://evil.example"), None, &[], false),
            (Some("null"), Some("chat.example"), &[], false),
            // Same origin: the page was served by this server (its Host).
            (
                Some("http://127.0.0.1:7420"),
                Some("127.0.0.1:7420"),
                &[],
                true,
            ),
            (
                Some("https://Chat.Example"),
                Some("chat.example"),
                &[],
                true,
            ),
            (
                Some("https://chat.example/"),
                Some("chat.example"),
                &[],
                true,
            ),
            (
                Some("https://chat.example"),
                Some("chat.example:7420"),
                &[],
                false,
            ),
            (
                Some("https://chat.example.evil"),
                Some("chat.example"),
                &[],
                false,
            ),
            (Some("ftp://chat.example"), Some("chat.example"), &[], false),
            (
                Some("https://user@chat.example"),
                Some("user@chat.example"),
                &[],
                false,
            ),
            (Some("https://chat.example"), None, &[], false),
        ];
        for (origin, host, allowed, expected) in cases {
            assert_eq!(
                origin_allowed(&with(*origin, *host), allowed),
                *expected,
                "Origin {origin:?}, Host {host:?}, allow-list {allowed:?}"
            );
        }
    }

    #[test]
    fn allow_list_entries_may_end_in_a_slash() {
        let allowed = vec!["https://chat.example/".to_owned()];
        assert!(origin_allowed(
            &with(Some("https://chat.example"), None),
            &allowed
        ));
    }

    #[test]
    fn subprotocols() {
        let mut headers = HeaderMap::new();
        assert!(!offers_subprotocol(&headers));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat, confab.v1"),
        );
        assert!(offers_subprotocol(&headers));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("confab.v2"),
        );
        assert!(!offers_subprotocol(&headers));
    }
}
