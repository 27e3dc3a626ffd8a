//! The HTTP routes (§5): register, login, logout, health, metrics, and the
//! WebSocket endpoint's route.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use confab_protocol::error::CloseCode;
use confab_protocol::http::{
    ErrorBody, HttpErrorCode, LOGIN_PATH, LOGOUT_PATH, LoginRequest, LoginResponse, REGISTER_PATH,
    RegisterRequest, RegisterResponse,
};
use confab_protocol::names::{Username, check_password};
use serde::de::DeserializeOwned;

use crate::auth::{HASH_BUSY_RETRY, HashBusy, new_token, now_ms, token_hash};
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::storage::StoreError;

/// Builds the router of every endpoint. With `--metrics-listen`, `/metrics`
/// is left out: it is served by [`metrics_router`] on its own address.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route(REGISTER_PATH, post(register))
        .route(LOGIN_PATH, post(login))
        .route(LOGOUT_PATH, post(logout))
        .route(
            confab_protocol::WEBSOCKET_PATH,
            get(crate::ws::upgrade::handle),
        )
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::web::routes());
    if state.config.metrics_listen.is_none() {
        router = router.route("/metrics", get(metrics));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The JSON bodies are two short strings (a password is at most
        // 1 KiB); nothing legitimate comes close to this. This limit stops
        // a chunked body; `edge` refuses a declared length up front.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(edge))
        .with_state(state)
}

/// The router of the `--metrics-listen` address: `/metrics` only.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(edge))
        .with_state(state)
}

/// Checks and headers every request and response passes (§5.1, §5.5):
/// a declared body over the cap is refused before it is read (413); login
/// and register accept only JSON (415: a web page can send `text/plain` to
/// any server without a CORS preflight, and could otherwise make its
/// visitors' browsers run up failed-login lockouts); every response gets
/// `nosniff`, and auth responses `no-store`, so no cache keeps a token.
async fn edge(request: Request, next: Next) -> Response {
    let auth_path = matches!(
        request.uri().path(),
        REGISTER_PATH | LOGIN_PATH | LOGOUT_PATH
    );
    let too_large = declared_length(request.headers()).is_some_and(|n| n > MAX_BODY_BYTES as u64);
    let not_json = request.method() == Method::POST
        && matches!(request.uri().path(), REGISTER_PATH | LOGIN_PATH)
        && !is_json(request.headers());
    let mut response = if too_large || not_json {
        // The body is not read: hyper discards what has arrived when it
        // ends the exchange (a_sent_over_cap_body_gets_its_413_without_a_reset).
        drop(request);
        if too_large {
            payload_too_large()
        } else {
            error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                HttpErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            )
        }
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if auth_path {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The declared `Content-Length`, if any (hyper has already refused a
/// malformed one).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `Content-Type` is `application/json`, with at most a
/// `charset=utf-8` parameter (media type and charset case-insensitive).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/json")
        && parts.all(|parameter| {
            let parameter = parameter.trim();
            parameter.is_empty()
                || parameter.split_once('=').is_some_and(|(name, value)| {
                    name.trim().eq_ignore_ascii_case("charset")
                        && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
                })
        })
}

/// `413`: the body is over [`MAX_BODY_BYTES`]. The connection is closed:
/// the rest of the body is not worth reading.
fn payload_too_large() -> Response {
    let mut response = error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        HttpErrorCode::PayloadTooLarge,
        format!("the request body is over {MAX_BODY_BYTES} bytes; send a smaller one"),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `408`: the request body did not arrive within the body deadline
/// (`--body-timeout-ms`); the connection is closed.
pub(crate) fn body_timeout_response() -> Response {
    let mut response = error_response(
        StatusCode::REQUEST_TIMEOUT,
        HttpErrorCode::RequestTimeout,
        "the request body did not arrive in time; send the whole request at once",
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `404` for every unknown path.
async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        HttpErrorCode::NotFound,
        "no such endpoint; see spec/protocol.md section 5 for the endpoints",
    )
}

/// `405` for a known path with another method.
async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        HttpErrorCode::MethodNotAllowed,
        "this endpoint does not take that method; see the Allow header",
    )
}

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// A JSON error response (§5.5).
pub fn error_response(
    status: StatusCode,
    code: HttpErrorCode,
    message: impl Into<String>,
) -> Response {
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

fn internal(err: impl std::fmt::Display) -> Response {
    tracing::error!(error = %err, "request failed");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        HttpErrorCode::Internal,
        "internal error; try again later",
    )
}

/// A 429 or 503 with `retry_after_ms` and a `Retry-After` header in whole seconds.
fn retry_later(status: StatusCode, code: HttpErrorCode, message: &str, wait: Duration) -> Response {
    let mut body = ErrorBody::new(code, message);
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    body.error.retry_after_ms = Some(ms);
    let mut response = (status, axum::Json(body)).into_response();
    let secs = ms.div_ceil(1000);
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Why a request body was refused, and so which error answers it.
#[derive(Debug)]
enum BadBody {
    /// 400 `invalid_request`: not JSON of the expected shape, or unreadable.
    Invalid(&'static str),
    /// 413 `payload_too_large`: a chunked body grew over the cap.
    TooLarge,
}

/// The body as `T`, or why not (§5.1). The messages are fixed: serde's
/// would quote the offending input back.
fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, BadBody> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            BadBody::TooLarge
        } else {
            BadBody::Invalid("the request body could not be read; send it again whole")
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        BadBody::Invalid(match e.classify() {
            serde_json::error::Category::Data => {
                "the body must be a JSON object with exactly two string fields, username and password"
            }
            _ => "the body is not valid JSON; send a JSON object with username and password",
        })
    })
}

