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

use std::sync::Arc;
use std::time::Duration;

use confab_protocol::names::{ClientMsgId, RoomName, Username};
use confab_protocol::read;
use confab_protocol::rules::HistoryRange;
use confab_protocol::wire;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::sqlite_append::Appender;
use super::{
    AppendOutcome, HistorySlice, NewMessage, RelationColumns, RoomId, RoomRecord, RoomVersion,
    Store, StoreError, StoreFuture, StoredMessage, TokenRecord, UserCredentials, UserId,
    reaction_count, to_i64, to_u64,
};

/// How long a connection waits for a lock before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL frames after which a commit folds the log back into the database
/// file (SQLite's default is 1,000). A checkpoint writes the latest copy of
/// each page in the log once, so the fewer checkpoints, the fewer times a
/// page that every batch touches (a busy room's last leaf) is written twice:
/// with 1,000 the checkpoints wrote about as many bytes as the log, and
/// read them back first. The log grows to about this many 4 KiB pages.
pub(super) const WAL_CHECKPOINT_PAGES: i64 = 8192;
/// Pool size: one writer at a time plus concurrent readers (WAL lets readers
/// run beside the writer).
const POOL_CONNECTIONS: u32 = 8;

/// SQLite-backed storage.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Where every message batch is written: a thread with a connection of
    /// its own, outside the pool and outside sqlx (see `sqlite_append`).
    appender: Arc<Appender>,
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
#[non_exhaustive]
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
    /// The URL names an in-memory database, which the message writer's own
    /// connection could not share.
    #[error(
        "an in-memory SQLite database is not supported; give a file path or a sqlite://FILE URL"
    )]
    InMemory,
    /// The message writer's connection could not be opened.
    #[error("cannot open the database for writing messages: {0}")]
    Append(#[source] rusqlite::Error),
    /// The message writer's thread could not be started.
    #[error("cannot start the message writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` or, if `None`, the
    /// file `path`, and runs pending migrations.
    pub async fn open(url: Option<&str>, path: &std::path::Path) -> Result<Self, OpenError> {
        if url.is_some_and(|u| u.contains(":memory:") || u.contains("mode=memory")) {
            return Err(OpenError::InMemory);
        }
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
            .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES.to_string())
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .connect_with(options.clone())
            .await
            .map_err(OpenError::Connect)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(OpenError::Migrate)?;
        let appender = Appender::start(options.get_filename(), BUSY_TIMEOUT)?;
        Ok(Self {
            pool,
            appender: Arc::new(appender),
        })
    }

    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

const MESSAGE_COLUMNS: &str = "r.name AS room, m.seq, m.message_id, u.username AS sender, m.client_msg_id, m.text, m.kind, m.server_ts_ms, \
    m.relation_kind, m.target_seq, m.target_id, m.quote, m.reaction_key, m.redacted";
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
        relation: relation_columns(row)?.to_wire(),
        redacted: row.try_get::<bool, _>("redacted")?,
    })
}

/// The relation columns of a message row (§8.6).
fn relation_columns(row: &SqliteRow) -> Result<RelationColumns, StoreError> {
    Ok(RelationColumns {
        code: row.try_get("relation_kind")?,
        target_seq: row.try_get("target_seq")?,
        target_id: row.try_get("target_id")?,
        quote: row.try_get("quote")?,
        reaction_key: row.try_get("reaction_key")?,
    })
}

/// The read state (§11.3) of user ?1 (named ?2) in each room they are a
/// member of, or only in room ?4 when it is not NULL; counts stop at ?3.
/// One statement, so the head and the counts are one snapshot.
const READ_STATES_SQL: &str = "SELECT r.name, r.head_seq, COALESCE(k.read_seq, 0) AS read_seq, \
    (SELECT count(*) FROM (SELECT 1 FROM messages m WHERE m.room_id = r.id \
       AND m.seq > COALESCE(k.read_seq, 0) AND m.relation_kind IN (0, 3) AND m.sender_id <> ?1 LIMIT ?3)) AS unread, \
    (SELECT count(*) FROM (SELECT 1 FROM mentions x WHERE x.username = ?2 AND x.room_id = r.id \
       AND x.seq > COALESCE(k.read_seq, 0) LIMIT ?3)) AS mentioned \
    FROM members mb JOIN rooms r ON r.id = mb.room_id \
    LEFT JOIN read_markers k ON k.user_id = mb.user_id AND k.room_id = mb.room_id \
    WHERE mb.user_id = ?1 AND (?4 IS NULL OR r.id = ?4) ORDER BY r.name";

