//! JSON bodies of the HTTP endpoints.
//!
//! Spec: §5. Each body has a JSON Schema generated from these types with
//! `schemars` and checked into `spec/schemas/`; a test fails when a
//! checked-in schema is stale (run with `UPDATE_SCHEMAS=1` to refresh).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Path of the register endpoint (§5.2).
pub const REGISTER_PATH: &str = "/v1/register";
/// Path of the login endpoint (§5.3).
pub const LOGIN_PATH: &str = "/v1/login";
/// Path of the logout endpoint (§5.4).
pub const LOGOUT_PATH: &str = "/v1/logout";

/// `POST /v1/register` body (§5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 2-32 bytes of `[a-z0-9_-]`, starting with a letter or digit.
    pub username: String,
    /// 8-1024 bytes.
    pub password: String,
}

/// `201 Created` body of register (§5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RegisterResponse {
    /// The registered username.
    pub username: String,
}

/// `POST /v1/login` body (§5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// `200 OK` body of login (§5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LoginResponse {
    /// Opaque bearer token for `Auth.token` and `Authorization: Bearer`.
    pub token: String,
    /// The authenticated username.
    pub username: String,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Machine-readable HTTP error codes (§5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HttpErrorCode {
    /// 400: the body is not valid JSON of the expected shape.
    InvalidRequest,
    /// 400: the username breaks the name rules.
    InvalidUsername,
    /// 400: the password is too short or too long.
    InvalidPassword,
    /// 409: the username is taken.
    UsernameTaken,
    /// 401: unknown user or wrong password (deliberately indistinguishable).
    InvalidCredentials,
    /// 429: too many failed logins for this account; see retry_after_ms.
    TooManyAttempts,
    /// 401: missing, invalid, expired or revoked bearer token.
    Unauthorized,
    /// 403: the Origin header is not allowed.
    ForbiddenOrigin,
    /// 503: the server is at a connection limit or shutting down.
    Unavailable,
    /// 500: server-side failure.
    Internal,
    /// 404: no endpoint has this path.
    NotFound,
    /// 405: the endpoint exists but does not take this method.
    MethodNotAllowed,
    /// 408: the request body did not arrive within the server's deadline.
    RequestTimeout,
    /// 413: the request body is over the server's size limit.
    PayloadTooLarge,
    /// 415: the body is not sent as `Content-Type: application/json`.
    UnsupportedMediaType,
}

/// Error details (§5.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: HttpErrorCode,
    /// What went wrong and what to do.
    pub message: String,
    /// For 429 and 503: milliseconds to wait before retrying; otherwise absent, never null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub retry_after_ms: Option<u64>,
}

/// Every non-2xx response body (§5.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: HttpErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
                retry_after_ms: None,
            },
        }
    }
}

/// The JSON Schemas of every body, as (file name, pretty JSON).
pub fn schemas() -> Vec<(&'static str, String)> {
    fn render<T: JsonSchema>() -> String {
        let schema = schemars::schema_for!(T);
        // Serializing a schema cannot fail: it is plain JSON values.
        let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
        text.push('\n');
        text
    }
    vec![
        ("register_request.json", render::<RegisterRequest>()),
        ("register_response.json", render::<RegisterResponse>()),
        ("login_request.json", render::<LoginRequest>()),
        ("login_response.json", render::<LoginResponse>()),
        ("error_body.json", render::<ErrorBody>()),
    ]
}
