-- Confab reference server schema for PostgreSQL, version 1.
--
-- The same tables, keys and meaning as the SQLite schema one directory up
-- (../0001_initial.sql); only the types are PostgreSQL's. sqlx's SQLite
-- migrator reads only the files of that directory, never this one.
--
-- Ids come from identity columns: a rolled-back insert leaves a hole in
-- them, which is harmless for ids. Per-room seqs must be gapless (§8.2), so
-- they never come from a sequence: each is rooms.head_seq + n, written by
-- the transaction that stores the message, under the row lock of the head.

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT   NOT NULL UNIQUE,
    -- argon2id PHC string (§15): algorithm, parameters, salt and hash.
    password_hash TEXT   NOT NULL,
    created_ms    BIGINT NOT NULL
);

-- Bearer tokens are stored only as the SHA-256 hex digest of the token
-- string, so a copy of the database lets nobody log in (§15).
CREATE TABLE tokens (
    token_hash    TEXT    PRIMARY KEY,
    user_id       BIGINT  NOT NULL REFERENCES users(id),
    created_ms    BIGINT  NOT NULL,
    expires_ms    BIGINT  NOT NULL,
    revoked       BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE rooms (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             TEXT   NOT NULL UNIQUE,
    topic            TEXT   NOT NULL DEFAULT '',
    -- Opaque and random, fixed when the room's sequence space is created (§10.2).
    epoch            TEXT   NOT NULL,
    -- Highest seq stored in the room; bumped in the transaction that stores
    -- the message, under this row's lock, so seqs are gapless (§8.2).
    head_seq         BIGINT NOT NULL DEFAULT 0,
    created_ms       BIGINT NOT NULL,
    last_activity_ms BIGINT NOT NULL
);

CREATE TABLE members (
    room_id    BIGINT NOT NULL REFERENCES rooms(id),
    user_id    BIGINT NOT NULL REFERENCES users(id),
    joined_ms  BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX members_by_user ON members(user_id);

CREATE TABLE messages (
    room_id       BIGINT  NOT NULL REFERENCES rooms(id),
    seq           BIGINT  NOT NULL,
    -- UUIDv7 string, globally unique (§8.2).
    message_id    TEXT    NOT NULL UNIQUE,
    sender_id     BIGINT  NOT NULL REFERENCES users(id),
    client_msg_id TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    kind          INTEGER NOT NULL,
    server_ts_ms  BIGINT  NOT NULL,
    PRIMARY KEY (room_id, seq),
    -- Idempotency key (§8.5); postgres.rs matches this name to retry a
    -- batch that lost a race for a key to another node.
    CONSTRAINT messages_idempotency_key UNIQUE (sender_id, client_msg_id)
);
