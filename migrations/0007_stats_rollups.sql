-- nself-audit: rollups that answer GET /api/v1/stats for a whole account
-- without counting its events.
--
-- The writer adds each batch's counts in the same transaction as the batch,
-- after it has moved (and so holds) the account's chain head: the rollups
-- always match the committed events, and writers of one account update
-- them one after another. They are derived data, outside the hash chain:
-- verification never reads them, and they can be rebuilt from the events
-- (this migration's backfill is that rebuild).

-- Events per combination of the dimensions the stats break down by.
CREATE TABLE np_nself_audit.np_audit_stats_dims (
    source_account_id text   COLLATE "C" NOT NULL DEFAULT 'primary',
    action            text   COLLATE "C" NOT NULL,
    actor_type        text   COLLATE "C" NOT NULL,
    outcome           text   COLLATE "C" NOT NULL,
    severity          text   COLLATE "C" NOT NULL,
    events            bigint NOT NULL CHECK (events > 0),
    PRIMARY KEY (source_account_id, action, actor_type, outcome, severity)
);
-- Events per hour of occurred_at (UTC): the timeline.
CREATE TABLE np_nself_audit.np_audit_stats_hours (
    source_account_id text      COLLATE "C" NOT NULL DEFAULT 'primary',
    hour              timestamp NOT NULL, -- UTC, truncated to the hour
    events            bigint    NOT NULL CHECK (events > 0),
    PRIMARY KEY (source_account_id, hour)
);
-- Every actor_id seen (but ''): distinct_actors.
CREATE TABLE np_nself_audit.np_audit_stats_actors (
    source_account_id text COLLATE "C" NOT NULL DEFAULT 'primary',
    actor_id          text COLLATE "C" NOT NULL CHECK (actor_id <> ''),
    PRIMARY KEY (source_account_id, actor_id)
);

-- Backfill from the events already stored. A non-superuser owner is held
-- to FORCEd row-level security like everyone: lift it on the events for
-- this transaction only, so the backfill sees every account.
ALTER TABLE np_nself_audit.np_audit_events NO FORCE ROW LEVEL SECURITY;
INSERT INTO np_nself_audit.np_audit_stats_dims
SELECT source_account_id, action, actor_type, outcome, severity, count(*)
FROM np_nself_audit.np_audit_events GROUP BY 1, 2, 3, 4, 5;
INSERT INTO np_nself_audit.np_audit_stats_hours
SELECT source_account_id, date_trunc('hour', occurred_at AT TIME ZONE 'UTC'), count(*)
FROM np_nself_audit.np_audit_events GROUP BY 1, 2;
INSERT INTO np_nself_audit.np_audit_stats_actors
SELECT DISTINCT source_account_id, actor_id
FROM np_nself_audit.np_audit_events WHERE actor_id <> '';
ALTER TABLE np_nself_audit.np_audit_events FORCE ROW LEVEL SECURITY;

-- Counts only grow: rows are never deleted, and no table is truncated.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['np_audit_stats_dims', 'np_audit_stats_hours', 'np_audit_stats_actors'] LOOP
        EXECUTE format('CREATE TRIGGER trg_audit_immutable BEFORE DELETE ON np_nself_audit.%I
                        FOR EACH ROW EXECUTE FUNCTION np_nself_audit.audit_immutable()', t);
        EXECUTE format('CREATE TRIGGER trg_audit_immutable_truncate BEFORE TRUNCATE ON np_nself_audit.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION np_nself_audit.audit_immutable()', t);
        EXECUTE format('ALTER TABLE np_nself_audit.%I ENABLE ALWAYS TRIGGER trg_audit_immutable', t);
        EXECUTE format('ALTER TABLE np_nself_audit.%I ENABLE ALWAYS TRIGGER trg_audit_immutable_truncate', t);
        EXECUTE format('ALTER TABLE np_nself_audit.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE np_nself_audit.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON np_nself_audit.%I
                        USING (source_account_id = current_setting(''app.source_account_id'', true))
                        WITH CHECK (source_account_id = current_setting(''app.source_account_id'', true))',
                       t || '_account', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE ON np_nself_audit.np_audit_stats_dims TO nself_audit_app;
GRANT SELECT, INSERT, UPDATE ON np_nself_audit.np_audit_stats_hours TO nself_audit_app;
GRANT SELECT, INSERT ON np_nself_audit.np_audit_stats_actors TO nself_audit_app;
