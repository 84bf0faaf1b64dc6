package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/pgtest"
	"github.com/nself-org/nself-audit/internal/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) audit.Store {
		s, _ := setup(t)
		return s
	})
}

// setup returns a migrated store on a fresh database and a superuser pool
// on the same database, which bypasses the app role.
func setup(t *testing.T) (*Store, *pgxpool.Pool) {
	t.Helper()
	url := pgtest.Default.NewDatabase(t)
	ctx := context.Background()
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	su, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(su.Close)
	return s, su
}

// setupTwo returns two stores (two pools, as two processes would have) on
// one fresh database.
func setupTwo(t *testing.T) (*Store, *Store) {
	t.Helper()
	s1, _ := setup(t)
	s2, err := Open(context.Background(), s1.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	return s1, s2
}

var testNow = time.Now()

// newEvent returns a valid event of account for actor.
func newEvent(t *testing.T, account, actor, action string) *audit.Event {
	t.Helper()
	in := &audit.EventInput{ActorID: actor, Action: action}
	e, err := in.Validate(account, "test", testNow)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// asAppRole begins a transaction on the superuser's pool scoped as the
// service scopes its own: the app role and account. The caller rolls back.
func asAppRole(t *testing.T, su *pgxpool.Pool, account string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := su.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, scopeSQL, account, "", AppRole); err != nil {
		tx.Rollback(ctx)
		t.Fatal(err)
	}
	return tx
}

func appendEvents(t *testing.T, s *Store, events ...*audit.Event) {
	t.Helper()
	items := make([]*audit.AppendItem, len(events))
	for i, e := range events {
		items[i] = &audit.AppendItem{Event: e}
	}
	if err := s.Append(context.Background(), items); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateOnceAndLedger(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	again, err := s.Migrate(ctx)
	if err != nil || len(again) != 0 {
		t.Fatalf("second Migrate applied %v, %v; want nothing", again, err)
	}
	all, _ := Migrations()
	st, err := s.Migrations(ctx)
	if err != nil || st.Applied != len(all) || st.Expected != len(all) || len(all) == 0 {
		t.Fatalf("Migrations() = %+v, %v; want %d of %d", st, err, len(all), len(all))
	}
	var sum string
	if err := su.QueryRow(ctx, `SELECT checksum FROM np_nself_audit.schema_migrations WHERE filename = $1`, all[0].Filename).Scan(&sum); err != nil || sum != all[0].Checksum {
		t.Fatalf("ledger checksum %q, %v; want %q", sum, err, all[0].Checksum)
	}

	// An applied file that changed is an error, not a silent skip.
	if _, err := su.Exec(ctx, `UPDATE np_nself_audit.schema_migrations SET checksum = 'x' WHERE filename = $1`, all[0].Filename); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "changed after it was applied") {
		t.Fatalf("Migrate with a changed file: %v", err)
	}
	if st, _ := s.Migrations(ctx); st.Applied != len(all)-1 {
		t.Fatalf("a changed file still counts as applied: %+v", st)
	}
}

// TestDoctorChecks runs the queries nself doctor runs (SEC-HARDENING-01 and
// -07) and checks what least privilege means for the app role.
func TestDoctorChecks(t *testing.T) {
	t.Parallel()
	_, su := setup(t)
	ctx := context.Background()

	rows, err := su.Query(ctx, `SELECT n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relname LIKE 'np\_%'`)
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string]bool{}
	for rows.Next() {
		var name string
		var enabled, forced bool
		if err := rows.Scan(&name, &enabled, &forced); err != nil {
			t.Fatal(err)
		}
		tables[name] = true
		if !enabled || !forced {
			t.Errorf("%s: row security enabled=%v forced=%v; want both", name, enabled, forced)
		}
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	month := time.Now().UTC().Format("200601")
	for _, want := range []string{"np_audit_chain_heads", "np_audit_idempotency", "np_audit_events_default", "np_audit_events_p" + month,
		"np_audit_capture_changes", "np_audit_capture_moved"} {
		if !tables["np_nself_audit."+want] {
			t.Errorf("table %s missing; have %v", want, tables)
		}
	}

	var n int
	if err := su.QueryRow(ctx, `SELECT count(*) FROM information_schema.triggers
		WHERE event_object_table = 'np_audit_events' AND trigger_name = 'trg_audit_immutable'`).Scan(&n); err != nil || n == 0 {
		t.Fatalf("trg_audit_immutable on np_audit_events: %d rows, %v", n, err)
	}

	for _, c := range []struct {
		table, priv string
		want        bool
	}{
		{"np_audit_events", "INSERT", true},
		{"np_audit_events", "SELECT", true},
		{"np_audit_events", "UPDATE", false},
		{"np_audit_events", "DELETE", false},
		{"np_audit_events", "TRUNCATE", false},
		{"np_audit_idempotency", "UPDATE", false},
		{"np_audit_idempotency", "DELETE", false},
		{"np_audit_chain_heads", "DELETE", false},
		{"np_audit_events_default", "SELECT", false},
		{"np_audit_capture_changes", "SELECT", true},
		{"np_audit_capture_changes", "INSERT", false},
		{"np_audit_capture_changes", "UPDATE", false},
		{"np_audit_capture_changes", "DELETE", false},
		{"np_audit_capture_moved", "INSERT", true},
		{"np_audit_capture_moved", "UPDATE", false},
		{"np_audit_capture_moved", "DELETE", false},
	} {
		var has bool
		if err := su.QueryRow(ctx, `SELECT has_table_privilege($1, 'np_nself_audit.'||$2, $3)`, AppRole, c.table, c.priv).Scan(&has); err != nil {
			t.Fatal(err)
		}
		if has != c.want {
			t.Errorf("%s %s on %s = %v, want %v", AppRole, c.priv, c.table, has, c.want)
		}
	}
	var super, login bool
	if err := su.QueryRow(ctx, `SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = $1`, AppRole).Scan(&super, &login); err != nil || super || login {
		t.Fatalf("%s: super=%v login=%v err=%v; want a NOLOGIN non-superuser", AppRole, super, login, err)
	}
}

// TestAppendOnlyForSuperuser: UPDATE, DELETE and TRUNCATE fail even for the
// superuser, on the table and on a partition directly.
func TestAppendOnlyForSuperuser(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	item := &audit.AppendItem{Event: newEvent(t, "primary", "u1", "doc.read"), IdempotencyKey: "k", Fingerprint: "f"}
	if err := s.Append(ctx, []*audit.AppendItem{item}); err != nil {
		t.Fatal(err)
	}
	partition := "np_nself_audit.np_audit_events_p" + time.Now().UTC().Format("200601")
	for _, sql := range []string{
		`UPDATE np_nself_audit.np_audit_events SET action = 'doc.write'`,
		`DELETE FROM np_nself_audit.np_audit_events`,
		`TRUNCATE np_nself_audit.np_audit_events`,
		`UPDATE ` + partition + ` SET action = 'doc.write'`,
		`DELETE FROM ` + partition,
		`TRUNCATE ` + partition,
		`TRUNCATE np_nself_audit.np_audit_events_default`,
		`DELETE FROM np_nself_audit.np_audit_idempotency`,
		`TRUNCATE np_nself_audit.np_audit_idempotency`,
		`TRUNCATE np_nself_audit.np_audit_chain_heads`,
		`TRUNCATE np_nself_audit.np_audit_checkpoints`,
		// Replica mode, the usual way around triggers, does not help.
		`SET session_replication_role = replica; UPDATE np_nself_audit.np_audit_events SET action = 'doc.write'`,
		`SET session_replication_role = replica; DELETE FROM np_nself_audit.np_audit_events`,
		`SET session_replication_role = replica; DELETE FROM ` + partition,
		`SET session_replication_role = replica; TRUNCATE ` + partition,
		`SET session_replication_role = replica; DELETE FROM np_nself_audit.np_audit_idempotency`,
	} {
		_, err := su.Exec(ctx, sql)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: error %v; want append-only refusal", sql, err)
		}
	}
	var n int
	if err := su.QueryRow(ctx, `SELECT count(*) FROM np_nself_audit.np_audit_events WHERE action = 'doc.read'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("event count after refused changes: %d, %v", n, err)
	}
}

// TestIsolationUnderSuperuser: the connection is the superuser, yet the
// database itself isolates accounts, because queries run under the app role
// (the contract suite checks the store's own scoping).
func TestIsolationUnderSuperuser(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	a1, a2 := newEvent(t, "acme", "alice", "doc.read"), newEvent(t, "acme", "bob", "doc.read")
	b1 := newEvent(t, "globex", "alice", "doc.read")
	appendEvents(t, s, a1, a2, b1)

	// The database itself enforces it: as the app role, a query without any
	// WHERE clause sees only the account set for the transaction, nothing
	// when none is set, and cannot write into another account.
	count := func(account, actor string) int {
		tx, err := su.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, scopeSQL, account, actor, roleOf(audit.Scope{AccountID: account, ActorID: actor})); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM np_nself_audit.np_audit_events`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count("acme", ""); n != 2 {
		t.Errorf("acme under RLS sees %d rows, want 2", n)
	}
	if n := count("acme", "bob"); n != 1 {
		t.Errorf("acme/bob under RLS sees %d rows, want 1", n)
	}
	if n := count("", ""); n != 0 {
		t.Errorf("no account under RLS sees %d rows, want 0", n)
	}
	// The actor role: only its own events, nothing with no actor set,
	// and no writing, no other table.
	asActor := func(actor, sql string) (int, error) {
		tx, err := su.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, scopeSQL, "acme", actor, ActorRole); err != nil {
			t.Fatal(err)
		}
		var n int
		err = tx.QueryRow(ctx, sql).Scan(&n)
		return n, err
	}
	if n, err := asActor("", `SELECT count(*) FROM np_nself_audit.np_audit_events`); err != nil || n != 0 {
		t.Errorf("actor role without an actor sees %d rows (%v), want 0", n, err)
	}
	for _, sql := range []string{
		`SELECT count(*) FROM np_nself_audit.np_audit_idempotency`,
		`SELECT count(*) FROM np_nself_audit.np_audit_checkpoints`,
		`WITH i AS (INSERT INTO np_nself_audit.np_audit_events (id, source_account_id, seq, occurred_at, recorded_at,
			actor_id, actor_type, action, outcome, severity, prev_hash, hash) VALUES (gen_random_uuid(), 'acme', 99, now(), now(),
			'bob', 'user', 'x.y', 'success', 'info', repeat('0', 64), repeat('0', 64)) RETURNING 1) SELECT count(*) FROM i`,
	} {
		if _, err := asActor("bob", sql); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("actor role: %s: %v; want permission denied", strings.Fields(sql)[0]+" "+strings.Fields(sql)[3], err)
		}
	}
	tx := asAppRole(t, su, "acme")
	defer tx.Rollback(ctx)
	_, err := tx.Exec(ctx, `INSERT INTO np_nself_audit.np_audit_events (id, source_account_id, seq, occurred_at, recorded_at,
		actor_type, action, outcome, severity, prev_hash, hash) VALUES (gen_random_uuid(), 'globex', 99, now(), now(),
		'user', 'x.y', 'success', 'info', repeat('0', 64), repeat('0', 64))`)
	if err == nil || !strings.Contains(err.Error(), "row-level security") {
		t.Fatalf("insert into another account: %v; want a row-level security violation", err)
	}
}

