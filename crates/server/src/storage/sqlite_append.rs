//! The SQLite message append (spec §8.2 gapless seqs, §8.5 idempotency),
//! on a thread of its own with a connection of its own.
//!
//! Why not through sqlx like every other statement: sqlx runs SQLite on a
//! worker thread and every call is a message to it and a reply back, each
//! a context switch and a wake-up on the server's one core; in a profile of
//! ingest, that worker and its hand-offs were 61% of the server's time, and
//! to keep the calls per batch at two the batch went through SQL as JSON.
//! Here a batch is one hand-off each way: the storage writer (`writer`)
//! sends the whole batch to this thread, which runs it with statements
//! prepared once and bound per row, in one `BEGIN IMMEDIATE` transaction,
//! and answers when `COMMIT` (and so the WAL fsync) has returned.
//!
//! The connection is opened with the pool's durability settings
//! (`synchronous=FULL`; the WAL is a property of the file, set by the
//! pool), so an `Ok` from [`Appender::append`] means what it meant before:
//! every stored row survives a crash of the process or the machine.

use std::path::Path;
use std::time::Duration;

use confab_protocol::batch::{self, BatchRequest, Original, PlanError, Planned, StoredKey};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::sqlite::OpenError;
use super::{AppendOutcome, NewMessage, RoomId, StoreError, StoredMessage, to_i64, to_u64};

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        // As the sqlx mapping does: a uniqueness rule is its own error.
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation)
                if matches!(
                    &err,
                    rusqlite::Error::SqliteFailure(e, _)
                        if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                            || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                ) =>
            {
                StoreError::AlreadyExists
            }
            _ => StoreError::Database(err.to_string()),
        }
    }
}

/// What the thread is asked to do.
enum Job {
    /// Append a batch.
    Append {
        batch: Vec<NewMessage>,
        reply: oneshot::Sender<Result<Vec<AppendOutcome>, StoreError>>,
    },
    /// Close the connection and end the thread, then answer.
    Close(oneshot::Sender<()>),
}

/// Handle to the append thread. One batch is in flight at a time: the
/// storage writer waits for each before it sends the next.
#[derive(Debug)]
pub(super) struct Appender {
    tx: mpsc::Sender<Job>,
}

/// `PRAGMA synchronous` reads back as this for FULL.
const SYNCHRONOUS_FULL: i64 = 2;

/// Page cache of the append connection, KiB (a negative `cache_size`).
const APPEND_CACHE_KIB: i64 = 32 * 1024;

fn stopped() -> StoreError {
    StoreError::Database(
        "the SQLite append thread has stopped: the server is shutting down, or the thread \
         failed (see the server's log); retry with the same client_msg_id after a restart"
            .into(),
    )
}

impl Appender {
    /// Opens the database file at `path` (already created and migrated by
    /// the pool) and starts the thread.
    pub(super) fn start(path: &Path, busy_timeout: Duration) -> Result<Self, OpenError> {
        let conn = open(path, busy_timeout).map_err(OpenError::Append)?;
        let (tx, rx) = mpsc::channel(1);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("confab-sqlite-append".into())
            .spawn(move || run(Some(conn), &path, busy_timeout, rx))
            .map_err(OpenError::Thread)?;
        Ok(Self { tx })
    }

    /// Appends `batch` in one durable transaction (see [`super::Store::append_batch`]).
    pub(super) async fn append(
        &self,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Append { batch, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Closes the connection; returns once it is closed.
    pub(super) async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Job::Close(done)).await.is_ok() {
            // An error means the thread already ended, which is the goal.
            rx.await.ok();
        }
    }
}

