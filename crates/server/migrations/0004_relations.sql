-- Version 4: relations: edit, delete, reply, react (spec §8.6).
--
-- A relation is a message row like any other (one seq, one idempotency
-- key). `relation_kind` says which (storage::relation_code: 0 plain, 1
-- edit, 2 deletion, 3 reply, 4 reaction added, 5 reaction removed); the
-- other columns are NULL for a plain message. Rows stored before this
-- version are plain messages.
ALTER TABLE messages ADD COLUMN relation_kind INTEGER NOT NULL DEFAULT 0;
-- The target's seq in the same room, and its message_id as sent.
ALTER TABLE messages ADD COLUMN target_seq INTEGER;
ALTER TABLE messages ADD COLUMN target_id TEXT;
-- A reply's quote of its target (§8.6.4).
ALTER TABLE messages ADD COLUMN quote TEXT;
-- A reaction's key (§8.6.5).
ALTER TABLE messages ADD COLUMN reaction_key TEXT;
-- Deleted (§8.6.3): `text` (and a reply's `quote`) emptied.
ALTER TABLE messages ADD COLUMN redacted INTEGER NOT NULL DEFAULT 0;

-- A message's edits, replies and reactions: what a deletion empties, and
-- the latest edit a reply quotes.
CREATE INDEX messages_by_target ON messages (room_id, target_seq)
    WHERE target_seq IS NOT NULL;

-- Each user's current reaction per key and message (§8.6.5): the seq of
-- the react message that set it and whether it added the key. Rows of a
-- deleted message are dropped with its content.
CREATE TABLE reactions (
    room_id    INTEGER NOT NULL,
    target_seq INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    key        TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    present    INTEGER NOT NULL,
    PRIMARY KEY (room_id, target_seq, user_id, key)
) WITHOUT ROWID;