// TestConcurrentWritersOneChain: two stores (two pools, as two processes
// would have) append concurrently to the same accounts; every chain stays
// gap-free and verifies.
func TestConcurrentWritersOneChain(t *testing.T) {
	t.Parallel()
	s1, s2 := setupTwo(t)
	ctx := context.Background()

	const writers, batches, perBatch = 8, 10, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	for w := 0; w < writers; w++ {
		store := s1
		if w%2 == 1 {
			store = s2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				var items []*audit.AppendItem
				for i := 0; i < perBatch; i++ {
					account := []string{"acme", "globex"}[(b+i)%2]
					items = append(items, &audit.AppendItem{Event: newEvent(t, account, fmt.Sprintf("w%d", w), "doc.write")})
				}
				errs <- store.Append(ctx, items)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	total := storetest.VerifyChain(t, s1, "acme") + storetest.VerifyChain(t, s1, "globex")
	if total != writers*batches*perBatch {
		t.Fatalf("%d events in the chains, want %d", total, writers*batches*perBatch)
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Events(context.Background(), audit.Scope{AccountID: "primary"}, audit.Filter{Limit: 1})
	if audit.ErrorCode(err) != audit.EUNAVAILABLE {
		t.Fatalf("unreachable database: %v (code %s), want EUNAVAILABLE", err, audit.ErrorCode(err))
	}
	if _, err := s.Migrations(context.Background()); audit.ErrorCode(err) != audit.EUNAVAILABLE {
		t.Fatalf("Migrations on an unreachable database: %v", err)
	}
}

// TestConnectTimeout: a host that accepts connections and never answers
// (a hung server, a partition) fails a connection attempt after the
// default connect timeout, even with no deadline of the caller's, as
// EUNAVAILABLE.
func TestConnectTimeout(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	s, err := Open(context.Background(), "postgres://postgres@"+ln.Addr().String()+"/none?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	_, err = s.Migrations(context.Background())
	took := time.Since(start)
	if audit.ErrorCode(err) != audit.EUNAVAILABLE {
		t.Fatalf("silent host: %v (code %s), want EUNAVAILABLE", err, audit.ErrorCode(err))
	}
	if took < connectTimeout-time.Second || took > connectTimeout+3*time.Second {
		t.Fatalf("gave up after %v, want about %v", took, connectTimeout)
	}
}

func TestEnsurePartitionsIdempotent(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	n, err := s.EnsurePartitions(context.Background(), 2)
	if err != nil || n != 0 {
		t.Fatalf("EnsurePartitions after migrate created %d, %v; want 0", n, err)
	}
	n, err = s.EnsurePartitions(context.Background(), 3)
	if err != nil || n != 1 {
		t.Fatalf("one more month ahead created %d, %v; want 1", n, err)
	}
	// An old event lands in the default partition and reads back.
	e := newEvent(t, "primary", "u1", "old.event")
	e.OccurredAt = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	appendEvents(t, s, e)
	if got, err := s.Event(context.Background(), audit.Scope{AccountID: "primary"}, e.ID); err != nil || !got.OccurredAt.Equal(e.OccurredAt) {
		t.Fatalf("old event: %v, %v", got, err)
	}
}

// TestChainHeadOnlyMovesForward: not even the app role can rewind a chain
// head (which would let the next write fork the chain) or point it at an
// event that is not stored.
func TestChainHeadOnlyMovesForward(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	appendEvents(t, s, newEvent(t, "acme", "u1", "doc.read"), newEvent(t, "acme", "u1", "doc.read"))
	for _, sql := range []string{
		`UPDATE np_nself_audit.np_audit_chain_heads SET seq = 1`,
		`UPDATE np_nself_audit.np_audit_chain_heads SET seq = 3`,
		`UPDATE np_nself_audit.np_audit_chain_heads SET hash = repeat('a', 64)`,
		`INSERT INTO np_nself_audit.np_audit_chain_heads (source_account_id, seq, hash) VALUES ('acme2', 5, repeat('0', 64))`,
	} {
		tx := asAppRole(t, su, "acme")
		if sql[:6] == "INSERT" {
			tx.Exec(ctx, `SELECT set_config('app.source_account_id', 'acme2', true)`)
		}
		_, err := tx.Exec(ctx, sql)
		tx.Rollback(ctx)
		if err == nil || !strings.Contains(err.Error(), "chain head") {
			t.Errorf("%s as the app role: %v; want a refusal", sql, err)
		}
	}
	if _, err := su.Exec(ctx, `SET session_replication_role = replica; UPDATE np_nself_audit.np_audit_chain_heads SET seq = 1`); err == nil {
		t.Error("the superuser rewound a head in replica mode")
	}
	appendEvents(t, s, newEvent(t, "acme", "u1", "doc.read"))
	if n := storetest.VerifyChain(t, s, "acme"); n != 3 {
		t.Fatalf("chain holds %d events, want 3", n)
	}
}

// TestChainHeadGuardGenericPlan: the guard that runs on every move of a
// head plans its lookup once (migration 0010), not once per call over every
// partition.
func TestChainHeadGuardGenericPlan(t *testing.T) {
	t.Parallel()
	_, su := setup(t)
	var config []string
	err := su.QueryRow(context.Background(), `SELECT coalesce(proconfig, '{}') FROM pg_proc
		WHERE oid = 'np_nself_audit.chain_head_guard()'::regprocedure`).Scan(&config)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(config, "plan_cache_mode=force_generic_plan") {
		t.Fatalf("chain_head_guard settings %q; want plan_cache_mode=force_generic_plan", config)
	}
}

// TestHashChecks: the hash columns take exactly 64 lowercase hex digits
// (migration 0011 replaced 0001's regular expressions with a cheaper
// check that must admit the same strings).
func TestHashChecks(t *testing.T) {
	t.Parallel()
	_, su := setup(t)
	ctx := context.Background()
	good := strings.Repeat("0123456789abcdef", 4)
	insert := func(prev, hash string) error {
		tx := asAppRole(t, su, "acme")
		defer tx.Rollback(ctx)
		_, err := tx.Exec(ctx, `INSERT INTO np_nself_audit.np_audit_events (id, source_account_id, seq, occurred_at,
			recorded_at, actor_type, action, outcome, severity, prev_hash, hash)
			VALUES (gen_random_uuid(), 'acme', 1, now(), now(), 'user', 'x.y', 'success', 'info', $1, $2)`, prev, hash)
		return err
	}
	if err := insert(good, good); err != nil {
		t.Fatalf("64 lowercase hex digits refused: %v", err)
	}
	for _, bad := range []string{
		"",
		good[:63],
		good + "0",
		strings.ToUpper(good),
		good[:63] + "g",
		good[:62] + " 0",
		good[:60] + "\x00",
		good[:62] + "é",
	} {
		if err := insert(bad, good); err == nil {
			t.Errorf("prev_hash %q accepted", bad)
		}
		if err := insert(good, bad); err == nil {
			t.Errorf("hash %q accepted", bad)
		}
	}
}

// appendTally counts the events that concurrent appends stored and checks
// that each idempotency key is answered with one event.
type appendTally struct {
	stored atomic.Int64
	errs   chan error
	mu     sync.Mutex
	byKey  map[string]uuid.UUID
}

func newAppendTally(stored int64, items int) *appendTally {
	a := &appendTally{errs: make(chan error, items), byKey: map[string]uuid.UUID{}}
	a.stored.Store(stored)
	return a
}

// append appends items to s and records the outcome; false when Append
// itself failed.
func (a *appendTally) append(ctx context.Context, s *Store, items []*audit.AppendItem) bool {
	if err := s.Append(ctx, items); err != nil {
		a.errs <- err
		return false
	}
	for _, it := range items {
		switch {
		case it.Err != nil:
			a.errs <- it.Err
		case it.Replayed:
		default:
			a.stored.Add(1)
		}
		if it.IdempotencyKey != "" {
			a.mu.Lock()
			if id, ok := a.byKey[it.IdempotencyKey]; ok && id != it.Event.ID {
				a.errs <- fmt.Errorf("key %s answered with %s and %s", it.IdempotencyKey, id, it.Event.ID)
			}
			a.byKey[it.IdempotencyKey] = it.Event.ID
			a.mu.Unlock()
		}
	}
	return true
}

// check fails t with the first error recorded, once every append is done.
func (a *appendTally) check(t *testing.T) {
	t.Helper()
	close(a.errs)
	for err := range a.errs {
		t.Fatal(err)
	}
}

// TestPipelineConcurrentAppends: appends from many goroutines go through
// the write pipeline together, with another store moving the same head
// (NSA01 fallbacks) and keys repeated across goroutines (unique-violation
// fallbacks): every append succeeds, each key is stored once, and the chain
// holds exactly the events stored.
func TestPipelineConcurrentAppends(t *testing.T) {
	t.Parallel()
	s1, s2 := setupTwo(t)
	ctx := context.Background()
	appendEvents(t, s1, newEvent(t, "acme", "u0", "doc.read")) // locking path, then the cache is warm
	appendEvents(t, s1, newEvent(t, "acme", "u0", "doc.read"))
	const workers, rounds = 8, 20
	tally := newAppendTally(2, workers*rounds*2)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := s1
			if w == 0 {
				s = s2 // moves the head under s1's pipeline
			}
			for r := range rounds {
				items := []*audit.AppendItem{{Event: newEvent(t, "acme", fmt.Sprintf("u%d", w), "doc.read")}}
				if r%4 == 0 { // the same key from every worker: one stores it, the others replay it
					key := fmt.Sprintf("k%d", r)
					items = append(items, &audit.AppendItem{Event: newEvent(t, "acme", "shared", "doc.read"),
						IdempotencyKey: key, Fingerprint: "f-" + key})
				}
				if !tally.append(ctx, s, items) {
					return
				}
			}
		}()
	}
	wg.Wait()
	tally.check(t)
	if n := storetest.VerifyChain(t, s1, "acme"); n != tally.stored.Load() {
		t.Fatalf("chain holds %d events; %d were stored", n, tally.stored.Load())
	}
	if s1.fastCommits.Load() == 0 {
		t.Fatal("no batch went through the pipeline")
	}
}

// TestPipelineConnectionLost: when the pipeline's backend is terminated,
// an append fails (or succeeds, if the loss is found before its write)
// without storing anything half, and the next one dials again.
func TestPipelineConnectionLost(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	appendEvents(t, s, newEvent(t, "acme", "u1", "doc.read"))
	appendEvents(t, s, newEvent(t, "acme", "u1", "doc.read")) // through the pipeline
	before := s.fastCommits.Load()
	var killed int
	if err := su.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, pipeApplicationName).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d pipeline backends, want 1", killed)
	}
	stored := int64(2)
	for range 3 {
		err := s.Append(ctx, []*audit.AppendItem{{Event: newEvent(t, "acme", "u1", "doc.read")}})
		if err == nil {
			stored++
		} else if audit.ErrorCode(err) != audit.EUNAVAILABLE {
			t.Fatalf("append on a lost connection: %v; want success or unavailable", err)
		}
	}
	if stored < 4 {
		t.Fatalf("%d of 3 appends after the loss succeeded; want the later ones to", stored-2)
	}
	if n := storetest.VerifyChain(t, s, "acme"); n != stored {
		t.Fatalf("chain holds %d events; %d appends succeeded", n, stored)
	}
	if s.fastCommits.Load() == before {
		t.Fatal("no append went through a new pipeline connection")
	}
}

