-- Version 3: limits shared by every node of a cluster (§12.5, §15.3).
--
-- A single node keeps these in memory; nodes of one cluster must see the
-- same budget for a user whichever node they reach, so cluster mode keeps
-- them here. Each row is read under its lock, updated by the server with
-- the same rule a single node applies (confab_protocol::limits::StoredBucket,
-- auth::lockout_after), and written back in that transaction.

-- One token bucket per key, e.g. 'send:alice'.
CREATE TABLE rate_buckets (
    key        TEXT             PRIMARY KEY,
    tokens     DOUBLE PRECISION NOT NULL,
    updated_ms BIGINT           NOT NULL
);

-- Failed logins per (throttle key of a) username, and its lockout.
CREATE TABLE login_failures (
    username        TEXT    PRIMARY KEY,
    failures        INTEGER NOT NULL,
    locked_until_ms BIGINT  NOT NULL
);
