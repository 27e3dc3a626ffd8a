-- Scratch schema for gapless_insert.sql: the part of Confab's PostgreSQL
-- schema (crates/server/migrations/postgres/0001_initial.sql) that storing
-- a batch touches. `heads` stands for `rooms` (its head_seq is the per-room
-- counter the batch locks and bumps); `messages` has Confab's keys, unique
-- constraints and foreign keys, so every insert maintains the same indexes.
-- psql -v rooms=N -v senders=N -f schema.sql
CREATE TABLE users (
    id BIGINT PRIMARY KEY
);

CREATE TABLE heads (
    id               BIGINT PRIMARY KEY,
    head_seq         BIGINT NOT NULL DEFAULT 0,
    last_activity_ms BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE messages (
    room_id       BIGINT  NOT NULL REFERENCES heads(id),
    seq           BIGINT  NOT NULL,
    message_id    TEXT    NOT NULL UNIQUE,
    sender_id     BIGINT  NOT NULL REFERENCES users(id),
    client_msg_id TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    kind          INTEGER NOT NULL,
    server_ts_ms  BIGINT  NOT NULL,
    PRIMARY KEY (room_id, seq),
    CONSTRAINT messages_idempotency_key UNIQUE (sender_id, client_msg_id)
);

INSERT INTO users (id) SELECT g FROM generate_series(1, :senders) g;
INSERT INTO heads (id) SELECT g FROM generate_series(1, :rooms) g;
ANALYZE;