// appendAnalyzed appends batches of 1000 events of account acme, event i of
// batch b made by input, then analyses the table as autovacuum would.
func appendAnalyzed(t *testing.T, s *Store, su *pgxpool.Pool, batches int, input func(b, i int) *audit.EventInput) {
	t.Helper()
	for b := range batches {
		var evs []*audit.Event
		for i := range 1000 {
			e, err := input(b, i).Validate("acme", "", testNow)
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, e)
		}
		appendEvents(t, s, evs...)
	}
	if _, err := su.Exec(context.Background(), `ANALYZE np_nself_audit.np_audit_events`); err != nil {
		t.Fatal(err)
	}
}

// TestFilterIndexesUsed: each list filter is served by an index, so a rare
// value is found without reading the account's other events.
func TestFilterIndexesUsed(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	appendAnalyzed(t, s, su, 5, func(b, i int) *audit.EventInput {
		in := &audit.EventInput{ActorID: fmt.Sprintf("u%d", i%300), Action: fmt.Sprintf("doc.a%d", i%40),
			ResourceType: "doc", ResourceID: fmt.Sprintf("d%d", i), Source: fmt.Sprintf("plugin-%d", i%30)}
		if i == 7 {
			in.Severity, in.Outcome, in.ActorType, in.ActorID = "critical", "denied", "system", ""
		}
		return in
	})
	// The plan must look the value up in an index of the current month's
	// partition (index names there are generated; the condition tells).
	for _, c := range []struct {
		f    audit.Filter
		cond string
	}{
		{audit.Filter{Severity: "critical"}, "(severity = 'critical'::text)"},
		{audit.Filter{Outcome: "denied"}, "(outcome = 'denied'::text)"},
		{audit.Filter{ActorType: "system"}, "(actor_type = 'system'::text)"},
		{audit.Filter{Source: "plugin-3"}, "(source = 'plugin-3'::text)"},
		{audit.Filter{ActorID: "u5"}, "(actor_id = 'u5'::text)"},
		{audit.Filter{Action: "doc.a1"}, "(action = 'doc.a1'::text)"},
		{audit.Filter{ResourceType: "doc", ResourceID: "d9"}, "(resource_id = 'd9'::text)"},
	} {
		w := filterWhere(audit.Scope{AccountID: "acme"}, c.f)
		tx, err := su.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tx.Exec(ctx, scopeSQL, "acme", "", AppRole)
		rows, err := tx.Query(ctx, `EXPLAIN SELECT id FROM np_nself_audit.np_audit_events WHERE `+w.String()+
			` ORDER BY occurred_at DESC, id DESC LIMIT 51`, w.args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan strings.Builder
		for rows.Next() {
			var line string
			rows.Scan(&line)
			plan.WriteString(line + "\n")
		}
		tx.Rollback(ctx)
		indexed := false
		for _, line := range strings.Split(plan.String(), "\n") {
			if strings.Contains(line, "Index Cond:") && strings.Contains(line, c.cond) {
				indexed = true
			}
		}
		if !indexed {
			t.Errorf("%s is not an index condition:\n%s", c.cond, plan.String())
		}
	}
}

// TestChainGuardPlan reads the plan the chain head guard (migration 0001,
// on a generic plan since 0010) runs when a head moves, shown by
// auto_explain, in a fresh database whose partitions are nearly empty:
// the state in which every index that leads with the account costs the
// same. The guard must find the head by (account, seq) in the chain index;
// with seq left to a filter it walks the account's events on every batch
// (see migration 0012).
func TestChainGuardPlan(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	first := newEvent(t, "acme", "u1", "doc.read")
	appendEvents(t, s, first)

	cfg := su.Config().ConnConfig.Copy()
	var mu sync.Mutex
	var plans []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		plans = append(plans, n.Message)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`LOAD 'auto_explain'`,
		`SET auto_explain.log_min_duration = 0`,
		`SET auto_explain.log_nested_statements = on`,
		`SET client_min_messages = log`,
		`SET ROLE ` + AppRole,
		`SELECT set_config('app.source_account_id', 'acme', false)`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// Moves to a seq that names no event: the guard looks it up, finds
	// nothing and refuses the move. The first names no time (as binaries
	// older than migration 0015 move a head), so every partition is looked
	// in; the second names the event's time, and one partition is.
	guardPlan := func(move string, args ...any) string {
		t.Helper()
		mu.Lock()
		plans = nil
		mu.Unlock()
		_, err := conn.Exec(ctx, move, args...)
		if err == nil || !strings.Contains(err.Error(), "must name a stored event") {
			t.Fatalf("moving the head to a missing event: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, p := range plans {
			if strings.Contains(p, "e.seq = NEW.seq") {
				return p
			}
		}
		t.Fatalf("auto_explain showed no plan of the guard's lookup in %d plans:\n%s", len(plans), strings.Join(plans, "\n"))
		return ""
	}
	everywhere := guardPlan(`SELECT np_nself_audit.advance_chain_head($1, $2, $3, $4, $5)`,
		"acme", first.Seq, first.Hash, first.Seq+1, first.Hash)
	// (A time other than the head's: a head whose time does not change is
	// looked up everywhere, as a move without one.)
	timed := guardPlan(advanceHeadSQL, "acme", first.Seq, first.Hash, first.Seq+1, first.Hash, first.OccurredAt.Add(time.Second))
	for _, guard := range []string{everywhere, timed} {
		seqIndexed := false
		for _, line := range strings.Split(guard, "\n") {
			if strings.Contains(line, "Filter:") && strings.Contains(line, "seq =") || strings.Contains(line, "Seq Scan") {
				t.Errorf("the guard does not find the head by seq in an index: %q in\n%s", strings.TrimSpace(line), guard)
			}
			if strings.Contains(line, "Index Cond:") && strings.Contains(line, "seq =") {
				seqIndexed = true
			}
		}
		if !seqIndexed {
			t.Errorf("no index condition on seq in the guard's plan:\n%s", guard)
		}
	}
	if n := strings.Count(everywhere, " on np_audit_events_"); n < 2 {
		t.Errorf("the lookup without a time scans %d partitions; want every one:\n%s", n, everywhere)
	}
	if n := strings.Count(timed, " on np_audit_events_"); n != 1 {
		t.Errorf("the lookup with the event's time scans %d partitions, want 1:\n%s", n, timed)
	}
}

// TestChainHeadGuardEventTime: a head that names its event's time must name
// the time of a stored event with its seq and hash; binaries older than
// migration 0015, which move a head without a time (the five-argument
// advance_chain_head, or an UPDATE of seq and hash alone), are checked
// against every partition as before.
func TestChainHeadGuardEventTime(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	last := newEvent(t, "acme", "u1", "doc.read")
	appendEvents(t, s, newEvent(t, "acme", "u1", "doc.read"), last)
	seq, hash := last.Seq, last.Hash // the head, as Append linked it
	at := testNow.Add(-time.Minute).Truncate(time.Microsecond)
	next := strings.Repeat("b", 64)
	// Each case stores an event at seq+1 by hand, moves the head to it,
	// and rolls back. A move that is taken leaves the head with time
	// (nil: none).
	for _, c := range []struct {
		name, move string
		args       []any
		ok         bool
		time       *time.Time
	}{
		{"the event's time", advanceHeadSQL, []any{"acme", seq, hash, seq + 1, next, at}, true, &at},
		{"another time", advanceHeadSQL, []any{"acme", seq, hash, seq + 1, next, at.Add(time.Second)}, false, nil},
		{"another hash", advanceHeadSQL, []any{"acme", seq, hash, seq + 1, strings.Repeat("c", 64), at}, false, nil},
		{"no time (older binaries)", `SELECT np_nself_audit.advance_chain_head($1, $2, $3, $4, $5)`,
			[]any{"acme", seq, hash, seq + 1, next}, true, nil},
		{"an update of seq and hash alone (older binaries)",
			`UPDATE np_nself_audit.np_audit_chain_heads SET seq = $2, hash = $3 WHERE source_account_id = $1`,
			[]any{"acme", seq + 1, next}, true, &last.OccurredAt},
		{"an update of seq and hash alone, to no event",
			`UPDATE np_nself_audit.np_audit_chain_heads SET seq = $2, hash = $3 WHERE source_account_id = $1`,
			[]any{"acme", seq + 1, strings.Repeat("c", 64)}, false, nil},
	} {
		tx := asAppRole(t, su, "acme")
		if _, err := tx.Exec(ctx, `INSERT INTO np_nself_audit.np_audit_events
			(id, source_account_id, seq, occurred_at, recorded_at, actor_type, action, outcome, severity, prev_hash, hash)
			VALUES (gen_random_uuid(), 'acme', $1, $2, $2, 'user', 'doc.read', 'success', 'info', $3, $4)`,
			seq+1, at, hash, next); err != nil {
			tx.Rollback(ctx)
			t.Fatal(err)
		}
		_, err := tx.Exec(ctx, c.move, c.args...)
		var stored *time.Time
		if err == nil {
			if err := tx.QueryRow(ctx, `SELECT occurred_at FROM np_nself_audit.np_audit_chain_heads`).Scan(&stored); err != nil {
				t.Fatal(err)
			}
		}
		tx.Rollback(ctx)
		switch {
		case c.ok && err != nil:
			t.Errorf("%s: %v; want the move", c.name, err)
		case !c.ok && (err == nil || !strings.Contains(err.Error(), "must name a stored event")):
			t.Errorf("%s: %v; want a refusal", c.name, err)
		case c.ok && (stored == nil) != (c.time == nil), c.ok && stored != nil && !stored.Equal(*c.time):
			t.Errorf("%s: the head's time is %v, want %v", c.name, stored, c.time)
		}
	}
	if n := storetest.VerifyChain(t, s, "acme"); n != 2 {
		t.Fatalf("chain holds %d events, want 2", n)
	}
}

// TestFastPathFallsBack runs two stores (as two processes would) on one
// database: each commits in one round trip while its cached head is right,
// and falls back to the locking path when the other moved the head or
// stored a key first.
func TestFastPathFallsBack(t *testing.T) {
	t.Parallel()
	s1, s2 := setupTwo(t)
	ctx := context.Background()

	appendEvents(t, s1, newEvent(t, "acme", "u1", "doc.read")) // locking path: nothing cached yet
	if n := s1.fastCommits.Load(); n != 0 {
		t.Fatalf("first append took the fast path (%d)", n)
	}
	appendEvents(t, s1, newEvent(t, "acme", "u1", "doc.read"))
	if n := s1.fastCommits.Load(); n != 1 {
		t.Fatalf("second append: %d fast commits, want 1", n)
	}
	appendEvents(t, s2, newEvent(t, "acme", "u2", "doc.read")) // moves the head under s1
	appendEvents(t, s1, newEvent(t, "acme", "u1", "doc.read"))
	if n := s1.fastCommits.Load(); n != 1 {
		t.Fatalf("append after another writer: %d fast commits, want still 1 (fallback)", n)
	}

	// A key stored by s2 while s1's cache is warm: s1's fast insert of the
	// key fails and the locking path answers it.
	appendEvents(t, s1, newEvent(t, "acme", "u1", "doc.read"))
	appendEvents(t, s2, newEvent(t, "acme", "u2", "doc.read"))
	keyed := func(s *Store, actor string) *audit.AppendItem {
		it := &audit.AppendItem{Event: newEvent(t, "acme", actor, "doc.read"), IdempotencyKey: "k1", Fingerprint: "f-" + actor}
		if err := s.Append(ctx, []*audit.AppendItem{it}); err != nil {
			t.Fatal(err)
		}
		return it
	}
	first := keyed(s2, "u2")
	appendEvents(t, s1, newEvent(t, "acme", "u1", "doc.read")) // s1's cache is right again
	again := &audit.AppendItem{Event: newEvent(t, "acme", "u2", "doc.read"), IdempotencyKey: "k1", Fingerprint: "f-u2"}
	if err := s1.Append(ctx, []*audit.AppendItem{again}); err != nil {
		t.Fatal(err)
	}
	if !again.Replayed || again.Event.ID != first.Event.ID {
		t.Fatalf("same key and fingerprint: replayed %v, id %s; want the original %s", again.Replayed, again.Event.ID, first.Event.ID)
	}
	other := &audit.AppendItem{Event: newEvent(t, "acme", "u1", "doc.read"), IdempotencyKey: "k1", Fingerprint: "f-u1"}
	if err := s1.Append(ctx, []*audit.AppendItem{other}); err != nil {
		t.Fatal(err)
	}
	if audit.ErrorCode(other.Err) != audit.ECONFLICT {
		t.Fatalf("same key, other fingerprint: err %v; want a conflict", other.Err)
	}
	if n := storetest.VerifyChain(t, s1, "acme"); n != 8 {
		t.Fatalf("chain has %d events, want 8", n)
	}
}

// TestStatsRollups checks the rollups against counting: events of several
// accounts, hours and days, written by two stores at once (fast path and
// fallbacks), give the same whole-account stats from the rollups as from
// counting the events.
func TestStatsRollups(t *testing.T) {
	t.Parallel()
	s1, s2 := setupTwo(t)
	ctx := context.Background()

	base := time.Date(2026, 11, 20, 22, 30, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for w, store := range []*Store{s1, s2, s1, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < 15; b++ {
				var items []*audit.AppendItem
				for i := 0; i < 7; i++ {
					n := w*1000 + b*10 + i
					at := base.Add(time.Duration(n%50) * 37 * time.Minute).Format(time.RFC3339Nano)
					in := &audit.EventInput{
						OccurredAt: &at,
						ActorID:    []string{"", "alice", "bob", "carol", "svc-1"}[n%5],
						ActorType:  []string{"user", "user", "service", "system"}[n%4],
						Action:     []string{"doc.read", "doc.write", "user.login", "user.logout", "billing.paid"}[(n/3)%5],
						Outcome:    []string{"success", "failure", "denied"}[n%3],
						Severity:   []string{"info", "warning", "error", "critical"}[n%4],
					}
					if in.ActorID == "" {
						in.ActorType = "system" // the one type that needs no actor
					}
					e, err := in.Validate([]string{"acme", "globex"}[n%2], "test", base.Add(48*time.Hour))
					if err != nil {
						t.Error(err)
						return
					}
					items = append(items, &audit.AppendItem{Event: e})
				}
				if err := store.Append(ctx, items); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s1.fastCommits.Load()+s2.fastCommits.Load() == 0 {
		t.Fatal("no batch took the fast path")
	}
	for _, account := range []string{"acme", "globex", "nobody"} {
		for _, iv := range []audit.Interval{audit.Hour, audit.Day} {
			scope := audit.Scope{AccountID: account}
			rolled, err := s1.Stats(ctx, scope, audit.Filter{}, iv)
			if err != nil {
				t.Fatal(err)
			}
			// Any filter takes the counting path; this one matches everything.
			counted, err := s1.Stats(ctx, scope, audit.Filter{Since: base.Add(-time.Hour)}, iv)
			if err != nil {
				t.Fatal(err)
			}
			r, _ := json.Marshal(rolled)
			c, _ := json.Marshal(counted)
			if string(r) != string(c) {
				t.Errorf("%s %s:\nrollups  %s\ncounting %s", account, iv, r, c)
			}
			if account != "nobody" && (rolled.Total == 0 || len(rolled.Timeline) < 2) {
				t.Errorf("%s %s: too little data to compare: %+v", account, iv, rolled)
			}
		}
	}
}

// TestActionPrefixPages pages through action prefixes of few actions (read
// per action from the rollup's list) and of many (read as one range), in
// both orders and with a time range, and compares each page with the
// expected order computed here.
func TestActionPrefixPages(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	ctx := context.Background()
	base := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	var all []*audit.Event
	var items []*audit.AppendItem
	for i := 0; i < 400; i++ {
		action := fmt.Sprintf("x.a%02d", i%10) // 10 actions: per-action reads
		switch i % 4 {
		case 1:
			action = fmt.Sprintf("z.a%03d", i/4) // 100 actions: one range
		case 2:
			action = "y.other"
		}
		at := base.Add(time.Duration(i*7919%400) * time.Minute).Format(time.RFC3339Nano) // shuffled times
		in := &audit.EventInput{OccurredAt: &at, ActorID: "u", Action: action}
		e, err := in.Validate("acme", "test", base.Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, e)
		items = append(items, &audit.AppendItem{Event: e})
	}
	if err := s.Append(ctx, items); err != nil {
		t.Fatal(err)
	}
	since, until := base.Add(50*time.Minute), base.Add(300*time.Minute)
	for _, prefix := range []string{"x.", "z.", "q."} {
		for _, asc := range []bool{false, true} {
			for _, ranged := range []bool{false, true} {
				// Every event is u's: an actor-scoped reader (its own role,
				// which cannot read the rollup) pages to the same result.
				scope := audit.Scope{AccountID: "acme"}
				if ranged && asc {
					scope.ActorID = "u"
				}
				var want []uuid.UUID
				for _, e := range all {
					if strings.HasPrefix(e.Action, prefix) && (!ranged || !e.OccurredAt.Before(since) && e.OccurredAt.Before(until)) {
						want = append(want, e.ID)
					}
				}
				slices.SortFunc(want, func(a, b uuid.UUID) int {
					ea, eb := byID(all, a), byID(all, b)
					c := ea.OccurredAt.Compare(eb.OccurredAt)
					if c == 0 {
						c = strings.Compare(a.String(), b.String())
					}
					if !asc {
						c = -c
					}
					return c
				})
				f := audit.Filter{ActionPrefix: prefix, Limit: 7, Asc: asc}
				if ranged {
					f.Since, f.Until = since, until
				}
				if !ranged && !asc {
					// Another filter (every event is u's): the per-action
					// reads on plans for their values (perActionPlans); the
					// other three forms read on the generic plan, or (ranged
					// and asc) as the actor.
					f.ActorID = "u"
				}
				var got []uuid.UUID
				for {
					page, err := s.Events(ctx, scope, f)
					if err != nil {
						t.Fatal(err)
					}
					more := len(page) > f.Limit
					if more {
						page = page[:f.Limit]
					}
					for _, e := range page {
						got = append(got, e.ID)
					}
					if !more {
						break
					}
					last := page[len(page)-1]
					f.After = &audit.Cursor{OccurredAt: last.OccurredAt, ID: last.ID}
				}
				if !slices.Equal(got, want) {
					t.Errorf("prefix %s asc %v ranged %v actor %q: got %d events, want %d, or in another order", prefix, asc, ranged, scope.ActorID, len(got), len(want))
				}
				if prefix != "q." && len(want) < 20 {
					t.Errorf("prefix %s: only %d events to page through", prefix, len(want))
				}
			}
		}
	}
}

func byID(all []*audit.Event, id uuid.UUID) *audit.Event {
	for _, e := range all {
		if e.ID == id {
			return e
		}
	}
	return nil
}

// TestPerActionPlans: a prefix page takes the generic plan only when no
// filter but the prefix, the time range, the cursor, the limit and the
// order is set; any other filter's index may serve some of its values
// better, which only a plan for the values can tell.
func TestPerActionPlans(t *testing.T) {
	now := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	plain := audit.Filter{ActionPrefix: "user.", Since: now.Add(-time.Hour), Until: now, Limit: 50, Asc: true,
		After: &audit.Cursor{OccurredAt: now.Add(-time.Minute), ID: uuid.New()}}
	if got := perActionPlans(plain); got != genericPlans {
		t.Errorf("prefix, range, cursor, limit and order: %s, want %s", got, genericPlans)
	}
	for name, set := range map[string]func(f *audit.Filter){
		"actor_id":      func(f *audit.Filter) { f.ActorID = "u1" },
		"actor_type":    func(f *audit.Filter) { f.ActorType = "system" },
		"resource_type": func(f *audit.Filter) { f.ResourceType = "doc" },
		"resource_id":   func(f *audit.Filter) { f.ResourceID = "d1" },
		"outcome":       func(f *audit.Filter) { f.Outcome = "denied" },
		"severity":      func(f *audit.Filter) { f.Severity = "critical" },
		"source":        func(f *audit.Filter) { f.Source = "auth" },
	} {
		f := plain
		set(&f)
		if got := perActionPlans(f); got != customPlans {
			t.Errorf("with %s: %s, want %s", name, got, customPlans)
		}
	}
}

// TestActionPrefixRangeReadsAPage reads the plan of a prefix page with a
// time range as the service runs it (its generic plan, after
// perActionOrderSQL): each action's read must stop at the page. Without
// perActionOrderSQL the plan expected a handful of events per action and
// sorted them, so each action's read took every event of the range: at
// 300,000 events 60-70 ms a page. With it, the first execution must not
// take seconds either (JIT compilation of the plan took 140-500 ms).
func TestActionPrefixRangeReadsAPage(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	actions := []string{"doc.created", "doc.read", "doc.updated", "doc.shared", "doc.deleted", "doc.exported"}
	base := testNow.Add(-2 * time.Hour)
	appendAnalyzed(t, s, su, 6, func(b, i int) *audit.EventInput {
		at := base.Add(time.Duration(b*1000+i) * time.Second).Format(time.RFC3339Nano)
		return &audit.EventInput{ActorID: fmt.Sprintf("u%d", i%50), Action: actions[i%len(actions)], OccurredAt: &at}
	})
	const limit = 20
	// The middle half of the span: about 500 events of each action.
	f := audit.Filter{ActionPrefix: "doc.", Since: base.Add(1500 * time.Second), Until: base.Add(4500 * time.Second), Limit: limit}
	sql, args := eventsQuery(audit.Scope{AccountID: "acme"}, f, true)
	tx, err := su.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, scopeSQL+`, set_config('plan_cache_mode', $4, true)`, "acme", "", AppRole, perActionPlans(f)); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, perActionOrderSQL); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `PREPARE page(text, timestamptz, timestamptz, text, text) AS `+sql); err != nil {
		t.Fatal(err)
	}
	var plan []string
	for range 6 { // past the five executions after which a plan may go generic
		rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, TIMING OFF, SUMMARY OFF) EXECUTE page($1, $2, $3, $4, $5)`,
			append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if plan, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
	}
	text := strings.Join(plan, "\n")
	scans := 0
	for _, line := range plan {
		if !strings.Contains(line, "Scan") || !strings.Contains(line, "np_audit_events_p") {
			continue
		}
		scans++
		var n, loops int
		if i := strings.Index(line, "(actual rows="); i < 0 {
			t.Fatalf("no row count in %q", line)
		} else if _, err := fmt.Sscanf(line[i:], "(actual rows=%d loops=%d)", &n, &loops); err != nil {
			t.Fatalf("%q: %v", line[i:], err)
		}
		if n > limit+1 {
			t.Fatalf("an action's read took %d events for a page of %d:\n%s", n, limit, text)
		}
	}
	if scans == 0 {
		t.Fatalf("no read of the events in the plan:\n%s", text)
	}
	if strings.Contains(text, "JIT:") {
		t.Fatalf("the plan was compiled (JIT):\n%s", text)
	}
}

// TestQueryConcurrency holds one read in the database (it waits for an
// advisory lock) and checks that, with one reader allowed, a second read
// waits in the service until the first is done, and that with two allowed
// it runs beside it.
func TestQueryConcurrency(t *testing.T) {
	s, su := setup(t)
	ctx := context.Background()
	scope := audit.Scope{AccountID: "acme"}
	query := func(ctx context.Context, sql string) error {
		return s.read(ctx, scope, func(b *pgx.Batch) { b.Queue(sql).Exec(func(pgconn.CommandTag) error { return nil }) })
	}
	for _, allowed := range []int{1, 2} {
		s.SetQueryConcurrency(allowed)
		lock, err := su.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lock.Exec(ctx, `SELECT pg_advisory_lock(4242)`); err != nil {
			t.Fatal(err)
		}
		held := make(chan error, 1)
		go func() { held <- query(ctx, `SELECT pg_advisory_xact_lock_shared(4242)`) }()
		waiting := 0
		for deadline := time.Now().Add(10 * time.Second); waiting == 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
			if err := su.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'`).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
		}
		if waiting != 1 {
			t.Fatalf("allowed %d: the first read never waited for the lock", allowed)
		}

		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		err = query(short, `SELECT 1`)
		cancel()
		switch {
		case allowed == 1 && !errors.Is(err, context.DeadlineExceeded):
			t.Errorf("allowed 1: a second read while one runs: %v; want it to wait past its deadline", err)
		case allowed == 2 && err != nil:
			t.Errorf("allowed 2: a second read while one runs: %v; want it to run", err)
		}

		if _, err := lock.Exec(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
			t.Fatal(err)
		}
		lock.Release()
		if err := <-held; err != nil {
			t.Fatalf("allowed %d: the held read: %v", allowed, err)
		}
		if err := query(ctx, `SELECT 1`); err != nil {
			t.Errorf("allowed %d: a read after the held one finished: %v", allowed, err)
		}
	}
}

