//! Validated newtypes for user-supplied strings.
//!
//! Spec: §12.3 (name and text rules). Values are checked once, at the
//! boundary where they enter a program; code holding a [`RoomName`] or a
//! [`Username`] never re-validates.

use std::fmt;

/// "1 byte", "2 bytes": counts in messages people read.
fn byte_count(n: usize) -> String {
    if n == 1 {
        "1 byte".to_owned()
    } else {
        format!("{n} bytes")
    }
}

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
    #[error("{field} is {} long; the limit is {}", byte_count(*.len), byte_count(*.max))]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is shorter than allowed.
    #[error("{field} is {} long; it needs at least {}", byte_count(*.len), byte_count(*.min))]
    TooShort {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The value holds an invisible bidi control or zero-width character
    /// (shown by code point: printing it would show nothing).
    #[error(
        "{field} may not contain the invisible character U+{code_point:04X} (at byte {at}); \
         bidi controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and zero-width \
         characters (U+200B-U+200D, U+2060, U+FEFF) are not allowed: remove it"
    )]
    Invisible {
        /// Which field.
        field: &'static str,
        /// The character's Unicode scalar value.
        code_point: u32,
        /// Its byte offset.
        at: usize,
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
/// Shortest password, in Unicode code points (§5.2): NIST SP 800-63B-4
/// §3.1.1.2 requires at least 15 characters for a password that is the
/// only authentication factor, as it is here.
pub const MIN_PASSWORD_CHARS: usize = 15;
/// Longest password, in bytes; bounds the work of hashing (§5.2). NIST asks
/// to allow at least 64 characters; 1024 bytes holds 256 of any kind.
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
    /// A room topic: at most 256 bytes, no control characters, bidi controls
/// or zero-width characters (§12.3).
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
        // Bidi controls can make a topic display as other text than it
        // holds (Trojan Source, CVE-2021-42574); zero-width characters make
        // two topics that look the same differ. Both are invisible, so the
        // message names the code point and the offset, never the text.
        if let Some((at, ch)) = s.char_indices().find(|(_, c)| is_invisible_format(*c)) {
            return Err(ValidationError::Invisible {
                field: "topic",
                code_point: u32::from(ch),
                at,
            });
        }
        Ok(Self(s))
    }
}

string_newtype!(
    /// The `message_id` a relation names (§8.6, `Relation.target_id`):
    /// 1-64 bytes of printable ASCII, no spaces (§12.3).
    MessageId
);
string_newtype!(
    /// A reaction key (§8.6.5): 1-32 bytes, no whitespace, no control or
    /// bidi characters; an emoji, with the joiners emoji need (§12.3).
    ReactionKey
);

/// Longest message id a relation may name, in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 64;
/// Longest reaction key, in bytes.
pub const MAX_REACTION_KEY_BYTES: usize = 32;

impl MessageId {
    /// Validates a message id named by a relation.
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        check_len("target_id", &s, 1, MAX_MESSAGE_ID_BYTES)?;
        if let Some((at, ch)) = s.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
            return Err(ValidationError::BadChar {
                field: "target_id",
                ch,
                at,
                rule: "a message_id is printable ASCII without spaces; copy it from the Message",
            });
        }
        Ok(Self(s))
    }
}

impl ReactionKey {
    /// Validates a reaction key.
    pub fn parse(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        check_len("reaction key", &s, 1, MAX_REACTION_KEY_BYTES)?;
        if let Some((at, ch)) = s
            .char_indices()
            .find(|(_, c)| c.is_control() || c.is_whitespace())
        {
            return Err(ValidationError::BadChar {
                field: "reaction key",
                ch,
                at,
                rule: "a reaction is one emoji or short word, without spaces or control characters",
            });
        }
        // The zero-width joiner builds emoji (family, flags of regions) and
        // is allowed; the other invisible characters would make two keys
        // that look the same differ.
        if let Some((at, ch)) = s
            .char_indices()
            .find(|&(_, c)| c != '\u{200D}' && is_invisible_format(c))
        {
            return Err(ValidationError::Invisible {
                field: "reaction key",
                code_point: u32::from(ch),
                at,
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

    /// The empty text of a deletion or a reaction (§8.6), the one
    /// `MessageText` that is blank.
    pub fn none() -> Self {
        Self(String::new())
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

/// Whether `c` is a bidi control or a zero-width character (§12.3), refused
/// in topics. Names cannot hold them anyway (ASCII only).
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FEFF}'
    )
}

/// Why a password was refused (§5.2). Messages say which rule and what to
/// do; none of them contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// Fewer code points than [`MIN_PASSWORD_CHARS`].
    #[error(
        "the password is {chars} characters long; it needs at least {min}: use a longer passphrase, e.g. four or more random words"
    )]
    TooShort {
        /// Its length in Unicode code points.
        chars: usize,
        /// The minimum.
        min: usize,
    },
    /// More bytes than [`MAX_PASSWORD_BYTES`].
    #[error("the password is {bytes} bytes long; the limit is {max} bytes: use a shorter one")]
    TooLong {
        /// Its length in UTF-8 bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// On the list of commonly used (breached) passwords.
    #[error(
        "the password is on a list of commonly used passwords that attackers try first; choose one that is not"
    )]
    Common,
}

/// The password rules in one line, for prompts (§5.2).
pub const PASSWORD_RULE: &str = "at least 15 characters, at most 1024 bytes, not a commonly used password; a passphrase of four or more random words works well";

