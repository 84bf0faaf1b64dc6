-- nself-audit: the append-only refusal names the table it protects (the
-- function guards the events, idempotency keys, chain heads and checkpoints).
CREATE OR REPLACE FUNCTION np_nself_audit.audit_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