// TestScanEventsRaw reads the same events through the raw decoder (the
// service's prepared reads) and through rows.Scan (a simple-protocol query,
// whose columns arrive as text), and wants them equal, field by field:
// times before 2000 and with every microsecond digit, text that is empty,
// multibyte or long, and metadata as stored.
func TestScanEventsRaw(t *testing.T) {
	s, su := setup(t)
	ctx := context.Background()
	str := func(v string) *string { return &v }
	inputs := []*audit.EventInput{
		{OccurredAt: str("1970-01-01T00:00:00.000001Z"), ActorID: "ünï-çødé 🙂", Action: "user.login",
			Metadata: json.RawMessage(`{"b":[1,2.5,"x\"y"],"a":{"z":null}}`)},
		{OccurredAt: str(testNow.Add(-time.Hour).Truncate(time.Second).Add(999999 * time.Microsecond).Format(time.RFC3339Nano)), Action: "a", ActorID: "svc", ActorType: "service", Outcome: "denied",
			Severity: "critical", ResourceType: "doc", ResourceID: strings.Repeat("r", 200),
			IPAddress: "2001:db8::1", UserAgent: `Mozilla/5.0 "quoted" <tag> & more`, RequestID: "req-1", Source: "src"},
		{OccurredAt: str("1999-12-31T23:59:59.5Z"), Action: "doc.read", ActorType: "system"},
		{Action: "doc.read", ActorID: "u"},
	}
	var events []*audit.Event
	for _, in := range inputs {
		e, err := in.Validate("acme", "test", testNow)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	appendEvents(t, s, events...)

	raw, err := s.Chain(ctx, audit.Scope{AccountID: "acme"}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	tx := asAppRole(t, su, "acme")
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, `SELECT `+eventColumns+` FROM np_nself_audit.np_audit_events
		WHERE source_account_id = 'acme' ORDER BY seq`, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	if rawEventColumns(rows.FieldDescriptions()) {
		t.Fatal("a simple-protocol query's columns count as raw: the test would compare the decoder with itself")
	}
	each, err := scanEvents(rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != len(inputs) || len(each) != len(inputs) {
		t.Fatalf("read %d and %d events, want %d", len(raw), len(each), len(inputs))
	}
	for i := range raw {
		a, b := raw[i], each[i]
		if !a.OccurredAt.Equal(b.OccurredAt) || a.OccurredAt.Location() != time.UTC || !a.RecordedAt.Equal(b.RecordedAt) {
			t.Errorf("event %d: times %v %v, want %v %v", i, a.OccurredAt, a.RecordedAt, b.OccurredAt, b.RecordedAt)
		}
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Errorf("event %d:\n raw  %s\n scan %s", i, ja, jb)
		}
		if a.ID != events[i].ID || a.ActorID != events[i].ActorID || string(a.Metadata) != string(events[i].Metadata) {
			t.Errorf("event %d: read %s %q %s, wrote %s %q %s", i, a.ID, a.ActorID, a.Metadata, events[i].ID, events[i].ActorID, events[i].Metadata)
		}
	}

	// The service's reads are prepared, so they take the decoder.
	rows, err = tx.Query(ctx, `SELECT `+eventColumns+` FROM np_nself_audit.np_audit_events LIMIT 1`)
	if err != nil {
		t.Fatal(err)
	}
	ok := rawEventColumns(rows.FieldDescriptions())
	rows.Close()
	if !ok {
		t.Error("a prepared read's columns do not count as raw: the service would never use the decoder")
	}
}

// setupMonthsAhead is setup, then ensure_partitions four months ahead, so
// that partitions made by the migrations and made later are both there.
func setupMonthsAhead(t *testing.T) (*Store, *pgxpool.Pool) {
	t.Helper()
	s, su := setup(t)
	if _, err := s.EnsurePartitions(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	return s, su
}

// TestNoIndexDeduplication: every index of every partition, those the
// migrations made and those ensure_partitions makes later, has B-tree
// deduplication off (migration 0014): each index ends with a unique
// column, so a deduplication pass only ever cost time.
func TestNoIndexDeduplication(t *testing.T) {
	t.Parallel()
	_, su := setupMonthsAhead(t)
	ctx := context.Background()
	var parts, indexes int
	var with []string
	if err := su.QueryRow(ctx, `SELECT count(DISTINCT x.indrelid), count(*),
			coalesce(array_agg(c.relname::text) FILTER (WHERE NOT coalesce('deduplicate_items=off' = ANY (c.reloptions), false)), '{}')
		FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid JOIN pg_class c ON c.oid = x.indexrelid
		WHERE i.inhparent = 'np_nself_audit.np_audit_events'::regclass`).Scan(&parts, &indexes, &with); err != nil {
		t.Fatal(err)
	}
	if parts < 6 || indexes < 10*parts {
		t.Fatalf("%d indexes on %d partitions; want at least 10 on each of 6", indexes, parts)
	}
	if len(with) > 0 {
		t.Fatalf("%d of %d partition indexes deduplicate: %v", len(with), indexes, with)
	}
}

// TestResourcePageInIndexOrder reads the plan of a resource page as the
// service runs it (a generic plan, migration 0013's statistics gathered as
// autovacuum would): it must read the resource's index in order and stop at
// the page, never read every event of the resource to sort them. The
// resource's id determines its type; estimated as independent columns,
// the pair looked rarer than a page (here 3 events for a page of 6 rows,
// where each resource has 20), and the plan read and sorted the
// resource's every event (1.8 ms against 0.2 ms at 1M events).
func TestResourcePageInIndexOrder(t *testing.T) {
	t.Parallel()
	// Partitions made by the migrations and by ensure_partitions later
	// (months further ahead) all carry the statistics.
	s, su := setupMonthsAhead(t)
	ctx := context.Background()
	var parts, without int
	if err := su.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (
			SELECT 1 FROM pg_statistic_ext x WHERE x.stxrelid = i.inhrelid AND 'dependencies' = ANY (
				SELECT CASE k WHEN 'f' THEN 'dependencies' END FROM unnest(x.stxkind) k)
				AND x.stxkeys::text = (SELECT string_agg(attnum::text, ' ' ORDER BY attnum) FROM pg_attribute
					WHERE attrelid = i.inhrelid AND attname IN ('resource_type', 'resource_id'))))
		FROM pg_inherits i WHERE i.inhparent = 'np_nself_audit.np_audit_events'::regclass`).Scan(&parts, &without); err != nil {
		t.Fatal(err)
	}
	if parts < 6 || without != 0 {
		t.Fatalf("%d of %d partitions lack the resource statistics", without, parts)
	}
	types := []string{"doc", "project", "invoice", "api_key", "file", "user"}
	appendAnalyzed(t, s, su, 6, func(b, i int) *audit.EventInput {
		r := (b*1000 + i) % 300 // 300 resources of 20 events
		return &audit.EventInput{ActorID: fmt.Sprintf("u%d", i%50), Action: "doc.read",
			ResourceType: types[r%len(types)], ResourceID: fmt.Sprintf("r%d", r)}
	})
	sql, args := eventsQuery(audit.Scope{AccountID: "acme"}, audit.Filter{ResourceType: "file", ResourceID: "r10", Limit: 5}, false)
	if len(args) != 3 {
		t.Fatalf("the resource page has %d arguments, want 3: %s", len(args), sql)
	}
	tx, err := su.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, scopeSQL+`, set_config('plan_cache_mode', 'force_generic_plan', true)`, "acme", "", AppRole); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `PREPARE page(text, text, text) AS `+sql); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE page('acme', 'file', 'r10')`,
		pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if !strings.Contains(text, "resource_id = $3") {
		t.Fatalf("not the resource page's plan:\n%s", text)
	}
	for _, line := range plan {
		if node := strings.TrimLeft(line, " ->"); strings.HasPrefix(node, "Sort (") || strings.HasPrefix(node, "Incremental Sort (") {
			t.Fatalf("the resource page sorts the resource's events:\n%s", text)
		}
	}
}

// TestPipelineLargeBatchesInParallel appends batches large enough to go to
// the pipeline's two connections in turn, from several goroutines, with an
// idempotency key shared by every worker in some rounds (a stored key fails
// its batch on the fast path, and the batch after it, already running on
// the other connection, then finds the head unmoved) and a second store
// moving the head meanwhile. Every event must be stored once, in one chain
// that verifies, every key answered with one event, and some batches must
// have committed whose tail waited for the batch before.
func TestPipelineLargeBatchesInParallel(t *testing.T) {
	t.Parallel()
	s1, s2 := setupTwo(t)
	ctx := context.Background()
	appendEvents(t, s1, newEvent(t, "acme", "u0", "doc.read")) // locking path, then the cache is warm
	const workers, rounds, size = 4, 5, ParallelBatchEvents + 10
	tally := newAppendTally(1, (workers+1)*rounds*size)
	var wg sync.WaitGroup
	for w := range workers + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				var items []*audit.AppendItem
				s, n := s1, size
				if w == workers {
					s, n = s2, 3 // another process, moving the head under s1's pipeline
					time.Sleep(40 * time.Millisecond)
				}
				for i := range n {
					items = append(items, &audit.AppendItem{Event: newEvent(t, "acme", fmt.Sprintf("u%d-%d", w, i%7), "doc.read")})
				}
				if r%2 == 1 {
					key := fmt.Sprintf("k%d", r)
					items[n/2].IdempotencyKey, items[n/2].Fingerprint = key, "f-"+key
					items[n/2].Event = newEvent(t, "acme", "shared", "doc.read")
				}
				if !tally.append(ctx, s, items) {
					return
				}
			}
		}()
	}
	wg.Wait()
	tally.check(t)
	// Then one after another, with nothing else writing: each large batch
	// goes to the connection the one before did not, and commits there.
	for range 3 {
		var evs []*audit.Event
		for i := range size {
			evs = append(evs, newEvent(t, "acme", fmt.Sprintf("u%d", i%7), "doc.read"))
		}
		appendEvents(t, s1, evs...)
		tally.stored.Add(size)
	}
	if n := storetest.VerifyChain(t, s1, "acme"); n != tally.stored.Load() {
		t.Fatalf("chain holds %d events; %d were stored", n, tally.stored.Load())
	}
	if s1.splitCommits.Load() < 2 {
		t.Fatalf("no batch committed whose tail waited for the batch before on the other connection (%d fast commits)",
			s1.fastCommits.Load())
	}
	t.Logf("%d fast commits, %d with a tail that waited", s1.fastCommits.Load(), s1.splitCommits.Load())
}

