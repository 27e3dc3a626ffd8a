-- Version 2: a per-room membership version, as ../0002_member_version.sql.
--
-- Bumped by every add or remove that changes the room's members, in the
-- transaction that changes them, so a node that compares it with the
-- version it holds learns from PostgreSQL alone that a membership changed
-- on another node, even when the NATS event saying so was lost.
ALTER TABLE rooms ADD COLUMN member_version BIGINT NOT NULL DEFAULT 0;
