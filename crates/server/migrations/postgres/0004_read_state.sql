-- Version 4: read state (spec §11.3); see the SQLite migration 0003 for
-- what the tables mean.
CREATE TABLE read_markers (
    user_id  BIGINT NOT NULL REFERENCES users(id),
    room_id  BIGINT NOT NULL REFERENCES rooms(id),
    read_seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

CREATE TABLE mentions (
    username TEXT   NOT NULL,
    room_id  BIGINT NOT NULL,
    seq      BIGINT NOT NULL,
    PRIMARY KEY (username, room_id, seq)
);
