//! `GET /v1/ws`: the checks before a socket exists (§3.1, §3.2, §15).
//!
//! Order matters: the Origin allow-list comes first, so a foreign web page
//! learns nothing else about the server; then the subprotocol, so a client
//! of another protocol version is refused with a readable HTTP error rather
//! than a socket it cannot speak.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use confab_protocol::SUBPROTOCOL;
use confab_protocol::http::HttpErrorCode;

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

/// Whether a browser Origin may open a socket (§15). No Origin header means
/// a non-browser client, which the Origin mechanism does not concern.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => origin.to_str().is_ok_and(|o| {
            allowed
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
        }),
    }
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
        .on_upgrade(move |socket| async move {
            super::connection::run(socket, app, permit).await;
            drop(task_token);
        })
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origins() {
        let allowed = vec!["https://chat.example".to_owned()];
        let mut headers = HeaderMap::new();
        assert!(
            origin_allowed(&headers, &allowed),
            "no Origin: not a browser"
        );
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://chat.example"),
        );
        assert!(origin_allowed(&headers, &allowed));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_allowed(&headers, &allowed));
        assert!(!origin_allowed(&headers, &[]));
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
