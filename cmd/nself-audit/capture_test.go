package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/capture"
	"github.com/nself-org/nself-audit/internal/ingest"
	"github.com/nself-org/nself-audit/internal/postgres"
	"github.com/nself-org/nself-audit/internal/storetest"
)

// captureCmd runs `nself-audit capture args...` on dbURL.
func captureCmd(t *testing.T, dbURL string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	getenv := func(k string) string {
		switch k {
		case "DATABASE_URL":
			return dbURL
		case "NSELF_AUDIT_REDACT_COLUMNS":
			return "ssn"
		}
		return ""
	}
	code := run(ctx, append([]string{"capture"}, args...), getenv, &out, &errOut)
	return code, out.String(), errOut.String()
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// summary is "action resource_id change" for each event, in chain order.
func summary(evs []map[string]any) []string {
	var out []string
	for _, e := range evs {
		meta, _ := e["metadata"].(map[string]any)
		detail := ""
		switch {
		case meta["changes"] != nil:
			detail = compactJSON(meta["changes"])
		case meta["new"] != nil:
			detail = compactJSON(meta["new"])
		case meta["old"] != nil:
			detail = compactJSON(meta["old"])
		}
		out = append(out, fmt.Sprintf("%s %s %s", e["action"], e["resource_id"], detail))
	}
	return out
}

// TestTableCapture: with the capture trigger on a table, every committed
// INSERT, UPDATE and DELETE is in the chain, once, in order, whether the
// service ran when it happened or was stopped and started again; a rolled
// back one is not; the real binary does the moving.
func TestTableCapture(t *testing.T) {
	t.Parallel()
	dbURL := pgtestDatabase(t)
	superuserExec(t, dbURL, `CREATE TABLE public.orders (id serial PRIMARY KEY, source_account_id text NOT NULL DEFAULT 'acme',
		item text NOT NULL, qty int NOT NULL, ssn text, password text)`)

	// The embedded store has no tables to capture: said so, exit 1.
	if code, _, errOut := captureCmd(t, "", "add", "public.orders"); code != 1 || !strings.Contains(errOut, "PostgreSQL only") {
		t.Fatalf("capture add on the embedded store: %d %q", code, errOut)
	}
	if code, out, errOut := captureCmd(t, dbURL, "add", "public.orders"); code != 0 || !strings.Contains(out, "capturing public.orders: key id") {
		t.Fatalf("capture add: %d %q %q", code, out, errOut)
	}
	if code, out, _ := captureCmd(t, dbURL, "list"); code != 0 || out != "public.orders\tkey=id\tredact+=ssn\n" {
		t.Fatalf("capture list: %d %q", code, out)
	}

	p := runProcess(t, "DATABASE_URL="+dbURL, "PLUGIN_INTERNAL_SECRET="+testSecret)
	superuserExec(t, dbURL, `INSERT INTO public.orders (item, qty, ssn, password) VALUES ('apple', 1, '078-05-1120', 'hunter2')`)
	took := waitFor(t, 10*time.Second, "the insert is not in the chain", func() bool { return len(exportEvents(t, p.service, "acme")) == 1 })
	t.Logf("a change reached the chain %v after its commit", took.Round(10*time.Millisecond))
	superuserExec(t, dbURL, `UPDATE public.orders SET qty = 2 WHERE id = 1`)
	superuserExec(t, dbURL, `INSERT INTO public.orders (item, qty) VALUES ('pear', 5)`)
	waitFor(t, 10*time.Second, "3 events", func() bool { return len(exportEvents(t, p.service, "acme")) == 3 })
	p.stop()

	// While the service is down: changes, in several transactions, one of
	// them rolled back.
	superuserExec(t, dbURL, `DELETE FROM public.orders WHERE id = 2`)
	superuserExec(t, dbURL, `BEGIN; INSERT INTO public.orders (item, qty) VALUES ('plum', 7); UPDATE public.orders SET qty = 3, password = 'correct horse' WHERE id = 1; COMMIT`)
	superuserExec(t, dbURL, `BEGIN; INSERT INTO public.orders (item, qty) VALUES ('never', 0); ROLLBACK`)
	superuserExec(t, dbURL, `INSERT INTO public.orders (item, qty) VALUES ('fig', 9)`)

	p2 := runProcess(t, "DATABASE_URL="+dbURL, "PLUGIN_INTERNAL_SECRET="+testSecret)
	waitFor(t, 10*time.Second, "7 events after the restart", func() bool { return len(exportEvents(t, p2.service, "acme")) >= 7 })
	evs := exportEvents(t, p2.service, "acme")
	want := []string{
		`orders.insert 1 {"id":1,"item":"apple","password":"[redacted]","qty":1,"source_account_id":"acme","ssn":"[redacted]"}`,
		`orders.update 1 {"qty":{"new":2,"old":1}}`,
		`orders.insert 2 {"id":2,"item":"pear","password":"[redacted]","qty":5,"source_account_id":"acme","ssn":"[redacted]"}`,
		`orders.delete 2 {"id":2,"item":"pear","password":"[redacted]","qty":5,"source_account_id":"acme","ssn":"[redacted]"}`,
		`orders.insert 3 {"id":3,"item":"plum","password":"[redacted]","qty":7,"source_account_id":"acme","ssn":"[redacted]"}`,
		`orders.update 1 {"password":{"new":"[redacted]","old":"[redacted]"},"qty":{"new":3,"old":2}}`,
		`orders.insert 5 {"id":5,"item":"fig","password":"[redacted]","qty":9,"source_account_id":"acme","ssn":"[redacted]"}`,
	}
	if got := summary(evs); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("chain\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	seen := map[float64]bool{}
	for _, e := range evs {
		meta := e["metadata"].(map[string]any)
		id := meta["capture_id"].(float64)
		if seen[id] || e["source"] != "postgres" || e["actor_type"] != "system" || meta["db_user"] != "postgres" {
			t.Errorf("event %v", e)
		}
		seen[id] = true
	}
	if n := verifyOK(t, p2.service, "acme"); n != 7 {
		t.Fatalf("verify checked %d events", n)
	}

	// Removed: the table's changes are no longer staged.
	if code, out, _ := captureCmd(t, dbURL, "remove", "public.orders"); code != 0 || !strings.Contains(out, "no longer captured") {
		t.Fatalf("capture remove: %d %q", code, out)
	}
	superuserExec(t, dbURL, `INSERT INTO public.orders (item, qty) VALUES ('late', 1)`)
	if n := countRows(t, dbURL, `SELECT count(*) FROM np_nself_audit.np_audit_capture_changes`); n != 7 {
		t.Errorf("%d staged rows after remove, want 7", n)
	}
	if code, out, _ := captureCmd(t, dbURL, "list"); code != 0 || out != "no table is captured\n" {
		t.Errorf("capture list after remove: %d %q", code, out)
	}
	if code, _, errOut := captureCmd(t, dbURL, "remove", "public.orders"); code != 1 || !strings.Contains(errOut, "is not captured") {
		t.Errorf("remove twice: %d %q", code, errOut)
	}
	if code, _, _ := captureCmd(t, dbURL, "add"); code != 2 {
		t.Errorf("add without a table: exit %d", code)
	}
}

func countRows(t *testing.T, dbURL, sql string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTableCaptureConcurrent: many writers commit changes to a captured
// table at once, in transactions that overlap and commit out of the order
// in which they wrote, some rolled back, while two services move them.
// Every committed change is in the chain exactly once, nothing rolled back
// is, the chain verifies, and the updates of one contended row appear in
// commit order (each starts where the previous one ended).
func TestTableCaptureConcurrent(t *testing.T) {
	t.Parallel()
	dbURL := pgtestDatabase(t)
	s1 := startOn(t, dbURL, "")
	s2 := startOn(t, dbURL, "") // a second process: its mover waits for the lead
	const writers, each = 6, 15
	superuserExec(t, dbURL, `CREATE TABLE public.counter (id int PRIMARY KEY, n int NOT NULL)`)
	superuserExec(t, dbURL, `CREATE TABLE public.items (id bigserial PRIMARY KEY, writer int NOT NULL, i int NOT NULL)`)
	superuserExec(t, dbURL, `INSERT INTO public.counter VALUES (1, 0)`)
	for _, table := range []string{"public.counter", "public.items"} {
		if code, _, errOut := captureCmd(t, dbURL, "add", table); code != 0 {
			t.Fatalf("capture add %s: %s", table, errOut)
		}
	}

	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = writers
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	committed := 0
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for i := 0; i < each; i++ {
				ctx := context.Background()
				tx, err := pool.Begin(ctx)
				if err != nil {
					errs <- err
					return
				}
				// Write an item first (taking a staging id), linger so that
				// others commit meanwhile, then bump the shared counter.
				_, err = tx.Exec(ctx, `SELECT set_config('app.source_account_id', 'acme', true)`)
				if err == nil {
					_, err = tx.Exec(ctx, `INSERT INTO public.items (writer, i) VALUES ($1, $2)`, w, i)
				}
				time.Sleep(time.Duration(rng.Intn(4)) * time.Millisecond)
				if err == nil {
					_, err = tx.Exec(ctx, `UPDATE public.counter SET n = n + 1 WHERE id = 1`)
				}
				if err != nil {
					tx.Rollback(ctx)
					errs <- err
					return
				}
				if i%5 == 4 { // every fifth transaction rolls back
					tx.Rollback(ctx)
					continue
				}
				if err := tx.Commit(ctx); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				committed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := 2 * committed
	waitFor(t, 20*time.Second, fmt.Sprintf("%d events", want), func() bool { return len(exportEvents(t, s1, "acme")) >= want })

	evs := exportEvents(t, s2, "acme")
	if len(evs) != want {
		t.Fatalf("%d events, want %d (%d committed transactions of 2 changes)", len(evs), want, committed)
	}
	ids := map[float64]bool{}
	n := 0
	items := map[string]bool{}
	for _, e := range evs {
		meta := e["metadata"].(map[string]any)
		id := meta["capture_id"].(float64)
		if ids[id] {
			t.Fatalf("staged change %v is in the chain twice", id)
		}
		ids[id] = true
		switch e["action"] {
		case "counter.update":
			ch := meta["changes"].(map[string]any)["n"].(map[string]any)
			if ch["old"] != float64(n) || ch["new"] != float64(n+1) {
				t.Fatalf("counter update %v after n=%d: not in commit order", ch, n)
			}
			n++
		case "items.insert":
			items[e["resource_id"].(string)] = true
		default:
			t.Fatalf("unexpected event %v", e)
		}
	}
	if n != committed || len(items) != committed {
		t.Fatalf("%d counter updates and %d items, want %d of each", n, len(items), committed)
	}
	if moved := countRows(t, dbURL, `SELECT count(*) FROM np_nself_audit.np_audit_capture_moved`); moved != want {
		t.Errorf("the ledger lists %d moves, want %d", moved, want)
	}
	if got := verifyOK(t, s1, "acme"); got != want {
		t.Errorf("verify checked %d", got)
	}
	t.Logf("%d transactions committed, %d rolled back; %d changes moved once each, in order", committed, writers*each-committed, want)
}

// failingRecord is the real staging table with its ledger write failing
// once: a crash between the append and the ledger.
type failingRecord struct {
	capture.Staging
	failed bool
}

func (f *failingRecord) Record(ctx context.Context, moved []capture.Moved, floor int64) error {
	if !f.failed {
		f.failed = true
		return errors.New("injected: the process died before the ledger write")
	}
	return f.Staging.Record(ctx, moved, floor)
}

// TestMoverExactlyOnce drives the mover round by round on a real database:
// a crash between the append and the ledger write does not chain a change
// twice; a transaction that wrote first but commits last is moved after
// the ones that committed before it, not lost behind the floor; only one
// mover leads.
func TestMoverExactlyOnce(t *testing.T) {
	t.Parallel()
	dbURL := pgtestDatabase(t)
	ctx := context.Background()
	store, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	superuserExec(t, dbURL, `CREATE TABLE public.t (id int PRIMARY KEY, v text)`)
	if _, err := store.CaptureAdd(ctx, postgres.CapturedTable{Schema: "public", Table: "t"}); err != nil {
		t.Fatal(err)
	}
	w := ingest.New(store, ingest.Config{})
	go w.Run()
	defer w.Close(ctx)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	chain := func() []string {
		var out []string
		for after := int64(0); ; {
			evs, err := store.Chain(ctx, audit.Scope{AccountID: "primary"}, after, 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				out = append(out, e.Action+" "+e.ResourceID)
				after = e.Seq
			}
			if len(evs) < 100 {
				return out
			}
		}
	}

	superuserExec(t, dbURL, `INSERT INTO public.t VALUES (1, 'a'), (2, 'b'), (3, 'c')`)
	crashing := capture.NewMover(&failingRecord{Staging: store.CaptureStaging()}, w, capture.NewRedactor(nil), logger)
	if _, err := crashing.Round(ctx); err == nil {
		t.Fatal("the injected failure was not reported")
	}
	if got := chain(); len(got) != 3 {
		t.Fatalf("before the ledger write: %v", got)
	}
	// The next round (here: another process, the first one gone) appends
	// again, is answered from the idempotency keys, and records.
	if _, err := crashing.Round(ctx); err != nil { // still leading: this round records
		t.Fatal(err)
	}
	if got := chain(); strings.Join(got, ",") != "t.insert 1,t.insert 2,t.insert 3" {
		t.Fatalf("after the retry: %v", got)
	}
	second := capture.NewMover(store.CaptureStaging(), w, capture.NewRedactor(nil), logger)
	if n, err := second.Round(ctx); n != 0 || err != nil {
		t.Fatalf("a second mover moved %d (%v) while the first leads", n, err)
	}
	crashing.Close() // the first process stops: the second leads

	// Transaction A writes first (lower staging id) and commits last.
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	txA, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := txA.Exec(ctx, `INSERT INTO public.t VALUES (10, 'first written')`); err != nil {
		t.Fatal(err)
	}
	superuserExec(t, dbURL, `INSERT INTO public.t VALUES (11, 'first committed')`)
	for i := 0; i < 3; i++ { // several rounds: the floor must not pass A's row
		if _, err := second.Round(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	superuserExec(t, dbURL, `INSERT INTO public.t VALUES (12, 'last')`)
	for i := 0; i < 3; i++ {
		if _, err := second.Round(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := chain(); strings.Join(got, ",") != "t.insert 1,t.insert 2,t.insert 3,t.insert 11,t.insert 10,t.insert 12" {
		t.Fatalf("chain %v", got)
	}
	storetest.VerifyChain(t, store, "primary")
	// The floor rises past the rows moved once every transaction that ran
	// when it was marked has ended; other tests' transactions on the same
	// cluster may delay that, so rounds go on (each moving a new row, which
	// records the floor) until it has.
	var floor int64
	waitFor(t, 20*time.Second, "the floor never passed the first rows", func() bool {
		superuserExec(t, dbURL, `INSERT INTO public.t SELECT coalesce(max(id), 0) + 1, 'tick' FROM public.t`)
		for i := 0; i < 2; i++ {
			if _, err := second.Round(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := store.Pool().QueryRow(ctx, `SELECT max(floor) FROM np_nself_audit.np_audit_capture_moved`).Scan(&floor); err != nil {
			t.Fatal(err)
		}
		return floor >= 6
	})
	storetest.VerifyChain(t, store, "primary")
}
