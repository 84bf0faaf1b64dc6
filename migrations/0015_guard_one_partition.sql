-- nself-audit: the chain head guard looks the head's event up in one partition.
--
-- chain_head_guard (0001) checks, on every move of a head, that the new head
-- names a stored event. np_audit_events is partitioned by month of
-- occurred_at, which the lookup could not name, so it probed every
-- partition's chain index. Partitions are never dropped, so the cost of each
-- batch grew with the age of the database: with 40 monthly partitions
-- instead of 4 (64 clients posting single events, pg_stat_statements),
-- advance_chain_head took 0.28-0.56 ms per batch instead of about 0.10 ms;
-- with this migration, 0.09-0.11 ms with 40 (BENCHMARKS.md, issue 5, ninth
-- session).
--
-- A head now also records the occurred_at of the event it names, which the
-- writer knows. When a move sets it, the guard adds it to the lookup, and
-- PostgreSQL prunes the lookup to that event's partition when the plan
-- starts. A move that leaves it as it was (a binary older than this
-- migration, which does not know the column, or two heads whose events
-- share a time) is checked as before, over every partition. Either way the
-- event must exist with the head's seq and hash.

ALTER TABLE np_nself_audit.np_audit_chain_heads ADD COLUMN occurred_at timestamptz;

CREATE OR REPLACE FUNCTION np_nself_audit.chain_head_guard() RETURNS trigger
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.seq <> 0 OR NEW.hash <> repeat('0', 64) THEN
            RAISE EXCEPTION 'a chain head starts at seq 0 and the genesis hash'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' OR NEW.source_account_id <> OLD.source_account_id OR NEW.seq < OLD.seq
       OR (NEW.seq = OLD.seq AND NEW.hash <> OLD.hash) THEN
        RAISE EXCEPTION 'a chain head only moves forward' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.seq > OLD.seq THEN
        IF NEW.occurred_at IS NOT NULL AND NEW.occurred_at IS DISTINCT FROM OLD.occurred_at THEN
            IF NOT EXISTS (
                SELECT 1 FROM np_nself_audit.np_audit_events e
                WHERE e.source_account_id = NEW.source_account_id AND e.occurred_at = NEW.occurred_at
                  AND e.seq = NEW.seq AND e.hash = NEW.hash) THEN
                RAISE EXCEPTION 'a chain head must name a stored event' USING ERRCODE = 'insufficient_privilege';
            END IF;
        ELSIF NOT EXISTS (
            SELECT 1 FROM np_nself_audit.np_audit_events e
            WHERE e.source_account_id = NEW.source_account_id AND e.seq = NEW.seq AND e.hash = NEW.hash) THEN
            RAISE EXCEPTION 'a chain head must name a stored event' USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- The fast path's head move (0006), with the event's time.
CREATE FUNCTION np_nself_audit.advance_chain_head(
    account text, from_seq bigint, from_hash text, to_seq bigint, to_hash text, to_occurred_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE np_nself_audit.np_audit_chain_heads
       SET seq = to_seq, hash = to_hash, occurred_at = to_occurred_at, updated_at = now()
     WHERE source_account_id = account AND seq = from_seq AND hash = from_hash;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the chain head of account % is not at seq %', account, from_seq
            USING ERRCODE = 'NSA01';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION np_nself_audit.advance_chain_head(text, bigint, text, bigint, text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION np_nself_audit.advance_chain_head(text, bigint, text, bigint, text, timestamptz) TO nself_audit_app;

-- The five-argument version stays for binaries older than this migration:
-- it moves the head without a time, which the guard then looks up in every
-- partition.
CREATE OR REPLACE FUNCTION np_nself_audit.advance_chain_head(
    account text, from_seq bigint, from_hash text, to_seq bigint, to_hash text) RETURNS void
LANGUAGE sql AS $$
    SELECT np_nself_audit.advance_chain_head(account, from_seq, from_hash, to_seq, to_hash, NULL::timestamptz)
$$;