fn read_state_from_row(row: &SqliteRow) -> Result<wire::ReadState, StoreError> {
    let count = |column: &str| -> Result<u32, StoreError> {
        let n: i64 = row.try_get(column)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    };
    Ok(wire::ReadState {
        room: row.try_get("name")?,
        read_seq: to_u64(row.try_get("read_seq")?),
        unread_count: count("unread")?,
        mention_count: count("mentioned")?,
        counted_seq: to_u64(row.try_get("head_seq")?),
    })
}

impl SqliteStore {
    /// Every room (or the one named) with its members.
    async fn rooms_named(&self, only: Option<&RoomName>) -> Result<Vec<RoomRecord>, StoreError> {
        let only = only.map(RoomName::as_str);
        let rooms = sqlx::query(
            "SELECT id, name, topic, epoch, head_seq, last_activity_ms, member_version FROM rooms \
             WHERE ?1 IS NULL OR name = ?1 ORDER BY id",
        )
        .bind(only)
        .fetch_all(&self.pool)
        .await?;
        let members = sqlx::query(
            "SELECT m.room_id, u.username FROM members m JOIN users u ON u.id = m.user_id \
             JOIN rooms r ON r.id = m.room_id WHERE ?1 IS NULL OR r.name = ?1",
        )
        .bind(only)
        .fetch_all(&self.pool)
        .await?;
        let mut by_room: std::collections::HashMap<i64, Vec<Username>> =
            std::collections::HashMap::new();
        for row in members {
            let name: String = row.try_get("username")?;
            let name = Username::parse(name).map_err(|e| StoreError::Database(e.to_string()))?;
            by_room
                .entry(row.try_get("room_id")?)
                .or_default()
                .push(name);
        }
        rooms
            .into_iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                Ok(RoomRecord {
                    id,
                    name: room_name(row.try_get("name")?)?,
                    topic: row.try_get("topic")?,
                    epoch: row.try_get("epoch")?,
                    head_seq: to_u64(row.try_get("head_seq")?),
                    last_activity_ms: row.try_get("last_activity_ms")?,
                    members: by_room.remove(&id).unwrap_or_default(),
                    member_version: to_u64(row.try_get("member_version")?),
                })
            })
            .collect()
    }
}

fn room_name(name: String) -> Result<RoomName, StoreError> {
    RoomName::parse(name).map_err(|e| StoreError::Database(e.to_string()))
}

