package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/capture"
)

// CaptureTrigger is the name of the trigger `nself-audit capture add`
// attaches to a table (migration 0008 defines its function).
const CaptureTrigger = "np_nself_audit_capture"

// CapturedTable is a table with the capture trigger and its arguments.
type CapturedTable struct {
	Schema, Table string
	Keys          []string // the key columns (resource id)
	Redact        []string // extra secret-name patterns, besides the defaults
	Settings      []string // extra settings recorded, besides the defaults
}

// CaptureAdd attaches the capture trigger to t's table, replacing one that
// is there (so running it again changes the arguments). With no Keys it
// takes the table's primary key, else its column id, else none. It runs
// as the connecting user, who must own the capture function (the one that
// migrated) and may create triggers on the table. It returns t as
// installed.
func (s *Store) CaptureAdd(ctx context.Context, t CapturedTable) (CapturedTable, error) {
	if err := capture.CheckTable(t.Schema, t.Table); err != nil {
		return t, err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Creating a trigger blocks writes to the table: give up rather
		// than queue behind a long transaction.
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
			return err
		}
		var oid uint32
		var kind string
		err := tx.QueryRow(ctx, `SELECT c.oid, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2`, t.Schema, t.Table).Scan(&oid, &kind)
		if errors.Is(err, pgx.ErrNoRows) {
			return audit.Errorf(audit.EINVALID, "table %s.%s does not exist", t.Schema, t.Table)
		} else if err != nil {
			return err
		}
		if kind != "r" && kind != "p" {
			return audit.Errorf(audit.EINVALID, "%s.%s is not a table (only tables and partitioned tables are captured)", t.Schema, t.Table)
		}
		if ok, err := isPartition(ctx, tx, oid); err != nil {
			return err
		} else if ok {
			return audit.Errorf(audit.EINVALID, "%s.%s is a partition: capture its partitioned table", t.Schema, t.Table)
		}
		columns := map[string]bool{}
		rows, err := tx.Query(ctx, `SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, oid)
		if err != nil {
			return err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, n := range names {
			columns[n] = true
		}
		if len(t.Keys) == 0 {
			rows, err := tx.Query(ctx, `SELECT a.attname FROM pg_index i
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
				WHERE i.indrelid = $1 AND i.indisprimary
				ORDER BY array_position(i.indkey::int2[], a.attnum)`, oid)
			if err != nil {
				return err
			}
			if t.Keys, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
			if len(t.Keys) == 0 && columns["id"] {
				t.Keys = []string{"id"}
			}
		}
		for _, k := range t.Keys {
			if !columns[k] {
				return audit.Errorf(audit.EINVALID, "table %s.%s has no column %q", t.Schema, t.Table, k)
			}
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`DROP TRIGGER IF EXISTS %s ON %s`, CaptureTrigger, pgx.Identifier{t.Schema, t.Table}.Sanitize())); err != nil {
			return err
		}
		// The arguments are quoted by the server (format's %I and %L).
		var ddl string
		if err := tx.QueryRow(ctx, `SELECT format('CREATE TRIGGER `+CaptureTrigger+` AFTER INSERT OR UPDATE OR DELETE ON %I.%I
				FOR EACH ROW EXECUTE FUNCTION np_nself_audit.capture_change(%L, %L, %L, %L, %L)',
				$1::text, $2::text, $1::text, $2::text, $3::text[]::text, $4::text[]::text, $5::text[]::text)`,
			t.Schema, t.Table, nonNil(t.Keys), nonNil(t.Redact), nonNil(t.Settings)).Scan(&ddl); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, ddl)
		return err
	})
	return t, captureError(err)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func isPartition(ctx context.Context, tx pgx.Tx, oid uint32) (bool, error) {
	var ok bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = $1)`, oid).Scan(&ok)
	return ok, err
}

