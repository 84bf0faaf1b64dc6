-- nself-audit: indexes for the remaining list filters, so that a filter on
-- a rare value reads only matching rows at any table size.
--
-- severity, outcome and actor_type have a few values of which one (info,
-- success, user) is most events: scanning np_audit_events_account_time for
-- it finds a page at once, so only the other values are indexed (partial
-- indexes; the queries name these values as literals so the planner can
-- use them). source has many values: a full index.

CREATE INDEX np_audit_events_severity ON np_nself_audit.np_audit_events
    (source_account_id, severity, occurred_at DESC, id DESC) WHERE severity <> 'info';
CREATE INDEX np_audit_events_outcome ON np_nself_audit.np_audit_events
    (source_account_id, outcome, occurred_at DESC, id DESC) WHERE outcome <> 'success';
CREATE INDEX np_audit_events_actor_type ON np_nself_audit.np_audit_events
    (source_account_id, actor_type, occurred_at DESC, id DESC) WHERE actor_type <> 'user';
CREATE INDEX np_audit_events_source ON np_nself_audit.np_audit_events
    (source_account_id, source, occurred_at DESC, id DESC);
