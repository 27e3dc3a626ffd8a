//! The PostgreSQL [`Store`], selected by `--database-url postgres://…`.
//!
//! Same tables, keys and semantics as [`super::sqlite`]; the schema is
//! `migrations/postgres/`. Connections are plain TCP (sqlx's TLS features
//! are not compiled in): run the server next to its database or on a
//! trusted network.
//!
//! # Durability: what "acknowledged" means
//!
//! A SendAck is sent only after `COMMIT` of the transaction holding the
//! message returned. With `synchronous_commit` on (PostgreSQL's default;
//! `open` refuses a session where it is `off`), `COMMIT` returns only once
//! the commit record is flushed to the write-ahead log on disk, so an
//! acknowledged message survives a crash of the server, of PostgreSQL and
//! of the machine. Group commit (see `writer`) makes one flush cover a
//! whole batch.
//!
//! # Seqs are gapless across nodes (§8.2)
//!
//! A room's seqs are `rooms.head_seq + 1, + 2, …`, assigned inside the
//! transaction that stores the messages, after `SELECT … FOR UPDATE` locked
//! the head rows. A PostgreSQL sequence would not do: `nextval` is never
//! rolled back, so a failed batch would leave a hole. Every batch locks its
//! rooms' heads in ascending id order, so two nodes writing overlapping
//! rooms queue behind each other instead of deadlocking.
//!
//! # Idempotency across nodes (§8.5)
//!
//! The key `(sender, client_msg_id)` is UNIQUE. Two batches repeating one
//! key in the same room are serialised by the head lock, and the second one
//! sees the first's row (each statement of a READ COMMITTED transaction
//! reads what committed before it began). Two batches using one key in
//! different rooms are not serialised: the loser's INSERT fails on the
//! constraint, its transaction rolls back whole, and the batch is planned
//! again from a fresh read, which now sees the winner's row.

use std::collections::HashMap;
use std::time::Duration;

use confab_protocol::batch::{
    BatchPlan, BatchRequest, Original, PlanError, Planned, Reaction, StoredKey, Target, batch_keys,
    plan_batch, reaction_keys,
};
use confab_protocol::names::{ClientMsgId, RoomName, Username};
use confab_protocol::read;
use confab_protocol::rules::HistoryRange;
use confab_protocol::wire;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::{
    AppendOutcome, HistorySlice, NewMessage, RelationColumns, RoomId, RoomRecord, RoomVersion,
    Store, StoreError, StoreFuture, StoredMessage, TokenRecord, UserCredentials, UserId,
    reaction_count, relation_code, to_i64, to_u64,
};

/// Pool size: the batch writer plus concurrent readers (history, login,
/// token checks). PostgreSQL's default `max_connections` is 100, so a few
/// nodes fit beside other clients.
const POOL_CONNECTIONS: u32 = 16;
/// How long a request waits for a free pooled connection before failing
/// (a typed storage error, which the client may retry).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a batch is planned again after losing a race for an
/// idempotency key to another node. Each retry sees the winner's row, so a
/// second attempt succeeds unless yet another node races on the same key.
const KEY_RACE_ATTEMPTS: usize = 4;
/// The name of the UNIQUE (sender_id, client_msg_id) constraint in
/// `migrations/postgres/0001_initial.sql`.
const IDEMPOTENCY_CONSTRAINT: &str = "messages_idempotency_key";

/// PostgreSQL-backed storage.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

