-- nself-audit: signed checkpoints of each account's chain head.
-- A checkpoint is append-only like the events, isolated by account with
-- row-level security (ENABLE + FORCE), readable and insertable by the app
-- role only.

CREATE TABLE np_nself_audit.np_audit_checkpoints (
    source_account_id text        COLLATE "C" NOT NULL DEFAULT 'primary',
    seq               bigint      NOT NULL CHECK (seq > 0),
    hash              text        NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    created_at        timestamptz NOT NULL,
    prev_signature    text        NOT NULL,
    key_id            text        NOT NULL,
    signature         text        NOT NULL,
    PRIMARY KEY (source_account_id, seq)
);

CREATE TRIGGER trg_audit_immutable
    BEFORE UPDATE OR DELETE ON np_nself_audit.np_audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION np_nself_audit.audit_immutable();
CREATE TRIGGER trg_audit_immutable_truncate
    BEFORE TRUNCATE ON np_nself_audit.np_audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION np_nself_audit.audit_immutable();
ALTER TABLE np_nself_audit.np_audit_checkpoints ENABLE ALWAYS TRIGGER trg_audit_immutable;
ALTER TABLE np_nself_audit.np_audit_checkpoints ENABLE ALWAYS TRIGGER trg_audit_immutable_truncate;

ALTER TABLE np_nself_audit.np_audit_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE np_nself_audit.np_audit_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY np_audit_checkpoints_account ON np_nself_audit.np_audit_checkpoints
    USING (source_account_id = current_setting('app.source_account_id', true))
    WITH CHECK (source_account_id = current_setting('app.source_account_id', true));
GRANT SELECT, INSERT ON np_nself_audit.np_audit_checkpoints TO nself_audit_app;

-- The checkpointer lists which accounts are due: with app.list_accounts set
-- to 'on' for its transaction, the app role may read every account's head
-- and checkpoints (never events). Policies are permissive: this widens
-- SELECT only for that transaction.
CREATE POLICY np_audit_chain_heads_list ON np_nself_audit.np_audit_chain_heads FOR SELECT
    USING (current_setting('app.list_accounts', true) = 'on');
CREATE POLICY np_audit_checkpoints_list ON np_nself_audit.np_audit_checkpoints FOR SELECT
    USING (current_setting('app.list_accounts', true) = 'on');
