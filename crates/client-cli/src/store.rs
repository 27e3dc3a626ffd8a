//! What the client keeps on disk: the saved login and each account's outbox.
//!
//! Everything lives in one directory: `$CONFAB_CONFIG_DIR` when set (tests
//! use it), else the platform's config directory for `confab` (e.g.
//! `~/.config/confab` on Linux). Files holding a token are created with mode
//! 0600 before anything is written to them. Every file is replaced
//! atomically (write a temporary file, then rename), so a crash or a
//! `kill -9` leaves either the old or the new version, never half of one.
//!
//! Layout:
//! - `login.json`: the [`SavedLogin`] the next start uses to skip the login screen.
//! - `outbox/<username>@<host>_<port>.jsonl`: one [`OutboxEntry`] per line,
//!   oldest first: the account's sends the server has not acknowledged yet
//!   (spec §14.1). Kept per account, so logging out and in again as the
//!   same user still delivers them.
//! - `last-room/<username>@<host>_<port>`: the room the account was in, so
//!   the next start reopens it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use confab_protocol::session::OutboxEntry;
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

/// Reads an outbox file: one JSON [`OutboxEntry`] per line. A missing file
/// is an empty outbox.
pub fn load_outbox(path: &Path) -> Result<Vec<OutboxEntry>, StoreError> {
    let Some(text) = read_optional(path)? else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|source| StoreError::Corrupt {
                path: path.to_owned(),
                source,
            })
        })
        .collect()
}

/// Replaces an outbox file with `entries`, atomically; an empty outbox
/// removes the file.
pub fn save_outbox<'a>(
    path: &Path,
    entries: impl IntoIterator<Item = &'a OutboxEntry>,
) -> Result<(), StoreError> {
    let mut text = String::new();
    for entry in entries {
        // An OutboxEntry is four plain fields: serializing cannot fail.
        text.push_str(&serde_json::to_string(entry).unwrap_or_default());
        text.push('\n');
    }
    if text.is_empty() {
        return remove_optional(path);
    }
    write_atomic(path, text.as_bytes())
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

/// Writes `bytes` to a temporary file created with mode 0600 next to `path`,
/// syncs it, and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(io_err("cannot create", dir))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut file = open_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(source) = write() {
        // Best effort: a leftover temporary file is harmless, the error is what matters.
        fs::remove_file(&tmp).ok();
        return Err(StoreError::Io {
            action: "cannot write",
            path: tmp,
            source,
        });
    }
    fs::rename(&tmp, path).map_err(io_err("cannot replace", path))
}

#[cfg(unix)]
fn open_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> OutboxEntry {
        OutboxEntry {
            client_msg_id: id.to_owned(),
            room: "general".to_owned(),
            text: format!("text of {id}"),
            action: false,
        }
    }

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
    fn outbox_keeps_order_and_empty_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        let path = store.outbox_path("alice", "::1", 7420);
        assert!(path.ends_with("outbox/alice@__1_7420.jsonl"));
        assert!(load_outbox(&path).unwrap().is_empty());
        let entries = vec![entry("a"), entry("b")];
        save_outbox(&path, &entries).unwrap();
        assert_eq!(load_outbox(&path).unwrap(), entries);
        save_outbox(&path, &[]).unwrap();
        assert!(!path.exists());
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
