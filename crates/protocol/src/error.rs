//! Error codes, WebSocket close codes and the typed rejection a server sends.
//!
//! Spec: §13.1 (error codes) and §13.2 (close codes).

use crate::codec::DecodeError;
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
    /// 1007: a text message arrived whose payload is not valid UTF-8.
    InvalidPayload,
    /// 1009: a message exceeded `max_frame_bytes`.
    MessageTooBig,
    /// 1011: the server hit an internal error; reconnect and resume.
    InternalError,
    /// 1013: the user has too many sockets open; reconnect later, with backoff.
    TryAgainLater,
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
    pub const ALL: [CloseCode; 14] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::UnsupportedData,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::TryAgainLater,
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
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::TryAgainLater => 1013,
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
    /// violations would repeat, so only transient causes qualify. 1013
    /// qualifies too: the client's backoff (§14.2) spaces the attempts while
    /// the user's other sockets hold the cap.
    pub fn should_reconnect(self) -> bool {
        matches!(
            self,
            CloseCode::GoingAway
                | CloseCode::InternalError
                | CloseCode::TryAgainLater
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
            CloseCode::InvalidPayload => "text message is not valid UTF-8",
            CloseCode::MessageTooBig => "frame exceeds max_frame_bytes",
            CloseCode::InternalError => "internal error; reconnect and resume",
            CloseCode::TryAgainLater => "too many sockets for this user; try again later",
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
            ErrorCode::RateLimited
                | ErrorCode::Internal
                | ErrorCode::Unavailable
                | ErrorCode::TooManyConnections
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
            ErrorCode::TooManyConnections => Some(CloseCode::TryAgainLater),
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

impl Rejection {
    /// UNAUTHENTICATED: a frame other than Auth before authentication (§6.2).
    pub fn unauthenticated() -> Self {
        Rejection::new(
            ErrorCode::Unauthenticated,
            "the first frame on a socket must be Auth with a token from POST /v1/login",
        )
    }

    /// TOKEN_EXPIRED: the socket's token reached its `expires_at_ms` (§6.2).
    pub fn token_expired() -> Self {
        Rejection::new(ErrorCode::TokenExpired, "this token expired; log in again")
    }

    /// TOO_MANY_CONNECTIONS: the user holds `max` sockets already (§6.2).
    pub fn too_many_connections(max: u32) -> Self {
        Rejection::new(
            ErrorCode::TooManyConnections,
            format!(
                "this user already has {max} sockets open, the server's limit; close one or reconnect later"
            ),
        )
    }
}

/// A data message a server could not take as a request (§3.3, §4.4, §6.2, §12.2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadMessage {
    /// A binary message that did not decode as a `ClientFrame`.
    Binary(DecodeError),
    /// A text message (valid UTF-8).
    Text,
    /// A text message whose payload is not valid UTF-8.
    InvalidUtf8Text,
    /// A message the WebSocket layer refused as larger than `max_frame_bytes`
    /// before it was read whole.
    TooBig,
}

/// What a server does about a [`BadMessage`]: the Error frame to send first,
/// if any, then the close code, if the connection does not survive it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Sent before the close (§13.1: the Error precedes the close frame).
    pub error: Option<ServerFrame>,
    /// `None`: the connection stays open.
    pub close: Option<CloseCode>,
}

