package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/nself-org/nself-audit/internal/audit"
)

const eventColumns = `id, source_account_id, seq, occurred_at, recorded_at, actor_id, actor_type, action,
	resource_type, resource_id, outcome, severity, ip_address, user_agent, request_id, source,
	metadata::text, prev_hash, hash`

func queryEvents(ctx context.Context, tx pgx.Tx, sql string, args ...any) ([]*audit.Event, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

// read runs the queries that queue adds, in scope, in a single round trip:
// the scope and the queries travel as one pipelined batch, which PostgreSQL
// runs as one implicit, read-only transaction. The queries' callbacks run
// as their results arrive.
func (s *Store) read(ctx context.Context, scope audit.Scope, queue func(b *pgx.Batch)) error {
	return s.readPlanned(ctx, scope, customPlans, queue)
}

// Plan cache modes of a read (see readPlanned).
const (
	customPlans  = "force_custom_plan"
	genericPlans = "force_generic_plan"
)

// readPlanned is read with the plan cache mode of the queries, once one of
// the store's read slots is free (Store.readers). Reads plan each query
// for its values by default (the pool's setting): a time range
// prunes partitions and picks between the time index and a filter's, which
// a generic plan cannot. A list without a time range or an action prefix
// has one best plan whatever its values (the filter's index, newest first,
// and the cursor's bound pruned at run time), and planning it again cost
// more than running it: 0.5-1.0 ms of planning against 0.4-2.0 ms of
// execution per page at 1.2M events (pg_stat_statements).
func (s *Store) readPlanned(ctx context.Context, scope audit.Scope, mode string, queue func(b *pgx.Batch)) error {
	b := &pgx.Batch{}
	b.Queue(scopeSQL+`, set_config('transaction_read_only', 'on', true), set_config('plan_cache_mode', $4, true)`,
		scope.AccountID, scope.ActorID, roleOf(scope), mode)
	queue(b)
	readers := s.readers
	select {
	case readers <- struct{}{}:
	case <-ctx.Done():
		return classify(ctx.Err())
	}
	defer func() { <-readers }()
	return classify(s.pool.SendBatch(ctx, b).Close())
}

// readEvents runs one query of events in scope in a single round trip.
func (s *Store) readEvents(ctx context.Context, scope audit.Scope, sql string, args ...any) ([]*audit.Event, error) {
	return s.readEventsPlanned(ctx, scope, customPlans, sql, args...)
}

func (s *Store) readEventsPlanned(ctx context.Context, scope audit.Scope, mode, sql string, args ...any) ([]*audit.Event, error) {
	var evs []*audit.Event
	err := s.readPlanned(ctx, scope, mode, func(b *pgx.Batch) {
		b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
			var err error
			evs, err = scanEvents(rows)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return evs, nil
}

// Event returns one event within scope.
func (s *Store) Event(ctx context.Context, scope audit.Scope, id uuid.UUID) (*audit.Event, error) {
	evs, err := s.readEvents(ctx, scope, `SELECT `+eventColumns+` FROM np_nself_audit.np_audit_events
		WHERE source_account_id = $1 AND id = $2`, scope.AccountID, id)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, audit.Errorf(audit.ENOTFOUND, "event %s not found", id)
	}
	return evs[0], nil
}

// Chain returns a page of the account's chain in seq order.
func (s *Store) Chain(ctx context.Context, scope audit.Scope, afterSeq int64, limit int) ([]*audit.Event, error) {
	if scope.ActorID != "" {
		return nil, audit.Errorf(audit.EFORBIDDEN, "the chain is readable only for a whole account")
	}
	return s.readEvents(ctx, scope, `SELECT `+eventColumns+` FROM np_nself_audit.np_audit_events
		WHERE source_account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, scope.AccountID, afterSeq, limit)
}

// Head returns the account's recorded chain head.
func (s *Store) Head(ctx context.Context, scope audit.Scope) (int64, string, error) {
	seq, hash := int64(0), audit.GenesisHash
	err := s.inScope(ctx, audit.Scope{AccountID: scope.AccountID}, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT seq, hash FROM np_nself_audit.np_audit_chain_heads WHERE source_account_id = $1`,
			scope.AccountID).Scan(&seq, &hash)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	return seq, hash, err
}

// where builds the WHERE clause of a filter within scope from an allow-list
// of columns; values only ever travel as arguments.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, v any) {
	w.args = append(w.args, v)
	w.conds = append(w.conds, strings.ReplaceAll(cond, "?", fmt.Sprintf("$%d", len(w.args))))
}

func (w *where) eq(column, v string) {
	if v != "" {
		w.add(column+" = ?", v)
	}
}

// enum filters column on one value of a closed set, written as a literal
// taken from the set itself, never from the input: the planner then sees
// the value and can use the partial indexes of migration 0003.
func (w *where) enum(column, v string, set []string) {
	if v == "" {
		return
	}
	for _, allowed := range set {
		if v == allowed {
			w.conds = append(w.conds, column+" = '"+allowed+"'")
			return
		}
	}
	w.add(column+" = ?", v) // not in the set: matches nothing, safely
}

func (w *where) String() string { return strings.Join(w.conds, " AND ") }

func filterWhere(scope audit.Scope, f audit.Filter) *where {
	w := &where{}
	w.add("source_account_id = ?", scope.AccountID)
	w.eq("actor_id", scope.ActorID)
	w.eq("actor_id", f.ActorID)
	w.enum("actor_type", f.ActorType, audit.ActorTypes)
	w.eq("action", f.Action)
	if f.ActionPrefix != "" {
		// "user." ≤ action < "user/": the prefix range under the C collation.
		w.add("action >= ?", f.ActionPrefix)
		w.add("action < ?", prefixEnd(f.ActionPrefix))
	}
	w.eq("resource_type", f.ResourceType)
	w.eq("resource_id", f.ResourceID)
	w.enum("outcome", f.Outcome, audit.Outcomes)
	w.enum("severity", f.Severity, audit.Severities)
	w.eq("source", f.Source)
	if !f.Since.IsZero() {
		w.add("occurred_at >= ?", f.Since)
	}
	if !f.Until.IsZero() {
		w.add("occurred_at < ?", f.Until)
	}
	return w
}

// Events returns one page (plus one event) of the filter's events.
//
// An action prefix is a range over the action index, which is ordered by
// action before time: a page of the newest events of a prefix would read
// and sort every event of every matching action. Instead, the actions of
// the prefix are taken from the stats rollup (one row per action, migration
// 0007) and each is read newest first with its own index range, at most a
// page each, then merged: the cost is a page per action whatever the
// number of events.
func (s *Store) Events(ctx context.Context, scope audit.Scope, f audit.Filter) ([]*audit.Event, error) {
	// The rollup counts the whole account: an actor-scoped caller (whose
	// role may not read it) reads the prefix as one range of its own events.
	if f.ActionPrefix == "" || f.Action != "" || scope.ActorID != "" {
		mode := customPlans
		if f.ActionPrefix == "" && f.Since.IsZero() && f.Until.IsZero() {
			mode = genericPlans
		}
		sql, args := eventsQuery(scope, f, false)
		return s.readEventsPlanned(ctx, scope, mode, sql, args...)
	}
	// One round trip: how many actions the prefix has, and the page read
	// per action. Past maxPrefixActions, the page is read again as one range.
	var n int
	var evs []*audit.Event
	sql, args := eventsQuery(scope, f, true)
	mode := perActionPlans(f)
	err := s.readPlanned(ctx, scope, mode, func(b *pgx.Batch) {
		if mode == genericPlans {
			b.Queue(perActionOrderSQL)
		}
		b.Queue(`SELECT count(*) FROM (SELECT DISTINCT action FROM np_nself_audit.np_audit_stats_dims
			WHERE source_account_id = $1 AND action >= $2 AND action < $3 LIMIT $4) a`,
			scope.AccountID, f.ActionPrefix, prefixEnd(f.ActionPrefix), maxPrefixActions+1).
			QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
		b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
			var err error
			evs, err = scanEvents(rows)
			return err
		})
	})
	if err != nil || n <= maxPrefixActions {
		return evs, err
	}
	sql, args = eventsQuery(scope, f, false)
	return s.readEvents(ctx, scope, sql, args...)
}