fn bad_request(bad: BadBody) -> Response {
    match bad {
        BadBody::Invalid(message) => error_response(
            StatusCode::BAD_REQUEST,
            HttpErrorCode::InvalidRequest,
            message,
        ),
        BadBody::TooLarge => payload_too_large(),
    }
}

/// The key per-address limits count by: the IPv4 address, or the /64 of an
/// IPv6 one (a single host is usually handed a whole /64, so counting by
/// full address would give it 2^64 budgets).
fn client_key(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

/// The answer when the hash limiter refuses (§15.3): 429 for an address
/// over its share, 503 when the whole queue is full.
fn hash_busy(app: &AppState, busy: HashBusy) -> Response {
    match busy {
        HashBusy::Address => {
            Metrics::inc(&app.metrics.auth_address_throttled);
            retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                HttpErrorCode::TooManyAttempts,
                "too many password checks from your address are in progress; wait retry_after_ms and try again",
                HASH_BUSY_RETRY,
            )
        }
        _ => {
            Metrics::inc(&app.metrics.auth_hash_queue_full);
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                HttpErrorCode::Unavailable,
                "the server is busy checking passwords; wait retry_after_ms and try again",
                HASH_BUSY_RETRY,
            )
        }
    }
}

/// `POST /v1/register` (§5.2).
async fn register(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: RegisterRequest = match parse_json(body) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    let username = match Username::parse(request.username) {
        Ok(u) => u,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                HttpErrorCode::InvalidUsername,
                e.to_string(),
            );
        }
    };
    if let Err(e) = check_password(&request.password) {
        return error_response(
            StatusCode::BAD_REQUEST,
            HttpErrorCode::InvalidPassword,
            e.to_string(),
        );
    }
    // Cheap checks first; the registration token is taken before the
    // expensive hash, and kept whatever the outcome.
    let addr = client_key(peer);
    if let Err(wait) = app.register_addresses.try_take(addr, Instant::now()) {
        Metrics::inc(&app.metrics.auth_address_throttled);
        return retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            HttpErrorCode::TooManyAttempts,
            "too many registrations from your address; wait retry_after_ms and try again",
            wait,
        );
    }
    let slot = match app.hash_limiter.admit(addr) {
        Ok(slot) => slot,
        Err(busy) => {
            // Refused unserved: the registration does not count.
            app.register_addresses.put_back(addr);
            return hash_busy(&app, busy);
        }
    };
    Metrics::inc(&app.metrics.password_hashes);
    let hash = match app.passwords.hash(&slot, request.password).await {
        Ok(h) => h,
        Err(e) => return internal(e),
    };
    drop(slot);
    match app.store.create_user(&username, &hash, now_ms()).await {
        Ok(_) => {
            tracing::info!(user = %username, "registered");
            let body = RegisterResponse {
                username: username.into_string(),
            };
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Err(StoreError::AlreadyExists) => error_response(
            StatusCode::CONFLICT,
            HttpErrorCode::UsernameTaken,
            "that username is taken; choose another",
        ),
        Err(e) => internal(e),
    }
}

/// The one body for every failed login (§5.3): unknown user and wrong
/// password MUST be indistinguishable, down to the bytes.
fn invalid_credentials() -> Response {
    error_response(
        StatusCode::UNAUTHORIZED,
        HttpErrorCode::InvalidCredentials,
        "unknown username or wrong password",
    )
}

/// 429 for a login whose username is locked out or out of budget (§15.3),
/// whether this node's throttle or the cluster's said so.
fn name_locked(wait: Duration) -> Response {
    retry_later(
        StatusCode::TOO_MANY_REQUESTS,
        HttpErrorCode::TooManyAttempts,
        "too many failed logins for this username; wait retry_after_ms and try again",
        wait,
    )
}

