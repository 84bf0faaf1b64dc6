package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/internal/audit"
)

const eventColumns = `id, source_account_id, seq, occurred_at, recorded_at, actor_id, actor_type, action,
	resource_type, resource_id, outcome, severity, ip_address, user_agent, request_id, source,
	metadata, prev_hash, hash`

func queryEvents(ctx context.Context, q querier, query string, args ...any) ([]*audit.Event, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*audit.Event
	for rows.Next() {
		var e audit.Event
		var id string
		var occurred, recorded int64
		var meta []byte
		if err := rows.Scan(&id, &e.SourceAccountID, &e.Seq, &occurred, &recorded, &e.ActorID,
			&e.ActorType, &e.Action, &e.ResourceType, &e.ResourceID, &e.Outcome, &e.Severity, &e.IPAddress,
			&e.UserAgent, &e.RequestID, &e.Source, &meta, &e.PrevHash, &e.Hash); err != nil {
			return nil, err
		}
		if e.ID, err = uuid.Parse(id); err != nil {
			return nil, fmt.Errorf("stored event id %q: %w", id, err)
		}
		e.OccurredAt, e.RecordedAt = time.UnixMicro(occurred).UTC(), time.UnixMicro(recorded).UTC()
		// The column holds the canonical text that was hashed, byte for byte.
		e.Metadata = meta
		out = append(out, &e)
	}
	return out, rows.Err()
}

// Event returns one event within scope.
func (s *Store) Event(ctx context.Context, scope audit.Scope, id uuid.UUID) (*audit.Event, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	w := scopeWhere(scope)
	w.add("id = ?", id.String())
	evs, err := queryEvents(ctx, s.r, `SELECT `+eventColumns+` FROM np_audit_events WHERE `+w.String(), w.args...)
	if err != nil {
		return nil, classify(ctx, err)
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
	if limit < 0 { // PostgreSQL: LIMIT must not be negative; SQLite would read it as no limit
		return nil, fmt.Errorf("chain: negative limit %d", limit)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	evs, err := queryEvents(ctx, s.r, `SELECT `+eventColumns+` FROM np_audit_events
		WHERE source_account_id = ? AND seq > ? ORDER BY seq LIMIT ?`, scope.AccountID, afterSeq, limit)
	return evs, classify(ctx, err)
}

// Head returns the account's recorded chain head.
func (s *Store) Head(ctx context.Context, scope audit.Scope) (int64, string, error) {
	if err := s.check(); err != nil {
		return 0, "", err
	}
	seq, hash := int64(0), audit.GenesisHash
	err := s.r.QueryRowContext(ctx, `SELECT seq, hash FROM np_audit_chain_heads WHERE source_account_id = ?`, scope.AccountID).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, audit.GenesisHash, nil
	}
	return seq, hash, classify(ctx, err)
}

// where builds the WHERE clause of a filter within scope from an allow-list
// of columns; values only ever travel as arguments.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, v ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, v...)
}

func (w *where) eq(column, v string) {
	if v != "" {
		w.add(column+" = ?", v)
	}
}

func (w *where) String() string { return strings.Join(w.conds, " AND ") }

// scopeWhere is the isolation every query carries: the account and, for a
// caller restricted to one actor, that actor.
func scopeWhere(scope audit.Scope) *where {
	w := &where{}
	w.add("source_account_id = ?", scope.AccountID)
	w.eq("actor_id", scope.ActorID)
	return w
}

func filterWhere(scope audit.Scope, f audit.Filter) *where {
	w := scopeWhere(scope)
	w.eq("actor_id", f.ActorID)
	w.eq("actor_type", f.ActorType)
	w.eq("action", f.Action)
	if f.ActionPrefix != "" {
		// "user." <= action < "user/": the prefix range in bytewise order.
		w.add("action >= ?", f.ActionPrefix)
		if end, ok := prefixEnd(f.ActionPrefix); ok {
			w.add("action < ?", end)
		}
	}
	w.eq("resource_type", f.ResourceType)
	w.eq("resource_id", f.ResourceID)
	w.eq("outcome", f.Outcome)
	w.eq("severity", f.Severity)
	w.eq("source", f.Source)
	if !f.Since.IsZero() {
		w.add("occurred_at >= ?", f.Since.UnixMicro())
	}
	if !f.Until.IsZero() {
		w.add("occurred_at < ?", f.Until.UnixMicro())
	}
	return w
}

