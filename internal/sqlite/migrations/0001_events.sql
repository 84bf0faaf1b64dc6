-- nself-audit on SQLite: the append-only, hash-chained event table, the
-- chain heads and the idempotency keys. The same columns as the PostgreSQL
-- schema (migrations/0001_events.sql at the repository root), with SQLite
-- types: times are INTEGER microseconds since the Unix epoch (UTC), ids are
-- canonical lowercase UUID text (so BINARY order is PostgreSQL's uuid order)
-- and metadata is the RFC 8785 text exactly as it was hashed. Text compares
-- with the BINARY collation, bytewise like PostgreSQL's "C".
--
-- SQLite has no row-level security: the store adds source_account_id = ?
-- (and actor_id = ? for actor-scoped callers) to every query.

-- CHECK constraints hold the enums and what needs no SQL function. A
-- function in a CHECK (length, unhex, json_valid, GLOB...) makes SQLite keep
-- a statement journal for every multi-row INSERT, which cost about 15% of
-- batch throughput; the formats of id, hashes and metadata come from the
-- store itself (uuid.String, hex SHA-256, RFC 8785 text) and the hash chain
-- covers them.
CREATE TABLE np_audit_events (
    id                TEXT    NOT NULL PRIMARY KEY,
    source_account_id TEXT    NOT NULL DEFAULT 'primary',
    seq               INTEGER NOT NULL CHECK (seq > 0),
    occurred_at       INTEGER NOT NULL,
    recorded_at       INTEGER NOT NULL,
    actor_id          TEXT    NOT NULL DEFAULT '',
    actor_type        TEXT    NOT NULL
        CHECK (actor_type IN ('user', 'system', 'plugin', 'api_key', 'service')),
    action            TEXT    NOT NULL CHECK (action <> ''),
    resource_type     TEXT    NOT NULL DEFAULT '',
    resource_id       TEXT    NOT NULL DEFAULT '',
    outcome           TEXT    NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    severity          TEXT    NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    ip_address        TEXT    NOT NULL DEFAULT '',
    user_agent        TEXT    NOT NULL DEFAULT '',
    request_id        TEXT    NOT NULL DEFAULT '',
    source            TEXT    NOT NULL DEFAULT '',
    metadata          TEXT    NOT NULL DEFAULT '{}',
    prev_hash         TEXT    NOT NULL,
    hash              TEXT    NOT NULL
) STRICT;

-- The indexes of the PostgreSQL schema: each ends with the sort key, so a
-- page is an index range scan in either direction.
CREATE INDEX np_audit_events_account_time ON np_audit_events
    (source_account_id, occurred_at DESC, id DESC);
CREATE INDEX np_audit_events_actor ON np_audit_events
    (source_account_id, actor_id, occurred_at DESC, id DESC);
CREATE INDEX np_audit_events_action ON np_audit_events
    (source_account_id, action, occurred_at DESC, id DESC);
CREATE INDEX np_audit_events_resource ON np_audit_events
    (source_account_id, resource_type, resource_id, occurred_at DESC, id DESC);
CREATE UNIQUE INDEX np_audit_events_chain ON np_audit_events
    (source_account_id, seq);

-- Append-only, for every connection: UPDATE and DELETE fail (DELETE without
-- WHERE too: SQLite skips its truncate optimisation on tables with
-- triggers). An insert must be its account's next seq and a new id: that
-- keeps chains gap-free at the database level and stops INSERT OR REPLACE,
-- which would delete the row it displaces without firing DELETE triggers.
-- That trigger raises FAIL, not ABORT, for the same statement-journal reason
-- as above; the store rolls back the whole transaction on any error anyway.
CREATE TRIGGER trg_audit_immutable_update BEFORE UPDATE ON np_audit_events
BEGIN
    SELECT RAISE(ABORT, 'np_audit_events is append-only: UPDATE is not allowed');
END;
CREATE TRIGGER trg_audit_immutable_delete BEFORE DELETE ON np_audit_events
BEGIN
    SELECT RAISE(ABORT, 'np_audit_events is append-only: DELETE is not allowed');
END;
CREATE TRIGGER trg_audit_immutable_insert BEFORE INSERT ON np_audit_events
WHEN NEW.seq IS NOT (SELECT coalesce(max(seq), 0) + 1 FROM np_audit_events
                     WHERE source_account_id = NEW.source_account_id)
  OR EXISTS (SELECT 1 FROM np_audit_events WHERE id = NEW.id)
BEGIN
    SELECT RAISE(FAIL, 'np_audit_events is append-only: an event must be its account''s next seq, with a new id');
END;

-- The head of each account's chain. The writer reads it inside its BEGIN
-- IMMEDIATE transaction, which holds the database's one write lock, so
-- writers in one process or many append one after another. The head may only
-- move forward and only to an event that is stored.
CREATE TABLE np_audit_chain_heads (
    source_account_id TEXT    NOT NULL PRIMARY KEY,
    seq               INTEGER NOT NULL CHECK (seq > 0),
    hash              TEXT    NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TRIGGER trg_audit_head_insert BEFORE INSERT ON np_audit_chain_heads
WHEN NOT EXISTS (SELECT 1 FROM np_audit_events
                 WHERE source_account_id = NEW.source_account_id AND seq = NEW.seq AND hash = NEW.hash)
BEGIN
    SELECT RAISE(ABORT, 'np_audit_chain_heads: the head must be a stored event');
END;
CREATE TRIGGER trg_audit_head_update BEFORE UPDATE ON np_audit_chain_heads
WHEN NEW.source_account_id <> OLD.source_account_id OR NEW.seq <= OLD.seq
  OR NOT EXISTS (SELECT 1 FROM np_audit_events
                 WHERE source_account_id = NEW.source_account_id AND seq = NEW.seq AND hash = NEW.hash)
BEGIN
    SELECT RAISE(ABORT, 'np_audit_chain_heads: the head only moves forward, to a stored event');
END;
CREATE TRIGGER trg_audit_head_delete BEFORE DELETE ON np_audit_chain_heads
BEGIN
    SELECT RAISE(ABORT, 'np_audit_chain_heads: DELETE is not allowed');
END;

-- Idempotency keys: one event per account and key, for ever.
CREATE TABLE np_audit_idempotency (
    source_account_id TEXT    NOT NULL,
    idempotency_key   TEXT    NOT NULL,
    fingerprint       TEXT    NOT NULL,
    event_id          TEXT    NOT NULL REFERENCES np_audit_events (id),
    occurred_at       INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (source_account_id, idempotency_key)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER trg_audit_immutable_idempotency_update BEFORE UPDATE ON np_audit_idempotency
BEGIN
    SELECT RAISE(ABORT, 'np_audit_idempotency is append-only: UPDATE is not allowed');
END;
CREATE TRIGGER trg_audit_immutable_idempotency_delete BEFORE DELETE ON np_audit_idempotency
BEGIN
    SELECT RAISE(ABORT, 'np_audit_idempotency is append-only: DELETE is not allowed');
END;
CREATE TRIGGER trg_audit_immutable_idempotency_insert BEFORE INSERT ON np_audit_idempotency
WHEN EXISTS (SELECT 1 FROM np_audit_idempotency
             WHERE source_account_id = NEW.source_account_id AND idempotency_key = NEW.idempotency_key)
  OR NOT EXISTS (SELECT 1 FROM np_audit_events
                 WHERE id = NEW.event_id AND source_account_id = NEW.source_account_id)
BEGIN
    SELECT RAISE(FAIL, 'np_audit_idempotency is append-only: a key cannot be replaced, and names an event of its account');
END;
