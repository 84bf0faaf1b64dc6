-- nself-audit: TRUNCATE of the chain heads is refused like every other
-- change that would let a chain restart at seq 1 (the row trigger of
-- trg_audit_chain_head_guard does not see a TRUNCATE).
CREATE TRIGGER trg_audit_immutable_truncate
    BEFORE TRUNCATE ON np_nself_audit.np_audit_chain_heads
    FOR EACH STATEMENT EXECUTE FUNCTION np_nself_audit.audit_immutable();
ALTER TABLE np_nself_audit.np_audit_chain_heads ENABLE ALWAYS TRIGGER trg_audit_immutable_truncate;
