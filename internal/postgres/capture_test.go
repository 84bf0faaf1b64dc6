package postgres

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nself-org/nself-audit/internal/audit"
)

// staged reads the staging table as the superuser, in id order.
func staged(t *testing.T, su *pgxpool.Pool) []map[string]any {
	t.Helper()
	rows, err := su.Query(context.Background(), `SELECT to_jsonb(c) - 'captured_at' - 'xact_id' FROM np_nself_audit.np_audit_capture_changes c ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[map[string]any])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestCaptureTrigger: the trigger stages each change with its key, the
// changed columns only, secrets redacted, and the identity of the writing
// session; a role that writes the table cannot write the staging table;
// the staging table is append-only and hidden from the app role outside
// the mover's session.
func TestCaptureTrigger(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := su.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`CREATE TABLE public.orders (tenant text, no int, source_account_id text NOT NULL DEFAULT 'primary',
		total numeric, reset_token text, info jsonb, PRIMARY KEY (tenant, no))`)
	exec(`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'capture_writer') THEN CREATE ROLE capture_writer NOLOGIN; END IF; END $$`)
	exec(`GRANT ALL ON public.orders TO capture_writer`)

	got, err := s.CaptureAdd(ctx, CapturedTable{Schema: "public", Table: "orders", Redact: []string{"ssn"}, Settings: []string{"app.tenant"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Keys, ",") != "tenant,no" {
		t.Fatalf("default key %v, want the primary key tenant,no", got.Keys)
	}

	exec(`INSERT INTO public.orders VALUES ('t1', 1, 'acme', 10.50, 'tok', '{"ssn": "123", "deep": [{"password": "p"}], "ok": 1}')`)
	tx, err := su.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`SET LOCAL ROLE capture_writer`,
		`SELECT set_config('request.jwt.claims', '{"sub": "u-9", "role": "authenticated", "https://hasura.io/jwt/claims": {"x-hasura-user-id": "u-1", "x-hasura-source-account-id": "globex"}, "refresh_token": "r"}', true)`,
		`SELECT set_config('app.tenant', 't1', true)`,
		`UPDATE public.orders SET total = 11, reset_token = 'tok2' WHERE no = 1`,
		`UPDATE public.orders SET total = 11 WHERE no = 1`, // changes nothing: not staged
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// A writer of the table may not write the staging table itself.
	if _, err := tx.Exec(ctx, `SAVEPOINT s`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO np_nself_audit.np_audit_capture_changes (table_schema, table_name, op, db_user) VALUES ('public', 'orders', 'DELETE', 'x')`); err == nil ||
		!strings.Contains(err.Error(), "permission denied") {
		t.Errorf("a table writer forged a staged row: %v", err)
	}
	if _, err := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT s`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	exec(`BEGIN; SELECT set_config('hasura.user', '{"x-hasura-role": "user", "x-hasura-user-id": "u-2"}', true); DELETE FROM public.orders; COMMIT`)

	rows := staged(t, su)
	if len(rows) != 3 {
		t.Fatalf("%d staged rows, want 3: %v", len(rows), rows)
	}
	want := []string{
		`{"actor_id":"","db_user":"postgres","id":1,"new_row":{"info":{"deep":[{"password":"[redacted]"}],"ok":1,"ssn":"[redacted]"},"no":1,"reset_token":"[redacted]","source_account_id":"acme","tenant":"t1","total":10.5},"old_row":null,"op":"INSERT","role":"","row_key":["t1",1],"session":{},"source_account_id":"acme","table_name":"orders","table_schema":"public"}`,
		`{"actor_id":"u-1","db_user":"capture_writer","id":2,"new_row":{"reset_token":"[redacted]","total":11},"old_row":{"reset_token":"[redacted]","total":10.5},"op":"UPDATE","role":"authenticated","row_key":["t1",1],"session":{"app.tenant":"t1","request.jwt.claims":{"https://hasura.io/jwt/claims":{"x-hasura-source-account-id":"globex","x-hasura-user-id":"u-1"},"refresh_token":"[redacted]","role":"authenticated","sub":"u-9"}},"source_account_id":"globex","table_name":"orders","table_schema":"public"}`,
		`{"actor_id":"u-2","db_user":"postgres","id":3,"new_row":null,"old_row":{"info":{"deep":[{"password":"[redacted]"}],"ok":1,"ssn":"[redacted]"},"no":1,"reset_token":"[redacted]","source_account_id":"acme","tenant":"t1","total":11},"op":"DELETE","role":"user","row_key":["t1",1],"session":{"hasura.user":{"x-hasura-role":"user","x-hasura-user-id":"u-2"}},"source_account_id":"acme","table_name":"orders","table_schema":"public"}`,
	}
	for i, r := range rows {
		if got := compact(r); got != want[i] {
			t.Errorf("staged row %d\n got %s\nwant %s", i+1, got, want[i])
		}
	}

	// Append-only for everyone, the owner included.
	for _, q := range []string{
		`UPDATE np_nself_audit.np_audit_capture_changes SET actor_id = 'x'`,
		`DELETE FROM np_nself_audit.np_audit_capture_changes`,
		`TRUNCATE np_nself_audit.np_audit_capture_changes`,
		`TRUNCATE np_nself_audit.np_audit_capture_moved`,
	} {
		if _, err := su.Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v; want an append-only refusal", q, err)
		}
	}
	// The app role sees staged rows only in the mover's session.
	var n int
	err = pgx.BeginFunc(ctx, su, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+AppRole); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM np_nself_audit.np_audit_capture_changes`).Scan(&n)
	})
	if err != nil || n != 0 {
		t.Errorf("the app role reads %d staged rows outside the mover (%v)", n, err)
	}

	list, err := s.CaptureList(ctx)
	if err != nil || len(list) != 1 || compact(list[0]) != `{"Schema":"public","Table":"orders","Keys":["tenant","no"],"Redact":["ssn"],"Settings":["app.tenant"]}` {
		t.Fatalf("CaptureList = %v, %v", compact(list), err)
	}
	if err := s.CaptureRemove(ctx, "public", "orders"); err != nil {
		t.Fatal(err)
	}
	exec(`INSERT INTO public.orders VALUES ('t2', 2, 'acme', 1, null, null)`)
	if rows := staged(t, su); len(rows) != 3 {
		t.Errorf("a removed capture still stages: %d rows", len(rows))
	}
	if err := s.CaptureRemove(ctx, "public", "orders"); audit.ErrorCode(err) != audit.ENOTFOUND {
		t.Errorf("removing twice: %v", err)
	}
	if list, err := s.CaptureList(ctx); err != nil || len(list) != 0 {
		t.Errorf("CaptureList after remove = %v, %v", list, err)
	}
}

