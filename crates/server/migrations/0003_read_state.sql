-- Version 3: read state (spec §11.3).
--
-- One read marker per user and room. No row means 0: nothing read, so
-- members from before this version see every stored message as unread
-- once, as the spec's counts say they are. A new member's marker starts at
-- the room's head (Store::add_member).
CREATE TABLE read_markers (
    user_id  INTEGER NOT NULL REFERENCES users(id),
    room_id  INTEGER NOT NULL REFERENCES rooms(id),
    read_seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id)
) WITHOUT ROWID;

-- Who each message mentions (confab_protocol::read::mentions, at most 50
-- names per message), written in the transaction that stores the message,
-- so mention_count is an index range count and no text is re-read.
-- Messages stored before this version mention nobody.
CREATE TABLE mentions (
    username TEXT    NOT NULL,
    room_id  INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (username, room_id, seq)
) WITHOUT ROWID;
