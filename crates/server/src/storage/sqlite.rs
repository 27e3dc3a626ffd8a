//! The SQLite [`Store`].
//!
//! # Durability: what "acknowledged" means
//!
//! The database runs in WAL mode with `synchronous=FULL`. A SendAck is sent
//! only after the transaction holding the message has committed, and with
//! `synchronous=FULL` SQLite fsyncs the write-ahead log on every commit
//! before `COMMIT` returns. So an acknowledged message survives a crash of
//! the server process *and* of the operating system or machine (power loss),
//! as long as the disk honours fsync. (With `synchronous=NORMAL`, the WAL
//! default, a power loss could drop the last commits; a process crash could
//! not.) Group commit (see `writer`) makes this affordable: one fsync
//! covers every message of a batch.
//!
//! Write transactions start with `BEGIN IMMEDIATE`, so a transaction that
//! reads before it writes takes the write lock up front and waits (up to
//! `busy_timeout`) instead of failing on a lock upgrade.

use std::time::Duration;

use confab_protocol::names::{RoomName, Username};
use confab_protocol::rules::HistoryRange;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{
    AppendOutcome, HistorySlice, NewMessage, RoomId, RoomRecord, Store, StoreError, StoreFuture,
    StoredMessage, TokenRecord, UserCredentials, UserId,
};

/// How long a connection waits for a lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pool size: one writer at a time plus concurrent readers (WAL lets readers
/// run beside the writer).
const POOL_CONNECTIONS: u32 = 8;