// TestCaptureAddChecks: what cannot be captured is refused with a reason;
// a partitioned table is captured under its own name, whichever partition
// a row lands in.
func TestCaptureAddChecks(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	for _, q := range []string{
		`CREATE TABLE public.plain (id int PRIMARY KEY, x text)`,
		`CREATE TABLE public.nokey (x text)`,
		`CREATE VIEW public.v AS SELECT 1 AS id`,
		`CREATE TABLE public."bad name" (id int)`,
		`CREATE TABLE public.events (id int, at date NOT NULL) PARTITION BY RANGE (at)`,
		`CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`,
	} {
		if _, err := su.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		t    CapturedTable
		want string
	}{
		{CapturedTable{Schema: "public", Table: "missing"}, "does not exist"},
		{CapturedTable{Schema: "public", Table: "v"}, "is not a table"},
		{CapturedTable{Schema: "public", Table: "bad name"}, "cannot form an action"},
		{CapturedTable{Schema: "np_nself_audit", Table: "np_audit_events"}, "never captured"},
		{CapturedTable{Schema: "public", Table: "plain", Keys: []string{"nope"}}, `has no column "nope"`},
		{CapturedTable{Schema: "public", Table: "events_2026"}, "is a partition"},
	} {
		if _, err := s.CaptureAdd(ctx, c.t); audit.ErrorCode(err) != audit.EINVALID || !strings.Contains(audit.ErrorMessage(err), c.want) {
			t.Errorf("%s.%s: %v; want EINVALID with %q", c.t.Schema, c.t.Table, err, c.want)
		}
	}
	if got, err := s.CaptureAdd(ctx, CapturedTable{Schema: "public", Table: "nokey"}); err != nil || len(got.Keys) != 0 {
		t.Errorf("a table without key: %v, %v", got.Keys, err)
	}
	if got, err := s.CaptureAdd(ctx, CapturedTable{Schema: "public", Table: "events"}); err != nil || strings.Join(got.Keys, ",") != "id" {
		t.Fatalf("partitioned table: %v, %v", got.Keys, err)
	}
	if _, err := su.Exec(ctx, `INSERT INTO public.events VALUES (1, '2026-05-01')`); err != nil {
		t.Fatal(err)
	}
	rows := staged(t, su)
	if len(rows) != 1 || rows[0]["table_name"] != "events" || compact(rows[0]["row_key"]) != "[1]" {
		t.Errorf("partition row staged as %v", rows)
	}
	// Adding again replaces the trigger: one trigger, one staged row per change.
	if _, err := s.CaptureAdd(ctx, CapturedTable{Schema: "public", Table: "events", Keys: []string{"at"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := su.Exec(ctx, `INSERT INTO public.events VALUES (2, '2026-05-02')`); err != nil {
		t.Fatal(err)
	}
	if rows := staged(t, su); len(rows) != 2 || compact(rows[1]["row_key"]) != `["2026-05-02"]` {
		t.Errorf("after re-adding with another key: %v", rows)
	}
}