/// Bumps the room's membership version when `changed`; returns it.
async fn bump_member_version(
    tx: &mut sqlx::SqliteConnection,
    room: RoomId,
    changed: bool,
) -> Result<u64, StoreError> {
    let version: i64 = if changed {
        sqlx::query_scalar(
            "UPDATE rooms SET member_version = member_version + 1 WHERE id = ? RETURNING member_version",
        )
        .bind(room)
        .fetch_one(&mut *tx)
        .await?
    } else {
        sqlx::query_scalar("SELECT member_version FROM rooms WHERE id = ?")
            .bind(room)
            .fetch_one(&mut *tx)
            .await?
    };
    Ok(to_u64(version))
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
        Box::pin(self.rooms_named(None))
    }

    fn room_record<'a>(&'a self, name: &'a RoomName) -> StoreFuture<'a, Option<RoomRecord>> {
        Box::pin(async move { Ok(self.rooms_named(Some(name)).await?.pop()) })
    }

    fn rooms_of_user(&self, user: UserId) -> StoreFuture<'_, Vec<RoomName>> {
        Box::pin(async move {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT r.name FROM members m JOIN rooms r ON r.id = m.room_id \
                 WHERE m.user_id = ? ORDER BY r.name",
            )
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
            names.into_iter().map(room_name).collect()
        })
    }

    fn room_versions(&self) -> StoreFuture<'_, Vec<RoomVersion>> {
        Box::pin(async move {
            let rows =
                sqlx::query("SELECT id, name, head_seq, last_activity_ms, member_version FROM rooms ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
            rows.into_iter()
                .map(|row| {
                    Ok(RoomVersion {
                        id: row.try_get("id")?,
                        name: room_name(row.try_get("name")?)?,
                        head_seq: to_u64(row.try_get("head_seq")?),
                        last_activity_ms: row.try_get("last_activity_ms")?,
                        member_version: to_u64(row.try_get("member_version")?),
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

    fn add_member(&self, room: RoomId, user: UserId, now_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            // Insert and bump in one write transaction (SQLite has one writer).
            let mut tx = self.write_tx().await?;
            let added = sqlx::query(
                "INSERT OR IGNORE INTO members (room_id, user_id, joined_ms) VALUES (?, ?, ?)",
            )
            .bind(room)
            .bind(user)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if added > 0 {
                // §11.3: a new member has read what came before they joined.
                sqlx::query(
                    "INSERT INTO read_markers (user_id, room_id, read_seq) \
                     SELECT ?1, id, head_seq FROM rooms WHERE id = ?2 \
                     ON CONFLICT (user_id, room_id) DO UPDATE SET read_seq = max(read_seq, excluded.read_seq)",
                )
                .bind(user)
                .bind(room)
                .execute(&mut *tx)
                .await?;
            }
            let version = bump_member_version(&mut tx, room, added > 0).await?;
            tx.commit().await?;
            Ok(version)
        })
    }

    fn remove_member(&self, room: RoomId, user: UserId) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut tx = self.write_tx().await?;
            let removed = sqlx::query("DELETE FROM members WHERE room_id = ? AND user_id = ?")
                .bind(room)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let version = bump_member_version(&mut tx, room, removed > 0).await?;
            tx.commit().await?;
            Ok(version)
        })
    }

    fn read_states<'a>(
        &'a self,
        user: UserId,
        username: &'a Username,
    ) -> StoreFuture<'a, Vec<wire::ReadState>> {
        Box::pin(async move {
            let rows = sqlx::query(READ_STATES_SQL)
                .bind(user)
                .bind(username.as_str())
                .bind(i64::from(read::COUNT_CAP))
                .bind(None::<RoomId>)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(read_state_from_row).collect()
        })
    }

    fn mark_read<'a>(
        &'a self,
        room: RoomId,
        user: UserId,
        username: &'a Username,
        seq: u64,
    ) -> StoreFuture<'a, (wire::ReadState, bool)> {
        Box::pin(async move {
            // One write transaction: the marker read, moved by the
            // protocol's rule, and counted in one snapshot.
            let mut tx = self.write_tx().await?;
            let head: i64 = sqlx::query_scalar("SELECT head_seq FROM rooms WHERE id = ?")
                .bind(room)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT read_seq FROM read_markers WHERE user_id = ? AND room_id = ?",
            )
            .bind(user)
            .bind(room)
            .fetch_optional(&mut *tx)
            .await?;
            let current = to_u64(current.unwrap_or(0));
            let next = read::marker_after(current, seq, to_u64(head));
            if next > current {
                sqlx::query(
                    "INSERT INTO read_markers (user_id, room_id, read_seq) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (user_id, room_id) DO UPDATE SET read_seq = ?3",
                )
                .bind(user)
                .bind(room)
                .bind(to_i64(next))
                .execute(&mut *tx)
                .await?;
            }
            let row = sqlx::query(READ_STATES_SQL)
                .bind(user)
                .bind(username.as_str())
                .bind(i64::from(read::COUNT_CAP))
                .bind(Some(room))
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            // Not a member: the marker is kept (a member again later reads
            // on from it) but there is no state to report beyond it.
            let state = match row {
                Some(row) => read_state_from_row(&row)?,
                None => return Err(StoreError::NotFound),
            };
            Ok((state, next > current))
        })
    }

    fn append_batch<'a>(&'a self, batch: &'a [NewMessage]) -> StoreFuture<'a, Vec<AppendOutcome>> {
        // One commit, hence one WAL fsync, for the whole batch. Copied to
        // the append thread, which cannot borrow from this future.
        Box::pin(self.appender.append(batch.to_vec()))
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        range: HistoryRange,
        limit: u32,
        viewer: UserId,
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
            let has_more = rows.len() > limit as usize;
            let mut messages = rows
                .iter()
                .take(limit as usize)
                .map(message_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            if order == "DESC" {
                messages.reverse();
            }
            // in the same snapshot. A page is a range of seqs, so
            // its messages' reactions are those of the range.
            let mut reactions = Vec::new();
            if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
                let counted: Vec<(i64, String, i64, bool)> = sqlx::query_as(
                    "SELECT target_seq, key, n, mine FROM ( \
                       SELECT target_seq, key, count(*) AS n, max(user_id = ?1) AS mine, \
                         row_number() OVER (PARTITION BY target_seq ORDER BY count(*) DESC, key) AS rank \
                       FROM reactions \
                       WHERE room_id = ?2 AND target_seq BETWEEN ?3 AND ?4 AND present = 1 \
                       GROUP BY target_seq, key) \
                     WHERE rank <= ?5 ORDER BY target_seq, key",
                )
                .bind(viewer)
                .bind(room_id)
                .bind(to_i64(first.seq))
                .bind(to_i64(last.seq))
                .bind(confab_protocol::relation::MAX_PAGE_REACTION_KEYS)
                .fetch_all(&mut *tx)
                .await?;
                reactions = counted.into_iter().map(reaction_count).collect();
            }
            tx.commit().await?;
            Ok(HistorySlice {
                messages,
                has_more,
                head_seq: to_u64(head.try_get("head_seq")?),
                epoch: head.try_get("epoch")?,
                reactions,
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

    fn sent_message<'a>(
        &'a self,
        sender: UserId,
        client_msg_id: &'a ClientMsgId,
    ) -> StoreFuture<'a, Option<StoredMessage>> {
        Box::pin(async move {
            // Served by the UNIQUE (sender_id, client_msg_id) index.
            let row = sqlx::query(&format!(
                "SELECT {MESSAGE_COLUMNS} {MESSAGE_JOINS} WHERE m.sender_id = ? AND m.client_msg_id = ?"
            ))
            .bind(sender)
            .bind(client_msg_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref().map(message_from_row).transpose()
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Closing the pool waits for every connection to finish and
            // checkpoints nothing explicitly: the WAL is already durable, and
            // SQLite folds it into the main file on the next open.
            self.appender.close().await;
            self.pool.close().await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
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
            relation: None,
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
                AppendOutcome::Refused(r) => format!("refused {r:?}"),
            })
            .collect();
        assert_eq!(summary, ["stored 1", "duplicate 1", "conflict", "stored 2"]);
        let rooms = store.load_rooms().await.expect("rooms");
        assert_eq!((rooms[0].head_seq, rooms[0].last_activity_ms), (2, 5));
        let page = store
            .history(&room, HistoryRange::After(0), 10, 0)
            .await
            .expect("history");
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert_eq!(
            (seqs, page.has_more, page.epoch.as_str()),
            (vec![1, 2], false, "epoch-1")
        );
        store.close().await.expect("close");
    }

    fn summary(outcomes: &[AppendOutcome]) -> Vec<String> {
        outcomes
            .iter()
            .map(|o| match o {
                AppendOutcome::Stored(m) => format!("stored {} {}", m.room, m.seq),
                AppendOutcome::Duplicate(m) => format!("duplicate {} {}", m.room, m.seq),
                AppendOutcome::Conflict => "conflict".to_owned(),
                AppendOutcome::Refused(r) => format!("refused {r:?}"),
            })
            .collect()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SqliteStore,
        alice: (UserId, Username),
        bob: (UserId, Username),
        rooms: Vec<(RoomId, RoomName)>,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(None, &dir.path().join("t.db"))
            .await
            .expect("open");
        let mut users = Vec::new();
        for name in ["alice", "bob"] {
            let name = Username::parse(name).expect("name");
            let id = store.create_user(&name, "phc", 1).await.expect("user");
            users.push((id, name));
        }
        let mut rooms = Vec::new();
        for name in ["one", "two"] {
            let name = RoomName::parse(name).expect("name");
            let id = store
                .create_room(&name, "", "e", users[0].0, 1)
                .await
                .expect("room");
            rooms.push((id, name));
        }
        let bob = users.pop().expect("bob");
        let alice = users.pop().expect("alice");
        Fixture {
            _dir: dir,
            store,
            alice,
            bob,
            rooms,
        }
    }

    fn new_message(
        sender: &(UserId, Username),
        room: &(RoomId, RoomName),
        id: &str,
        text: &str,
        ts: i64,
    ) -> NewMessage {
        NewMessage {
            room_id: room.0,
            room: room.1.clone(),
            sender_id: sender.0,
            sender: sender.1.clone(),
            client_msg_id: ClientMsgId::parse(id).expect("id"),
            text: text.to_owned(),
            kind: MessageKind::Text,
            server_ts_ms: ts,
            relation: None,
        }
    }

    async fn heads(store: &SqliteStore) -> Vec<(u64, i64)> {
        store
            .load_rooms()
            .await
            .expect("rooms")
            .iter()
            .map(|r| (r.head_seq, r.last_activity_ms))
            .collect()
    }

    /// §8.2 and §8.5 across batches and rooms: seqs continue each room's
    /// head separately, keys are per sender, and a repeat of a stored key
    /// gets the original (same seq, id and time) or a conflict, also when
    /// the key's first use in the batch is itself a repeat.
    #[tokio::test]
    async fn later_batches_continue_heads_and_see_stored_keys() {
        let f = fixture().await;
        let (alice, bob) = (&f.alice, &f.bob);
        let (one, two) = (&f.rooms[0], &f.rooms[1]);
        let first = f
            .store
            .append_batch(&[
                new_message(alice, one, "a", "hello", 10),
                new_message(bob, one, "a", "hello", 11),
                new_message(alice, two, "b", "other", 12),
            ])
            .await
            .expect("commit");
        assert_eq!(
            summary(&first),
            ["stored one 1", "stored one 2", "stored two 1"]
        );
        let AppendOutcome::Stored(original) = &first[0] else {
            panic!("stored")
        };
        let second = f
            .store
            .append_batch(&[
                new_message(alice, two, "c", "new", 20),
                new_message(alice, one, "a", "changed", 21),
                new_message(alice, one, "a", "hello", 22),
                new_message(alice, two, "a", "hello", 23),
                new_message(alice, one, "d", "new", 24),
                new_message(bob, two, "b", "other", 25),
                new_message(alice, one, "d", "new", 26),
            ])
            .await
            .expect("commit");
        assert_eq!(
            summary(&second),
            [
                "stored two 2",
                "conflict",
                "duplicate one 1",
                "conflict",
                "stored one 3",
                "stored two 3",
                "duplicate one 3",
            ]
        );
        let AppendOutcome::Duplicate(again) = &second[2] else {
            panic!("duplicate")
        };
        assert_eq!(again, original, "a duplicate is the original, unchanged");
        assert_eq!(heads(&f.store).await, [(3, 24), (3, 25)]);
        let page = f
            .store
            .history(&one.1, HistoryRange::After(0), 10, 0)
            .await
            .expect("history");
        let stored: Vec<(u64, &str, &str)> = page
            .messages
            .iter()
            .map(|m| (m.seq, m.sender.as_str(), m.text.as_str()))
            .collect();
        assert_eq!(
            stored,
            [
                (1, "alice", "hello"),
                (2, "bob", "hello"),
                (3, "alice", "new")
            ]
        );
        f.store.close().await.expect("close");
    }

    /// A batch of nothing but repeats writes nothing: heads and last
    /// activity stay as they were.
    #[tokio::test]
    async fn a_batch_of_repeats_changes_no_room() {
        let f = fixture().await;
        let (alice, one, two) = (&f.alice, &f.rooms[0], &f.rooms[1]);
        f.store
            .append_batch(&[new_message(alice, one, "a", "hello", 10)])
            .await
            .expect("commit");
        let repeats = f
            .store
            .append_batch(&[
                new_message(alice, one, "a", "hello", 20),
                new_message(alice, two, "a", "hello", 21),
            ])
            .await
            .expect("commit");
        assert_eq!(summary(&repeats), ["duplicate one 1", "conflict"]);
        assert_eq!(heads(&f.store).await, [(1, 10), (0, 1)]);
        f.store.close().await.expect("close");
    }

    /// An in-memory database would be a different database on the append
    /// thread's connection than on the pool's, so it is refused by name.
    #[tokio::test]
    async fn an_in_memory_database_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for url in ["sqlite::memory:", "sqlite://x.db?mode=memory"] {
            let opened = SqliteStore::open(Some(url), &dir.path().join("unused.db")).await;
            assert!(
                matches!(opened, Err(OpenError::InMemory)),
                "{url}: {:?}",
                opened.map(|_| ())
            );
        }
    }

    /// A batch that fails stores none of its messages and uses no seq: the
    /// next batch continues from the head before it (§8.2).
    #[tokio::test]
    async fn a_failed_batch_stores_nothing_and_uses_no_seq() {
        let f = fixture().await;
        let (alice, one) = (&f.alice, &f.rooms[0]);
        f.store
            .append_batch(&[new_message(alice, one, "a", "hello", 10)])
            .await
            .expect("commit");
        let missing_room = (one.0 + 100, RoomName::parse("gone").expect("name"));
        let failed = f
            .store
            .append_batch(&[
                new_message(alice, one, "b", "lost", 20),
                new_message(alice, &missing_room, "c", "nowhere", 21),
            ])
            .await;
        assert!(matches!(failed, Err(StoreError::NotFound)), "{failed:?}");
        assert_eq!(heads(&f.store).await, [(1, 10), (0, 1)]);
        let retried = f
            .store
            .append_batch(&[new_message(alice, one, "b", "lost", 30)])
            .await
            .expect("commit");
        assert_eq!(summary(&retried), ["stored one 2"]);
        f.store.close().await.expect("close");
    }

    /// A batch that fails while writing, or names a sender that does not
    /// exist, stores nothing (not even its messages to other rooms), and
    /// the writer goes on with the next batch.
    #[tokio::test]
    async fn a_batch_failing_in_its_write_stores_nothing() {
        let f = fixture().await;
        let (alice, one, two) = (&f.alice, &f.rooms[0], &f.rooms[1]);
        // A row the head does not know about: the batch's seq 1 collides.
        sqlx::query(
            "INSERT INTO messages (room_id, seq, message_id, sender_id, client_msg_id, text, kind, server_ts_ms) \
             VALUES (?, 1, 'planted', ?, 'planted', 'x', 1, 1)",
        )
        .bind(one.0)
        .bind(alice.0)
        .execute(&f.store.pool)
        .await
        .expect("plant");
        let failed = f
            .store
            .append_batch(&[
                new_message(alice, two, "a", "fine", 10),
                new_message(alice, one, "b", "collides", 11),
            ])
            .await;
        assert!(
            matches!(failed, Err(StoreError::AlreadyExists)),
            "the primary key refuses it: {failed:?}"
        );
        let ghost = (alice.0 + 100, Username::parse("ghost").expect("name"));
        let failed = f
            .store
            .append_batch(&[
                new_message(alice, two, "a", "fine", 10),
                new_message(&ghost, two, "c", "who", 12),
            ])
            .await;
        assert!(
            matches!(failed, Err(StoreError::Database(_))),
            "the foreign key refuses it: {failed:?}"
        );
        assert_eq!(heads(&f.store).await, [(0, 1), (0, 1)]);
        let page = f
            .store
            .history(&two.1, HistoryRange::After(0), 10, 0)
            .await
            .expect("history");
        assert!(page.messages.is_empty(), "{page:?}");
        let retried = f
            .store
            .append_batch(&[new_message(alice, two, "a", "fine", 20)])
            .await
            .expect("commit");
        assert_eq!(summary(&retried), ["stored two 1"]);
        f.store.close().await.expect("close");
    }
}
