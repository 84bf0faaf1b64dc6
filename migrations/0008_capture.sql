-- nself-audit: table capture without Hasura (issue 9). `nself-audit capture
-- add schema.table` attaches np_nself_audit.capture_change() to a table;
-- each INSERT, UPDATE and DELETE then lands in np_audit_capture_changes, in
-- the same transaction as the change, and the service moves the staged rows
-- into the chain (recording each move in np_audit_capture_moved). Both
-- tables are append-only, with row-level security ENABLEd and FORCEd like
-- every np_ table.

CREATE TABLE np_nself_audit.np_audit_capture_changes (
    -- Capture order: the order in which the rows were written. A
    -- transaction that waited for another's row lock writes its rows after
    -- that one committed, so for changes to the same row this is commit order.
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_account_id text        COLLATE "C" NOT NULL DEFAULT 'primary',
    captured_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    xact_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    table_schema      text        NOT NULL,
    table_name        text        NOT NULL,
    op                text        NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
    -- INSERT: new_row is the row; DELETE: old_row is the row; UPDATE: both
    -- hold only the columns that changed. Secret-looking members are
    -- already "[redacted]": secrets never reach this table.
    old_row           jsonb,
    new_row           jsonb,
    row_key           jsonb,       -- the key columns' values, an array
    actor_id          text        NOT NULL DEFAULT '',
    role              text        NOT NULL DEFAULT '',
    db_user           text        NOT NULL,
    session           jsonb       NOT NULL DEFAULT '{}'
);

COMMENT ON TABLE np_nself_audit.np_audit_capture_changes IS
    'nself-audit table capture: changes staged by np_nself_audit.capture_change(), moved into np_audit_events by the service; append-only.';

-- What the service moved, once per staged row. floor: every staged row with
-- an id up to it was moved (or belonged to a transaction that rolled back)
-- when this row was written, so a restarted mover need not look below it.
CREATE TABLE np_nself_audit.np_audit_capture_moved (
    change_id         bigint      PRIMARY KEY,
    source_account_id text        COLLATE "C" NOT NULL,
    event_id          uuid        NOT NULL,
    floor             bigint      NOT NULL,
    moved_at          timestamptz NOT NULL DEFAULT now()
);

-- Append-only, for every role, as the event tables.
CREATE TRIGGER trg_audit_immutable
    BEFORE UPDATE OR DELETE ON np_nself_audit.np_audit_capture_changes
    FOR EACH ROW EXECUTE FUNCTION np_nself_audit.audit_immutable();
CREATE TRIGGER trg_audit_immutable_truncate
    BEFORE TRUNCATE ON np_nself_audit.np_audit_capture_changes
    FOR EACH STATEMENT EXECUTE FUNCTION np_nself_audit.audit_immutable();
ALTER TABLE np_nself_audit.np_audit_capture_changes ENABLE ALWAYS TRIGGER trg_audit_immutable;
ALTER TABLE np_nself_audit.np_audit_capture_changes ENABLE ALWAYS TRIGGER trg_audit_immutable_truncate;
CREATE TRIGGER trg_audit_immutable
    BEFORE UPDATE OR DELETE ON np_nself_audit.np_audit_capture_moved
    FOR EACH ROW EXECUTE FUNCTION np_nself_audit.audit_immutable();
CREATE TRIGGER trg_audit_immutable_truncate
    BEFORE TRUNCATE ON np_nself_audit.np_audit_capture_moved
    FOR EACH STATEMENT EXECUTE FUNCTION np_nself_audit.audit_immutable();
ALTER TABLE np_nself_audit.np_audit_capture_moved ENABLE ALWAYS TRIGGER trg_audit_immutable;
ALTER TABLE np_nself_audit.np_audit_capture_moved ENABLE ALWAYS TRIGGER trg_audit_immutable_truncate;