/// `POST /v1/login` (§5.3).
///
/// Limits, cheapest first, each reserved before the password is verified
/// (§15.3): the name's failure budget, the address's failure budget, the
/// address's share of the hash limiter. A refusal by a later one hands back
/// what the earlier ones reserved, so it costs the name nothing.
async fn login(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: LoginRequest = match parse_json(body) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    // Throttled by the requested name, whether or not it exists.
    let reservation = match app
        .login_throttle
        .reserve(&request.username, Instant::now())
    {
        Ok(reservation) => reservation,
        Err(wait) => {
            Metrics::inc(&app.metrics.login_failures);
            return name_locked(wait);
        }
    };
    // Cluster mode: the name's lockout is shared by every node (§15.3).
    let throttle_key = crate::auth::throttle_key(&request.username);
    if let Some(shared) = &app.shared_limits {
        match shared.login_locked(&throttle_key, now_ms()).await {
            Ok(Some(wait)) => {
                reservation.release();
                Metrics::inc(&app.metrics.login_failures);
                return name_locked(wait);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "shared login throttle unavailable; using this node's")
            }
        }
    }
    let addr = client_key(peer);
    if let Err(wait) = app.login_addresses.try_take(addr, Instant::now()) {
        reservation.release();
        Metrics::inc(&app.metrics.login_failures);
        Metrics::inc(&app.metrics.auth_address_throttled);
        return retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            HttpErrorCode::TooManyAttempts,
            "too many failed logins from your address; wait retry_after_ms and try again",
            wait,
        );
    }
    let slot = match app.hash_limiter.admit(addr) {
        Ok(slot) => slot,
        Err(busy) => {
            reservation.release();
            app.login_addresses.put_back(addr);
            Metrics::inc(&app.metrics.login_failures);
            return hash_busy(&app, busy);
        }
    };
    let credentials = match app.store.user_credentials(&request.username).await {
        Ok(c) => c,
        Err(e) => {
            reservation.release();
            app.login_addresses.put_back(addr);
            return internal(e);
        }
    };
    let (user_id, hash) = match credentials {
        Some(c) => (Some(c.id), Some(c.password_hash)),
        None => (None, None),
    };
    // Verifies against a dummy hash when the user is unknown, so both
    // failures cost the same time.
    Metrics::inc(&app.metrics.password_verifications);
    let matched = app.passwords.verify(&slot, request.password, hash).await;
    drop(slot);
    let Some(user_id) = user_id.filter(|_| matched) else {
        Metrics::inc(&app.metrics.login_failures);
        // The address keeps the token: this failure counts there too.
        let mut lockout = reservation.failed(Instant::now());
        if let Some(shared) = &app.shared_limits {
            match shared
                .login_failed(&throttle_key, app.login_throttle.policy(), now_ms())
                .await
            {
                Ok(shared_lockout) => lockout = lockout.max(shared_lockout),
                Err(err) => tracing::warn!(error = %err, "shared login throttle unavailable"),
            }
        }
        // The name is logged only when it is a valid one: anything else is
        // attacker-chosen bytes of any length.
        match Username::parse(request.username.as_str()) {
            Ok(user) => tracing::info!(%user, locked = lockout.is_some(), "login failed"),
            Err(_) => tracing::info!("login failed for an invalid username"),
        }
        return invalid_credentials();
    };
    reservation.succeeded();
    app.login_addresses.put_back(addr);
    if let Some(shared) = &app.shared_limits
        && let Err(err) = shared.login_succeeded(&throttle_key).await
    {
        tracing::warn!(error = %err, "shared login throttle unavailable");
    }
    let token = new_token();
    let now = now_ms();
    let ttl_ms = i64::try_from(app.config.token_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at_ms = now.saturating_add(ttl_ms);
    if let Err(e) = app
        .store
        .insert_token(&token_hash(&token), user_id, now, expires_at_ms)
        .await
    {
        return internal(e);
    }
    tracing::info!(user = %request.username, "logged in");
    let body = LoginResponse {
        token,
        username: request.username,
        expires_at_ms,
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `POST /v1/logout` (§5.4): revokes the token and closes its sockets with 4410.
async fn logout(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let unauthorized = || {
        error_response(
            StatusCode::UNAUTHORIZED,
            HttpErrorCode::Unauthorized,
            "send Authorization: Bearer <token> with a live token",
        )
    };
    let Some(token) = bearer(&headers) else {
        return unauthorized();
    };
    let hash = token_hash(token);
    match app.store.revoke_token(&hash, now_ms()).await {
        Ok(true) => {
            let sockets = app.hub.revoke_token(&hash, CloseCode::LoggedOut);
            tracing::info!(sockets, "logged out");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => unauthorized(),
        Err(e) => internal(e),
    }
}

/// `GET /metrics` (§5.6).
async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.render_metrics(),
    )
        .into_response()
}
