-- nself-audit: move a chain head in the same round trip as the insert.
--
-- The writer keeps each account's head in memory and sends the insert of a
-- batch linked to it, the keys and this call as one pipelined transaction.
-- The call moves the head only from the head the batch was linked to: if
-- another writer (another process on the same database) moved it first, it
-- raises NSA01 and the whole transaction rolls back; the writer then takes
-- the slow path, which locks the head and reads it. The row lock of the
-- UPDATE also orders concurrent writers: the second waits for the first to
-- commit, then sees the head moved.
CREATE FUNCTION np_nself_audit.advance_chain_head(
    account text, from_seq bigint, from_hash text, to_seq bigint, to_hash text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE np_nself_audit.np_audit_chain_heads
       SET seq = to_seq, hash = to_hash, updated_at = now()
     WHERE source_account_id = account AND seq = from_seq AND hash = from_hash;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the chain head of account % is not at seq %', account, from_seq
            USING ERRCODE = 'NSA01';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION np_nself_audit.advance_chain_head(text, bigint, text, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION np_nself_audit.advance_chain_head(text, bigint, text, bigint, text) TO nself_audit_app;
