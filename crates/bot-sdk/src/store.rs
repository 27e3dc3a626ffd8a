//! Where a bot remembers, per room, the last message it handled.
//!
//! A position is the protocol's [`RoomPosition`] (§10.1): room, `last_seq`
//! and the room's epoch. The bot saves one after each handled message and
//! restores them all before connecting, so a restarted bot's Resume replays
//! exactly the messages after the last one it handled: none missed, none
//! handled twice (§10.3, §10.6).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use confab_protocol::wire::RoomPosition;
use serde::{Deserialize, Serialize};

/// Why a position could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("position store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file is not a position file (or is damaged); move it away to start over.
    #[error("position store {path} is not valid JSON of the expected shape: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A custom store failed.
    #[error("position store: {0}")]
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

/// Positions in a JSON file, replaced atomically on every save: the new
/// content goes to `<file>.tmp`, is synced, and is renamed over the file, so
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
        let io_error = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let content = FileContent {
            rooms: positions.values().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&content).map_err(|err| StoreError::Corrupt {
            path: self.path.clone(),
            message: err.to_string(),
        })?;
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let mut file = std::fs::File::create(&tmp).map_err(io_error)?;
        file.write_all(&json).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io_error)?;
        // Make the rename itself durable where the platform allows it.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = std::fs::File::open(dir)
            && let Err(err) = dir.sync_all()
        {
            tracing::debug!(error = %err, "cannot sync the position store's directory");
        }
        Ok(())
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
        assert!(!dir.path().join("positions.json.tmp").exists());
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
}