// perActionPlans is the plan cache mode of a prefix read action by action.
// With no filter but the prefix, a time range and a cursor, each action's
// read has one best plan whatever the values: its range of the action
// index, whose key holds all three, newest first, stopping at the page,
// with partitions pruned at run time (perActionOrderSQL makes sure of the
// last part). Planning it again cost about as much as running it (0.45 ms
// of planning against 0.78 ms of execution per page at 1M events,
// pg_stat_statements). Another filter (an actor, a resource) may be served
// better by its own index for some values, which only a plan for the
// values can tell.
func perActionPlans(f audit.Filter) string {
	f.ActionPrefix, f.Since, f.Until, f.After, f.Limit, f.Asc = "", time.Time{}, time.Time{}, nil, 0, false
	if f == (audit.Filter{}) {
		return genericPlans
	}
	return customPlans
}

// perActionOrderSQL runs first in a prefix read action by action under the
// generic plan. Each action's read is a page of one index range; a generic
// plan cannot tell which partition holds it, so it chooses between merging
// the partitions' ranges in order, stopping at the page, and reading them
// whole and sorting. It counts a time range as a fixed small share of the
// events, so for an account of up to about a million events it expected a
// handful per action and chose to sort: at 300,000 events it read every
// event of the range (about 3,900 per action) for each page, 60-70 ms a
// page. With sorting priced out the plan merges and stops at the page,
// whatever the account's size; the sort of the merged pages above it, at
// most maxPrefixActions pages, stays, the only way left. Pricing it out
// also lifts the plan's cost past JIT compilation's threshold, which cost
// 140 to 500 ms a plan, so JIT is off for the read
// (TestActionPrefixRangeReadsAPage). A plan for the values (another filter
// is set) sees the partition and the rows and is left to choose: a sort
// may be its best way to combine two filters.
const perActionOrderSQL = `SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)`

