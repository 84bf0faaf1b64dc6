package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/internal/audit"
)

// Staged is one row of the staging table, as the capture trigger wrote it.
type Staged struct {
	ID         int64
	Account    string
	CapturedAt time.Time
	Schema     string
	Table      string
	Op         string          // INSERT, UPDATE, DELETE
	Old, New   json.RawMessage // nil when absent; UPDATE: the changed columns only
	Key        json.RawMessage // array of the key columns' values, or nil
	ActorID    string
	Role       string
	DBUser     string
	Session    json.RawMessage
}

// Mark is a point in capture order with the transaction horizon that
// settles it: Seq is the last staging id handed out when it was read, Xmax
// the first transaction id not yet assigned just after. Once no
// transaction older than Xmax runs (the oldest running, Xmin, is past it),
// every staged row up to Seq is committed and visible, or never will be.
// Xmin is the oldest running transaction when the mark was taken.
type Mark struct {
	Seq        int64
	Xmin, Xmax uint64
}

// Moved records that a staged row is in the chain as an event.
type Moved struct {
	ChangeID int64
	Account  string
	EventID  uuid.UUID
}

// Staging is the staging table as the mover uses it (internal/postgres
// implements it on a connection of its own).
type Staging interface {
	// Lead makes this mover the only one among all processes on the
	// database (false: another leads); it holds until Close.
	Lead(ctx context.Context) (bool, error)
	// Mark reads the last staging id, then the transaction horizon.
	Mark(ctx context.Context) (Mark, error)
	// Floor is the newest floor recorded in the ledger (0 if none).
	Floor(ctx context.Context) (int64, error)
	// Pending returns up to limit staged rows with an id above floor that
	// the ledger does not list, in id order.
	Pending(ctx context.Context, floor int64, limit int) ([]*Staged, error)
	// Record lists moved rows in the ledger, with floor.
	Record(ctx context.Context, moved []Moved, floor int64) error
	// Close gives up the connection and with it the lead.
	Close() error
}

// Writer is the write path (ingest.Writer).
type Writer interface {
	Write(ctx context.Context, items ...*audit.AppendItem) error
}

// Mover moves staged rows into the chain, through the same writer as the
// API, in the order their transactions' commits become visible to it,
// each exactly once:
//
//   - Each round reads the staged rows not in the ledger and appends them,
//     in id order, with the idempotency key "capture\x1f<id>". A row whose
//     transaction has not committed yet is not visible; it is moved in a
//     later round, after the rows that committed before it. Rows that
//     become visible in the same round are ordered by id, which for two
//     changes of one row is commit order (the second waited for the first
//     to commit before it wrote).
//   - Then it lists them in the ledger. A crash between the two repeats the
//     append in a later round, which the idempotency key answers with the
//     stored event: nothing is chained twice.
//   - The floor bounds the search: every row up to it is moved or was
//     rolled back. It advances to a Mark once the mark is settled and the
//     rows up to it were moved, and is kept in the ledger.
//
// One mover leads at a time across processes (Staging.Lead); others wait.
type Mover struct {
	staging Staging
	writer  Writer
	redact  *Redactor
	logger  *slog.Logger
	now     func() time.Time

	// Tick is the pause between rounds that found less than a full batch.
	Tick time.Duration
	// Batch is the most rows one round moves.
	Batch int

	leading bool
	floor   int64
	pending *Mark
}

// NewMover returns a Mover. Start it with go m.Run(ctx).
func NewMover(st Staging, w Writer, r *Redactor, logger *slog.Logger) *Mover {
	if logger == nil {
		logger = slog.Default()
	}
	return &Mover{staging: st, writer: w, redact: r, logger: logger, now: time.Now, Tick: 250 * time.Millisecond, Batch: 500}
}