/// The one mapping from a bad message to the server's answer, in both
/// phases of a socket (`authenticated` false: before Welcome).
///
/// Undecodable bytes are MALFORMED_FRAME and 4400 in every phase;
/// a frame that decodes but whose body is absent or unknown is UNAUTHENTICATED
/// and 4401 before Auth and UNSUPPORTED_FRAME, connection open,
/// after. Size and text are transport matters: 1009, 1003, 1007.
pub fn refuse(bad: &BadMessage, authenticated: bool) -> Refusal {
    let close_only = |code| Refusal {
        error: None,
        close: Some(code),
    };
    let rejected = |rejection: Rejection, request_id| Refusal {
        close: rejection.code.closes_with(),
        error: Some(rejection.into_frame(request_id)),
    };
    match bad {
        BadMessage::TooBig | BadMessage::Binary(DecodeError::Oversize { .. }) => {
            close_only(CloseCode::MessageTooBig)
        }
        BadMessage::Text => close_only(CloseCode::UnsupportedData),
        BadMessage::InvalidUtf8Text => close_only(CloseCode::InvalidPayload),
        BadMessage::Binary(DecodeError::UnknownBody { request_id }) if !authenticated => {
            rejected(Rejection::unauthenticated(), *request_id)
        }
        BadMessage::Binary(DecodeError::UnknownBody { request_id }) => rejected(
            Rejection::new(
                ErrorCode::UnsupportedFrame,
                "this server does not know that frame kind; it speaks confab.v1 as listed in Welcome",
            ),
            *request_id,
        ),
        // Malformed, and any decode failure added later: the bytes are not a
        // ClientFrame, so there is no request id to echo.
        BadMessage::Binary(err) => rejected(
            Rejection::new(ErrorCode::MalformedFrame, err.to_string()),
            0,
        ),
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

    fn error_of(refusal: &Refusal) -> Option<(ErrorCode, u64)> {
        let frame = refusal.error.as_ref()?;
        match &frame.body {
            Some(Body::Error(e)) => Some((
                ErrorCode::try_from(e.code).expect("known code"),
                frame.request_id,
            )),
            other => panic!("not an Error: {other:?}"),
        }
    }

    #[test]
    fn bad_messages_map_to_one_answer_per_phase() {
        let malformed = DecodeError::Malformed {
            reason: "truncated".into(),
        };
        let oversize = DecodeError::Oversize { size: 10, max: 5 };
        let unknown = DecodeError::UnknownBody { request_id: 7 };
        use CloseCode as C;
        use ErrorCode as E;
        /// (message, authenticated, expected error and its request id, expected close)
        type Case = (BadMessage, bool, Option<(E, u64)>, Option<C>);
        let table: Vec<Case> = vec![
            (
                BadMessage::Binary(malformed.clone()),
                false,
                Some((E::MalformedFrame, 0)),
                Some(C::MalformedFrame),
            ),
            (
                BadMessage::Binary(malformed),
                true,
                Some((E::MalformedFrame, 0)),
                Some(C::MalformedFrame),
            ),
            (
                BadMessage::Binary(unknown.clone()),
                false,
                Some((E::Unauthenticated, 7)),
                Some(C::Unauthenticated),
            ),
            (
                BadMessage::Binary(unknown),
                true,
                Some((E::UnsupportedFrame, 7)),
                None,
            ),
            (
                BadMessage::Binary(oversize.clone()),
                false,
                None,
                Some(C::MessageTooBig),
            ),
            (
                BadMessage::Binary(oversize),
                true,
                None,
                Some(C::MessageTooBig),
            ),
            (BadMessage::TooBig, false, None, Some(C::MessageTooBig)),
            (BadMessage::TooBig, true, None, Some(C::MessageTooBig)),
            (BadMessage::Text, false, None, Some(C::UnsupportedData)),
            (BadMessage::Text, true, None, Some(C::UnsupportedData)),
            (
                BadMessage::InvalidUtf8Text,
                false,
                None,
                Some(C::InvalidPayload),
            ),
            (
                BadMessage::InvalidUtf8Text,
                true,
                None,
                Some(C::InvalidPayload),
            ),
        ];
        for (bad, authenticated, error, close) in table {
            let refusal = refuse(&bad, authenticated);
            assert_eq!(
                error_of(&refusal),
                error,
                "{bad:?} authenticated={authenticated}"
            );
            assert_eq!(
                refusal.close, close,
                "{bad:?} authenticated={authenticated}"
            );
            // an Error that closes names the close that follows.
            if let Some((code, _)) = error {
                assert_eq!(code.closes_with(), close, "{bad:?}");
            }
        }
    }

    #[test]
    fn too_many_connections_is_retryable_and_closes_with_1013() {
        let wire = Rejection::too_many_connections(32).to_wire();
        assert!(wire.retryable);
        assert_eq!(ErrorCode::TooManyConnections as i32, 17);
        assert_eq!(
            ErrorCode::TooManyConnections.closes_with(),
            Some(CloseCode::TryAgainLater)
        );
        assert_eq!(CloseCode::TryAgainLater.as_u16(), 1013);
        assert!(CloseCode::TryAgainLater.should_reconnect());
        assert_eq!(CloseCode::InvalidPayload.as_u16(), 1007);
        assert!(!CloseCode::InvalidPayload.should_reconnect());
        assert_eq!(
            Rejection::token_expired().code.closes_with(),
            Some(CloseCode::AuthFailed)
        );
    }

    #[test]
    fn text_too_long_maps_to_its_own_code() {
        let err = crate::names::MessageText::parse("x".repeat(11), 10).unwrap_err();
        assert_eq!(Rejection::from(err).code, ErrorCode::TextTooLong);
        let err = crate::names::RoomName::parse("").unwrap_err();
        assert_eq!(Rejection::from(err).code, ErrorCode::InvalidArgument);
    }
}