// maxPrefixActions bounds the per-action reads of an action prefix; a
// prefix of more actions is read as one range.
const maxPrefixActions = 64

// prefixEnd is the first string after every string that starts with
// prefix (which ends with "."): "user." -> "user/" under the C collation.
func prefixEnd(prefix string) string { return prefix[:len(prefix)-1] + "/" }

// eventsQuery returns the SQL of a page of f and its arguments. With
// perAction, f's action prefix is read action by action: the account's
// actions of the prefix come from the stats rollup, and each is read
// through its own index range.
func eventsQuery(scope audit.Scope, f audit.Filter, perAction bool) (string, []any) {
	prefix := f.ActionPrefix
	if perAction {
		f.ActionPrefix = ""
	}
	w := filterWhere(scope, f)
	order, cmp := "DESC", "<"
	if f.Asc {
		order, cmp = "ASC", ">"
	}
	if f.After != nil {
		w.args = append(w.args, f.After.OccurredAt, f.After.ID)
		w.conds = append(w.conds, fmt.Sprintf("(occurred_at, id) %s ($%d, $%d)", cmp, len(w.args)-1, len(w.args)))
	}
	limit := f.Limit
	if limit <= 0 || limit > audit.MaxLimit {
		limit = audit.DefaultLimit
	}
	if !perAction {
		return fmt.Sprintf(`SELECT %s FROM np_nself_audit.np_audit_events WHERE %s
			ORDER BY occurred_at %s, id %s LIMIT %d`, eventColumns, w, order, order, limit+1), w.args
	}
	w.args = append(w.args, prefix, prefixEnd(prefix))
	w.conds = append(w.conds, "action = a.action")
	return fmt.Sprintf(`SELECT e.* FROM (SELECT DISTINCT action FROM np_nself_audit.np_audit_stats_dims
			WHERE source_account_id = $1 AND action >= $%d AND action < $%d) a
		CROSS JOIN LATERAL (SELECT %s FROM np_nself_audit.np_audit_events WHERE %s
			ORDER BY occurred_at %s, id %s LIMIT %d) e
		ORDER BY e.occurred_at %s, e.id %s LIMIT %d`,
		len(w.args)-1, len(w.args), eventColumns, w, order, order, limit+1, order, order, limit+1), w.args
}

