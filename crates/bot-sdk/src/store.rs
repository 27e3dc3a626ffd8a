//! What a client keeps across restarts: per room, the last message it
//! handled, and the sends the server has not acknowledged yet.
//!
//! A position is the protocol's [`RoomPosition`] (§10.1): room, `last_seq`
//! and the room's epoch. The bot saves one after each handled message and
//! restores them all before connecting, so a restarted bot's Resume replays
//! exactly the messages after the last one it handled: none missed, none
//! handled twice (§10.3, §10.6).
//!
//! The outbox is the session's list of [`OutboxEntry`]s (§14.1). The driver
//! saves it whenever it changes (a send queued, acknowledged or refused) and
//! the client restores it before connecting, so a restarted client resends
//! each unacknowledged message with its original `client_msg_id` and the
//! server, which dedupes on it (§8.5), stores each once.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use confab_protocol::session::OutboxEntry;
pub use confab_protocol::wire::RoomPosition;
use serde::{Deserialize, Serialize};

/// Why positions or an outbox could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("cannot read or write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file holds something else than the store wrote (or is damaged).
    #[error("{path} is damaged ({message}); move it away and start again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A custom store failed.
    #[error("store: {0}")]
    Other(String),
}

/// Durable per-room positions. Implementations must be cheap: `save` runs
/// after every handled message, on the bot's task.
pub trait PositionStore: Send + Sync + fmt::Debug + 'static {
    /// Every saved position.
    fn load(&self) -> Result<Vec<RoomPosition>, StoreError>;

    /// Saves `position`, replacing the room's previous one. It must be
    /// durable when this returns.
    fn save(&self, position: &RoomPosition) -> Result<(), StoreError>;
}

/// A shared store, e.g. one [`MemoryPositionStore`] for several clients in turn.
impl<T: PositionStore> PositionStore for std::sync::Arc<T> {
    fn load(&self) -> Result<Vec<RoomPosition>, StoreError> {
        (**self).load()
    }

    fn save(&self, position: &RoomPosition) -> Result<(), StoreError> {
        (**self).save(position)
    }
}

/// Positions in memory: survives reconnects, not restarts.
#[derive(Debug, Default)]
pub struct MemoryPositionStore {
    positions: Mutex<BTreeMap<String, RoomPosition>>,
}

impl MemoryPositionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a map half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PositionStore for MemoryPositionStore {
    fn load(&self) -> Result<Vec<RoomPosition>, StoreError> {
        Ok(lock(&self.positions).values().cloned().collect())
    }

    fn save(&self, position: &RoomPosition) -> Result<(), StoreError> {
        lock(&self.positions).insert(position.room.clone(), position.clone());
        Ok(())
    }
}

/// Positions in a JSON file, replaced atomically on every save (see
/// [`replace_file_atomically`]): the new content goes to a temporary file
/// next to it, is synced, and is renamed over the file, so
/// a crash leaves either the old or the new positions, never a torn file.
///
/// The file holds `{"rooms":[RoomPosition, ...]}` in proto3 JSON
/// (`{"room":"lobby","lastSeq":"42","epoch":"..."}`).
#[derive(Debug)]
pub struct FilePositionStore {
    path: PathBuf,
    /// Cache of the file, loaded on first use.
    positions: Mutex<Option<BTreeMap<String, RoomPosition>>>,
}

#[derive(Serialize, Deserialize)]
struct FileContent {
    rooms: Vec<RoomPosition>,
}

impl FilePositionStore {
    /// A store in `path`; the file is created on the first save.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            positions: Mutex::new(None),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<BTreeMap<String, RoomPosition>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let content: FileContent =
            serde_json::from_slice(&bytes).map_err(|err| StoreError::Corrupt {
                path: self.path.clone(),
                message: err.to_string(),
            })?;
        Ok(content
            .rooms
            .into_iter()
            .map(|p| (p.room.clone(), p))
            .collect())
    }

    fn write(&self, positions: &BTreeMap<String, RoomPosition>) -> Result<(), StoreError> {
        let content = FileContent {
            rooms: positions.values().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&content).map_err(|err| StoreError::Corrupt {
            path: self.path.clone(),
            message: err.to_string(),
        })?;
        replace_file_atomically(&self.path, &json).map_err(|source| StoreError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl PositionStore for FilePositionStore {
    fn load(&self) -> Result<Vec<RoomPosition>, StoreError> {
        let mut cache = lock(&self.positions);
        let positions = self.read()?;
        let list = positions.values().cloned().collect();
        *cache = Some(positions);
        Ok(list)
    }

    fn save(&self, position: &RoomPosition) -> Result<(), StoreError> {
        let mut cache = lock(&self.positions);
        let positions = match cache.as_mut() {
            Some(positions) => positions,
            None => cache.insert(self.read()?),
        };
        if positions.get(&position.room) == Some(position) {
            return Ok(());
        }
        positions.insert(position.room.clone(), position.clone());
        self.write(positions)
    }
}

/// Durable outbox: the sends the server has not acknowledged yet, oldest
/// first. Give one to [`ClientBuilder::outbox_store`](crate::ClientBuilder::outbox_store)
/// (or [`DriverOptions::outbox_store`](crate::driver::DriverOptions::outbox_store)):
/// the driver calls `save` with the whole outbox each time it changes, on
/// its task, before the frame of a new send is written, so implementations
/// must be cheap and durable when `save` returns.
pub trait OutboxStore: Send + Sync + fmt::Debug + 'static {
    /// The saved outbox, oldest first.
    fn load(&self) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Replaces the saved outbox with `entries` (possibly none).
    fn save(&self, entries: &[OutboxEntry]) -> Result<(), StoreError>;
}

/// A shared store.
impl<T: OutboxStore> OutboxStore for std::sync::Arc<T> {
    fn load(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        (**self).load()
    }

    fn save(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        (**self).save(entries)
    }
}

/// An outbox in a file of one JSON [`OutboxEntry`] per line, oldest first
/// (`{"client_msg_id":"…","room":"lobby","text":"hi","action":false}`),
/// replaced atomically on every save (see [`replace_file_atomically`]); an
/// empty outbox removes the file. A missing file is an empty outbox.
///
/// The `confab` terminal client keeps its outboxes in this format, one file
/// per account.
#[derive(Debug, Clone)]
pub struct FileOutboxStore {
    path: PathBuf,
}

impl FileOutboxStore {
    /// A store in `path`; the file (and its directory) is created on the
    /// first save of a non-empty outbox.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, source: io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl OutboxStore for FileOutboxStore {
    fn load(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(self.io_error(source)),
        };
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).map_err(|err| StoreError::Corrupt {
                    path: self.path.clone(),
                    message: err.to_string(),
                })
            })
            .collect()
    }

    fn save(&self, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return match fs::remove_file(&self.path) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => Err(self.io_error(err)),
                _ => Ok(()),
            };
        }
        let mut text = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut text, entry).map_err(|err| StoreError::Corrupt {
                path: self.path.clone(),
                message: err.to_string(),
            })?;
            text.push(b'\n');
        }
        replace_file_atomically(&self.path, &text).map_err(|source| self.io_error(source))
    }
}

