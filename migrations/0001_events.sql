-- nself-audit: the append-only, hash-chained, account-isolated event table.
-- Applied by the service at boot (and by `nself-audit migrate`) in one
-- transaction with its ledger row; the runner creates the schema first.

-- The NOLOGIN role every query of the service runs under (SET LOCAL ROLE), so
-- row-level security holds even when DATABASE_URL is a superuser. Roles are
-- cluster-wide: another database may have created it already.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nself_audit_app') THEN
        CREATE ROLE nself_audit_app NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- A non-superuser owner must be a member to SET ROLE to it.
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'nself_audit_app', 'MEMBER') THEN
        EXECUTE format('GRANT nself_audit_app TO %I', current_user);
    END IF;
END
$$;

GRANT USAGE ON SCHEMA np_nself_audit TO nself_audit_app;

-- Text columns that are compared or sorted use the C collation: bytewise
-- order makes action prefix ranges ('user.' <= action < 'user/') index-able
-- and keeps the order identical on every store.
CREATE TABLE np_nself_audit.np_audit_events (
    id                uuid        NOT NULL,
    source_account_id text        COLLATE "C" NOT NULL DEFAULT 'primary',
    seq               bigint      NOT NULL CHECK (seq > 0),
    occurred_at       timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL,
    actor_id          text        COLLATE "C" NOT NULL DEFAULT '',
    actor_type        text        COLLATE "C" NOT NULL
        CHECK (actor_type IN ('user', 'system', 'plugin', 'api_key', 'service')),
    action            text        COLLATE "C" NOT NULL CHECK (action <> '' AND length(action) <= 128),
    resource_type     text        COLLATE "C" NOT NULL DEFAULT '',
    resource_id       text        COLLATE "C" NOT NULL DEFAULT '',
    outcome           text        COLLATE "C" NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    severity          text        COLLATE "C" NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    ip_address        text        COLLATE "C" NOT NULL DEFAULT '',
    user_agent        text        NOT NULL DEFAULT '',
    request_id        text        COLLATE "C" NOT NULL DEFAULT '',
    source            text        COLLATE "C" NOT NULL DEFAULT '',
    -- json, not jsonb: the text is kept byte for byte as it was hashed
    -- (RFC 8785), so reads and verification never re-encode it.
    metadata          json        NOT NULL DEFAULT '{}',
    prev_hash         text        NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash              text        NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);

COMMENT ON TABLE np_nself_audit.np_audit_events IS
    'nself-audit events: append-only (trg_audit_immutable), hash-chained per source_account_id, row-level isolated by source_account_id.';

-- Indexes serve the list filters; each ends with the sort key so a page is
-- an index range scan. They are created on every partition.
CREATE INDEX np_audit_events_account_time ON np_nself_audit.np_audit_events
    (source_account_id, occurred_at DESC, id DESC);
CREATE INDEX np_audit_events_actor ON np_nself_audit.np_audit_events
    (source_account_id, actor_id, occurred_at DESC, id DESC);
CREATE INDEX np_audit_events_action ON np_nself_audit.np_audit_events
    (source_account_id, action, occurred_at DESC, id DESC);
CREATE INDEX np_audit_events_resource ON np_nself_audit.np_audit_events
    (source_account_id, resource_type, resource_id, occurred_at DESC, id DESC);
CREATE INDEX np_audit_events_chain ON np_nself_audit.np_audit_events
    (source_account_id, seq);

-- Append-only, for every role: UPDATE and DELETE fail row by row; TRUNCATE
-- fails per statement (statement triggers do not reach partitions, so
-- ensure_partitions adds one to each partition too).
CREATE FUNCTION np_nself_audit.audit_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'np_audit_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER trg_audit_immutable
    BEFORE UPDATE OR DELETE ON np_nself_audit.np_audit_events
    FOR EACH ROW EXECUTE FUNCTION np_nself_audit.audit_immutable();
CREATE TRIGGER trg_audit_immutable_truncate
    BEFORE TRUNCATE ON np_nself_audit.np_audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION np_nself_audit.audit_immutable();
-- ALWAYS: the triggers fire under session_replication_role = replica too,
-- the usual way to skip triggers. (A superuser can still disable them
-- explicitly; see docs/SECURITY.md.)
ALTER TABLE np_nself_audit.np_audit_events ENABLE ALWAYS TRIGGER trg_audit_immutable;
ALTER TABLE np_nself_audit.np_audit_events ENABLE ALWAYS TRIGGER trg_audit_immutable_truncate;

-- Row-level isolation. The policy reads the account (and, for callers who
-- may only see their own events, the actor) set per transaction with
-- set_config(..., true). Unset means no rows.
ALTER TABLE np_nself_audit.np_audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE np_nself_audit.np_audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY np_audit_events_account ON np_nself_audit.np_audit_events
    USING (
        source_account_id = current_setting('app.source_account_id', true)
        AND (coalesce(current_setting('app.actor_id', true), '') = ''
             OR actor_id = current_setting('app.actor_id', true))
    )
    WITH CHECK (source_account_id = current_setting('app.source_account_id', true));

GRANT SELECT, INSERT ON np_nself_audit.np_audit_events TO nself_audit_app;

