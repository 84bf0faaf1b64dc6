-- Signed checkpoints: each row states that an account's chain had this head
-- (seq, hash) at created_at (INTEGER microseconds since the Unix epoch,
-- UTC), signed with the key key_id over the previous checkpoint's signature
-- too (prev_signature, '' for an account's first). The store writes them in
-- a BEGIN IMMEDIATE transaction after reading the chain head, so an
-- account's checkpoints follow one another whoever writes them.
CREATE TABLE np_audit_checkpoints (
    source_account_id TEXT    NOT NULL,
    seq               INTEGER NOT NULL CHECK (seq > 0),
    hash              TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    prev_signature    TEXT    NOT NULL,
    key_id            TEXT    NOT NULL,
    signature         TEXT    NOT NULL,
    PRIMARY KEY (source_account_id, seq)
) STRICT, WITHOUT ROWID;

-- Append-only, for every connection, like np_audit_events. A new
-- checkpoint must lie beyond its account's latest one, at a stored event
-- (seq and hash), and carry the latest one's signature as prev_signature:
-- the checkpoints of an account form one chain, and INSERT OR REPLACE
-- (whose implicit delete fires no DELETE trigger) cannot displace a row.
CREATE TRIGGER trg_audit_immutable_checkpoints_update BEFORE UPDATE ON np_audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'np_audit_checkpoints is append-only: UPDATE is not allowed');
END;
CREATE TRIGGER trg_audit_immutable_checkpoints_delete BEFORE DELETE ON np_audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'np_audit_checkpoints is append-only: DELETE is not allowed');
END;
CREATE TRIGGER trg_audit_immutable_checkpoints_insert BEFORE INSERT ON np_audit_checkpoints
WHEN NEW.seq <= coalesce((SELECT max(seq) FROM np_audit_checkpoints
                          WHERE source_account_id = NEW.source_account_id), 0)
  OR NEW.prev_signature IS NOT coalesce((SELECT signature FROM np_audit_checkpoints
                                         WHERE source_account_id = NEW.source_account_id
                                         ORDER BY seq DESC LIMIT 1), '')
  OR NOT EXISTS (SELECT 1 FROM np_audit_events
                 WHERE source_account_id = NEW.source_account_id AND seq = NEW.seq AND hash = NEW.hash)
BEGIN
    SELECT RAISE(ABORT, 'np_audit_checkpoints is append-only: a checkpoint must follow its account''s latest one, at a stored event');
END;