// CaptureList returns the tables that have the capture trigger, by schema
// and name.
func (s *Store) CaptureList(ctx context.Context) ([]CapturedTable, error) {
	rows, err := s.pool.Query(ctx, `SELECT n.nspname, c.relname, t.tgargs FROM pg_trigger t
		JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE t.tgname = $1 AND t.tgparentid = 0
		ORDER BY n.nspname, c.relname`, CaptureTrigger)
	if err != nil {
		return nil, captureError(err)
	}
	type raw struct {
		schema, table string
		args          []byte
	}
	var found []raw
	for rows.Next() {
		var r raw
		if err := rows.Scan(&r.schema, &r.table, &r.args); err != nil {
			rows.Close()
			return nil, err
		}
		found = append(found, r)
	}
	if err := rows.Err(); err != nil {
		return nil, captureError(err)
	}
	var out []CapturedTable
	for _, r := range found {
		t := CapturedTable{Schema: r.schema, Table: r.table}
		// tgargs: each argument followed by a NUL byte.
		args := bytes.Split(bytes.TrimSuffix(r.args, []byte{0}), []byte{0})
		lists := []*[]string{&t.Keys, &t.Redact, &t.Settings}
		for i, dst := range lists {
			if len(args) <= 2+i {
				break
			}
			if err := s.pool.QueryRow(ctx, `SELECT $1::text[]`, string(args[2+i])).Scan(dst); err != nil {
				return nil, captureError(err)
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// CaptureRemove takes the capture trigger off a table. What it staged
// before stays staged and is still moved into the chain.
func (s *Store) CaptureRemove(ctx context.Context, schema, table string) error {
	list, err := s.CaptureList(ctx)
	if err != nil {
		return err
	}
	found := false
	for _, t := range list {
		found = found || (t.Schema == schema && t.Table == table)
	}
	if !found {
		return audit.Errorf(audit.ENOTFOUND, "%s.%s is not captured", schema, table)
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, fmt.Sprintf(`DROP TRIGGER %s ON %s`, CaptureTrigger, pgx.Identifier{schema, table}.Sanitize()))
		return err
	})
	return captureError(err)
}

// captureError keeps application errors and says what a permission error
// means; other errors are classified as usual.
func captureError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return audit.Errorf(audit.EFORBIDDEN, "DATABASE_URL's user may not do this: %s (capture add and remove need the user that migrated, owning the table or a superuser)", pgErr.Message)
	}
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
		return audit.Errorf(audit.EUNAVAILABLE, "the table is locked by another transaction; try again")
	}
	return classify(err)
}

// CaptureStaging returns the mover's view of the staging table, on a
// connection of its own (opened by Lead) that runs as the app role with
// app.capture on, so that row-level security lets it read the staged rows
// and write the ledger. The connection also holds the mover's advisory
// lock: one mover leads among all processes.
func (s *Store) CaptureStaging() *CaptureStaging {
	return &CaptureStaging{cfg: s.pool.Config().ConnConfig.Copy()}
}

// CaptureStaging implements capture.Staging.
type CaptureStaging struct {
	cfg  *pgx.ConnConfig
	conn *pgx.Conn
}

var _ capture.Staging = (*CaptureStaging)(nil)