/// Checks a new password (§5.2): at least [`MIN_PASSWORD_CHARS`] Unicode code
/// points, at most [`MAX_PASSWORD_BYTES`] bytes, and not on the list of
/// common passwords of the `passwords` crate (about 100,000 entries, which
/// look like cracked-password dumps), compared as typed and lowercased.
/// Otherwise free-form: no composition rules (NIST SP 800-63B-4 forbids them).
pub fn check_password(password: &str) -> Result<(), PasswordError> {
    // Bytes first: counting code points of a huge string is wasted work.
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong {
            bytes: password.len(),
            max: MAX_PASSWORD_BYTES,
        });
    }
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort {
            chars,
            min: MIN_PASSWORD_CHARS,
        });
    }
    if is_common_password(password) {
        return Err(PasswordError::Common);
    }
    Ok(())
}

/// Whether `password`, as typed or lowercased, is on the common list.
fn is_common_password(password: &str) -> bool {
    passwords::analyzer::is_common_password(password)
        || passwords::analyzer::is_common_password(password.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_read_as_english() {
        let short = ValidationError::TooShort {
            field: "room name",
            len: 1,
            min: 2,
        };
        assert_eq!(
            short.to_string(),
            "room name is 1 byte long; it needs at least 2 bytes"
        );
        let long = ValidationError::TooLong {
            field: "topic",
            len: 300,
            max: 1,
        };
        assert_eq!(
            long.to_string(),
            "topic is 300 bytes long; the limit is 1 byte"
        );
    }

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

    /// One driver, many cases: (input, expected error's code point and offset).
    #[test]
    fn topics() {
        let long = "t".repeat(MAX_TOPIC_BYTES);
        let cases: [(&str, Option<(u32, usize)>); 20] = [
            ("", None),
            ("Rust chat", None),
            ("café ☕ and 日本語", None),
            ("arabic letter mark \u{061C}x", Some((0x061C, 19))),
            ("\u{200E}ltr mark first", Some((0x200E, 0))),
            ("rtl mark \u{200F}", Some((0x200F, 9))),
            ("embed \u{202A}", Some((0x202A, 6))),
            ("embed \u{202B}", Some((0x202B, 6))),
            ("pop \u{202C}", Some((0x202C, 4))),
            ("override \u{202D}", Some((0x202D, 9))),
            ("trojan \u{202E}txt.exe", Some((0x202E, 7))),
            ("isolate \u{2066}", Some((0x2066, 8))),
            ("isolate \u{2069}", Some((0x2069, 8))),
            ("zero\u{200B}width space", Some((0x200B, 4))),
            ("zw\u{200C}nj", Some((0x200C, 2))),
            ("zw\u{200D}j", Some((0x200D, 2))),
            ("word\u{2060}joiner", Some((0x2060, 4))),
            ("\u{FEFF}bom", Some((0xFEFF, 0))),
            // Offsets are bytes: "é" is two.
            ("é\u{202E}", Some((0x202E, 2))),
            (&long, None),
        ];
        for (input, expected) in cases {
            let got = Topic::parse(input);
            match expected {
                None => assert!(got.is_ok(), "topic {input:?} should be valid: {got:?}"),
                Some((code_point, at)) => {
                    let err = got.expect_err(input);
                    assert_eq!(
                        err,
                        ValidationError::Invisible {
                            field: "topic",
                            code_point,
                            at
                        },
                        "topic {input:?}"
                    );
                    let message = err.to_string();
                    assert!(
                        message.contains(&format!("U+{code_point:04X}")),
                        "{message}"
                    );
                    assert!(message.contains(&format!("at byte {at}")), "{message}");
                }
            }
        }
        assert!(Topic::parse("t".repeat(MAX_TOPIC_BYTES + 1)).is_err());
        assert!(
            Topic::parse("tab\there").is_err(),
            "control characters stay refused"
        );
    }

    /// One driver, many cases: (password, expected result).
    #[test]
    fn passwords() {
        use PasswordError::{Common, TooLong, TooShort};
        let short = |chars| Err(TooShort { chars, min: 15 });
        let cases: Vec<(String, Result<(), PasswordError>)> = vec![
            ("".into(), short(0)),
            ("password".into(), short(8)),
            ("        ".into(), short(8)),
            ("fourteen chars".into(), short(14)),
            ("correct horse battery staple".into(), Ok(())),
            ("fifteen chars!!".into(), Ok(())),
            // Code points, not bytes: 14 two-byte characters are 28 bytes
            // but only 14 characters; 15 of them pass.
            ("é".repeat(14), short(14)),
            ("é".repeat(15), Ok(())),
            ("日本語のパスワードはとても長いです".into(), Ok(())),
            // Long enough but common: from the breach lists.
            ("123456789012345".into(), Err(Common)),
            ("1234567890qwerty".into(), Err(Common)),
            ("1234567890QWERTY".into(), Err(Common)),
            ("qwertyuiopasdfghjkl".into(), Err(Common)),
            ("p".repeat(MAX_PASSWORD_BYTES), Ok(())),
            (
                "p".repeat(MAX_PASSWORD_BYTES + 1),
                Err(TooLong {
                    bytes: MAX_PASSWORD_BYTES + 1,
                    max: MAX_PASSWORD_BYTES,
                }),
            ),
        ];
        for (password, expected) in cases {
            let got = check_password(&password);
            assert_eq!(
                got,
                expected,
                "password of {} chars",
                password.chars().count()
            );
            if let Err(err) = got {
                let message = err.to_string();
                // ("password" itself is a word of every message.)
                assert!(
                    password.trim().is_empty()
                        || password == "password"
                        || !message.contains(&password),
                    "the message never echoes the password: {message}"
                );
            }
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
