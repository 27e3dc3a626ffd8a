-- Version 5: relations: edit, delete, reply, react (spec §8.6); see the
-- SQLite migration 0004 for what the columns and the table mean.
ALTER TABLE messages ADD COLUMN relation_kind INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN target_seq BIGINT;
ALTER TABLE messages ADD COLUMN target_id TEXT;
ALTER TABLE messages ADD COLUMN quote TEXT;
ALTER TABLE messages ADD COLUMN reaction_key TEXT;
ALTER TABLE messages ADD COLUMN redacted BOOLEAN NOT NULL DEFAULT FALSE;

CREATE INDEX messages_by_target ON messages (room_id, target_seq, seq)
    WHERE target_seq IS NOT NULL;

CREATE TABLE reactions (
    room_id    BIGINT  NOT NULL,
    target_seq BIGINT  NOT NULL,
    user_id    BIGINT  NOT NULL,
    key        TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    present    BOOLEAN NOT NULL,
    PRIMARY KEY (room_id, target_seq, user_id, key)
);