// Lead connects if needed and tries the mover lock.
func (c *CaptureStaging) Lead(ctx context.Context) (bool, error) {
	if c.conn == nil {
		conn, err := pgx.ConnectConfig(ctx, c.cfg.Copy())
		if err != nil {
			return false, classify(err)
		}
		if _, err := conn.Exec(ctx, `SELECT set_config('role', '`+AppRole+`', false), set_config('app.capture', 'on', false)`); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return false, classify(err)
		}
		c.conn = conn
	}
	var ok bool
	err := c.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('np_nself_audit.capture_mover'))`).Scan(&ok)
	return ok, classify(err)
}

func (c *CaptureStaging) ready() error {
	if c.conn == nil {
		return errors.New("capture staging: not connected")
	}
	return nil
}

// Mark reads the last staging id, then, in a later statement (so with a
// later snapshot), the transaction horizon: a row with an id up to Seq was
// written by a transaction that had its id before Xmax.
func (c *CaptureStaging) Mark(ctx context.Context) (capture.Mark, error) {
	var m capture.Mark
	if err := c.ready(); err != nil {
		return m, err
	}
	if err := c.conn.QueryRow(ctx, `SELECT coalesce(pg_sequence_last_value('np_nself_audit.np_audit_capture_changes_id_seq'), 0)`).Scan(&m.Seq); err != nil {
		return m, classify(err)
	}
	var xmin, xmax string
	if err := c.conn.QueryRow(ctx, `SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text FROM pg_current_snapshot() AS s`).Scan(&xmin, &xmax); err != nil {
		return m, classify(err)
	}
	var err1, err2 error
	m.Xmin, err1 = strconv.ParseUint(xmin, 10, 64)
	m.Xmax, err2 = strconv.ParseUint(xmax, 10, 64)
	return m, errors.Join(err1, err2)
}

// Floor reads the newest floor from the ledger.
func (c *CaptureStaging) Floor(ctx context.Context) (int64, error) {
	if err := c.ready(); err != nil {
		return 0, err
	}
	var f int64
	err := c.conn.QueryRow(ctx, `SELECT coalesce((SELECT floor FROM np_nself_audit.np_audit_capture_moved
		ORDER BY change_id DESC LIMIT 1), 0)`).Scan(&f)
	return f, classify(err)
}

// Pending reads staged rows above floor that the ledger does not list.
func (c *CaptureStaging) Pending(ctx context.Context, floor int64, limit int) ([]*capture.Staged, error) {
	if err := c.ready(); err != nil {
		return nil, err
	}
	rows, err := c.conn.Query(ctx, `SELECT c.id, c.source_account_id, c.captured_at, c.table_schema, c.table_name, c.op,
			c.old_row::text, c.new_row::text, c.row_key::text, c.actor_id, c.role, c.db_user, c.session::text
		FROM np_nself_audit.np_audit_capture_changes c
		WHERE c.id > $1 AND NOT EXISTS (SELECT 1 FROM np_nself_audit.np_audit_capture_moved m WHERE m.change_id = c.id)
		ORDER BY c.id LIMIT $2`, floor, limit)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	var out []*capture.Staged
	for rows.Next() {
		s := &capture.Staged{}
		var old, nw, key *string
		var session string
		if err := rows.Scan(&s.ID, &s.Account, &s.CapturedAt, &s.Schema, &s.Table, &s.Op,
			&old, &nw, &key, &s.ActorID, &s.Role, &s.DBUser, &session); err != nil {
			return nil, classify(err)
		}
		s.Old, s.New, s.Key, s.Session = rawOrNil(old), rawOrNil(nw), rawOrNil(key), []byte(session)
		out = append(out, s)
	}
	return out, classify(rows.Err())
}

func rawOrNil(s *string) []byte {
	if s == nil {
		return nil
	}
	return []byte(*s)
}

// Record lists moved rows in the ledger.
func (c *CaptureStaging) Record(ctx context.Context, moved []capture.Moved, floor int64) error {
	if err := c.ready(); err != nil {
		return err
	}
	ids := make([]int64, len(moved))
	accounts := make([]string, len(moved))
	events := make([]string, len(moved))
	for i, m := range moved {
		ids[i], accounts[i], events[i] = m.ChangeID, m.Account, m.EventID.String()
	}
	_, err := c.conn.Exec(ctx, `INSERT INTO np_nself_audit.np_audit_capture_moved (change_id, source_account_id, event_id, floor)
		SELECT c, a, e, $4 FROM unnest($1::int8[], $2::text[], $3::uuid[]) AS t(c, a, e)
		ON CONFLICT (change_id) DO NOTHING`, ids, accounts, events, floor)
	return classify(err)
}

// Close closes the connection, which releases the lock.
func (c *CaptureStaging) Close() error {
	if c.conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.conn.Close(ctx)
	c.conn = nil
	return err
}
