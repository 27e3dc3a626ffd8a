-- One pgbench transaction = one Confab batch of :batch messages, stored the
-- way PostgresStore::append_once stores them: take the room's counter row
-- under its row lock and bump it by the batch size (UPDATE ... RETURNING),
-- insert :batch rows with the seqs below the new head, commit (one WAL
-- flush, synchronous_commit as the server configures it).
-- pgbench -n -f gapless_insert.sql -D rooms=N -D senders=N -D batch=100
\set room random(1, :rooms)
\set sender random(1, :senders)
BEGIN;
UPDATE heads
   SET head_seq = head_seq + :batch,
       last_activity_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint
 WHERE id = :room
RETURNING head_seq AS head \gset
INSERT INTO messages (room_id, seq, message_id, sender_id, client_msg_id, text, kind, server_ts_ms)
SELECT :room,
       :head - :batch + g,
       :room || '-' || (:head - :batch + g),
       :sender,
       'c-' || :room || '-' || (:head - :batch + g),
       repeat('x', 64),
       1,
       (extract(epoch FROM clock_timestamp()) * 1000)::bigint
  FROM generate_series(1, :batch) AS g;
COMMIT;
