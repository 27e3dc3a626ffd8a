//! What the client keeps on disk: the saved login and each account's outbox.
//!
//! Everything lives in one directory: `$CONFAB_CONFIG_DIR` when set (tests
//! use it), else the platform's config directory for `confab` (e.g.
//! `~/.config/confab` on Linux). Files are created with mode 0600 before
//! anything is written to them. Every file is replaced atomically (the bot
//! SDK's [`replace_file_atomically`]: write a temporary file, sync, rename),
//! so a crash or a `kill -9` leaves either the old or the new version, never
//! half of one.
//!
//! Layout:
//! - `login.json`: the [`SavedLogin`] the next start uses to skip the login screen.
//! - `outbox/<username>@<host>_<port>.jsonl`: the account's sends the server
//!   has not acknowledged yet (spec §14.1), in the bot SDK's
//!   [`FileOutboxStore`] format (one `OutboxEntry` per line, oldest first),
//!   so the CLI and bots share one implementation. Kept per account, so
//!   logging out and in again as the same user still delivers them.
//! - `last-room/<username>@<host>_<port>`: the room the account was in, so
//!   the next start reopens it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[cfg(doc)]
use confab_bot_sdk::FileOutboxStore;
use confab_bot_sdk::replace_file_atomically;
use serde::{Deserialize, Serialize};

/// Environment variable that overrides the config directory.
pub const CONFIG_DIR_ENV: &str = "CONFAB_CONFIG_DIR";

const LOGIN_FILE: &str = "login.json";
const OUTBOX_DIR: &str = "outbox";
const LAST_ROOM_DIR: &str = "last-room";

/// Why the client's files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No config directory could be found.
    #[error(
        "cannot find a config directory for confab; set {CONFIG_DIR_ENV} to a directory it may use"
    )]
    NoConfigDir,
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A file held something else than the client wrote.
    #[error("{path} is damaged ({source}); move it away and start again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: serde_json::Error,
    },
    /// The outbox file could not be read or written.
    #[error(transparent)]
    Outbox(#[from] confab_bot_sdk::StoreError),
}

/// A token saved by a successful login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLogin {
    /// Base URL of the server, as typed (normalised by the SDK's parser).
    pub server: String,
    /// The account.
    pub username: String,
    /// The bearer token (§5.3).
    pub token: String,
    /// When the token expires, milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

/// The client's directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The directory named by `$CONFAB_CONFIG_DIR`, or the platform's.
    pub fn locate() -> Result<Self, StoreError> {
        if let Some(dir) = std::env::var_os(CONFIG_DIR_ENV).filter(|d| !d.is_empty()) {
            return Ok(Self::at(dir));
        }
        let dirs =
            directories::ProjectDirs::from("", "", "confab").ok_or(StoreError::NoConfigDir)?;
        Ok(Self::at(dirs.config_dir()))
    }

    /// A store in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The saved login, if there is one.
    pub fn load_login(&self) -> Result<Option<SavedLogin>, StoreError> {
        let path = self.dir.join(LOGIN_FILE);
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { path, source })
    }

    /// Saves a login (mode 0600).
    pub fn save_login(&self, login: &SavedLogin) -> Result<(), StoreError> {
        let mut text = serde_json::to_string_pretty(login).unwrap_or_default();
        text.push('\n');
        write_atomic(&self.dir.join(LOGIN_FILE), text.as_bytes())
    }

    /// Forgets the saved login; no error when there was none.
    pub fn delete_login(&self) -> Result<(), StoreError> {
        remove_optional(&self.dir.join(LOGIN_FILE))
    }

    /// Path of an account's outbox file.
    pub fn outbox_path(&self, username: &str, host: &str, port: u16) -> PathBuf {
        self.account_file(OUTBOX_DIR, username, host, port, ".jsonl")
    }

    /// The room the account was last in, if one was saved.
    pub fn last_room(
        &self,
        username: &str,
        host: &str,
        port: u16,
    ) -> Result<Option<String>, StoreError> {
        let path = self.account_file(LAST_ROOM_DIR, username, host, port, "");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|room| !room.is_empty())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                action: "cannot read",
                path,
                source,
            }),
        }
    }

    /// Remembers the room the account is in.
    pub fn save_last_room(
        &self,
        username: &str,
        host: &str,
        port: u16,
        room: &str,
    ) -> Result<(), StoreError> {
        let path = self.account_file(LAST_ROOM_DIR, username, host, port, "");
        write_atomic(&path, format!("{room}\n").as_bytes())
    }

    /// `<dir>/<username>@<host>_<port><suffix>`: one file per account.
    fn account_file(
        &self,
        dir: &str,
        username: &str,
        host: &str,
        port: u16,
        suffix: &str,
    ) -> PathBuf {
        // Usernames are [a-z0-9_-]; hosts may hold ':' (IPv6) or other
        // characters a file name should not, so those become '_'.
        let host: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir
            .join(dir)
            .join(format!("{username}@{host}_{port}{suffix}"))
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            action: "cannot read",
            path: path.to_owned(),
            source,
        }),
    }
}

fn remove_optional(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            action: "cannot remove",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces `path` with `bytes` atomically, in a file of mode 0600.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    replace_file_atomically(path, bytes).map_err(|source| StoreError::Io {
        action: "cannot write",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("nested"));
        assert_eq!(store.load_login().unwrap(), None);
        let login = SavedLogin {
            server: "http://127.0.0.1:7420".into(),
            username: "alice".into(),
            token: "secret".into(),
            expires_at_ms: 42,
        };
        store.save_login(&login).unwrap();
        assert_eq!(store.load_login().unwrap(), Some(login));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(store.dir().join(LOGIN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        store.delete_login().unwrap();
        store.delete_login().unwrap();
        assert_eq!(store.load_login().unwrap(), None);
    }

    #[test]
    fn outbox_paths_are_per_account_and_safe_file_names() {
        // The layout earlier versions wrote: their outboxes must still load.
        let store = Store::at("/config");
        let path = store.outbox_path("alice", "::1", 7420);
        assert!(path.ends_with("outbox/alice@__1_7420.jsonl"), "{path:?}");
        let path = store.outbox_path("bob", "chat.example.org", 443);
        assert!(
            path.ends_with("outbox/bob@chat.example.org_443.jsonl"),
            "{path:?}"
        );
    }

    #[test]
    fn damaged_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        fs::write(dir.path().join(LOGIN_FILE), "{not json").unwrap();
        let err = store.load_login().unwrap_err();
        assert!(err.to_string().contains("login.json is damaged"), "{err}");
    }
}