/// Why the PostgreSQL database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL does not parse as a PostgreSQL connection URL.
    #[error("invalid PostgreSQL URL ({0}); expected postgres://user[:password]@host:port/database")]
    Url(#[source] sqlx::Error),
    /// Connecting or the first query failed.
    #[error(
        "cannot connect to PostgreSQL at {target}: {source}; check that PostgreSQL runs and accepts \
         TCP connections there, that the database exists and that pg_hba.conf lets this user in \
         (TLS is not supported yet)"
    )]
    Connect {
        /// Host, port and database (never the password).
        target: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// `synchronous_commit` is off, so a commit would not mean durable.
    #[error(
        "PostgreSQL at {target} runs with synchronous_commit=off, so an acknowledged message could \
         be lost in a crash; set it on for this database or user (ALTER DATABASE … SET \
         synchronous_commit = on)"
    )]
    NotDurable {
        /// Host, port and database.
        target: String,
    },
    /// A migration failed.
    #[error(
        "cannot migrate the PostgreSQL database at {target}: {source}; check that the user may \
         create tables there and that the schema was not changed by hand"
    )]
    Migrate {
        /// Host, port and database.
        target: String,
        /// Why.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Whether `url` names a PostgreSQL database (and so selects this store).
pub fn is_postgres_url(url: &str) -> bool {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    matches!(scheme, Some(s) if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql"))
}

/// Where `options` points, for error messages: no user, no password.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    )
}

impl PostgresStore {
    /// Connects to the database at `url` and runs pending migrations.
    pub async fn open(url: &str) -> Result<Self, OpenError> {
        let options = url.parse::<PgConnectOptions>().map_err(OpenError::Url)?;
        Self::open_with(options).await
    }

    /// Connects with `options` (e.g. with a `search_path` naming the schema
    /// to use) and runs pending migrations. Several nodes may open one
    /// database at once: sqlx's migrator holds an advisory lock meanwhile.
    pub async fn open_with(options: PgConnectOptions) -> Result<Self, OpenError> {
        let target = describe(&options);
        let connect = |source| OpenError::Connect {
            target: target.clone(),
            source,
        };
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(connect)?;
        let synchronous: String =
            sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
                .fetch_one(&pool)
                .await
                .map_err(connect)?;
        if synchronous.eq_ignore_ascii_case("off") {
            pool.close().await;
            return Err(OpenError::NotDurable { target });
        }
        if let Err(source) = sqlx::migrate!("./migrations/postgres").run(&pool).await {
            pool.close().await;
            return Err(OpenError::Migrate { target, source });
        }
        Ok(Self { pool })
    }

    /// One attempt at a batch: `Ok(None)` when it lost a race for an
    /// idempotency key to another node and rolled back, so it must be
    /// planned again. The rule (seqs, repeats, conflicts) is
    /// [`plan_batch`]'s; this only reads what it needs and writes its plan.
    async fn append_once(
        &self,
        batch: &[NewMessage],
    ) -> Result<Option<Vec<AppendOutcome>>, StoreError> {
        let requests: Vec<BatchRequest<'_, RoomId, UserId>> =
            batch.iter().map(NewMessage::batch_request).collect();
        let keys = batch_keys(&requests);
        let mut room_ids = keys.rooms.clone();
        room_ids.sort_unstable();
        let (senders, client_msg_ids): (Vec<UserId>, Vec<&str>) = keys.keys.iter().copied().unzip();

        // Dropping `tx` on any early return rolls it back.
        let mut tx = self.pool.begin().await?;
        // ORDER BY under FOR UPDATE locks the rows in id order (the lock is
        // taken as each sorted row is emitted): the fixed order that keeps
        // nodes writing overlapping rooms from deadlocking.
        let heads: Vec<(RoomId, i64)> = sqlx::query_as(
            "SELECT id, head_seq FROM rooms WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&room_ids)
        .fetch_all(&mut *tx)
        .await?;
        // A new statement, so it sees every row committed before the locks
        // were granted, including those of a batch we waited for.
        let existing: Vec<ExistingRow> = sqlx::query(
            "SELECT k.i, m.room_id, m.seq, m.message_id, m.text, m.kind, m.server_ts_ms, \
             m.relation_kind, m.target_seq, m.target_id, m.quote, m.reaction_key, m.redacted \
             FROM UNNEST($1::bigint[], $2::text[]) WITH ORDINALITY AS k(sender_id, client_msg_id, i) \
             JOIN messages m ON m.sender_id = k.sender_id AND m.client_msg_id = k.client_msg_id",
        )
        .bind(&senders)
        .bind(&client_msg_ids)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| {
            Ok(ExistingRow {
                key: row.try_get("i")?,
                room: row.try_get("room_id")?,
                seq: row.try_get("seq")?,
                message_id: row.try_get("message_id")?,
                text: row.try_get("text")?,
                kind: row.try_get("kind")?,
                server_ts_ms: row.try_get("server_ts_ms")?,
                relation: relation_columns(row)?,
                redacted: row.try_get("redacted")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
        let stored = existing
            .iter()
            .map(|row| {
                // WITH ORDINALITY counts from 1.
                let (sender, client_msg_id) = usize::try_from(row.key - 1)
                    .ok()
                    .and_then(|k| keys.keys.get(k).copied())
                    .ok_or_else(|| {
                        StoreError::Database(format!("key read named key {}", row.key))
                    })?;
                Ok(StoredKey {
                    sender,
                    client_msg_id,
                    room: row.room,
                    text: row.text.as_str(),
                    relation: row.relation.as_ref(),
                    redacted: row.redacted,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        // §8.6: the messages the batch's relations name, each with the
        // text of its latest edit (a reply quotes it).
        let target_rows: Vec<(i64, RoomId, i64, UserId, i32, bool, String)> = if keys
            .targets
            .is_empty()
        {
            Vec::new()
        } else {
            sqlx::query_as(
                    "SELECT k.i, m.room_id, m.seq, m.sender_id, m.relation_kind, m.redacted, \
                     COALESCE((SELECT e.text FROM messages e WHERE e.room_id = m.room_id \
                       AND e.target_seq = m.seq AND e.relation_kind = $2 ORDER BY e.seq DESC LIMIT 1), m.text) \
                     FROM UNNEST($1::text[]) WITH ORDINALITY AS k(message_id, i) \
                     JOIN messages m ON m.message_id = k.message_id",
                )
                .bind(&keys.targets)
                .bind(relation_code::EDIT)
                .fetch_all(&mut *tx)
                .await?
        };
        let targets = target_rows
            .iter()
            .map(|(i, room, seq, sender, code, redacted, shown)| {
                let message_id = usize::try_from(i - 1)
                    .ok()
                    .and_then(|k| keys.targets.get(k).copied())
                    .ok_or_else(|| StoreError::Database(format!("target read named {i}")))?;
                Ok(Target {
                    message_id,
                    room: *room,
                    seq: to_u64(*seq),
                    sender: *sender,
                    nameable: relation_code::nameable(*code),
                    redacted: *redacted,
                    shown_text: shown.as_str(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let wanted = reaction_keys(&requests, &targets);
        let reaction_rows: Vec<ReactionRow> = if wanted.is_empty() {
            Vec::new()
        } else {
            let rooms: Vec<RoomId> = wanted.iter().map(|w| w.0).collect();
            let seqs: Vec<i64> = wanted.iter().map(|w| to_i64(w.1)).collect();
            let users: Vec<UserId> = wanted.iter().map(|w| w.2).collect();
            let names: Vec<&str> = wanted.iter().map(|w| w.3).collect();
            sqlx::query_as(
                "SELECT k.i, x.present, x.seq, m.message_id, m.server_ts_ms \
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[]) \
                   WITH ORDINALITY AS k(room_id, target_seq, user_id, key, i) \
                 JOIN reactions x ON x.room_id = k.room_id AND x.target_seq = k.target_seq \
                   AND x.user_id = k.user_id AND x.key = k.key \
                 JOIN messages m ON m.room_id = x.room_id AND m.seq = x.seq",
            )
            .bind(&rooms)
            .bind(&seqs)
            .bind(&users)
            .bind(&names)
            .fetch_all(&mut *tx)
            .await?
        };
        // Each read reaction with the key it answers (1-based index).
        let reaction_keys_read = reaction_rows
            .iter()
            .map(|(i, ..)| {
                usize::try_from(i - 1)
                    .ok()
                    .and_then(|k| wanted.get(k).copied())
                    .ok_or_else(|| StoreError::Database(format!("reaction read named {i}")))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let reactions: Vec<Reaction<'_, RoomId, UserId>> = reaction_rows
            .iter()
            .zip(&reaction_keys_read)
            .map(
                |((_, present, ..), &(room, target_seq, user, key))| Reaction {
                    room,
                    target_seq,
                    user,
                    key,
                    present: *present,
                },
            )
            .collect();

        let plan = plan_batch(
            heads.iter().map(|&(room, head)| (room, to_u64(head))),
            &stored,
            &targets,
            &reactions,
            &requests,
        )
        .map_err(|err| match err {
            PlanError::UnknownRoom { .. } => StoreError::NotFound,
            other => StoreError::Database(other.to_string()),
        })?;

        let mut rows = Rows::default();
        for row in &plan.rows {
            let msg = &batch[row.request];
            let code = msg.relation_code();
            rows.room_id.push(row.room);
            rows.seq.push(to_i64(row.seq));
            rows.message_id.push(uuid::Uuid::now_v7().to_string());
            rows.sender_id.push(msg.sender_id);
            rows.client_msg_id.push(msg.client_msg_id.as_str());
            rows.text.push(msg.text.as_str());
            rows.kind.push(msg.kind as i32);
            rows.server_ts_ms.push(msg.server_ts_ms);
            rows.relation_kind.push(code);
            rows.target_seq.push(row.target_seq.map(to_i64));
            rows.target_id
                .push(msg.relation.as_ref().map(|r| r.target.as_str()));
            rows.quote
                .push((code == relation_code::REPLY).then_some(row.quote));
            rows.reaction_key.push(msg.reaction_key());
        }
        let read = Read {
            existing: &existing,
            reactions: &reaction_rows,
            reaction_targets: &reaction_keys_read,
        };
        let outcomes = outcomes(batch, &plan, &rows, &read)?;

        if !plan.rows.is_empty() {
            let head_rooms: Vec<RoomId> = plan.heads.iter().map(|h| h.room).collect();
            let head_seqs: Vec<i64> = plan.heads.iter().map(|h| to_i64(h.head_seq)).collect();
            let activity: Vec<i64> = plan
                .heads
                .iter()
                .map(|h| batch[h.last_request].server_ts_ms)
                .collect();
            // Who each new row mentions (§11.3), stored in the same commit.
            let mut mention_names: Vec<String> = Vec::new();
            let mut mention_rooms: Vec<RoomId> = Vec::new();
            let mut mention_seqs: Vec<i64> = Vec::new();
            for row in &plan.rows {
                for name in batch[row.request].mentions() {
                    mention_names.push(name.into_string());
                    mention_rooms.push(row.room);
                    mention_seqs.push(to_i64(row.seq));
                }
            }
            let written: Result<(i64, i64), sqlx::Error> = sqlx::query_as(BATCH_WRITE_SQL)
                .bind(&rows.room_id)
                .bind(&rows.seq)
                .bind(&rows.message_id)
                .bind(&rows.sender_id)
                .bind(&rows.client_msg_id)
                .bind(&rows.text)
                .bind(&rows.kind)
                .bind(&rows.server_ts_ms)
                .bind(&head_rooms)
                .bind(&head_seqs)
                .bind(&activity)
                .bind(&mention_names)
                .bind(&mention_rooms)
                .bind(&mention_seqs)
                .bind(&rows.relation_kind)
                .bind(&rows.target_seq)
                .bind(&rows.target_id)
                .bind(&rows.quote)
                .bind(&rows.reaction_key)
                .fetch_one(&mut *tx)
                .await;
            match written {
                Err(sqlx::Error::Database(db))
                    if db.is_unique_violation()
                        && db.constraint() == Some(IDEMPOTENCY_CONSTRAINT) =>
                {
                    return Ok(None);
                }
                Err(err) => return Err(err.into()),
                Ok((messages, rooms)) => {
                    let expected = (plan.rows.len(), plan.heads.len());
                    if (usize::try_from(messages).ok(), usize::try_from(rooms).ok())
                        != (Some(expected.0), Some(expected.1))
                    {
                        return Err(StoreError::Database(format!(
                            "batch wrote {messages} messages and {rooms} heads, expected {} and {}",
                            expected.0, expected.1
                        )));
                    }
                }
            }
        }
        if !plan.reactions.is_empty() {
            let rooms: Vec<RoomId> = plan.reactions.iter().map(|r| r.room).collect();
            let seqs: Vec<i64> = plan
                .reactions
                .iter()
                .map(|r| to_i64(r.target_seq))
                .collect();
            let users: Vec<UserId> = plan.reactions.iter().map(|r| r.user).collect();
            let names: Vec<&str> = plan.reactions.iter().map(|r| r.key).collect();
            let set_by: Vec<i64> = plan
                .reactions
                .iter()
                .map(|r| to_i64(plan.rows[r.row].seq))
                .collect();
            let present: Vec<bool> = plan.reactions.iter().map(|r| r.present).collect();
            // One row per key in the plan, so ON CONFLICT touches each once.
            sqlx::query(
                "INSERT INTO reactions (room_id, target_seq, user_id, key, seq, present) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bool[]) \
                 ON CONFLICT (room_id, target_seq, user_id, key) \
                 DO UPDATE SET seq = EXCLUDED.seq, present = EXCLUDED.present",
            )
            .bind(&rooms)
            .bind(&seqs)
            .bind(&users)
            .bind(&names)
            .bind(&set_by)
            .bind(&present)
            .execute(&mut *tx)
            .await?;
        }
        if !plan.redactions.is_empty() {
            // §8.6.3, R-8.6.6-R-8.6.8: the content goes, in this commit.
            // (PostgreSQL keeps the old row versions in the table's files
            // until VACUUM reclaims them; see spec §8.6.3.)
            let rooms: Vec<RoomId> = plan.redactions.iter().map(|d| d.room).collect();
            let seqs: Vec<i64> = plan
                .redactions
                .iter()
                .map(|d| to_i64(d.target_seq))
                .collect();
            sqlx::query(REDACT_SQL)
                .bind(&rooms)
                .bind(&seqs)
                .bind(relation_code::EDIT)
                .bind(relation_code::REPLY)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM reactions x USING UNNEST($1::bigint[], $2::bigint[]) AS d(room_id, seq) \
                 WHERE x.room_id = d.room_id AND x.target_seq = d.seq",
            )
            .bind(&rooms)
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        }
        // With nothing written (every message a repeat) this only releases
        // the head locks.
        tx.commit().await?;
        Ok(Some(outcomes))
    }
}

/// Empties what deletions ($1 rooms, $2 seqs) remove: the text of each
/// deleted message and of its edits ($3, the edit code), and the quote of
/// its replies ($4, the reply code).
const REDACT_SQL: &str = "UPDATE messages m SET \
        text = CASE WHEN m.relation_kind = $4 AND m.target_seq = d.seq THEN m.text ELSE '' END, \
        redacted = m.redacted OR m.seq = d.seq OR m.relation_kind = $3, \
        quote = CASE WHEN m.relation_kind = $4 AND m.target_seq = d.seq THEN '' ELSE m.quote END \
    FROM UNNEST($1::bigint[], $2::bigint[]) AS d(room_id, seq) \
    WHERE m.room_id = d.room_id AND (m.seq = d.seq \
        OR (m.target_seq = d.seq AND m.relation_kind IN ($3, $4)))";

/// A row of the key read: the key's 1-based index in `BatchKeys::keys`,
/// then the stored message.
struct ExistingRow {
    key: i64,
    room: RoomId,
    seq: i64,
    message_id: String,
    text: String,
    kind: i32,
    server_ts_ms: i64,
    relation: RelationColumns,
    redacted: bool,
}

/// A row of the reaction read: the key's 1-based index in what
/// `reaction_keys` listed, whether it is present, and the seq, id and
/// time of the react message that set it.
type ReactionRow = (i64, bool, i64, String, i64);

/// What the batch read before planning, as [`outcomes`] needs it.
struct Read<'r, 'a> {
    existing: &'r [ExistingRow],
    reactions: &'r [ReactionRow],
    /// The (room, target seq, user, key) of each of `reactions`.
    reaction_targets: &'r [(RoomId, u64, UserId, &'a str)],
}

/// Turns the plan's outcomes into the store's: a stored message gets its
/// row; a duplicate gets the original, unchanged (from the key read, the
/// row this batch stores for an earlier request, or the react message
/// behind a reaction state).
fn outcomes(
    batch: &[NewMessage],
    plan: &BatchPlan<'_, RoomId, UserId>,
    rows: &Rows<'_>,
    read: &Read<'_, '_>,
) -> Result<Vec<AppendOutcome>, StoreError> {
    let stored_row = |i: usize, row: usize| -> Result<StoredMessage, StoreError> {
        let planned = plan.rows.get(row).ok_or(StoreError::NotFound)?;
        Ok(batch[i].stored(
            planned.seq,
            rows.message_id[row].clone(),
            planned.target_seq,
            planned.quote,
        ))
    };
    plan.outcomes
        .iter()
        .enumerate()
        .map(|(i, outcome)| {
            let msg = &batch[i];
            Ok(match *outcome {
                Planned::Stored { row, .. } => AppendOutcome::Stored(stored_row(i, row)?),
                Planned::Duplicate(Original::Batch(j)) => match plan.outcomes.get(j) {
                    Some(&Planned::Stored { row, .. }) => AppendOutcome::Duplicate(StoredMessage {
                        client_msg_id: msg.client_msg_id.as_str().to_owned(),
                        ..stored_row(j, row)?
                    }),
                    _ => {
                        return Err(StoreError::Database(format!(
                            "plan: request {i} repeats request {j}, which stored nothing"
                        )));
                    }
                },
                Planned::Duplicate(Original::Stored(k)) => {
                    let e = read.existing.get(k).ok_or(StoreError::NotFound)?;
                    // Same key means same sender, and a duplicate names the
                    // same room: the request's names are the original's.
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
                    // the ack of the react message that set it.
                    let (_, _, seq, message_id, server_ts_ms) =
                        read.reactions.get(k).ok_or(StoreError::NotFound)?;
                    let target_seq = read.reaction_targets.get(k).map(|t| t.1);
                    let mut original = msg.stored(to_u64(*seq), message_id.clone(), target_seq, "");
                    original.server_ts_ms = *server_ts_ms;
                    AppendOutcome::Duplicate(original)
                }
                Planned::Conflict => AppendOutcome::Conflict,
                Planned::Refused(refusal) => AppendOutcome::Refused(refusal),
            })
        })
        .collect()
}

/// Writes a planned batch in one statement: the new messages ($1-$8 and
/// their relation columns $15-$19, one array per column), the new head and
/// last activity of every room that got one ($9-$11) and the mentions
/// ($12-$14). Returns how many messages and heads it wrote.
const BATCH_WRITE_SQL: &str = "WITH inserted AS ( \
        INSERT INTO messages (room_id, seq, message_id, sender_id, client_msg_id, text, kind, server_ts_ms, \
          relation_kind, target_seq, target_id, quote, reaction_key) \
        SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::int4[], $8::bigint[], \
          $15::int4[], $16::bigint[], $17::text[], $18::text[], $19::text[]) \
        RETURNING 1 \
    ), heads AS ( \
        UPDATE rooms r SET head_seq = h.head_seq, last_activity_ms = h.last_activity_ms \
        FROM UNNEST($9::bigint[], $10::bigint[], $11::bigint[]) AS h(id, head_seq, last_activity_ms) \
        WHERE r.id = h.id \
        RETURNING 1 \
    ), mentioned AS ( \
        INSERT INTO mentions (username, room_id, seq) \
        SELECT * FROM UNNEST($12::text[], $13::bigint[], $14::bigint[]) \
    ) \
    SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM heads)";

/// The read state (§11.3) of user $1 (named $2) in each room they are a
/// member of, or only in room $4 when it is not NULL; counts stop at $3.
/// One statement, so the head and the counts are one snapshot.
const READ_STATES_SQL: &str = "SELECT r.name, r.head_seq, COALESCE(k.read_seq, 0) AS read_seq, \
    (SELECT count(*) FROM (SELECT 1 FROM messages m WHERE m.room_id = r.id \
       AND m.seq > COALESCE(k.read_seq, 0) AND m.relation_kind IN (0, 3) AND m.sender_id <> $1 LIMIT $3) AS u) AS unread, \
    (SELECT count(*) FROM (SELECT 1 FROM mentions x WHERE x.username = $2 AND x.room_id = r.id \
       AND x.seq > COALESCE(k.read_seq, 0) LIMIT $3) AS n) AS mentioned \
    FROM members mb JOIN rooms r ON r.id = mb.room_id \
    LEFT JOIN read_markers k ON k.user_id = mb.user_id AND k.room_id = mb.room_id \
    WHERE mb.user_id = $1 AND ($4::bigint IS NULL OR r.id = $4) ORDER BY r.name";

fn read_state_from_row(row: &PgRow) -> Result<wire::ReadState, StoreError> {
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

/// The rows of a batch to insert, one vector per column (what UNNEST takes).
#[derive(Debug, Default)]
struct Rows<'a> {
    room_id: Vec<RoomId>,
    seq: Vec<i64>,
    message_id: Vec<String>,
    sender_id: Vec<UserId>,
    client_msg_id: Vec<&'a str>,
    text: Vec<&'a str>,
    kind: Vec<i32>,
    server_ts_ms: Vec<i64>,
    relation_kind: Vec<i32>,
    target_seq: Vec<Option<i64>>,
    target_id: Vec<Option<&'a str>>,
    quote: Vec<Option<&'a str>>,
    reaction_key: Vec<Option<&'a str>>,
}

const MESSAGE_COLUMNS: &str = "r.name AS room, m.seq, m.message_id, u.username AS sender, m.client_msg_id, m.text, m.kind, m.server_ts_ms, \
    m.relation_kind, m.target_seq, m.target_id, m.quote, m.reaction_key, m.redacted";
const MESSAGE_JOINS: &str =
    "FROM messages m JOIN rooms r ON r.id = m.room_id JOIN users u ON u.id = m.sender_id";

fn message_from_row(row: &PgRow) -> Result<StoredMessage, StoreError> {
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
fn relation_columns(row: &PgRow) -> Result<RelationColumns, StoreError> {
    Ok(RelationColumns {
        code: row.try_get("relation_kind")?,
        target_seq: row.try_get("target_seq")?,
        target_id: row.try_get("target_id")?,
        quote: row.try_get("quote")?,
        reaction_key: row.try_get("reaction_key")?,
    })
}

fn username(name: String) -> Result<Username, StoreError> {
    Username::parse(name).map_err(|e| StoreError::Database(format!("stored username invalid: {e}")))
}

impl PostgresStore {
    /// The connection pool, for what cluster mode keeps beside the store
    /// (the shared limits of `cluster::limits`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl PostgresStore {
    /// Every room (or the one named) with its members, from one snapshot,
    /// so a member row never names a room the list lacks.
    async fn rooms_named(&self, only: Option<&RoomName>) -> Result<Vec<RoomRecord>, StoreError> {
        let only = only.map(RoomName::as_str);
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let rooms = sqlx::query(
            "SELECT id, name, topic, epoch, head_seq, last_activity_ms, member_version FROM rooms \
             WHERE $1::TEXT IS NULL OR name = $1 ORDER BY id",
        )
        .bind(only)
        .fetch_all(&mut *tx)
        .await?;
        let members = sqlx::query(
            "SELECT m.room_id, u.username FROM members m JOIN users u ON u.id = m.user_id \
             JOIN rooms r ON r.id = m.room_id WHERE $1::TEXT IS NULL OR r.name = $1",
        )
        .bind(only)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut by_room: HashMap<RoomId, Vec<Username>> = HashMap::new();
        for row in members {
            let name = username(row.try_get("username")?)?;
            by_room
                .entry(row.try_get("room_id")?)
                .or_default()
                .push(name);
        }
        rooms
            .into_iter()
            .map(|row| {
                let id: RoomId = row.try_get("id")?;
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
    RoomName::parse(name)
        .map_err(|e| StoreError::Database(format!("stored room name invalid: {e}")))
}

impl Store for PostgresStore {
    fn create_user<'a>(
        &'a self,
        username: &'a Username,
        password_hash: &'a str,
        now_ms: i64,
    ) -> StoreFuture<'a, UserId> {
        Box::pin(async move {
            let id = sqlx::query_scalar(
                "INSERT INTO users (username, password_hash, created_ms) VALUES ($1, $2, $3) RETURNING id",
            )
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
                sqlx::query("SELECT id, username, password_hash FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?;
            row.map(|row| {
                Ok(UserCredentials {
                    id: row.try_get("id")?,
                    username: self::username(row.try_get("username")?)?,
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
            sqlx::query(
                "INSERT INTO tokens (token_hash, user_id, created_ms, expires_ms) VALUES ($1, $2, $3, $4)",
            )
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
                 WHERE t.token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
            row.map(|row| {
                Ok(TokenRecord {
                    user_id: row.try_get("user_id")?,
                    username: username(row.try_get("username")?)?,
                    expires_ms: row.try_get("expires_ms")?,
                    revoked: row.try_get("revoked")?,
                })
            })
            .transpose()
        })
    }

    fn revoke_token<'a>(&'a self, token_hash: &'a str, now_ms: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            // One conditional UPDATE: two nodes revoking the same token at
            // once see exactly one `true`.
            let done = sqlx::query(
                "UPDATE tokens SET revoked = TRUE WHERE token_hash = $1 AND NOT revoked AND expires_ms > $2",
            )
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
                 WHERE m.user_id = $1 ORDER BY r.name",
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
            // Racing creators (on any node) meet at the UNIQUE name: exactly
            // one INSERT succeeds, the others get AlreadyExists.
            let mut tx = self.pool.begin().await?;
            let id: RoomId = sqlx::query_scalar(
                "INSERT INTO rooms (name, topic, epoch, created_ms, last_activity_ms) VALUES ($1, $2, $3, $4, $4) RETURNING id",
            )
            .bind(name.as_str())
            .bind(topic)
            .bind(epoch)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO members (room_id, user_id, joined_ms) VALUES ($1, $2, $3)")
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
            // The insert and the version bump are one statement, hence one
            // transaction: no reader sees the member without the new version.
            let version: i64 = sqlx::query_scalar(
                "WITH added AS (INSERT INTO members (room_id, user_id, joined_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING RETURNING room_id), \
                 bumped AS (UPDATE rooms SET member_version = member_version + 1 \
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM added) RETURNING member_version), \
                 marked AS (INSERT INTO read_markers (user_id, room_id, read_seq) \
                 SELECT $2, id, head_seq FROM rooms WHERE id = $1 AND EXISTS (SELECT 1 FROM added) \
                 ON CONFLICT (user_id, room_id) DO UPDATE \
                 SET read_seq = GREATEST(read_markers.read_seq, EXCLUDED.read_seq)) \
                 SELECT COALESCE((SELECT member_version FROM bumped), \
                 (SELECT member_version FROM rooms WHERE id = $1))",
            )
            .bind(room)
            .bind(user)
            .bind(now_ms)
            .fetch_one(&self.pool)
            .await?;
            Ok(to_u64(version))
        })
    }

    fn remove_member(&self, room: RoomId, user: UserId) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let version: i64 = sqlx::query_scalar(
                "WITH removed AS (DELETE FROM members WHERE room_id = $1 AND user_id = $2 RETURNING room_id), \
                 bumped AS (UPDATE rooms SET member_version = member_version + 1 \
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM removed) RETURNING member_version) \
                 SELECT COALESCE((SELECT member_version FROM bumped), \
                 (SELECT member_version FROM rooms WHERE id = $1))",
            )
            .bind(room)
            .bind(user)
            .fetch_one(&self.pool)
            .await?;
            Ok(to_u64(version))
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
            let mut tx = self.pool.begin().await?;
            let head: i64 = sqlx::query_scalar("SELECT head_seq FROM rooms WHERE id = $1")
                .bind(room)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT read_seq FROM read_markers WHERE user_id = $1 AND room_id = $2 FOR UPDATE",
            )
            .bind(user)
            .bind(room)
            .fetch_optional(&mut *tx)
            .await?;
            let current = to_u64(current.unwrap_or(0));
            let next = read::marker_after(current, seq, to_u64(head));
            if next > current {
                // GREATEST: two nodes inserting a user's first marker at
                // once meet at the key, and the higher one stays.
                sqlx::query(
                    "INSERT INTO read_markers (user_id, room_id, read_seq) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id, room_id) DO UPDATE \
                     SET read_seq = GREATEST(read_markers.read_seq, EXCLUDED.read_seq)",
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
            let state = match row {
                Some(row) => read_state_from_row(&row)?,
                None => return Err(StoreError::NotFound),
            };
            Ok((state, next > current))
        })
    }

    fn append_batch<'a>(&'a self, batch: &'a [NewMessage]) -> StoreFuture<'a, Vec<AppendOutcome>> {
        Box::pin(async move {
            // One transaction, hence one WAL flush, for the whole batch, in
            // five round trips whatever its size: BEGIN, lock heads, read
            // keys, write, COMMIT.
            for _ in 0..KEY_RACE_ATTEMPTS {
                if let Some(outcomes) = self.append_once(batch).await? {
                    return Ok(outcomes);
                }
                tracing::debug!("a batch lost an idempotency key race to another node; replanning");
            }
            Err(StoreError::Database(format!(
                "a batch lost {KEY_RACE_ATTEMPTS} idempotency key races in a row; resend"
            )))
        })
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        range: HistoryRange,
        limit: u32,
        viewer: UserId,
    ) -> StoreFuture<'a, HistorySlice> {
        Box::pin(async move {
            // One statement, so one round trip and one snapshot: the page
            // and the head agree. The LEFT JOIN keeps the room's row when
            // the page is empty; no row at all means no such room. One
            // extra message is fetched to learn whether more exist beyond
            // the page in its direction.
            let (condition, descending, anchor) = match range {
                HistoryRange::Latest => ("", true, 0),
                HistoryRange::Before(seq) => ("AND m.seq < $3", true, seq),
                HistoryRange::After(seq) => ("AND m.seq > $3", false, seq),
            };
            let order = if descending { "DESC" } else { "ASC" };
            let sql = format!(
                "SELECT r.head_seq, r.epoch, p.seq, p.message_id, u.username AS sender, p.client_msg_id, \
                 p.text, p.kind, p.server_ts_ms, p.relation_kind, p.target_seq, p.target_id, p.quote, \
                 p.reaction_key, p.redacted \
                 FROM rooms r \
                 LEFT JOIN LATERAL (SELECT * FROM messages m WHERE m.room_id = r.id {condition} \
                   ORDER BY m.seq {order} LIMIT $2) p ON TRUE \
                 LEFT JOIN users u ON u.id = p.sender_id \
                 WHERE r.name = $1"
            );
            let mut query = sqlx::query(&sql)
                .bind(room.as_str())
                .bind(i64::from(limit) + 1);
            if !condition.is_empty() {
                query = query.bind(to_i64(anchor));
            }
            // The page and its reaction counts in one snapshot.
            let mut tx = self.pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
            let rows = query.fetch_all(&mut *tx).await?;
            let first = rows.first().ok_or(StoreError::NotFound)?;
            let head_seq = to_u64(first.try_get("head_seq")?);
            let epoch: String = first.try_get("epoch")?;
            let mut messages = Vec::with_capacity(rows.len());
            for row in &rows {
                let Some(seq) = row.try_get::<Option<i64>, _>("seq")? else {
                    continue; // The room's row of an empty page.
                };
                messages.push(StoredMessage {
                    room: room.clone(),
                    seq: to_u64(seq),
                    message_id: row.try_get("message_id")?,
                    sender: row.try_get("sender")?,
                    client_msg_id: row.try_get("client_msg_id")?,
                    text: row.try_get("text")?,
                    kind: row.try_get("kind")?,
                    server_ts_ms: row.try_get("server_ts_ms")?,
                    relation: relation_columns(row)?.to_wire(),
                    redacted: row.try_get("redacted")?,
                });
            }
            // The join's output order is unspecified: sort, then drop the
            // extra message, which lies beyond the page's far end.
            messages.sort_unstable_by_key(|m| m.seq);
            let has_more = messages.len() > limit as usize;
            if has_more {
                if descending {
                    messages.remove(0);
                } else {
                    messages.truncate(limit as usize);
                }
            }
            let mut reactions = Vec::new();
            if let (Some(lo), Some(hi)) = (messages.first(), messages.last()) {
                let counted: Vec<(i64, String, i64, bool)> = sqlx::query_as(
                    "SELECT target_seq, key, n, mine FROM ( \
                       SELECT x.target_seq, x.key, count(*) AS n, bool_or(x.user_id = $1) AS mine, \
                         row_number() OVER (PARTITION BY x.target_seq \
                           ORDER BY count(*) DESC, x.key COLLATE \"C\") AS rank \
                       FROM reactions x JOIN rooms r ON r.id = x.room_id \
                       WHERE r.name = $2 AND x.target_seq BETWEEN $3 AND $4 AND x.present \
                       GROUP BY x.target_seq, x.key) ranked \
                     WHERE rank <= $5 ORDER BY target_seq, key COLLATE \"C\"",
                )
                .bind(viewer)
                .bind(room.as_str())
                .bind(to_i64(lo.seq))
                .bind(to_i64(hi.seq))
                .bind(i64::from(confab_protocol::relation::MAX_PAGE_REACTION_KEYS))
                .fetch_all(&mut *tx)
                .await?;
                reactions = counted.into_iter().map(reaction_count).collect();
            }
            tx.commit().await?;
            Ok(HistorySlice {
                messages,
                has_more,
                head_seq,
                epoch,
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
                "SELECT {MESSAGE_COLUMNS} {MESSAGE_JOINS} WHERE r.name = $1 AND m.seq > $2 AND m.seq <= $3 ORDER BY m.seq LIMIT $4"
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
                "SELECT {MESSAGE_COLUMNS} {MESSAGE_JOINS} WHERE m.sender_id = $1 AND m.client_msg_id = $2"
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
            // Every acknowledged batch already committed; closing only
            // waits for borrowed connections to come back.
            self.pool.close().await;
            Ok(())
        })
    }
}