/// Replaces the file at `path` with `bytes` so that a crash (even of the
/// machine, on a disk that honours fsync) leaves either the old or the new
/// content, never a mix: the bytes go to a temporary file next to it,
/// which is synced and renamed over `path`, then the directory is synced.
///
/// The file is created readable by its owner only (mode 0600 on Unix: an
/// outbox holds private messages, a saved login a token), and a missing
/// directory is created (mode 0700). The file stores of this crate use it;
/// it is public for clients keeping files of their own next to them.
pub fn replace_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The pid keeps two processes sharing a directory off each other's
    // temporary file.
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut file = open_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(err) = write() {
        // Best effort: a leftover temporary file is harmless, the error is what matters.
        fs::remove_file(&tmp).ok();
        return Err(err);
    }
    fs::rename(&tmp, path)?;
    // Make the rename itself durable where the platform allows it.
    if let Ok(dir) = fs::File::open(dir)
        && let Err(err) = dir.sync_all()
    {
        tracing::debug!(error = %err, dir = %path.display(), "cannot sync the directory");
    }
    Ok(())
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

    fn position(room: &str, last_seq: u64) -> RoomPosition {
        RoomPosition {
            room: room.to_owned(),
            last_seq,
            epoch: "e1".to_owned(),
        }
    }

    #[test]
    fn file_store_round_trips_across_instances() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.json");
        let store = FilePositionStore::new(&path);
        assert!(store.load().unwrap().is_empty());
        store.save(&position("lobby", 3)).unwrap();
        store.save(&position("games", 1)).unwrap();
        store.save(&position("lobby", 4)).unwrap();
        let reopened = FilePositionStore::new(&path);
        let mut loaded = reopened.load().unwrap();
        loaded.sort_by(|a, b| a.room.cmp(&b.room));
        assert_eq!(loaded, vec![position("games", 1), position("lobby", 4)]);
        // Only the store's file: no temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"lastSeq\": \"4\""), "{text}");
    }

    #[test]
    fn corrupt_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.json");
        std::fs::write(&path, "not json").unwrap();
        let err = FilePositionStore::new(&path).load().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
    fn entry(id: &str) -> OutboxEntry {
        OutboxEntry {
            client_msg_id: id.to_owned(),
            room: "general".to_owned(),
            text: format!("text of {id}"),
            action: false,
            relation: None,
        }
    }

    #[test]
    fn outbox_keeps_order_and_empty_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("alice.jsonl");
        let store = FileOutboxStore::new(&path);
        assert!(store.load().unwrap().is_empty());
        store.save(&[]).unwrap();
        let entries = vec![entry("a"), entry("b")];
        store.save(&entries).unwrap();
        assert_eq!(FileOutboxStore::new(&path).load().unwrap(), entries);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        store.save(&entries[1..]).unwrap();
        assert_eq!(store.load().unwrap(), &entries[1..]);
        store.save(&[]).unwrap();
        assert!(!path.exists());
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 0);
    }

    #[test]
    fn outbox_reads_the_line_format_clients_wrote_before() {
        // The `confab` client's files from before this store existed: one
        // entry per line, `action` optional.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice@127.0.0.1_7420.jsonl");
        fs::write(
            &path,
            "{\"client_msg_id\":\"a\",\"room\":\"general\",\"text\":\"text of a\",\"action\":false}\n\
             {\"client_msg_id\":\"b\",\"room\":\"general\",\"text\":\"text of b\"}\n\n",
        )
        .unwrap();
        let loaded = FileOutboxStore::new(&path).load().unwrap();
        assert_eq!(loaded, vec![entry("a"), entry("b")]);
        fs::write(&path, "{not json\n").unwrap();
        let err = FileOutboxStore::new(&path).load().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("is damaged"), "{err}");
    }
}