fn open(path: &Path, busy_timeout: Duration) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    // Per connection, not per file: without it this connection's commits
    // would not fsync the WAL, and an ack would not survive a power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Statement journals (for a write that may fail half-way inside a
    // transaction) in memory, not a temporary file created per batch.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The pages a batch touches (each room's last leaf, each sender's leaf
    // of the idempotency index) stay cached between batches instead of
    // being read again with a pread each: 2 MiB (the default) held too few
    // of them once the database outgrew it.
    conn.pragma_update(None, "cache_size", -APPEND_CACHE_KIB)?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        super::sqlite::WAL_CHECKPOINT_PAGES,
    )?;
    // What an ack promises rests on these two; read back, not assumed.
    let journal: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    if !journal.eq_ignore_ascii_case("wal") || synchronous != SYNCHRONOUS_FULL {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the append connection runs with journal_mode={journal}, synchronous={synchronous}; \
             acks need journal_mode=wal and synchronous=FULL ({SYNCHRONOUS_FULL})"
        )));
    }
    Ok(conn)
}

fn run(
    mut conn: Option<Connection>,
    path: &Path,
    busy_timeout: Duration,
    mut rx: mpsc::Receiver<Job>,
) {
    while let Some(job) = rx.blocking_recv() {
        match job {
            Job::Append { batch, reply } => {
                let result = match conn.take() {
                    Some(c) => Ok(c),
                    None => open(path, busy_timeout).map_err(StoreError::from),
                }
                .and_then(|mut c| {
                    let result = append(&mut c, &batch);
                    // After a failure the connection is dropped (rolling
                    // back anything left open) and the next batch opens a
                    // fresh one, so an I/O error does not stick.
                    if result.is_ok() {
                        conn = Some(c);
                    }
                    result
                });
                if let Err(err) = &result {
                    tracing::warn!(error = %err, "SQLite append failed; the connection will be reopened");
                }
                // The writer may have gone (shutdown); the outcome stands.
                reply.send(result).ok();
            }
            Job::Close(done) => {
                drop(conn.take());
                done.send(()).ok();
                return;
            }
        }
    }
}

/// An already stored message behind an idempotency key of the batch: the
/// key's index in `BatchKeys::keys` and the row.
struct Existing {
    key: usize,
    room: RoomId,
    seq: i64,
    message_id: String,
    text: String,
    kind: i32,
    server_ts_ms: i64,
}