// EventsBySeq returns one page of the filter's events in seq order.
func (s *Store) EventsBySeq(ctx context.Context, scope audit.Scope, f audit.Filter, afterSeq, toSeq int64, limit int) ([]*audit.Event, error) {
	if limit < 1 {
		return nil, fmt.Errorf("events by seq: limit %d", limit)
	}
	w := filterWhere(scope, f)
	w.add("seq > ?", afterSeq)
	if toSeq > 0 {
		w.add("seq <= ?", toSeq)
	}
	sql := fmt.Sprintf(`SELECT %s FROM np_nself_audit.np_audit_events WHERE %s ORDER BY seq LIMIT %d`, eventColumns, w, limit)
	return s.readEvents(ctx, scope, sql, w.args...)
}

// Stats summarises the filter's events. The queries run in one
// repeatable-read transaction, so the figures agree with each other.
func (s *Store) Stats(ctx context.Context, scope audit.Scope, f audit.Filter, iv audit.Interval) (*audit.Stats, error) {
	if scope.ActorID == "" && f == (audit.Filter{Limit: f.Limit, Asc: f.Asc}) {
		return s.rollupStats(ctx, scope, iv)
	}
	w := filterWhere(scope, f)
	from := "FROM np_nself_audit.np_audit_events WHERE " + w.String()
	trunc := truncOf(iv)
	st := newStats()
	err := s.inScope(ctx, scope, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		var first, last *time.Time
		if err := tx.QueryRow(ctx, `SELECT count(*), min(occurred_at), max(occurred_at),
			count(DISTINCT actor_id) FILTER (WHERE actor_id <> '') `+from, w.args...).
			Scan(&st.Total, &first, &last, &st.DistinctActors); err != nil {
			return err
		}
		if first != nil {
			st.FirstEventAt, st.LastEventAt = audit.FormatTimePtr(*first), audit.FormatTimePtr(*last)
		}
		if err := scanPairs(ctx, tx, fmt.Sprintf(`SELECT action, count(*) %s GROUP BY action
			ORDER BY count(*) DESC, action LIMIT %d`, from, audit.TopActions), w.args, func(k string, n int64) {
			st.ByAction = append(st.ByAction, audit.ActionCount{Action: k, Count: n})
		}); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT grouping(actor_type, outcome, severity), coalesce(actor_type, outcome, severity), count(*) `+
			from+` GROUP BY GROUPING SETS ((actor_type), (outcome), (severity))`, w.args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var g int
			var k string
			var n int64
			if err := rows.Scan(&g, &k, &n); err != nil {
				return err
			}
			// grouping() sets a bit for each column not grouped: 0b011 means
			// the row is grouped by actor_type, and so on.
			switch g {
			case 0b011:
				st.ByActorType[k] = n
			case 0b101:
				st.ByOutcome[k] = n
			case 0b110:
				st.BySeverity[k] = n
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return scanTimeline(ctx, tx, fmt.Sprintf(`SELECT date_trunc('%s', occurred_at AT TIME ZONE 'UTC') AS b, count(*) %s
			GROUP BY b ORDER BY b`, trunc, from), w.args, st)
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// rollupStats answers the stats of a whole account from the rollups that
// the writer keeps (migration 0007), so that the cost does not grow with the
// number of events: the dimensions and the timeline are read from tables of
// one row per combination and per hour, distinct actors from one row per
// actor, and the first and last times from the ends of the time index. A
// filter, or a caller who sees only its own events, is counted instead.
func (s *Store) rollupStats(ctx context.Context, scope audit.Scope, iv audit.Interval) (*audit.Stats, error) {
	trunc := truncOf(iv)
	st := newStats()
	const dims = "FROM np_nself_audit.np_audit_stats_dims WHERE source_account_id = $1"
	err := s.inScope(ctx, scope, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		var first, last *time.Time
		if err := tx.QueryRow(ctx, `SELECT
			(SELECT coalesce(sum(events), 0) `+dims+`),
			(SELECT min(occurred_at) FROM np_nself_audit.np_audit_events WHERE source_account_id = $1),
			(SELECT max(occurred_at) FROM np_nself_audit.np_audit_events WHERE source_account_id = $1),
			(SELECT count(*) FROM np_nself_audit.np_audit_stats_actors WHERE source_account_id = $1)`, scope.AccountID).
			Scan(&st.Total, &first, &last, &st.DistinctActors); err != nil {
			return err
		}
		if first != nil {
			st.FirstEventAt, st.LastEventAt = audit.FormatTimePtr(*first), audit.FormatTimePtr(*last)
		}
		if err := scanPairs(ctx, tx, fmt.Sprintf(`SELECT action, sum(events)::int8 %s GROUP BY action
			ORDER BY sum(events) DESC, action LIMIT %d`, dims, audit.TopActions), []any{scope.AccountID}, func(k string, n int64) {
			st.ByAction = append(st.ByAction, audit.ActionCount{Action: k, Count: n})
		}); err != nil {
			return err
		}
		for _, d := range []struct {
			col string
			m   map[string]int64
		}{{"actor_type", st.ByActorType}, {"outcome", st.ByOutcome}, {"severity", st.BySeverity}} {
			if err := scanPairs(ctx, tx, `SELECT `+d.col+`, sum(events)::int8 `+dims+` GROUP BY 1`, []any{scope.AccountID},
				func(k string, n int64) { d.m[k] = n }); err != nil {
				return err
			}
		}
		return scanTimeline(ctx, tx, fmt.Sprintf(`SELECT date_trunc('%s', hour) AS b, sum(events)::int8
			FROM np_nself_audit.np_audit_stats_hours WHERE source_account_id = $1 GROUP BY b ORDER BY b`, trunc),
			[]any{scope.AccountID}, st)
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// newStats returns empty stats: lists and maps empty, never nil.
func newStats() *audit.Stats {
	return &audit.Stats{
		ByAction:    []audit.ActionCount{},
		ByActorType: map[string]int64{},
		ByOutcome:   map[string]int64{},
		BySeverity:  map[string]int64{},
		Timeline:    []audit.Bucket{},
	}
}

// truncOf is the date_trunc unit of a timeline interval.
func truncOf(iv audit.Interval) string {
	if iv == audit.Hour {
		return "hour"
	}
	return "day"
}

// scanTimeline appends the (bucket, count) rows of sql to st's timeline.
func scanTimeline(ctx context.Context, tx pgx.Tx, sql string, args []any, st *audit.Stats) error {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var b time.Time
		var n int64
		if err := rows.Scan(&b, &n); err != nil {
			return err
		}
		st.Timeline = append(st.Timeline, audit.Bucket{Bucket: audit.FormatTime(b), Count: n})
	}
	return rows.Err()
}

func scanPairs(ctx context.Context, tx pgx.Tx, sql string, args []any, fn func(string, int64)) error {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			return err
		}
		fn(k, n)
	}
	return rows.Err()
}
