-- nself-audit: the planner learns that a resource's id determines its type.
--
-- A resource page filters on resource_type and resource_id, which the
-- planner takes for independent columns: it multiplies their selectivities
-- and expects (number of types) times fewer events per resource than there
-- are. Once that estimate fell below a page, the plan read every event of
-- the resource and sorted them (top-N) instead of reading the resource's
-- index in order and stopping after a page. At 1M events (10,000 resources
-- of 6 types, about 100 events each) the generic plan of a resource page
-- expected 21 rows, read 124 and took 1.8 ms; with these statistics it
-- expects 125, reads 51 in index order and takes 0.2 ms. The read grew
-- with the events of the resource, so with the table.
--
-- Functional-dependency statistics tell the planner. They belong to one
-- table: the partitioned table's own statistics only estimate scans of the
-- whole tree, and each partition's scan is estimated from that partition's.
-- So every partition gets the object: the existing ones here (analysed now
-- when they have statistics already, since a past month's partition is
-- never analysed again), new ones when ensure_partitions creates them, to
-- be filled by autovacuum's analyze like the rest of their statistics.
-- TestResourcePageInIndexOrder holds the resource page to the index order.
--
-- ANALYZE samples a bounded number of rows per partition (a few seconds at
-- most each), but a database with many months of partitions could pass the
-- runner's 60 s statement limit, so this file lifts it (the 5 s lock limit
-- stays; ANALYZE does not block reads or writes).
SET LOCAL statement_timeout = 0;

CREATE FUNCTION np_nself_audit.partition_statistics(part regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- As PostgreSQL would cut it (63 bytes), so that the lookup finds it.
    name text := left((SELECT relname FROM pg_class WHERE oid = part) || '_resource', 63);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_statistic_ext
                   WHERE stxname = name AND stxnamespace = 'np_nself_audit'::regnamespace) THEN
        EXECUTE format('CREATE STATISTICS np_nself_audit.%I (dependencies) ON resource_type, resource_id FROM %s',
                       name, part);
    END IF;
END
$$;

-- 0001's ensure_partitions, with the statistics.
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
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                WHERE inhparent = 'np_nself_audit.np_audit_events'::regclass LOOP
        PERFORM np_nself_audit.partition_statistics(part);
        -- Only a partition that has statistics already (reltuples is -1
        -- until the first ANALYZE or VACUUM): analysed while still empty, a
        -- fresh partition would look empty to every plan made before
        -- autovacuum analyses it again, the chain head guard's too, whose
        -- generic plan would scan the partition (TestChainGuardPlan).
        IF (SELECT reltuples >= 0 FROM pg_class WHERE oid = part) THEN
            EXECUTE format('ANALYZE %s', part);
        END IF;
    END LOOP;
END
$$;
