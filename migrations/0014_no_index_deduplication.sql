-- nself-audit: the event indexes do without B-tree deduplication.
--
-- Deduplication merges index entries with equal keys into one. Every index
-- of np_audit_events ends with a column no two events share (id, or seq in
-- the chain index, which is unique per account), so no two entries are ever
-- equal and nothing is ever merged. Yet before each leaf page split,
-- PostgreSQL first runs a deduplication pass over the full page, comparing
-- every entry with the next, to find nothing. In 1000-event inserts under
-- the app role, with deduplication off the database spent 3.3 to 4.7 % less
-- CPU (three runs, 400 to 600 batches per side, interleaved: 30.23 against
-- 29.22, 29.95 against 28.55, 29.68 against 28.71 ms per 1000 events;
-- BENCHMARKS.md, issue 5, seventh session).
--
-- A partitioned index cannot be altered, and a new partition's indexes take
-- the options of the partitioned indexes, which these lack. So the option
-- is set on each partition's indexes: the existing ones here, new ones when
-- ensure_partitions creates them. Setting it rewrites nothing; it applies
-- to the pages split from now on.

CREATE FUNCTION np_nself_audit.partition_indexes(part regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    idx regclass;
BEGIN
    FOR idx IN SELECT indexrelid::regclass FROM pg_index WHERE indrelid = part LOOP
        EXECUTE format('ALTER INDEX %s SET (deduplicate_items = off)', idx);
    END LOOP;
END
$$;

-- 0013's ensure_partitions, with the index option.
CREATE OR REPLACE FUNCTION np_nself_audit.ensure_partitions(months_ahead int) RETURNS int
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
            PERFORM np_nself_audit.partition_statistics(format('np_nself_audit.%I', name)::regclass);
            PERFORM np_nself_audit.partition_indexes(format('np_nself_audit.%I', name)::regclass);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

SELECT np_nself_audit.partition_indexes(inhrelid::regclass)
FROM pg_inherits WHERE inhparent = 'np_nself_audit.np_audit_events'::regclass;
