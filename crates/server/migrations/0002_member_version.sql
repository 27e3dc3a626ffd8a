-- Version 2: a per-room membership version.
--
-- Bumped by every add or remove that changes the room's members, in the
-- statement that changes them. A cluster node compares it with the version
-- it holds to learn, from PostgreSQL alone, that a membership changed on
-- another node (ARCHITECTURE.md, "Cluster mode"). SQLite keeps it too, so
-- both stores pass one contract suite.
ALTER TABLE rooms ADD COLUMN member_version INTEGER NOT NULL DEFAULT 0;