-- The head of each account's chain: the row the writer locks (with an upsert,
-- which also creates it) so that concurrent writers, in one process or many,
-- append one after another.
CREATE TABLE np_nself_audit.np_audit_chain_heads (
    source_account_id text        COLLATE "C" NOT NULL DEFAULT 'primary' PRIMARY KEY,
    seq               bigint      NOT NULL,
    hash              text        NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
-- A head only moves forward, and only to an event that is stored with that
-- seq and hash: even the app role cannot rewind a chain to fork it.
CREATE FUNCTION np_nself_audit.chain_head_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
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
    IF NEW.seq > OLD.seq AND NOT EXISTS (
        SELECT 1 FROM np_nself_audit.np_audit_events e
        WHERE e.source_account_id = NEW.source_account_id AND e.seq = NEW.seq AND e.hash = NEW.hash) THEN
        RAISE EXCEPTION 'a chain head must name a stored event' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER trg_audit_chain_head_guard
    BEFORE INSERT OR UPDATE OR DELETE ON np_nself_audit.np_audit_chain_heads
    FOR EACH ROW EXECUTE FUNCTION np_nself_audit.chain_head_guard();
ALTER TABLE np_nself_audit.np_audit_chain_heads ENABLE ALWAYS TRIGGER trg_audit_chain_head_guard;

ALTER TABLE np_nself_audit.np_audit_chain_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE np_nself_audit.np_audit_chain_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY np_audit_chain_heads_account ON np_nself_audit.np_audit_chain_heads
    USING (source_account_id = current_setting('app.source_account_id', true))
    WITH CHECK (source_account_id = current_setting('app.source_account_id', true));
GRANT SELECT, INSERT, UPDATE ON np_nself_audit.np_audit_chain_heads TO nself_audit_app;

-- Idempotency keys: one event per account and key, for ever.
CREATE TABLE np_nself_audit.np_audit_idempotency (
    source_account_id text        COLLATE "C" NOT NULL DEFAULT 'primary',
    idempotency_key   text        COLLATE "C" NOT NULL,
    fingerprint       text        NOT NULL,
    event_id          uuid        NOT NULL,
    occurred_at       timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_account_id, idempotency_key)
);
CREATE TRIGGER trg_audit_immutable
    BEFORE UPDATE OR DELETE ON np_nself_audit.np_audit_idempotency
    FOR EACH ROW EXECUTE FUNCTION np_nself_audit.audit_immutable();
CREATE TRIGGER trg_audit_immutable_truncate
    BEFORE TRUNCATE ON np_nself_audit.np_audit_idempotency
    FOR EACH STATEMENT EXECUTE FUNCTION np_nself_audit.audit_immutable();
ALTER TABLE np_nself_audit.np_audit_idempotency ENABLE ALWAYS TRIGGER trg_audit_immutable;
ALTER TABLE np_nself_audit.np_audit_idempotency ENABLE ALWAYS TRIGGER trg_audit_immutable_truncate;
ALTER TABLE np_nself_audit.np_audit_idempotency ENABLE ROW LEVEL SECURITY;
ALTER TABLE np_nself_audit.np_audit_idempotency FORCE ROW LEVEL SECURITY;
CREATE POLICY np_audit_idempotency_account ON np_nself_audit.np_audit_idempotency
    USING (source_account_id = current_setting('app.source_account_id', true))
    WITH CHECK (source_account_id = current_setting('app.source_account_id', true));
GRANT SELECT, INSERT ON np_nself_audit.np_audit_idempotency TO nself_audit_app;

-- Monthly partitions, created ahead by the service (at boot and hourly) as
-- the owner, never as nself_audit_app. Rows outside every monthly partition
-- (events dated before the service was installed) land in the default
-- partition. Each partition gets RLS ENABLE + FORCE (nself doctor checks every
-- np_ table) and its own TRUNCATE guard.
CREATE FUNCTION np_nself_audit.protect_partition(part regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', part);
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = part AND tgname = 'trg_audit_immutable_truncate') THEN
        EXECUTE format('CREATE TRIGGER trg_audit_immutable_truncate BEFORE TRUNCATE ON %s
                        FOR EACH STATEMENT EXECUTE FUNCTION np_nself_audit.audit_immutable()', part);
    END IF;
    -- The row trigger is cloned from the parent; make both fire always.
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER trg_audit_immutable', part);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER trg_audit_immutable_truncate', part);
END
$$;

CREATE FUNCTION np_nself_audit.ensure_partitions(months_ahead int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    m date;
    name text;
    created int := 0;
BEGIN
    -- One caller at a time, across processes.
    PERFORM pg_advisory_xact_lock(hashtext('np_nself_audit.ensure_partitions'));
    FOR i IN 0..months_ahead LOOP
        m := (first + make_interval(months => i))::date;
        name := format('np_audit_events_p%s', to_char(m, 'YYYYMM'));
        IF to_regclass(format('np_nself_audit.%I', name)) IS NULL THEN
            EXECUTE format('CREATE TABLE np_nself_audit.%I PARTITION OF np_nself_audit.np_audit_events
                            FOR VALUES FROM (%L) TO (%L)',
                           name, (m::timestamp AT TIME ZONE 'UTC'),
                           ((m + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
            PERFORM np_nself_audit.protect_partition(format('np_nself_audit.%I', name)::regclass);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

CREATE TABLE np_nself_audit.np_audit_events_default PARTITION OF np_nself_audit.np_audit_events DEFAULT;
SELECT np_nself_audit.protect_partition('np_nself_audit.np_audit_events_default');
SELECT np_nself_audit.ensure_partitions(2);