/// Appends a batch in one transaction: reads the heads of its rooms and
/// the messages behind its idempotency keys, lets [`batch::plan_batch`]
/// decide seqs, repeats and conflicts (§8.2, §8.5), writes the new rows,
/// heads and mentions, and commits. On an error nothing is committed: the
/// transaction rolls back when dropped, so no seq is used (§8.2).
fn append(conn: &mut Connection, batch: &[NewMessage]) -> Result<Vec<AppendOutcome>, StoreError> {
    let requests: Vec<BatchRequest<'_, RoomId, i64>> =
        batch.iter().map(NewMessage::batch_request).collect();
    let touched = batch::batch_keys(&requests);
    // IMMEDIATE: the write lock is taken before the heads are read, so no
    // other writer can move a head between the read and the write.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;

    let mut heads = Vec::with_capacity(touched.rooms.len());
    {
        let mut stmt = tx.prepare_cached("SELECT head_seq FROM rooms WHERE id = ?1")?;
        for &room in &touched.rooms {
            let head: Option<i64> = stmt.query_row([room], |r| r.get(0)).optional()?;
            if let Some(head) = head {
                heads.push((room, to_u64(head)));
            }
        }
    }
    let mut existing = Vec::new();
    {
        // Served by the UNIQUE (sender_id, client_msg_id) index.
        let mut stmt = tx.prepare_cached(
            "SELECT room_id, seq, message_id, text, kind, server_ts_ms FROM messages \
             WHERE sender_id = ?1 AND client_msg_id = ?2",
        )?;
        for (key, &(sender, client_msg_id)) in touched.keys.iter().enumerate() {
            let row = stmt
                .query_row(params![sender, client_msg_id], |r| {
                    Ok(Existing {
                        key,
                        room: r.get(0)?,
                        seq: r.get(1)?,
                        message_id: r.get(2)?,
                        text: r.get(3)?,
                        kind: r.get(4)?,
                        server_ts_ms: r.get(5)?,
                    })
                })
                .optional()?;
            existing.extend(row);
        }
    }
    let stored: Vec<StoredKey<'_, RoomId, i64>> = existing
        .iter()
        .map(|e| {
            let (sender, client_msg_id) = touched.keys[e.key];
            StoredKey {
                sender,
                client_msg_id,
                room: e.room,
                text: e.text.as_str(),
            }
        })
        .collect();
    let plan =
        batch::plan_batch(heads.iter().copied(), &stored, &requests).map_err(|err| match err {
            PlanError::UnknownRoom { .. } => StoreError::NotFound,
            other => StoreError::Database(other.to_string()),
        })?;

    let message_ids: Vec<String> = plan
        .rows
        .iter()
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    // Outcomes before the write: an inconsistent plan fails the batch
    // before anything commits.
    let mut outcomes: Vec<AppendOutcome> = Vec::with_capacity(batch.len());
    for (i, planned) in plan.outcomes.iter().enumerate() {
        let msg = &batch[i];
        let outcome = match *planned {
            Planned::Stored { row, seq } => AppendOutcome::Stored(StoredMessage {
                room: msg.room.clone(),
                seq,
                message_id: message_ids[row].clone(),
                sender: msg.sender.as_str().to_owned(),
                client_msg_id: msg.client_msg_id.as_str().to_owned(),
                text: msg.text.clone(),
                kind: msg.kind as i32,
                server_ts_ms: msg.server_ts_ms,
            }),
            Planned::Duplicate(Original::Stored(k)) => {
                let e = &existing[k];
                // A duplicate has the request's room, sender and key (that is
                // what makes it one), so those come from the request.
                AppendOutcome::Duplicate(StoredMessage {
                    room: msg.room.clone(),
                    seq: to_u64(e.seq),
                    message_id: e.message_id.clone(),
                    sender: msg.sender.as_str().to_owned(),
                    client_msg_id: msg.client_msg_id.as_str().to_owned(),
                    text: e.text.clone(),
                    kind: e.kind,
                    server_ts_ms: e.server_ts_ms,
                })
            }
            Planned::Duplicate(Original::Batch(j)) => match outcomes.get(j) {
                Some(AppendOutcome::Stored(original)) => AppendOutcome::Duplicate(original.clone()),
                _ => {
                    return Err(StoreError::Database(format!(
                        "batch plan: request {i} repeats request {j}, which was not stored"
                    )));
                }
            },
            Planned::Conflict => AppendOutcome::Conflict,
        };
        outcomes.push(outcome);
    }

    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO messages \
             (room_id, seq, message_id, sender_id, client_msg_id, text, kind, server_ts_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut mention =
            tx.prepare_cached("INSERT INTO mentions (username, room_id, seq) VALUES (?1, ?2, ?3)")?;
        for (row, message_id) in plan.rows.iter().zip(&message_ids) {
            let msg = &batch[row.request];
            let seq = to_i64(row.seq);
            insert.execute(params![
                row.room,
                seq,
                message_id,
                msg.sender_id,
                msg.client_msg_id.as_str(),
                msg.text,
                msg.kind as i32,
                msg.server_ts_ms,
            ])?;
            // Who the row mentions (§11.3), in the same commit.
            for name in msg.mentions() {
                mention.execute(params![name.as_str(), row.room, seq])?;
            }
        }
        let mut head = tx.prepare_cached(
            "UPDATE rooms SET head_seq = ?2, last_activity_ms = ?3 WHERE id = ?1",
        )?;
        for h in &plan.heads {
            head.execute(params![
                h.room,
                to_i64(h.head_seq),
                batch[h.last_request].server_ts_ms
            ])?;
        }
    }
    // Runs even when every message was a repeat, to end the transaction;
    // with nothing written, the commit writes nothing either.
    tx.commit()?;
    Ok(outcomes)
}
