-- nself-audit: a reader role of its own for callers who see only their own
-- events, so that the account-wide policy is a plain equality.
--
-- Before, one policy served both kinds of reader:
--   source_account_id = <account> AND (<actor unset> OR actor_id = <actor>)
-- The planner cannot evaluate current_setting() when it plans, so it gave
-- the OR clause a guessed selectivity of about 0.006 on every query. With
-- 1,061 events of one actor it expected 6, sorted them all instead of
-- reading the newest 51 through the index, and the estimate only got worse
-- as the account grew. Now:
--   nself_audit_app    (whole account; the writer, the plugin token, admin
--                       roles): source_account_id = <account>
--   nself_audit_actor  (a JWT role that reads only its own events): the
--                       account and actor_id = <actor>, SELECT only
-- Both equalities merge with the query's own conditions on the same
-- columns, so the estimates are the table's statistics again.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nself_audit_actor') THEN
        CREATE ROLE nself_audit_actor NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'nself_audit_actor', 'MEMBER') THEN
        EXECUTE format('GRANT nself_audit_actor TO %I', current_user);
    END IF;
END
$$;
GRANT USAGE ON SCHEMA np_nself_audit TO nself_audit_actor;

DROP POLICY np_audit_events_account ON np_nself_audit.np_audit_events;
CREATE POLICY np_audit_events_account ON np_nself_audit.np_audit_events TO nself_audit_app
    USING (source_account_id = current_setting('app.source_account_id', true))
    WITH CHECK (source_account_id = current_setting('app.source_account_id', true));
CREATE POLICY np_audit_events_actor ON np_nself_audit.np_audit_events FOR SELECT TO nself_audit_actor
    USING (source_account_id = current_setting('app.source_account_id', true)
           AND actor_id = current_setting('app.actor_id', true)
           AND current_setting('app.actor_id', true) <> '');
GRANT SELECT ON np_nself_audit.np_audit_events TO nself_audit_actor;
-- The live tail starts after the account's head: the head, not the events.
GRANT SELECT ON np_nself_audit.np_audit_chain_heads TO nself_audit_actor;
