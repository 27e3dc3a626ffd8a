-- Confab reference server schema, version 1.
--
-- Users and rooms have integer ids so messages and memberships stay small;
-- names are UNIQUE and immutable, which is what the protocol addresses them by.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    -- argon2id PHC string (§15): algorithm, parameters, salt and hash.
    password_hash TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL
);

-- Bearer tokens are stored only as the SHA-256 hex digest of the token
-- string, so a copy of the database lets nobody log in (§15).
CREATE TABLE tokens (
    token_hash    TEXT    PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    revoked       INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE rooms (
    id               INTEGER PRIMARY KEY,
    name             TEXT    NOT NULL UNIQUE,
    topic            TEXT    NOT NULL DEFAULT '',
    -- Opaque and random, fixed when the room's sequence space is created (§10.2).
    epoch            TEXT    NOT NULL,
    -- Highest seq stored in the room; bumped in the transaction that stores
    -- the message, so seqs are gapless (§8.2).
    head_seq         INTEGER NOT NULL DEFAULT 0,
    created_ms       INTEGER NOT NULL,
    last_activity_ms INTEGER NOT NULL
);

CREATE TABLE members (
    room_id    INTEGER NOT NULL REFERENCES rooms(id),
    user_id    INTEGER NOT NULL REFERENCES users(id),
    joined_ms  INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX members_by_user ON members(user_id);

CREATE TABLE messages (
    room_id       INTEGER NOT NULL REFERENCES rooms(id),
    seq           INTEGER NOT NULL,
    -- UUIDv7 string, globally unique (§8.2).
    message_id    TEXT    NOT NULL UNIQUE,
    sender_id     INTEGER NOT NULL REFERENCES users(id),
    client_msg_id TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    kind          INTEGER NOT NULL,
    server_ts_ms  INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq),
    -- Idempotency key (§8.5).
    UNIQUE (sender_id, client_msg_id)
) WITHOUT ROWID;
