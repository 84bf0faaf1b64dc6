-- nself-audit: list indexes whose key groups are few ascend in time.
--
-- 0001 and 0003 built every list index as (source_account_id, [filter
-- columns,] occurred_at DESC, id DESC), the order of a page. A new event is
-- the newest of its group, so in those indexes it landed at the group's
-- first (leftmost) position, where a full leaf page splits in half: the
-- pages stayed half empty. In ascending order it lands at the group's end,
-- where PostgreSQL splits a page so that the left half stays full (the
-- "localized monotonically increasing insertions" split of nbtsplitloc.c).
-- Pages are read backwards for the newest-first order the list asks for:
-- same plans, same index conditions.
--
-- 600,000 events in one account (1,000 actors, 8 actions, 10,000
-- resources, one source) into a copy of the table, 300,000 of them timed,
-- leaf and inner pages of each index alone:
--
--   account_time  6,498 -> 3,635 pages,  insert of 300,000 rows 1.64 -> 0.98 s
--   source        7,664 -> 4,315 pages,  1.48 -> 1.09 s
--   action        8,918 -> 8,444 pages,  1.54 -> 1.51 s
--
-- severity, outcome and actor_type have few groups too, and so has source
-- in practice: its values are the few plugins that post (0003 calls them
-- many beside severity's four; beside actors and resources they are few).
-- actor and resource keep their order: with many groups each insert lands
-- in the middle of the index whichever way it runs (actor 7,054 against
-- 7,060 pages, resource 6,734 against 6,734), so rebuilding them would only
-- cost time.
--
-- The chain index is rebuilt last, so that it is again the newest index of
-- the table. chain_head_guard (0001) looks a head up by (account, seq) on a
-- generic plan (0010), which PL/pgSQL plans once per session, often while
-- the current partition is nearly empty: every index that leads with the
-- account then costs exactly the same, and PostgreSQL keeps the index it
-- considers first, the newest. When that was the source index, each move
-- of a head walked the account's events in the source index until it met
-- the head: after 0003 that was a walk past every event of an earlier
-- source (or a later occurred_at), and with the ascending source index
-- above it was a walk through the whole account (a fresh database fell from
-- 9,000 to 2,500 single POSTs/s within 10 s). TestChainGuardPlan holds the
-- guard to the chain index; a later migration that adds an index to
-- np_audit_events must rebuild the chain index after it.
--
-- Each index is rebuilt on every partition while the migration holds the
-- table (ACCESS EXCLUSIVE from the first DROP to the commit): no replica
-- can read or write events meanwhile, and the service does not start until
-- it is done. The runner's 60 s statement_timeout would cancel a rebuild of
-- a large table, and the service would then fail to start on every try, so
-- this file lifts it for its own transaction (SET LOCAL). The runner's 5 s
-- lock_timeout stays: behind a long read (an export) the migration fails
-- and the next start tries again, rather than queueing every request
-- behind its lock.
SET LOCAL statement_timeout = 0;

DROP INDEX np_nself_audit.np_audit_events_account_time;
CREATE INDEX np_audit_events_account_time ON np_nself_audit.np_audit_events
    (source_account_id, occurred_at, id);

DROP INDEX np_nself_audit.np_audit_events_action;
CREATE INDEX np_audit_events_action ON np_nself_audit.np_audit_events
    (source_account_id, action, occurred_at, id);

DROP INDEX np_nself_audit.np_audit_events_severity;
CREATE INDEX np_audit_events_severity ON np_nself_audit.np_audit_events
    (source_account_id, severity, occurred_at, id) WHERE severity <> 'info';

DROP INDEX np_nself_audit.np_audit_events_outcome;
CREATE INDEX np_audit_events_outcome ON np_nself_audit.np_audit_events
    (source_account_id, outcome, occurred_at, id) WHERE outcome <> 'success';

DROP INDEX np_nself_audit.np_audit_events_actor_type;
CREATE INDEX np_audit_events_actor_type ON np_nself_audit.np_audit_events
    (source_account_id, actor_type, occurred_at, id) WHERE actor_type <> 'user';

DROP INDEX np_nself_audit.np_audit_events_source;
CREATE INDEX np_audit_events_source ON np_nself_audit.np_audit_events
    (source_account_id, source, occurred_at, id);

DROP INDEX np_nself_audit.np_audit_events_chain;
CREATE INDEX np_audit_events_chain ON np_nself_audit.np_audit_events
    (source_account_id, seq);