// Run moves rows until ctx ends, then gives up the lead.
func (m *Mover) Run(ctx context.Context) {
	defer m.staging.Close()
	failing := false
	for {
		n, err := m.Round(ctx)
		wait := m.Tick
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				m.logger.Warn("capture: moving staged changes failed; retrying", "err", err)
			}
			failing, wait = true, 2*time.Second
			m.drop()
		default:
			if failing {
				m.logger.Info("capture: moving staged changes again")
			}
			failing = false
			if n >= m.Batch {
				wait = 0
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Close gives up the lead (Run does when its context ends).
func (m *Mover) Close() error {
	m.leading, m.pending = false, nil
	return m.staging.Close()
}

// drop forgets the lead and the connection after an error.
func (m *Mover) drop() {
	m.staging.Close()
	m.leading, m.pending = false, nil
}

// Round moves at most Batch staged rows and returns how many it moved (0
// when another process leads).
func (m *Mover) Round(ctx context.Context) (int, error) {
	if !m.leading {
		ok, err := m.staging.Lead(ctx)
		if err != nil || !ok {
			return 0, err
		}
		if m.floor, err = m.staging.Floor(ctx); err != nil {
			return 0, err
		}
		m.leading, m.pending = true, nil
	}
	mark, err := m.staging.Mark(ctx)
	if err != nil {
		return 0, err
	}
	settled := int64(-1)
	if m.pending != nil && mark.Xmin >= m.pending.Xmax {
		settled, m.pending = m.pending.Seq, nil
	}
	if m.pending == nil {
		m.pending = &mark
	}
	rows, err := m.staging.Pending(ctx, m.floor, m.Batch)
	if err != nil {
		return 0, err
	}
	moved, err := m.move(ctx, rows)
	if err != nil {
		return 0, err
	}
	floor := m.floor
	if settled >= 0 {
		// Every row up to settled is visible by now; all of them were in
		// this round unless the batch was cut short before it.
		f := settled
		if len(rows) >= m.Batch && rows[len(rows)-1].ID < f {
			f = rows[len(rows)-1].ID
		}
		floor = max(floor, f)
	}
	if len(moved) > 0 {
		if err := m.staging.Record(ctx, moved, floor); err != nil {
			return 0, err
		}
	}
	m.floor = floor
	return len(rows), nil
}

// move appends the rows' events in one write and returns what to record.
func (m *Mover) move(ctx context.Context, rows []*Staged) ([]Moved, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	now := m.now()
	items := make([]*audit.AppendItem, len(rows))
	for i, s := range rows {
		e, err := m.event(s, now)
		if err != nil {
			return nil, err
		}
		key := "capture\x1f" + strconv.FormatInt(s.ID, 10)
		items[i] = &audit.AppendItem{Event: e, IdempotencyKey: key, Fingerprint: key}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := m.writer.Write(wctx, items...); err != nil {
		return nil, err
	}
	moved := make([]Moved, len(rows))
	for i, it := range items {
		if it.Err != nil {
			return nil, fmt.Errorf("staged change %d: %w", rows[i].ID, it.Err)
		}
		moved[i] = Moved{ChangeID: rows[i].ID, Account: it.Event.SourceAccountID, EventID: it.Event.ID}
	}
	return moved, nil
}

// event maps a staged row to its event. A row that does not make a valid
// event (an account name outside the allowed characters, an over-long
// actor id) still gets one, so that the chain holds every change and the
// mover never stalls on a row: a system event of the same action (or
// capture.unmapped) in the account (or primary), with the reason in
// metadata.capture_error.
func (m *Mover) event(s *Staged, now time.Time) (*audit.Event, error) {
	c, err := s.change()
	var in *audit.EventInput
	if err == nil {
		in, err = c.Input(m.redact)
	}
	var e *audit.Event
	if err == nil {
		e, err = in.Validate(s.Account, "", now)
	}
	if err == nil {
		return e, nil
	}
	if audit.ErrorCode(err) != audit.EINVALID {
		return nil, err
	}
	m.logger.Warn("capture: staged change recorded without its details", "change_id", s.ID, "err", audit.ErrorMessage(err))
	action, aerr := Action(s.Schema, s.Table, s.Op)
	if aerr != nil {
		action = "capture.unmapped"
	}
	meta, _ := json.Marshal(map[string]any{
		"capture_error": audit.ErrorMessage(err),
		"capture_id":    s.ID,
		"table":         audit.Clip(s.Schema+"."+s.Table, 300),
	})
	at := audit.FormatTime(s.CapturedAt)
	fallback := &audit.EventInput{OccurredAt: &at, ActorType: "system", Action: action, Source: "postgres", Metadata: meta}
	account := s.Account
	if !audit.ValidAccountID(account) {
		account = audit.DefaultAccount
	}
	return fallback.Validate(account, "", now)
}

// change decodes a staged row.
func (s *Staged) change() (*Change, error) {
	c := &Change{
		Schema: s.Schema, Table: s.Table, Op: s.Op, Diffed: true,
		Account: s.Account, ActorID: s.ActorID, Role: s.Role, Source: "postgres", OccurredAt: s.CapturedAt,
		Extra: map[string]any{"capture_id": s.ID, "db_user": s.DBUser},
	}
	var err error
	if c.Old, err = decodeObject(s.Old); err != nil {
		return nil, err
	}
	if c.New, err = decodeObject(s.New); err != nil {
		return nil, err
	}
	if session, err := decodeObject(s.Session); err != nil {
		return nil, err
	} else if len(session) > 0 {
		c.Extra["session"] = session
	}
	if len(s.Key) > 0 && string(s.Key) != "null" {
		dec := json.NewDecoder(bytes.NewReader(s.Key))
		dec.UseNumber()
		if err := dec.Decode(&c.Key); err != nil {
			return nil, audit.Errorf(audit.EINVALID, "row_key: not a JSON array")
		}
	}
	return c, nil
}

func decodeObject(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		return nil, audit.Errorf(audit.EINVALID, "staged row: not a JSON object")
	}
	return out, nil
}
