//! The HTTP routes (§5): register, login, logout, health, metrics, and the
//! WebSocket endpoint's route.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
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

/// Builds the router of every endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(REGISTER_PATH, post(register))
        .route(LOGIN_PATH, post(login))
        .route(LOGOUT_PATH, post(logout))
        .route(
            confab_protocol::WEBSOCKET_PATH,
            get(crate::ws::upgrade::handle),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        // The JSON bodies are two short strings (a password is at most
        // 1 KiB); nothing legitimate comes close to this.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
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

/// The body as `T`, or the `400 invalid_request` to answer (§5.1), also
/// for a body over the size limit, so every error stays an ErrorBody.
fn parse_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, String> {
    let body =
        body.map_err(|e| format!("the request body could not be read: {}", e.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| format!("the body must be a JSON object with username and password: {e}"))
}

fn bad_request(message: String) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        HttpErrorCode::InvalidRequest,
        message,
    )
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
            return retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                HttpErrorCode::TooManyAttempts,
                "too many failed logins for this username; wait retry_after_ms and try again",
                wait,
            );
        }
    };
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
        let lockout = reservation.failed(Instant::now());
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
            let sockets = app.hub.close_token(&hash, CloseCode::LoggedOut);
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