/// SQLite-backed storage.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
            _ => StoreError::Database(err.to_string()),
        }
    }
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is not a SQLite URL.
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    /// Connecting failed.
    #[error("cannot open the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` or, if `None`, the
    /// file `path`, and runs pending migrations.
    pub async fn open(url: Option<&str>, path: &std::path::Path) -> Result<Self, OpenError> {
        let options = match url {
            Some(url) => url
                .parse::<SqliteConnectOptions>()
                .map_err(OpenError::Url)?,
            None => SqliteConnectOptions::new().filename(path),
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(OpenError::Connect)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(OpenError::Migrate)?;
        Ok(Self { pool })
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

const MESSAGE_COLUMNS: &str = "r.name AS room, m.seq, m.message_id, u.username AS sender, m.client_msg_id, m.text, m.kind, m.server_ts_ms";
const MESSAGE_JOINS: &str =
    "FROM messages m JOIN rooms r ON r.id = m.room_id JOIN users u ON u.id = m.sender_id";

fn message_from_row(row: &SqliteRow) -> Result<StoredMessage, StoreError> {
    let room: String = row.try_get("room")?;
    Ok(StoredMessage {
        room: RoomName::parse(room)
            .map_err(|e| StoreError::Database(format!("stored room name invalid: {e}")))?,
        seq: to_u64(row.try_get("seq")?),
        message_id: row.try_get("message_id")?,
        sender: row.try_get("sender")?,
        client_msg_id: row.try_get("client_msg_id")?,
        text: row.try_get("text")?,
        kind: row.try_get("kind")?,
        server_ts_ms: row.try_get("server_ts_ms")?,
    })
}

async fn append_one(
    tx: &mut Transaction<'static, Sqlite>,
    msg: &NewMessage,
) -> Result<AppendOutcome, StoreError> {
    // §8.5: the idempotency key is (sender, client_msg_id). Earlier messages
    // of this same batch are visible here because they are in this transaction.
    let existing = sqlx::query(&format!(
        "SELECT m.room_id, {MESSAGE_COLUMNS} {MESSAGE_JOINS} WHERE m.sender_id = ? AND m.client_msg_id = ?"
    ))
    .bind(msg.sender_id)
    .bind(msg.client_msg_id.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = existing {
        let room_id: i64 = row.try_get("room_id")?;
        let original = message_from_row(&row)?;
        return Ok(if room_id == msg.room_id && original.text == msg.text {
            AppendOutcome::Duplicate(original)
        } else {
            AppendOutcome::Conflict
        });
    }
    // The seq is taken from the room row in the same transaction that stores
    // the message: either both happen or neither, so seqs are gapless (§8.2).
    let seq: i64 = sqlx::query_scalar(
        "UPDATE rooms SET head_seq = head_seq + 1, last_activity_ms = ? WHERE id = ? RETURNING head_seq",
    )
    .bind(msg.server_ts_ms)
    .bind(msg.room_id)
    .fetch_one(&mut **tx)
    .await?;
    let message_id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO messages (room_id, seq, message_id, sender_id, client_msg_id, text, kind, server_ts_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(msg.room_id)
    .bind(seq)
    .bind(&message_id)
    .bind(msg.sender_id)
    .bind(msg.client_msg_id.as_str())
    .bind(&msg.text)
    .bind(msg.kind as i32)
    .bind(msg.server_ts_ms)
    .execute(&mut **tx)
    .await?;
    Ok(AppendOutcome::Stored(StoredMessage {
        room: msg.room.clone(),
        seq: to_u64(seq),
        message_id,
        sender: msg.sender.as_str().to_owned(),
        client_msg_id: msg.client_msg_id.as_str().to_owned(),
        text: msg.text.clone(),
        kind: msg.kind as i32,
        server_ts_ms: msg.server_ts_ms,
    }))
}

impl Store for SqliteStore {
    fn create_user<'a>(
        &'a self,
        username: &'a Username,
        password_hash: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, UserId> {
        Box::pin(async move {
            let id = sqlx::query_scalar("INSERT INTO users (username, password_hash, created_ms) VALUES (?, ?, ?) RETURNING id")
                .bind(username.as_str())
                .bind(password_hash)
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await?;
            Ok(id)
        })
    }

    fn user_credentials<'a>(
        &'a self,
        username: &'a str,
    ) -> StoreFuture<'a, Option<UserCredentials>> {
        Box::pin(async move {
            let row =
                sqlx::query("SELECT id, username, password_hash FROM users WHERE username = ?")
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(|row| {
                let name: String = row.try_get("username")?;
                Ok(UserCredentials {
                    id: row.try_get("id")?,
                    username: Username::parse(name)
                        .map_err(|e| StoreError::Database(e.to_string()))?,
                    password_hash: row.try_get("password_hash")?,
                })
            })
            .transpose()
        })
    }

    fn insert_token<'a>(
        &'a self,
        token_hash: &'a str,
        user_id: UserId,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("INSERT INTO tokens (token_hash, user_id, created_ms, expires_ms) VALUES (?, ?, ?, ?)")
                .bind(token_hash)
                .bind(user_id)
                .bind(now_ms)
                .bind(expires_ms)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn token<'a>(&'a self, token_hash: &'a str) -> StoreFuture<'a, Option<TokenRecord>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT t.user_id, u.username, t.expires_ms, t.revoked FROM tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = ?",
            )
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
            row.map(|row| {
                let name: String = row.try_get("username")?;
                Ok(TokenRecord {
                    user_id: row.try_get("user_id")?,
                    username: Username::parse(name)
                        .map_err(|e| StoreError::Database(e.to_string()))?,
                    expires_ms: row.try_get("expires_ms")?,
                    revoked: row.try_get::<i64, _>("revoked")? != 0,
                })
            })
            .transpose()
        })
    }

    fn revoke_token<'a>(&'a self, token_hash: &'a str, now_ms: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("UPDATE tokens SET revoked = 1 WHERE token_hash = ? AND revoked = 0 AND expires_ms > ?")
                .bind(token_hash)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn load_rooms(&self) -> StoreFuture<'_, Vec<RoomRecord>> {
        Box::pin(async move {
            let rooms = sqlx::query(
                "SELECT id, name, topic, epoch, head_seq, last_activity_ms FROM rooms ORDER BY id",
            )
            .fetch_all(&self.pool)
            .await?;
            let members = sqlx::query(
                "SELECT m.room_id, u.username FROM members m JOIN users u ON u.id = m.user_id",
            )
            .fetch_all(&self.pool)
            .await?;
            let mut by_room: std::collections::HashMap<i64, Vec<Username>> =
                std::collections::HashMap::new();
            for row in members {
                let name: String = row.try_get("username")?;
                let name =
                    Username::parse(name).map_err(|e| StoreError::Database(e.to_string()))?;
                by_room
                    .entry(row.try_get("room_id")?)
                    .or_default()
                    .push(name);
            }
            rooms
                .into_iter()
                .map(|row| {
                    let id: i64 = row.try_get("id")?;
                    let name: String = row.try_get("name")?;
                    Ok(RoomRecord {
                        id,
                        name: RoomName::parse(name)
                            .map_err(|e| StoreError::Database(e.to_string()))?,
                        topic: row.try_get("topic")?,
                        epoch: row.try_get("epoch")?,
                        head_seq: to_u64(row.try_get("head_seq")?),
                        last_activity_ms: row.try_get("last_activity_ms")?,
                        members: by_room.remove(&id).unwrap_or_default(),
                    })
                })
                .collect()
        })
    }

    fn create_room<'a>(
        &'a self,
        name: &'a RoomName,
        topic: &'a str,
        epoch: &'a str,
        creator: UserId,
        now_ms: i64,
    ) -> StoreFuture<'a, RoomId> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO rooms (name, topic, epoch, created_ms, last_activity_ms) VALUES (?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(name.as_str())
            .bind(topic)
            .bind(epoch)
            .bind(now_ms)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO members (room_id, user_id, joined_ms) VALUES (?, ?, ?)")
                .bind(id)
                .bind(creator)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(id)
        })
    }

    fn add_member(&self, room: RoomId, user: UserId, now_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT OR IGNORE INTO members (room_id, user_id, joined_ms) VALUES (?, ?, ?)",
            )
            .bind(room)
            .bind(user)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn remove_member(&self, room: RoomId, user: UserId) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("DELETE FROM members WHERE room_id = ? AND user_id = ?")
                .bind(room)
                .bind(user)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn append_batch<'a>(&'a self, batch: &'a [NewMessage]) -> StoreFuture<'a, Vec<AppendOutcome>> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let mut outcomes = Vec::with_capacity(batch.len());
            for msg in batch {
                outcomes.push(append_one(&mut tx, msg).await?);
            }
            // One commit, hence one WAL fsync, for the whole batch.
            tx.commit().await?;
            Ok(outcomes)
        })
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        range: HistoryRange,
        limit: u32,
    ) -> StoreFuture<'a, HistorySlice> {
        Box::pin(async move {
            // One read transaction, so the page and the head are one snapshot.
            let mut tx = self.pool.begin().await?;
            let head = sqlx::query("SELECT id, head_seq, epoch FROM rooms WHERE name = ?")
                .bind(room.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
            let room_id: i64 = head.try_get("id")?;
            // Fetch one extra row to learn whether more exist beyond the page.
            let (condition, order, anchor) = match range {
                HistoryRange::Latest => ("", "DESC", 0),
                HistoryRange::Before(seq) => ("AND m.seq < ?", "DESC", seq),
                HistoryRange::After(seq) => ("AND m.seq > ?", "ASC", seq),
            };
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} {MESSAGE_JOINS} WHERE m.room_id = ? {condition} ORDER BY m.seq {order} LIMIT ?"
            );
            let mut query = sqlx::query(&sql).bind(room_id);
            if !condition.is_empty() {
                query = query.bind(to_i64(anchor));
            }
            let rows = query.bind(i64::from(limit) + 1).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            let has_more = rows.len() > limit as usize;
            let mut messages = rows
                .iter()
                .take(limit as usize)
                .map(message_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            if order == "DESC" {
                messages.reverse();
            }
            Ok(HistorySlice {
                messages,
                has_more,
                head_seq: to_u64(head.try_get("head_seq")?),
                epoch: head.try_get("epoch")?,
            })
        })
    }

    fn messages_between<'a>(
        &'a self,
        room: &'a RoomName,
        after: u64,
        up_to: u64,
        limit: u32,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {MESSAGE_COLUMNS} {MESSAGE_JOINS} WHERE r.name = ? AND m.seq > ? AND m.seq <= ? ORDER BY m.seq LIMIT ?"
            ))
            .bind(room.as_str())
            .bind(to_i64(after))
            .bind(to_i64(up_to))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(message_from_row).collect()
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Closing the pool waits for every connection to finish and
            // checkpoints nothing explicitly: the WAL is already durable, and
            // SQLite folds it into the main file on the next open.
            self.pool.close().await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use confab_protocol::names::ClientMsgId;
    use confab_protocol::wire::MessageKind;

    use super::*;

    /// §8.2 and §8.5 inside one transaction: repeats of a key earlier in the
    /// same batch are recognised, and seqs stay gapless around them.
    #[tokio::test]
    async fn one_batch_assigns_gapless_seqs_and_sees_its_own_repeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(None, &dir.path().join("t.db"))
            .await
            .expect("open");
        let alice = Username::parse("alice").expect("name");
        let room = RoomName::parse("general").expect("name");
        let user = store.create_user(&alice, "phc", 1).await.expect("user");
        let room_id = store
            .create_room(&room, "", "epoch-1", user, 1)
            .await
            .expect("room");
        let message = |id: &str, text: &str| NewMessage {
            room_id,
            room: room.clone(),
            sender_id: user,
            sender: alice.clone(),
            client_msg_id: ClientMsgId::parse(id).expect("id"),
            text: text.to_owned(),
            kind: MessageKind::Text,
            server_ts_ms: 5,
        };
        let batch = [
            message("a", "first"),
            message("a", "first"),
            message("a", "changed"),
            message("b", "second"),
        ];
        let outcomes = store.append_batch(&batch).await.expect("commit");
        let summary: Vec<String> = outcomes
            .iter()
            .map(|o| match o {
                AppendOutcome::Stored(m) => format!("stored {}", m.seq),
                AppendOutcome::Duplicate(m) => format!("duplicate {}", m.seq),
                AppendOutcome::Conflict => "conflict".to_owned(),
            })
            .collect();
        assert_eq!(summary, ["stored 1", "duplicate 1", "conflict", "stored 2"]);
        let rooms = store.load_rooms().await.expect("rooms");
        assert_eq!((rooms[0].head_seq, rooms[0].last_activity_ms), (2, 5));
        let page = store
            .history(&room, HistoryRange::After(0), 10)
            .await
            .expect("history");
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert_eq!(
            (seqs, page.has_more, page.epoch.as_str()),
            (vec![1, 2], false, "epoch-1")
        );
        store.close().await.expect("close");
    }
}
