//! Error codes, WebSocket close codes and the typed rejection a server sends.
//!
//! Spec: §13.1 (error codes) and §13.2 (close codes).

use crate::names::ValidationError;
use crate::wire::{self, ErrorCode, ServerFrame, server_frame::Body};

/// WebSocket close codes used by confab.v1 (§13.2).
///
/// Codes below 4000 are the standard ones of RFC 6455; 4000-4999 are ours and
/// mirror the nearest HTTP status (4401 ~ 401) so they are easy to remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: orderly close by either side.
    Normal,
    /// 1001: the server is shutting down or restarting; reconnect and resume.
    GoingAway,
    /// 1003: a text (non-binary) message arrived.
    UnsupportedData,
    /// 1009: a message exceeded `max_frame_bytes`.
    MessageTooBig,
    /// 1011: the server hit an internal error; reconnect and resume.
    InternalError,
    /// 4400: the bytes were not a valid ClientFrame.
    MalformedFrame,
    /// 4401: a frame other than Auth arrived before authentication.
    Unauthenticated,
    /// 4403: the token is invalid, expired or revoked; log in again.
    AuthFailed,
    /// 4408: no Auth frame arrived within the auth deadline.
    AuthTimeout,
    /// 4410: the session was logged out; do not reconnect with this token.
    LoggedOut,
    /// 4429: the client read too slowly and its queue filled; reconnect and resume.
    SlowConsumer,
    /// 4504: nothing was heard from the peer within the idle timeout.
    IdleTimeout,
}

impl CloseCode {
    /// Every close code, for tables and tests.
    pub const ALL: [CloseCode; 12] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::UnsupportedData,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::MalformedFrame,
        CloseCode::Unauthenticated,
        CloseCode::AuthFailed,
        CloseCode::AuthTimeout,
        CloseCode::LoggedOut,
        CloseCode::SlowConsumer,
        CloseCode::IdleTimeout,
    ];

    /// The numeric code on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::UnsupportedData => 1003,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::MalformedFrame => 4400,
            CloseCode::Unauthenticated => 4401,
            CloseCode::AuthFailed => 4403,
            CloseCode::AuthTimeout => 4408,
            CloseCode::LoggedOut => 4410,
            CloseCode::SlowConsumer => 4429,
            CloseCode::IdleTimeout => 4504,
        }
    }

    /// Maps a numeric code back; `None` for codes confab.v1 does not define.
    pub fn from_u16(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_u16() == code)
    }

    /// Whether a client should reconnect and resume after this close (§14.2).
    /// Auth failures and logout need a new login first, and protocol
    /// violations would repeat, so only transient causes qualify.
    pub fn should_reconnect(self) -> bool {
        matches!(
            self,
            CloseCode::GoingAway
                | CloseCode::InternalError
                | CloseCode::SlowConsumer
                | CloseCode::IdleTimeout
                | CloseCode::AuthTimeout
        )
    }

    /// Short reason text sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "bye",
            CloseCode::GoingAway => "server going away; reconnect and resume",
            CloseCode::UnsupportedData => "confab.v1 uses binary messages only",
            CloseCode::MessageTooBig => "frame exceeds max_frame_bytes",
            CloseCode::InternalError => "internal error; reconnect and resume",
            CloseCode::MalformedFrame => "malformed frame",
            CloseCode::Unauthenticated => "send Auth first",
            CloseCode::AuthFailed => "token invalid, expired or revoked; log in again",
            CloseCode::AuthTimeout => "no Auth frame before the deadline",
            CloseCode::LoggedOut => "logged out",
            CloseCode::SlowConsumer => "client too slow; reconnect and resume",
            CloseCode::IdleTimeout => "peer silent past idle timeout",
        }
    }
}

impl ErrorCode {
    /// Whether the request may succeed if repeated later (§13.1).
    pub fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Internal | ErrorCode::Unavailable
        )
    }

    /// The close that follows this error, if the connection does not survive it (§13.1).
    pub fn closes_with(self) -> Option<CloseCode> {
        match self {
            ErrorCode::MalformedFrame => Some(CloseCode::MalformedFrame),
            ErrorCode::Unauthenticated => Some(CloseCode::Unauthenticated),
            ErrorCode::TokenInvalid | ErrorCode::TokenExpired | ErrorCode::TokenRevoked => {
                Some(CloseCode::AuthFailed)
            }
            _ => None,
        }
    }
}

/// A typed refusal of one request: what a server turns into an `Error` frame (§13).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Rejection {
    /// The code.
    pub code: ErrorCode,
    /// What went wrong and what to do.
    pub message: String,
    /// Milliseconds to wait before retrying, for retryable codes.
    pub retry_after_ms: u32,
}

impl Rejection {
    /// A rejection with no retry hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: 0,
        }
    }

    /// A RATE_LIMITED rejection carrying `retry_after_ms`.
    pub fn rate_limited(retry_after_ms: u32) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            message: format!("sending too fast; retry after {retry_after_ms} ms"),
            retry_after_ms,
        }
    }

    /// The wire form.
    pub fn to_wire(&self) -> wire::Error {
        wire::Error {
            code: self.code as i32,
            message: self.message.clone(),
            retryable: self.code.default_retryable(),
            retry_after_ms: self.retry_after_ms,
        }
    }

    /// The `Error` frame answering `request_id` (0 when it answers no request).
    pub fn into_frame(self, request_id: u64) -> ServerFrame {
        ServerFrame {
            request_id,
            body: Some(Body::Error(self.to_wire())),
        }
    }
}

impl From<ValidationError> for Rejection {
    fn from(err: ValidationError) -> Self {
        let code = match err {
            ValidationError::TooLong { field: "text", .. } => ErrorCode::TextTooLong,
            _ => ErrorCode::InvalidArgument,
        };
        Rejection::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in CloseCode::ALL {
            assert!(seen.insert(code.as_u16()), "duplicate {code:?}");
            assert_eq!(CloseCode::from_u16(code.as_u16()), Some(code));
            assert!(
                code.reason().len() <= 123,
                "close reason must fit a control frame"
            );
        }
        assert_eq!(CloseCode::from_u16(4999), None);
    }

    #[test]
    fn text_too_long_maps_to_its_own_code() {
        let err = crate::names::MessageText::parse("x".repeat(11), 10).unwrap_err();
        assert_eq!(Rejection::from(err).code, ErrorCode::TextTooLong);
        let err = crate::names::RoomName::parse("").unwrap_err();
        assert_eq!(Rejection::from(err).code, ErrorCode::InvalidArgument);
    }
}