-- Row-level security. Rows are written by capture_change(), which runs as
-- the owner (SECURITY DEFINER): no other role has INSERT on the staging
-- table, so its insert policy admits what the privilege lets through. The
-- app role reads the staged rows and writes the ledger only in the mover's
-- session, which sets app.capture to 'on'.
ALTER TABLE np_nself_audit.np_audit_capture_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE np_nself_audit.np_audit_capture_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY np_audit_capture_changes_insert ON np_nself_audit.np_audit_capture_changes
    FOR INSERT WITH CHECK (true);
CREATE POLICY np_audit_capture_changes_mover ON np_nself_audit.np_audit_capture_changes
    FOR SELECT USING (current_setting('app.capture', true) = 'on');
GRANT SELECT ON np_nself_audit.np_audit_capture_changes TO nself_audit_app;
GRANT SELECT ON SEQUENCE np_nself_audit.np_audit_capture_changes_id_seq TO nself_audit_app;

ALTER TABLE np_nself_audit.np_audit_capture_moved ENABLE ROW LEVEL SECURITY;
ALTER TABLE np_nself_audit.np_audit_capture_moved FORCE ROW LEVEL SECURITY;
CREATE POLICY np_audit_capture_moved_mover ON np_nself_audit.np_audit_capture_moved
    USING (current_setting('app.capture', true) = 'on')
    WITH CHECK (current_setting('app.capture', true) = 'on');
GRANT SELECT, INSERT ON np_nself_audit.np_audit_capture_moved TO nself_audit_app;

-- A member name looks secret when, lowercased and without _ and -, it
-- contains one of patterns (given in that form): password, token, secret,
-- apikey and the configured ones.
CREATE FUNCTION np_nself_audit.capture_secret(name text, patterns text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM unnest(patterns) AS p
                   WHERE p <> '' AND strpos(lower(translate(name, '_-', '')), p) > 0)
$$;

