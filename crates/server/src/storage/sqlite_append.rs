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

use confab_protocol::batch::{
    self, BatchRequest, Original, PlanError, Planned, Reaction, StoredKey, Target,
};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::sqlite::OpenError;
use super::{
    AppendOutcome, NewMessage, RelationColumns, RoomId, StoreError, StoredMessage, relation_code,
    to_i64, to_u64,
};

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
    // what a deletion removes is overwritten with zeros in the
    // pages it frees, not left readable in the file.
    conn.pragma_update(None, "secure_delete", "ON")?;
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
    relation: RelationColumns,
    redacted: bool,
}

/// A stored message a relation of the batch names (§8.6).
struct TargetRow {
    message_id: usize,
    room: RoomId,
    seq: i64,
    sender: i64,
    code: i32,
    redacted: bool,
    shown_text: String,
}

/// A stored reaction state, with the react message that set it.
struct ReactionRow {
    key: usize,
    present: bool,
    seq: i64,
    message_id: String,
    server_ts_ms: i64,
}

/// Appends a batch in one transaction: reads the heads of its rooms, the
/// messages behind its idempotency keys, the targets of its relations and
/// the reactions they change, lets [`batch::plan_batch`] decide seqs,
/// repeats, conflicts and refusals (§8.2, §8.5, §8.6), writes the new rows,
/// heads, mentions, reaction states and deletions, and commits. On an
/// error nothing is committed: the transaction rolls back when dropped, so
/// no seq is used (§8.2).
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
            "SELECT room_id, seq, message_id, text, kind, server_ts_ms, relation_kind, target_seq, \
             target_id, quote, reaction_key, redacted FROM messages \
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
                        relation: RelationColumns {
                            code: r.get(6)?,
                            target_seq: r.get(7)?,
                            target_id: r.get(8)?,
                            quote: r.get(9)?,
                            reaction_key: r.get(10)?,
                        },
                        redacted: r.get(11)?,
                    })
                })
                .optional()?;
            existing.extend(row);
        }
    }
    let mut target_rows = Vec::new();
    if !touched.targets.is_empty() {
        // By the UNIQUE message_id index; the latest edit by the target
        // index, whose rows are in seq order (§8.6.4 quotes it).
        let mut stmt = tx.prepare_cached(
            "SELECT m.room_id, m.seq, m.sender_id, m.relation_kind, m.redacted, \
             COALESCE((SELECT e.text FROM messages e WHERE e.room_id = m.room_id \
               AND e.target_seq = m.seq AND e.relation_kind = ?2 ORDER BY e.seq DESC LIMIT 1), m.text) \
             FROM messages m WHERE m.message_id = ?1",
        )?;
        for (message_id, id) in touched.targets.iter().enumerate() {
            let row = stmt
                .query_row(params![id, relation_code::EDIT], |r| {
                    Ok(TargetRow {
                        message_id,
                        room: r.get(0)?,
                        seq: r.get(1)?,
                        sender: r.get(2)?,
                        code: r.get(3)?,
                        redacted: r.get(4)?,
                        shown_text: r.get(5)?,
                    })
                })
                .optional()?;
            target_rows.extend(row);
        }
    }
    let targets: Vec<Target<'_, RoomId, i64>> = target_rows
        .iter()
        .map(|t| Target {
            message_id: touched.targets[t.message_id],
            room: t.room,
            seq: to_u64(t.seq),
            sender: t.sender,
            nameable: relation_code::nameable(t.code),
            redacted: t.redacted,
            shown_text: t.shown_text.as_str(),
        })
        .collect();
    let wanted = batch::reaction_keys(&requests, &targets);
    let mut reaction_rows = Vec::new();
    if !wanted.is_empty() {
        let mut stmt = tx.prepare_cached(
            "SELECT x.present, x.seq, m.message_id, m.server_ts_ms FROM reactions x \
             JOIN messages m ON m.room_id = x.room_id AND m.seq = x.seq \
             WHERE x.room_id = ?1 AND x.target_seq = ?2 AND x.user_id = ?3 AND x.key = ?4",
        )?;
        for (key, &(room, target_seq, user, reaction)) in wanted.iter().enumerate() {
            let row = stmt
                .query_row(params![room, to_i64(target_seq), user, reaction], |r| {
                    Ok(ReactionRow {
                        key,
                        present: r.get(0)?,
                        seq: r.get(1)?,
                        message_id: r.get(2)?,
                        server_ts_ms: r.get(3)?,
                    })
                })
                .optional()?;
            reaction_rows.extend(row);
        }
    }
    let reactions: Vec<Reaction<'_, RoomId, i64>> = reaction_rows
        .iter()
        .map(|x| {
            let (room, target_seq, user, key) = wanted[x.key];
            Reaction {
                room,
                target_seq,
                user,
                key,
                present: x.present,
            }
        })
        .collect();
    let stored: Vec<StoredKey<'_, RoomId, i64>> = existing
        .iter()
        .map(|e| {
            let (sender, client_msg_id) = touched.keys[e.key];
            StoredKey {
                sender,
                client_msg_id,
                room: e.room,
                text: e.text.as_str(),
                relation: e.relation.as_ref(),
                redacted: e.redacted,
            }
        })
        .collect();
    let plan = batch::plan_batch(
        heads.iter().copied(),
        &stored,
        &targets,
        &reactions,
        &requests,
    )
    .map_err(|err| match err {
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
            Planned::Stored { row, seq } => {
                let planned_row = &plan.rows[row];
                AppendOutcome::Stored(msg.stored(
                    seq,
                    message_ids[row].clone(),
                    planned_row.target_seq,
                    planned_row.quote,
                ))
            }
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
                    relation: e.relation.to_wire(),
                    redacted: e.redacted,
                })
            }
            Planned::Duplicate(Original::Reaction(k)) => {
                // the ack of the react message that set the state.
                let x = &reaction_rows[k];
                let mut original = msg.stored(
                    to_u64(x.seq),
                    x.message_id.clone(),
                    Some(wanted[x.key].1),
                    "",
                );
                original.server_ts_ms = x.server_ts_ms;
                AppendOutcome::Duplicate(original)
            }
            Planned::Duplicate(Original::Batch(j)) => match outcomes.get(j) {
                Some(AppendOutcome::Stored(original)) => {
                    // The original's seq and id, with the request's key.
                    AppendOutcome::Duplicate(StoredMessage {
                        client_msg_id: msg.client_msg_id.as_str().to_owned(),
                        ..original.clone()
                    })
                }
                _ => {
                    return Err(StoreError::Database(format!(
                        "batch plan: request {i} repeats request {j}, which was not stored"
                    )));
                }
            },
            Planned::Conflict => AppendOutcome::Conflict,
            Planned::Refused(refusal) => AppendOutcome::Refused(refusal),
        };
        outcomes.push(outcome);
    }

    let redacting = !plan.redactions.is_empty();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO messages \
             (room_id, seq, message_id, sender_id, client_msg_id, text, kind, server_ts_ms, \
              relation_kind, target_seq, target_id, quote, reaction_key) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut mention =
            tx.prepare_cached("INSERT INTO mentions (username, room_id, seq) VALUES (?1, ?2, ?3)")?;
        for (row, message_id) in plan.rows.iter().zip(&message_ids) {
            let msg = &batch[row.request];
            let seq = to_i64(row.seq);
            let code = msg.relation_code();
            insert.execute(params![
                row.room,
                seq,
                message_id,
                msg.sender_id,
                msg.client_msg_id.as_str(),
                msg.text,
                msg.kind as i32,
                msg.server_ts_ms,
                code,
                row.target_seq.map(to_i64),
                msg.relation.as_ref().map(|r| r.target.as_str()),
                (code == relation_code::REPLY).then_some(row.quote),
                msg.reaction_key(),
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
        let mut react = tx.prepare_cached(
            "INSERT INTO reactions (room_id, target_seq, user_id, key, seq, present) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (room_id, target_seq, user_id, key) \
             DO UPDATE SET seq = excluded.seq, present = excluded.present",
        )?;
        for r in &plan.reactions {
            react.execute(params![
                r.room,
                to_i64(r.target_seq),
                r.user,
                r.key,
                to_i64(plan.rows[r.row].seq),
                r.present
            ])?;
        }
        // §8.6.3, R-8.6.6-R-8.6.8: the content goes, in this commit.
        let mut empty = tx.prepare_cached(
            "UPDATE messages SET text = '', redacted = 1 WHERE room_id = ?1 \
             AND (seq = ?2 OR (target_seq = ?2 AND relation_kind = ?3))",
        )?;
        let mut unquote = tx.prepare_cached(
            "UPDATE messages SET quote = '' WHERE room_id = ?1 AND target_seq = ?2 \
             AND relation_kind = ?3",
        )?;
        let mut unreact =
            tx.prepare_cached("DELETE FROM reactions WHERE room_id = ?1 AND target_seq = ?2")?;
        for d in &plan.redactions {
            let target = to_i64(d.target_seq);
            empty.execute(params![d.room, target, relation_code::EDIT])?;
            unquote.execute(params![d.room, target, relation_code::REPLY])?;
            unreact.execute(params![d.room, target])?;
        }
    }
    // Runs even when every message was a repeat, to end the transaction;
    // with nothing written, the commit writes nothing either.
    tx.commit()?;
    if redacting {
        // the deleted text may still sit in WAL frames written
        // before (secure_delete only clears the pages written now): copy
        // the WAL into the database and truncate it. A reader holding an
        // old snapshot can keep it from completing; then the next
        // deletion, or the next automatic checkpoint, finishes the job.
        let (busy, _, _): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        if busy != 0 {
            tracing::warn!(
                "after a deletion the WAL could not be truncated (a reader was active); \
                 the deleted text stays in the WAL file until the next checkpoint"
            );
        }
    }
    Ok(outcomes)
}
