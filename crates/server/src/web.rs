//! The browser app, served from the server binary itself: `GET /` is the
//! app's HTML, `GET /assets/...` its scripts and styles.
//!
//! The files are `web/dist`, built by `npm run build` in `web/` and
//! committed, embedded at compile time (rust-embed), so serving the app
//! needs nothing but cargo. The app opens its socket on the same origin,
//! which §15.1 allows without configuration.
//!
//! Every response carries a Content-Security-Policy with no inline script:
//! the app is text-only (messages are rendered as text nodes), so even a
//! rendering bug cannot run a message as script.

use std::borrow::Cow;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use confab_protocol::http::HttpErrorCode;
use rust_embed::RustEmbed;

use crate::http::error_response;

/// The built app.
#[derive(RustEmbed)]
#[folder = "$CARGO_MANIFEST_DIR/../../web/dist"]
struct Assets;

/// Scripts and styles from this origin only, sockets and requests to it
/// only, no plugins, no framing, no `<base>` tricks.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The app's routes, merged into the server's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*file}", get(asset))
}

async fn index() -> Response {
    serve("index.html", false)
}

async fn asset(Path(file): Path<String>) -> Response {
    serve(&format!("assets/{file}"), true)
}

/// One embedded file with the app's headers. Assets have content hashes in
/// their names, so they may be cached for good; the HTML never is, so a
/// new server version is picked up on the next load.
fn serve(path: &str, immutable: bool) -> Response {
    let Some(file) = Assets::get(path) else {
        return error_response(
            StatusCode::NOT_FOUND,
            HttpErrorCode::NotFound,
            "no such file in the browser app",
        );
    };
    let mime = file.metadata.mimetype();
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    // Release builds embed the files as statics: served without a copy.
    let body = match file.data {
        Cow::Borrowed(bytes) => Bytes::from_static(bytes),
        Cow::Owned(bytes) => Bytes::from(bytes),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}