-- The value with every secret-looking member, at any depth, replaced by
-- "[redacted]".
CREATE FUNCTION np_nself_audit.capture_redact(j jsonb, patterns text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(j)
        WHEN 'object' THEN (
            SELECT coalesce(jsonb_object_agg(e.key,
                       CASE WHEN np_nself_audit.capture_secret(e.key, patterns) THEN '"[redacted]"'::jsonb
                            ELSE np_nself_audit.capture_redact(e.value, patterns) END), '{}'::jsonb)
            FROM jsonb_each(j) AS e)
        WHEN 'array' THEN (
            SELECT coalesce(jsonb_agg(np_nself_audit.capture_redact(a.value, patterns) ORDER BY a.n), '[]'::jsonb)
            FROM jsonb_array_elements(j) WITH ORDINALITY AS a(value, n))
        ELSE j
    END
$$;

-- The capture trigger, AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW, with
-- the arguments `nself-audit capture add` gives it: the table's schema and
-- name as captured (a partition reports its parent's), then text[] literals
-- of the key columns, the extra redaction patterns and the extra settings
-- to record. It runs as the owner, so that only it writes the staging table.
CREATE FUNCTION np_nself_audit.capture_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keys     text[] := coalesce(nullif(TG_ARGV[2], '')::text[], '{}');
    patterns text[] := ARRAY['password', 'token', 'secret', 'apikey'] || coalesce(nullif(TG_ARGV[3], '')::text[], '{}');
    names    text[] := ARRAY['hasura.user', 'request.jwt.claims', 'app.source_account_id', 'app.user_id']
                       || coalesce(nullif(TG_ARGV[4], '')::text[], '{}');
    full_old jsonb;
    full_new jsonb;
    o        jsonb;
    n        jsonb;
    k        jsonb;
    session  jsonb := '{}';
    setting  text;
    v        text;
    hasura   jsonb;
    claims   jsonb;
    hclaims  jsonb;
    db_role  text := current_setting('role');
BEGIN
    IF TG_OP <> 'INSERT' THEN full_old := to_jsonb(OLD); END IF;
    IF TG_OP <> 'DELETE' THEN full_new := to_jsonb(NEW); END IF;
    o := full_old;
    n := full_new;
    IF TG_OP = 'UPDATE' THEN
        -- Only the columns that changed; an update that changed nothing is
        -- not recorded (as Hasura does).
        SELECT jsonb_object_agg(e.key, full_old -> e.key), jsonb_object_agg(e.key, e.value)
          INTO o, n
          FROM jsonb_each(full_new) AS e
         WHERE (full_old -> e.key) IS DISTINCT FROM e.value;
        IF n IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    IF cardinality(keys) > 0 THEN
        SELECT jsonb_agg(CASE WHEN np_nself_audit.capture_secret(u.c, patterns) THEN '"[redacted]"'::jsonb
                              ELSE coalesce(coalesce(full_new, full_old) -> u.c, 'null'::jsonb) END ORDER BY u.i)
          INTO k
          FROM unnest(keys) WITH ORDINALITY AS u(c, i);
    END IF;

    -- The session's identity: PostgreSQL cannot list custom settings, so
    -- the ones recorded are named. JSON objects are kept as objects.
    FOREACH setting IN ARRAY names LOOP
        v := nullif(current_setting(setting, true), '');
        CONTINUE WHEN v IS NULL;
        IF v ~ '^\s*\{' THEN
            BEGIN
                session := session || jsonb_build_object(setting, v::jsonb);
                CONTINUE;
            EXCEPTION WHEN others THEN
                NULL; -- not JSON after all: kept as text
            END;
        END IF;
        session := session || jsonb_build_object(setting, v);
    END LOOP;
    session := np_nself_audit.capture_redact(session, patterns);
    hasura := CASE WHEN jsonb_typeof(session -> 'hasura.user') = 'object' THEN session -> 'hasura.user' END;
    claims := CASE WHEN jsonb_typeof(session -> 'request.jwt.claims') = 'object' THEN session -> 'request.jwt.claims' END;
    hclaims := CASE WHEN jsonb_typeof(claims -> 'https://hasura.io/jwt/claims') = 'object' THEN claims -> 'https://hasura.io/jwt/claims' END;

    INSERT INTO np_nself_audit.np_audit_capture_changes
        (source_account_id, table_schema, table_name, op, old_row, new_row, row_key, actor_id, role, db_user, session)
    VALUES (
        coalesce(nullif(hasura ->> 'x-hasura-source-account-id', ''),
                 nullif(hclaims ->> 'x-hasura-source-account-id', ''),
                 nullif(claims ->> 'x-hasura-source-account-id', ''),
                 nullif(session ->> 'app.source_account_id', ''),
                 nullif(coalesce(full_new, full_old) ->> 'source_account_id', ''),
                 'primary'),
        TG_ARGV[0], TG_ARGV[1], TG_OP,
        np_nself_audit.capture_redact(o, patterns),
        np_nself_audit.capture_redact(n, patterns),
        k,
        coalesce(nullif(hasura ->> 'x-hasura-user-id', ''),
                 nullif(hclaims ->> 'x-hasura-user-id', ''),
                 nullif(claims ->> 'x-hasura-user-id', ''),
                 nullif(claims ->> 'sub', ''),
                 nullif(session ->> 'app.user_id', ''),
                 ''),
        coalesce(nullif(hasura ->> 'x-hasura-role', ''),
                 nullif(hclaims ->> 'x-hasura-default-role', ''),
                 nullif(claims ->> 'role', ''),
                 ''),
        CASE WHEN db_role = 'none' THEN session_user::text ELSE db_role END,
        session);
    RETURN NULL;
END
$$;
-- Attaching the trigger needs EXECUTE on the function: only the owner
-- (`nself-audit capture add`, as DATABASE_URL's user) may.
REVOKE EXECUTE ON FUNCTION np_nself_audit.capture_change() FROM PUBLIC;
