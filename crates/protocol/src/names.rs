//! Validated newtypes for user-supplied strings.
//!
//! Spec: §12.3 (name and text rules). Values are checked once, at the
//! boundary where they enter a program; code holding a [`RoomName`] or a
//! [`Username`] never re-validates.

use std::fmt;

/// Why a user-supplied value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The value is empty (or only whitespace, for text).
    #[error("{field} must not be empty")]
    Empty {
        /// Which field.
        field: &'static str,
    },
    /// The value is longer than allowed.
    #[error("{field} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is shorter than allowed.
    #[error("{field} is {len} bytes long; it needs at least {min}")]
    TooShort {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The value holds a character the field does not allow.
    #[error("{field} may not contain {ch:?} (at byte {at}); {rule}")]
    BadChar {
        /// Which field.
        field: &'static str,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
        /// The rule, in words.
        rule: &'static str,
    },
}

/// Longest username, in bytes.
pub const MAX_USERNAME_BYTES: usize = 32;
/// Shortest username, in bytes.
pub const MIN_USERNAME_BYTES: usize = 2;
/// Longest room name, in bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 32;
/// Longest room topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Longest client message id, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 64;
/// Shortest password, in bytes (§5.2).
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest password, in bytes; bounds the work of hashing (§5.2).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Default longest message text, in bytes (§12.2).
pub const DEFAULT_MAX_TEXT_BYTES: usize = 4096;

const IDENT_RULE: &str =
    "use lowercase ASCII letters, digits, '-' and '_', starting with a letter or digit";

fn check_len(field: &'static str, s: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if s.len() > max {
        return Err(ValidationError::TooLong {
            field,
            len: s.len(),
            max,
        });
    }
    if s.len() < min {
        return Err(ValidationError::TooShort {
            field,
            len: s.len(),
            min,
        });
    }
    Ok(())
}

fn check_ident(
    field: &'static str,
    s: &str,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    check_len(field, s, min, max)?;
    for (at, ch) in s.char_indices() {
        let ok =
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || (at > 0 && (ch == '-' || ch == '_'));
        if !ok {
            return Err(ValidationError::BadChar {
                field,
                ch,
                at,
                rule: IDENT_RULE,
            });
        }
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The validated value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// Gives back the owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, ValidationError> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValidationError;
            fn try_from(s: &str) -> Result<Self, ValidationError> {
                Self::parse(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, ValidationError> {
                Self::parse(s)
            }
        }
    };
}

string_newtype!(
    /// A username: 2-32 bytes of `[a-z0-9_-]`, starting with a letter or digit (§12.3).
    Username
);
string_newtype!(
    /// A room name: 1-32 bytes of `[a-z0-9_-]`, starting with a letter or digit (§12.3).
    RoomName
);
string_newtype!(
    /// A room topic: at most 256 bytes, no control characters (§12.3).
    Topic
);
string_newtype!(
    /// A client message id: 1-64 bytes of printable ASCII, no spaces (§8.5).
    ClientMsgId
);

impl Username {
    /// Validates a username.
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        check_ident("username", &s, MIN_USERNAME_BYTES, MAX_USERNAME_BYTES)?;
        Ok(Self(s))
    }
}

impl RoomName {
    /// Validates a room name.
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        check_ident("room name", &s, 1, MAX_ROOM_NAME_BYTES)?;
        Ok(Self(s))
    }
}

impl Topic {
    /// Validates a topic; the empty topic is allowed.
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        if s.len() > MAX_TOPIC_BYTES {
            return Err(ValidationError::TooLong {
                field: "topic",
                len: s.len(),
                max: MAX_TOPIC_BYTES,
            });
        }
        if let Some((at, ch)) = s.char_indices().find(|(_, c)| c.is_control()) {
            return Err(ValidationError::BadChar {
                field: "topic",
                ch,
                at,
                rule: "a topic is one line of text without control characters",
            });
        }
        Ok(Self(s))
    }
}

impl ClientMsgId {
    /// Validates a client message id.
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        check_len("client_msg_id", &s, 1, MAX_CLIENT_MSG_ID_BYTES)?;
        if let Some((at, ch)) = s.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
            return Err(ValidationError::BadChar {
                field: "client_msg_id",
                ch,
                at,
                rule: "use printable ASCII without spaces, e.g. a UUID",
            });
        }
        Ok(Self(s))
    }
}

/// Message text: valid UTF-8 (guaranteed by `String`), not blank, within the
/// server's byte limit, and free of control characters other than `\n` and `\t` (§12.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageText(String);

impl MessageText {
    /// Validates text against a byte limit (`Limits.max_text_bytes`).
    pub fn parse(s: impl Into<String>, max_bytes: usize) -> Result<Self, ValidationError> {
        let s = s.into();
        if s.trim().is_empty() {
            return Err(ValidationError::Empty { field: "text" });
        }
        if s.len() > max_bytes {
            return Err(ValidationError::TooLong {
                field: "text",
                len: s.len(),
                max: max_bytes,
            });
        }
        if let Some((at, ch)) = s
            .char_indices()
            .find(|(_, c)| c.is_control() && *c != '\n' && *c != '\t')
        {
            return Err(ValidationError::BadChar {
                field: "text",
                ch,
                at,
                rule: "control characters other than newline and tab are not allowed",
            });
        }
        Ok(Self(s))
    }

    /// The validated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Gives back the owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Checks a password's length (§5.2). Passwords are otherwise free-form.
pub fn check_password(password: &str) -> Result<(), ValidationError> {
    check_len("password", password, MIN_PASSWORD_BYTES, MAX_PASSWORD_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One driver, many cases: (input, expected ok).
    #[test]
    fn room_names() {
        let cases = [
            ("general", true),
            ("a", true),
            ("rust-lang_2", true),
            ("9lives", true),
            ("", false),
            ("-lead", false),
            ("_lead", false),
            ("Upper", false),
            ("with space", false),
            ("émile", false),
            (&"x".repeat(32), true),
            (&"x".repeat(33), false),
        ];
        for (input, ok) in cases {
            assert_eq!(RoomName::parse(input).is_ok(), ok, "room name {input:?}");
        }
    }

    #[test]
    fn usernames() {
        let cases = [
            ("al", true),
            ("a", false),
            ("alice_99", true),
            ("Alice", false),
            ("al ice", false),
            (&"u".repeat(32), true),
            (&"u".repeat(33), false),
        ];
        for (input, ok) in cases {
            assert_eq!(Username::parse(input).is_ok(), ok, "username {input:?}");
        }
    }

    #[test]
    fn texts() {
        let cases: [(&str, usize, bool); 7] = [
            ("hello", 10, true),
            ("", 10, false),
            ("   \n", 10, false),
            ("line\nnext\ttab", 100, true),
            ("bell\u{7}", 100, false),
            ("0123456789", 10, true),
            ("0123456789a", 10, false),
        ];
        for (input, max, ok) in cases {
            assert_eq!(
                MessageText::parse(input, max).is_ok(),
                ok,
                "text {input:?} max {max}"
            );
        }
    }

    #[test]
    fn client_msg_ids() {
        assert!(ClientMsgId::parse("0190f5c2-7d3a-7000-8000-000000000001").is_ok());
        assert!(ClientMsgId::parse("").is_err());
        assert!(ClientMsgId::parse("has space").is_err());
        assert!(ClientMsgId::parse("x".repeat(65)).is_err());
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let err = RoomName::parse("Bad Name").unwrap_err();
        assert_eq!(
            err.to_string(),
            "room name may not contain 'B' (at byte 0); use lowercase ASCII letters, digits, '-' and '_', starting with a letter or digit"
        );
    }
}