// prefixEnd returns the least string greater than every string that starts
// with p: p with its last byte incremented (dropping trailing 0xff bytes).
// ok is false when there is none (p is all 0xff).
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// Events returns one page (plus one event) of the filter's events.
func (s *Store) Events(ctx context.Context, scope audit.Scope, f audit.Filter) ([]*audit.Event, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	w := filterWhere(scope, f)
	order, cmp := "DESC", "<"
	if f.Asc {
		order, cmp = "ASC", ">"
	}
	if f.After != nil {
		w.add("(occurred_at, id) "+cmp+" (?, ?)", f.After.OccurredAt.UnixMicro(), f.After.ID.String())
	}
	limit := f.Limit
	if limit <= 0 || limit > audit.MaxLimit {
		limit = audit.DefaultLimit
	}
	query := fmt.Sprintf(`SELECT %s FROM np_audit_events WHERE %s
		ORDER BY occurred_at %s, id %s LIMIT %d`, eventColumns, w, order, order, limit+1)
	evs, err := queryEvents(ctx, s.r, query, w.args...)
	return evs, classify(ctx, err)
}

// EventsBySeq returns one page of the filter's events in seq order.
func (s *Store) EventsBySeq(ctx context.Context, scope audit.Scope, f audit.Filter, afterSeq, toSeq int64, limit int) ([]*audit.Event, error) {
	if limit < 1 { // SQLite would read a negative limit as none
		return nil, fmt.Errorf("events by seq: limit %d", limit)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	w := filterWhere(scope, f)
	w.add("seq > ?", afterSeq)
	if toSeq > 0 {
		w.add("seq <= ?", toSeq)
	}
	query := fmt.Sprintf(`SELECT %s FROM np_audit_events WHERE %s ORDER BY seq LIMIT %d`, eventColumns, w, limit)
	evs, err := queryEvents(ctx, s.r, query, w.args...)
	return evs, classify(ctx, err)
}

const (
	microsPerHour = int64(time.Hour / time.Microsecond)
	microsPerDay  = 24 * microsPerHour
)

// Stats summarises the filter's events. The queries run in one read
// transaction, one WAL snapshot, so the figures agree with each other.
func (s *Store) Stats(ctx context.Context, scope audit.Scope, f audit.Filter, iv audit.Interval) (*audit.Stats, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	w := filterWhere(scope, f)
	from := "FROM np_audit_events WHERE " + w.String()
	width := microsPerDay
	if iv == audit.Hour {
		width = microsPerHour
	}
	st := &audit.Stats{
		ByAction:    []audit.ActionCount{},
		ByActorType: map[string]int64{},
		ByOutcome:   map[string]int64{},
		BySeverity:  map[string]int64{},
		Timeline:    []audit.Bucket{},
	}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, classify(ctx, err)
	}
	defer tx.Rollback()
	if err := stats(ctx, tx, st, from, w.args, width); err != nil {
		return nil, classify(ctx, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, classify(ctx, err)
	}
	return st, nil
}

func stats(ctx context.Context, tx *sql.Tx, st *audit.Stats, from string, args []any, width int64) error {
	var first, last sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT count(*), min(occurred_at), max(occurred_at),
		count(DISTINCT nullif(actor_id, '')) `+from, args...).
		Scan(&st.Total, &first, &last, &st.DistinctActors); err != nil {
		return err
	}
	if first.Valid {
		st.FirstEventAt = audit.FormatTimePtr(time.UnixMicro(first.Int64))
		st.LastEventAt = audit.FormatTimePtr(time.UnixMicro(last.Int64))
	}
	err := scan(ctx, tx, fmt.Sprintf(`SELECT action, count(*) %s GROUP BY action
		ORDER BY count(*) DESC, action LIMIT %d`, from, audit.TopActions), args, func(rows *sql.Rows) error {
		var a audit.ActionCount
		if err := rows.Scan(&a.Action, &a.Count); err != nil {
			return err
		}
		st.ByAction = append(st.ByAction, a)
		return nil
	})
	if err != nil {
		return err
	}
	// One pass for the three breakdowns: at most 5 × 3 × 4 groups.
	err = scan(ctx, tx, `SELECT actor_type, outcome, severity, count(*) `+from+` GROUP BY actor_type, outcome, severity`,
		args, func(rows *sql.Rows) error {
			var actorType, outcome, severity string
			var n int64
			if err := rows.Scan(&actorType, &outcome, &severity, &n); err != nil {
				return err
			}
			st.ByActorType[actorType] += n
			st.ByOutcome[outcome] += n
			st.BySeverity[severity] += n
			return nil
		})
	if err != nil {
		return err
	}
	// Buckets start at whole UTC hours or days: Unix time has no leap
	// seconds, so they are multiples of the width (floored for times
	// before 1970).
	return scan(ctx, tx, fmt.Sprintf(`SELECT occurred_at - ((occurred_at %% %[1]d) + %[1]d) %% %[1]d AS b, count(*) %[2]s
		GROUP BY b ORDER BY b`, width, from), args, func(rows *sql.Rows) error {
		var b, n int64
		if err := rows.Scan(&b, &n); err != nil {
			return err
		}
		st.Timeline = append(st.Timeline, audit.Bucket{Bucket: audit.FormatTime(time.UnixMicro(b)), Count: n})
		return nil
	})
}

func scan(ctx context.Context, tx *sql.Tx, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