// TestPipelineTailWaitBounded builds the wait that PostgreSQL cannot see:
// a large batch S has run its inserts on one pipeline connection and waits,
// in the service, for the batch before it, P; a CREATE TABLE … PARTITION
// OF (as ensure_partitions runs it) waits for S's lock on the table; and P,
// queued on the other connection behind a batch Z, starts only after that
// request and waits behind it. Past pipeTailWait, S's tail goes anyway and
// rolls S back (NSA01: P has not moved the head), so the partition is made
// long before its lock timeout, and every batch is stored.
func TestPipelineTailWaitBounded(t *testing.T) {
	t.Parallel()
	s, su := setup(t)
	ctx := context.Background()
	events := func(n int) []*audit.AppendItem {
		items := make([]*audit.AppendItem, n)
		for i := range items {
			items[i] = &audit.AppendItem{Event: newEvent(t, "acme", fmt.Sprintf("u%d", i%9), "doc.read")}
		}
		return items
	}
	// The locking path, then a small batch and a large one: both pipeline
	// connections are dialled (preparing their statements needs the tables
	// the test locks below), and the last batch went to the second.
	var warm int
	for _, n := range []int{1, 1, ParallelBatchEvents} {
		items := events(n)
		if err := s.Append(ctx, items); err != nil {
			t.Fatal(err)
		}
		warm += n
	}
	if s.splitCommits.Load() != 1 {
		t.Fatalf("%d split commits while warming up, want 1", s.splitCommits.Load())
	}
	waitFor := func(what, sql string, args ...any) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var ok bool
			if err := su.QueryRow(ctx, sql, args...).Scan(&ok); err != nil {
				t.Fatal(err)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("waited 15 s for %s", what)
			}
		}
	}
	sent := func(after *pipeCall) *pipeCall {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if !s.pipe.mu.TryLock() { // held through a locking-path transaction, which may wait on the test
				continue
			}
			last := s.pipe.last
			s.pipe.mu.Unlock()
			if last != nil && last != after {
				return last
			}
		}
		t.Fatal("a batch was never sent")
		return nil
	}
	const writerWaitsOnLock = `SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()
		AND application_name = $1 AND wait_event_type = 'Lock'`

	// Z holds the head and waits for the rollup table, which the test locks.
	hold, err := su.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `LOCK TABLE np_nself_audit.np_audit_stats_dims IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	appends := make(chan error, 3)
	z, p, sBatch := events(ParallelBatchEvents), events(3), events(ParallelBatchEvents)
	s.pipe.mu.Lock() // before Z starts: read after, it could be Z itself
	warmCall := s.pipe.last
	s.pipe.mu.Unlock()
	go func() { appends <- s.Append(ctx, z) }()
	zCall := sent(warmCall)
	waitFor("Z to wait for the rollup table", writerWaitsOnLock, pipeApplicationName)
	go func() { appends <- s.Append(ctx, p) }() // small: queued behind Z on its connection
	pCall := sent(zCall)
	go func() { appends <- s.Append(ctx, sBatch) }() // large: the other connection, its tail waits for P
	sent(pCall)
	waitFor("S's inserts to run", `SELECT count(DISTINCT l.pid) = 2 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		WHERE a.datname = current_database() AND a.application_name = $1 AND l.granted
		AND l.relation = 'np_nself_audit.np_audit_events'::regclass AND l.mode = 'RowExclusiveLock'`, pipeApplicationName)

	// The partition waits for Z and S; then Z commits, and P queues behind it.
	ddl := make(chan error, 1)
	var took time.Duration
	go func() {
		start := time.Now()
		err := pgx.BeginFunc(ctx, su, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '20s'`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `CREATE TABLE np_nself_audit.np_audit_events_p210001 PARTITION OF
				np_nself_audit.np_audit_events FOR VALUES FROM ('2100-01-01') TO ('2100-02-01')`)
			return err
		})
		took = time.Since(start)
		ddl <- err
	}()
	waitFor("the partition to wait for its lock", `SELECT count(*) > 0 FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'CREATE TABLE%'`)
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	if err := <-ddl; err != nil {
		t.Fatalf("the partition, after %v: %v", took, err)
	}
	if took > 10*time.Second {
		t.Errorf("the partition waited %v for its lock", took)
	}
	for range 3 {
		if err := <-appends; err != nil {
			t.Fatal(err)
		}
	}
	for _, items := range [][]*audit.AppendItem{z, p, sBatch} {
		for _, it := range items {
			if it.Err != nil || it.Replayed {
				t.Fatalf("an item: err %v, replayed %v", it.Err, it.Replayed)
			}
		}
	}
	if n := storetest.VerifyChain(t, s, "acme"); n != int64(warm+len(z)+len(p)+len(sBatch)) {
		t.Fatalf("chain holds %d events, want %d", n, warm+len(z)+len(p)+len(sBatch))
	}
	t.Logf("the partition took %v; %d fast commits, %d split", took, s.fastCommits.Load(), s.splitCommits.Load())
}
