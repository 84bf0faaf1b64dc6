package sqlite

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/storetest"
)

// TestContract runs the suite every audit.Store must pass.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) audit.Store { return openTemp(t) })
}

// openTemp opens a store on a new file in t.TempDir and closes it at the
// end of the test.
func openTemp(t testing.TB) *Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "audit.db"))
}

func openAt(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawDB opens the file with the driver alone, as another tool would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var base = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func items(evs ...*audit.Event) []*audit.AppendItem {
	out := make([]*audit.AppendItem, len(evs))
	for i, e := range evs {
		out[i] = &audit.AppendItem{Event: e}
	}
	return out
}

func TestAppendReadAndChain(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ctx := context.Background()
	if err := s.Append(ctx, nil); err != nil {
		t.Fatalf("empty append: %v", err)
	}
	var all []*audit.Event
	for b := 0; b < 4; b++ {
		var evs []*audit.Event
		for i := 0; i < 5; i++ {
			evs = append(evs, storetest.Event(t, []string{"globex", "acme"}[(b+i)%2], time.Time{},
				`metadata={"b":`+fmt.Sprint(b)+`,"a":[1.50,"é\t"]}`))
		}
		want := make([]audit.Event, len(evs))
		for i, e := range evs {
			want[i] = *e
		}
		storetest.AppendAll(t, s, evs...)
		for i, e := range evs {
			got, err := s.Event(ctx, audit.Scope{AccountID: e.SourceAccountID}, e.ID)
			if err != nil {
				t.Fatal(err)
			}
			w := want[i]
			w.Seq, w.PrevHash, w.Hash = e.Seq, e.PrevHash, e.Hash
			if fmt.Sprintf("%+v", *got) != fmt.Sprintf("%+v", w) {
				t.Fatalf("read back differs:\n got %+v\nwant %+v", *got, w)
			}
			if string(got.Metadata) != `{"a":[1.5,"é\t"],"b":`+fmt.Sprint(b)+`}` {
				t.Fatalf("metadata %s", got.Metadata)
			}
		}
		all = append(all, evs...)
	}
	acme, globex := storetest.ReadChain(t, s, "acme", 7), storetest.ReadChain(t, s, "globex", 7)
	if len(acme) != 10 || len(globex) != 10 {
		t.Fatalf("chains of %d and %d events, want 10 each", len(acme), len(globex))
	}
	// Within a batch, an account's events are chained in slice order.
	var acmeIDs []uuid.UUID
	for _, e := range all {
		if e.SourceAccountID == "acme" {
			acmeIDs = append(acmeIDs, e.ID)
		}
	}
	for i, e := range acme {
		if e.ID != acmeIDs[i] {
			t.Fatalf("acme seq %d is %s, want %s", e.Seq, e.ID, acmeIDs[i])
		}
	}
	if evs, err := s.Chain(ctx, audit.Scope{AccountID: "acme"}, 8, 100); err != nil || len(evs) != 2 || evs[0].Seq != 9 {
		t.Fatalf("Chain after 8: %d events, %v", len(evs), err)
	}
	if evs, err := s.Chain(ctx, audit.Scope{AccountID: "acme"}, 0, 0); err != nil || len(evs) != 0 {
		t.Fatalf("Chain limit 0: %d events, %v", len(evs), err)
	}
	if _, err := s.Chain(ctx, audit.Scope{AccountID: "acme", ActorID: "u1"}, 0, 10); audit.ErrorCode(err) != audit.EFORBIDDEN {
		t.Fatalf("Chain with an actor scope: %v", err)
	}
	if evs, err := s.Chain(ctx, audit.Scope{AccountID: "nobody"}, 0, 10); err != nil || len(evs) != 0 {
		t.Fatalf("Chain of an unknown account: %d, %v", len(evs), err)
	}
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	s := openAt(t, path)
	ctx := context.Background()
	item := func(account, key, fingerprint string) *audit.AppendItem {
		return &audit.AppendItem{Event: storetest.Event(t, account, time.Time{}), IdempotencyKey: key, Fingerprint: fingerprint}
	}
	first := item("acme", "k1", "f1")
	if err := s.Append(ctx, []*audit.AppendItem{first}); err != nil || first.Replayed || first.Err != nil {
		t.Fatalf("first: %v %+v", err, first)
	}
	retry, reuse, other := item("acme", "k1", "f1"), item("acme", "k1", "f2"), item("globex", "k1", "f1")
	dupA, dupB, dupC, plain := item("acme", "k2", "f3"), item("acme", "k2", "f3"), item("acme", "k2", "f4"), item("acme", "", "")
	if err := s.Append(ctx, []*audit.AppendItem{retry, reuse, other, dupA, dupB, dupC, plain}); err != nil {
		t.Fatal(err)
	}
	if !retry.Replayed || retry.Err != nil || fmt.Sprintf("%+v", *retry.Event) != fmt.Sprintf("%+v", *first.Event) {
		t.Errorf("retry: replayed %v err %v\n got %+v\nwant %+v", retry.Replayed, retry.Err, retry.Event, first.Event)
	}
	if audit.ErrorCode(reuse.Err) != audit.ECONFLICT || reuse.Replayed {
		t.Errorf("reuse for another event: %v", reuse.Err)
	}
	if other.Replayed || other.Err != nil || other.Event.Seq != 1 {
		t.Errorf("same key in another account: %+v", other)
	}
	if dupA.Replayed || dupA.Err != nil || !dupB.Replayed || dupB.Event != dupA.Event || dupB.Event.Seq != 2 {
		t.Errorf("duplicate in one batch: A %+v, B %+v", dupA, dupB)
	}
	if audit.ErrorCode(dupC.Err) != audit.ECONFLICT {
		t.Errorf("in-batch reuse for another event: %v", dupC.Err)
	}
	if plain.Replayed || plain.Err != nil || plain.Event.Seq != 3 {
		t.Errorf("event without a key: %+v", plain)
	}
	if n := len(storetest.ReadChain(t, s, "acme", 7)); n != 3 {
		t.Errorf("acme holds %d events, want 3", n)
	}

	// Keys outlive the process: a retry after reopening is still a replay.
	s.Close()
	s2 := openAt(t, path)
	again := item("acme", "k2", "f3")
	if err := s2.Append(ctx, []*audit.AppendItem{again}); err != nil || !again.Replayed || again.Event.ID != dupA.Event.ID {
		t.Fatalf("retry after reopen: %v %+v", err, again)
	}
	// All replays: nothing is stored and the head stays.
	if n := len(storetest.ReadChain(t, s2, "acme", 7)); n != 3 {
		t.Errorf("acme holds %d events after replays, want 3", n)
	}
	// Many keys in one batch (more than one IN list).
	var many []*audit.AppendItem
	for i := 0; i < 1200; i++ {
		many = append(many, item("acme", fmt.Sprintf("bulk-%d", i), "f"))
	}
	if err := s2.Append(ctx, many); err != nil {
		t.Fatal(err)
	}
	var retries []*audit.AppendItem
	for i := 0; i < 1200; i++ {
		retries = append(retries, item("acme", fmt.Sprintf("bulk-%d", i), "f"))
	}
	if err := s2.Append(ctx, retries); err != nil {
		t.Fatal(err)
	}
	for i, it := range retries {
		if !it.Replayed || it.Event.ID != many[i].Event.ID {
			t.Fatalf("bulk retry %d: %+v", i, it)
		}
	}
	if n := len(storetest.ReadChain(t, s2, "acme", 7)); n != 1203 {
		t.Errorf("acme holds %d events, want 1203", n)
	}
}

func TestPagingWithTies(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	var evs []*audit.Event
	for i := 0; i < 31; i++ {
		evs = append(evs, storetest.Event(t, "acme", base.Add(time.Duration(i/4)*time.Second)))
	}
	storetest.AppendAll(t, s, evs...)
	for _, asc := range []bool{false, true} {
		var got []*audit.Event
		f := audit.Filter{Limit: 3, Asc: asc}
		for page := 0; ; page++ {
			if page > 20 {
				t.Fatal("paging does not end")
			}
			evs, err := s.Events(context.Background(), audit.Scope{AccountID: "acme"}, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) > f.Limit+1 {
				t.Fatalf("page of %d events for limit %d", len(evs), f.Limit)
			}
			if len(evs) <= f.Limit {
				got = append(got, evs...)
				break
			}
			got = append(got, evs[:f.Limit]...)
			last := evs[f.Limit-1]
			f.After = &audit.Cursor{OccurredAt: last.OccurredAt, ID: last.ID}
		}
		if len(got) != 31 {
			t.Fatalf("asc=%v: walked %d events, want 31", asc, len(got))
		}
		seen := map[uuid.UUID]bool{}
		for i, e := range got {
			if seen[e.ID] {
				t.Fatalf("asc=%v: %s twice", asc, e.ID)
			}
			seen[e.ID] = true
			if i == 0 {
				continue
			}
			a := got[i-1]
			before := a.OccurredAt.Before(e.OccurredAt) || (a.OccurredAt.Equal(e.OccurredAt) && a.ID.String() < e.ID.String())
			if before != asc {
				t.Fatalf("asc=%v: events %d and %d out of order", asc, i-1, i)
			}
		}
	}
}

// TestUUIDOrder: ids compare as PostgreSQL's uuid does (bytewise), which is
// the order of their canonical lowercase text.
func TestUUIDOrder(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ids := []string{"ffffffff-0000-7000-8000-000000000000", "0a000000-0000-7000-8000-000000000000",
		"a0000000-0000-7000-8000-000000000000", "09000000-0000-7000-8000-00000000000f"}
	var evs []*audit.Event
	for _, id := range ids {
		e := storetest.Event(t, "acme", base)
		e.ID = uuid.MustParse(strings.ToUpper(id))
		evs = append(evs, e)
	}
	storetest.AppendAll(t, s, evs...)
	got, err := s.Events(context.Background(), audit.Scope{AccountID: "acme"}, audit.Filter{Limit: 10, Asc: true})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, e := range got {
		order = append(order, e.ID.String()[:2])
	}
	if strings.Join(order, " ") != "09 0a a0 ff" {
		t.Fatalf("order %v", order)
	}
}

func TestStatsTopActionsAndBuckets(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	// 25 actions: a.00 once ... a.24 25 times, plus ties at the cut.
	var evs []*audit.Event
	for a := 0; a < 25; a++ {
		for i := 0; i <= a; i++ {
			evs = append(evs, storetest.Event(t, "acme", base.Add(time.Duration(a)*time.Hour+time.Duration(i)*time.Minute),
				fmt.Sprintf("action=a.%02d", a)))
		}
	}
	evs = append(evs, storetest.Event(t, "acme", base, "action=b.05"), storetest.Event(t, "acme", base, "action=b.05"),
		storetest.Event(t, "acme", base, "action=b.05"), storetest.Event(t, "acme", base, "action=b.05"),
		storetest.Event(t, "acme", base, "action=b.05"), storetest.Event(t, "acme", base, "action=b.05"))
	// Just before midnight and at midnight: two days.
	evs = append(evs, storetest.Event(t, "acme", time.Date(2026, 11, 19, 23, 59, 59, 999999000, time.UTC), "action=z.z"))
	storetest.AppendAll(t, s, evs...)
	st, err := s.Stats(context.Background(), audit.Scope{AccountID: "acme"}, audit.Filter{}, audit.Day)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.ByAction) != audit.TopActions {
		t.Fatalf("%d actions, want %d", len(st.ByAction), audit.TopActions)
	}
	// Counts 25..7 are a.24..a.06; then the tie at 6: a.05 before b.05.
	if st.ByAction[0] != (audit.ActionCount{Action: "a.24", Count: 25}) || st.ByAction[18] != (audit.ActionCount{Action: "a.06", Count: 7}) ||
		st.ByAction[19] != (audit.ActionCount{Action: "a.05", Count: 6}) {
		t.Fatalf("by_action %v", st.ByAction)
	}
	if len(st.Timeline) != 3 || st.Timeline[0] != (audit.Bucket{Bucket: "2026-11-19T00:00:00.000000Z", Count: 1}) ||
		st.Timeline[1].Bucket != "2026-11-20T00:00:00.000000Z" || st.Timeline[2].Bucket != "2026-11-21T00:00:00.000000Z" {
		t.Fatalf("timeline %v", st.Timeline)
	}
}

func TestIsolation(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ctx := context.Background()
	a1 := storetest.Event(t, "acme", base, "actor_id=alice")
	a2 := storetest.Event(t, "acme", base.Add(time.Second), "actor_id=bob")
	g1 := storetest.Event(t, "globex", base, "actor_id=alice")
	storetest.AppendAll(t, s, a1, a2, g1)
	for _, c := range []struct {
		scope audit.Scope
		id    uuid.UUID
		found bool
	}{
		{audit.Scope{AccountID: "acme"}, a1.ID, true},
		{audit.Scope{AccountID: "acme", ActorID: "alice"}, a1.ID, true},
		{audit.Scope{AccountID: "acme"}, g1.ID, false},
		{audit.Scope{AccountID: "globex"}, a1.ID, false},
		{audit.Scope{AccountID: "acme", ActorID: "alice"}, a2.ID, false},
		{audit.Scope{AccountID: "ACME"}, a1.ID, false},
		{audit.Scope{AccountID: "acme"}, uuid.New(), false},
	} {
		e, err := s.Event(ctx, c.scope, c.id)
		if c.found && (err != nil || e.ID != c.id) {
			t.Errorf("%+v reads %s: %v", c.scope, c.id, err)
		}
		if !c.found && (audit.ErrorCode(err) != audit.ENOTFOUND || e != nil) {
			t.Errorf("%+v reads %s: %v, want not_found", c.scope, c.id, err)
		}
	}
	// Lists and stats by scope: the contract suite's Isolation test.
}

// TestBatchIsAtomic: a batch that fails part-way stores nothing, in any
// account, and the chains go on from where they were.
func TestBatchIsAtomic(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ctx := context.Background()
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}), storetest.Event(t, "globex", time.Time{}))
	good := storetest.Event(t, "acme", time.Time{})
	bad := storetest.Event(t, "globex", time.Time{})
	bad.Outcome = "exploded" // the CHECK constraint refuses it
	keyed := &audit.AppendItem{Event: storetest.Event(t, "acme", time.Time{}), IdempotencyKey: "k", Fingerprint: "f"}
	err := s.Append(ctx, []*audit.AppendItem{{Event: good}, keyed, {Event: bad}})
	if err == nil || audit.ErrorCode(err) != audit.EINTERNAL {
		t.Fatalf("bad batch: %v", err)
	}
	if n := len(storetest.ReadChain(t, s, "acme", 7)); n != 1 {
		t.Fatalf("acme holds %d events after a failed batch, want 1", n)
	}
	if _, err := s.Event(ctx, audit.Scope{AccountID: "acme"}, good.ID); audit.ErrorCode(err) != audit.ENOTFOUND {
		t.Fatalf("event of the failed batch: %v", err)
	}
	retry := &audit.AppendItem{Event: storetest.Event(t, "acme", time.Time{}), IdempotencyKey: "k", Fingerprint: "f"}
	appendItems := []*audit.AppendItem{retry, {Event: storetest.Event(t, "globex", time.Time{})}}
	if err := s.Append(ctx, appendItems); err != nil || retry.Replayed {
		t.Fatalf("the key of the failed batch was kept: %v %+v", err, retry)
	}
	if len(storetest.ReadChain(t, s, "acme", 7)) != 2 || len(storetest.ReadChain(t, s, "globex", 7)) != 2 {
		t.Fatal("chains did not go on")
	}
}

// TestAppendOnly: the triggers refuse changes made directly with SQL, by a
// connection that is not the store's.
func TestAppendOnly(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	s := openAt(t, path)
	e := storetest.Event(t, "acme", time.Time{})
	keyed := &audit.AppendItem{Event: storetest.Event(t, "acme", time.Time{}), IdempotencyKey: "k", Fingerprint: "f"}
	if err := s.Append(context.Background(), []*audit.AppendItem{{Event: e}, keyed}); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	for _, c := range []struct{ sql, want string }{
		{`UPDATE np_audit_events SET action = 'x.y'`, "np_audit_events is append-only: UPDATE is not allowed"},
		{`UPDATE np_audit_events SET metadata = '{"a":1}' WHERE seq = 1`, "np_audit_events is append-only: UPDATE is not allowed"},
		{`DELETE FROM np_audit_events WHERE seq = 2`, "np_audit_events is append-only: DELETE is not allowed"},
		{`DELETE FROM np_audit_events`, "np_audit_events is append-only: DELETE is not allowed"},
		{`INSERT OR REPLACE INTO np_audit_events SELECT * FROM np_audit_events WHERE seq = 1`, "append-only"},
		{`REPLACE INTO np_audit_events (id, source_account_id, seq, occurred_at, recorded_at, actor_type, action, outcome, severity, prev_hash, hash)
			SELECT '00000000-0000-7000-8000-000000000000', source_account_id, seq, occurred_at, recorded_at, actor_type, action, outcome, severity, prev_hash, hash
			FROM np_audit_events WHERE seq = 1`, "append-only"},
		{`INSERT INTO np_audit_events (id, source_account_id, seq, occurred_at, recorded_at, actor_type, action, outcome, severity, prev_hash, hash)
			SELECT '00000000-0000-7000-8000-000000000000', source_account_id, 5, occurred_at, recorded_at, actor_type, action, outcome, severity, prev_hash, hash
			FROM np_audit_events WHERE seq = 1`, "next seq"},
		{`UPDATE np_audit_idempotency SET fingerprint = 'g'`, "np_audit_idempotency is append-only: UPDATE is not allowed"},
		{`DELETE FROM np_audit_idempotency`, "np_audit_idempotency is append-only: DELETE is not allowed"},
		{`INSERT OR REPLACE INTO np_audit_idempotency SELECT * FROM np_audit_idempotency`, "append-only"},
		{`DELETE FROM np_audit_chain_heads`, "DELETE is not allowed"},
		{`UPDATE np_audit_chain_heads SET seq = 1`, "only moves forward"},
	} {
		_, err := db.Exec(c.sql)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error containing %q", c.sql, err, c.want)
		}
	}
	// Nothing changed.
	evs := storetest.ReadChain(t, s, "acme", 7)
	if len(evs) != 2 || evs[0].ID != e.ID {
		t.Fatalf("chain after the attempts: %d events", len(evs))
	}
	var triggers int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name LIKE 'trg_audit_immutable%'`).Scan(&triggers); err != nil || triggers != 9 {
		t.Fatalf("%d trg_audit_immutable triggers, %v", triggers, err)
	}
}

func TestReopenKeepsChainAndSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	ctx := context.Background()
	for round := 1; round <= 3; round++ {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if s.Path() != path {
			t.Fatalf("Path() = %s", s.Path())
		}
		st, err := s.Migrations(ctx)
		if err != nil || st.Applied != st.Expected || st.Expected != 2 {
			t.Fatalf("Migrations() = %+v, %v", st, err)
		}
		storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}), storetest.Event(t, "acme", time.Time{}))
		if n := len(storetest.ReadChain(t, s, "acme", 7)); n != 2*round {
			t.Fatalf("round %d: %d events", round, n)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db := rawDB(t, path)
	var ledgerRows, tables int
	db.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&ledgerRows)
	db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name LIKE 'np_audit_%'`).Scan(&tables)
	if ledgerRows != 2 || tables != 4 {
		t.Fatalf("ledger rows %d, tables %d", ledgerRows, tables)
	}
	// An applied migration that changed is refused.
	if _, err := db.Exec(`UPDATE schema_migrations SET checksum = 'x'`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(ctx, path); err == nil || !strings.Contains(err.Error(), "changed after it was applied") {
		t.Fatalf("Open with a changed migration: %v", err)
	}
}

func TestFileMode(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	s := openAt(t, path)
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}))
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), info.Mode().Perm())
		}
	}
}

func TestPragmas(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	for name, db := range map[string]*sql.DB{"writer": s.w, "reader": s.r} {
		var mode string
		var sync, busy, fk, queryOnly int
		for _, q := range []struct {
			sql  string
			dest any
		}{
			{"PRAGMA journal_mode", &mode}, {"PRAGMA synchronous", &sync}, {"PRAGMA busy_timeout", &busy},
			{"PRAGMA foreign_keys", &fk}, {"PRAGMA query_only", &queryOnly},
		} {
			if err := db.QueryRow(q.sql).Scan(q.dest); err != nil {
				t.Fatal(err)
			}
		}
		if mode != "wal" || sync != 2 || busy < 10000 || fk != 1 || (queryOnly == 1) != (name == "reader") {
			t.Errorf("%s: journal_mode %s synchronous %d busy_timeout %d foreign_keys %d query_only %d",
				name, mode, sync, busy, fk, queryOnly)
		}
	}
	if _, err := s.r.Exec(`INSERT INTO np_audit_chain_heads VALUES ('x', 1, 'h', 0)`); err == nil {
		t.Error("a reader connection wrote")
	}
}

// TestTwoStoresOneFile: two Stores on one file, as two processes would
// have, appending concurrently: one gap-free, verified chain per account.
func TestTwoStoresOneFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	stores := []*Store{openAt(t, path), openAt(t, path)}
	accounts := []string{"acme", "globex", "initech"}
	const writersPerStore, batches, size = 3, 10, 4
	var wg sync.WaitGroup
	errs := make(chan error, len(stores)*writersPerStore*batches)
	for si, s := range stores {
		for w := 0; w < writersPerStore; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for b := 0; b < batches; b++ {
					var evs []*audit.Event
					for i := 0; i < size; i++ {
						evs = append(evs, storetest.Event(t, accounts[(si+w+b+i)%3], time.Time{}, fmt.Sprintf("actor_id=s%dw%d", si, w)))
					}
					errs <- s.Append(context.Background(), items(evs...))
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for _, a := range accounts {
		evs := storetest.ReadChain(t, stores[0], a, 7)
		if again := storetest.ReadChain(t, stores[1], a, 7); len(again) != len(evs) {
			t.Fatalf("the stores see %d and %d events of %s", len(evs), len(again), a)
		}
		total += len(evs)
	}
	if want := len(stores) * writersPerStore * batches * size; total != want {
		t.Fatalf("chains hold %d events, want %d", total, want)
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	isUnavailable := func(what string, err error) {
		t.Helper()
		if audit.ErrorCode(err) != audit.EUNAVAILABLE {
			t.Errorf("%s: %v (code %q), want unavailable", what, err, audit.ErrorCode(err))
		}
	}
	dir := t.TempDir()

	_, err := Open(ctx, filepath.Join(dir, "missing", "audit.db"))
	isUnavailable("open in a missing directory", err)
	_, err = Open(ctx, dir)
	isUnavailable("open a directory", err)

	// Closed.
	s := openAt(t, filepath.Join(dir, "closed.db"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	isUnavailable("append after close", s.Append(ctx, items(storetest.Event(t, "acme", time.Time{}))))
	_, err = s.Event(ctx, audit.Scope{AccountID: "acme"}, uuid.New())
	isUnavailable("event after close", err)
	_, err = s.Events(ctx, audit.Scope{AccountID: "acme"}, audit.Filter{Limit: 1})
	isUnavailable("events after close", err)
	_, err = s.Chain(ctx, audit.Scope{AccountID: "acme"}, 0, 1)
	isUnavailable("chain after close", err)
	_, err = s.Stats(ctx, audit.Scope{AccountID: "acme"}, audit.Filter{}, audit.Day)
	isUnavailable("stats after close", err)
	_, err = s.Migrations(ctx)
	isUnavailable("migrations after close", err)
	_, _, err = s.Checkpoint(ctx, audit.Scope{AccountID: "acme"}, time.Now(), testSigner.Sign)
	isUnavailable("checkpoint after close", err)
	_, err = s.Checkpoints(ctx, audit.Scope{AccountID: "acme"}, 0, 0, 10)
	isUnavailable("checkpoints after close", err)
	_, err = s.LatestCheckpoint(ctx, audit.Scope{AccountID: "acme"})
	isUnavailable("latest checkpoint after close", err)
	_, err = s.DueCheckpoints(ctx, 1, time.Hour, time.Now())
	isUnavailable("due checkpoints after close", err)

	// The file removed while open: nothing more is acknowledged into it.
	path := filepath.Join(dir, "removed.db")
	s = openAt(t, path)
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}))
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		os.Remove(p)
	}
	isUnavailable("append to a removed file", s.Append(ctx, items(storetest.Event(t, "acme", time.Time{}))))
	_, err = s.Migrations(ctx)
	isUnavailable("migrations of a removed file", err)

	// Locked by another writer past the busy timeout.
	path = filepath.Join(dir, "locked.db")
	cfg := defaultConfig()
	cfg.busyTimeout = 200 * time.Millisecond
	s, err = open(ctx, path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db := rawDB(t, path)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = s.Append(ctx, items(storetest.Event(t, "acme", time.Time{})))
	isUnavailable("append while another process writes", err)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("gave up after %v, before the busy timeout", d)
	}
	if !strings.Contains(err.Error(), "database unavailable") {
		t.Errorf("cause lost: %v", err)
	}
	// Readers are not blocked by the writer (WAL).
	if _, err := s.Events(ctx, audit.Scope{AccountID: "acme"}, audit.Filter{Limit: 1}); err != nil {
		t.Errorf("read while another process writes: %v", err)
	}
	conn.ExecContext(ctx, `ROLLBACK`)
	if err := s.Append(ctx, items(storetest.Event(t, "acme", time.Time{}))); err != nil {
		t.Errorf("append after the lock was released: %v", err)
	}
}

func TestContextCanceled(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Append(ctx, items(storetest.Event(t, "acme", time.Time{}))); !errors.Is(err, context.Canceled) {
		t.Errorf("append: %v", err)
	}
	if _, err := s.Events(ctx, audit.Scope{AccountID: "acme"}, audit.Filter{Limit: 1}); !errors.Is(err, context.Canceled) {
		t.Errorf("events: %v", err)
	}
	if _, err := s.Stats(ctx, audit.Scope{AccountID: "acme"}, audit.Filter{}, audit.Day); !errors.Is(err, context.Canceled) {
		t.Errorf("stats: %v", err)
	}
	if n := len(storetest.ReadChain(t, s, "acme", 7)); n != 0 {
		t.Errorf("a canceled append stored %d events", n)
	}
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}))
	if _, _, err := s.Checkpoint(ctx, audit.Scope{AccountID: "acme"}, time.Now(), testSigner.Sign); !errors.Is(err, context.Canceled) {
		t.Errorf("checkpoint: %v", err)
	}
	if _, err := s.DueCheckpoints(ctx, 1, time.Hour, time.Now()); !errors.Is(err, context.Canceled) {
		t.Errorf("due checkpoints: %v", err)
	}
	if _, err := s.LatestCheckpoint(context.Background(), audit.Scope{AccountID: "acme"}); audit.ErrorCode(err) != audit.ENOTFOUND {
		t.Errorf("a canceled checkpoint was stored: %v", err)
	}
}

// TestConcurrentOpen: stores opening a new file at the same time create it
// once and apply the schema once.
func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = Open(context.Background(), path)
		}()
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		t.Cleanup(func() { s.Close() })
		storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}))
	}
	if got := len(storetest.ReadChain(t, stores[0], "acme", 7)); got != n {
		t.Fatalf("%d events, want %d", got, n)
	}
	var ledgerRows int
	if err := rawDB(t, path).QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&ledgerRows); err != nil || ledgerRows != 2 {
		t.Fatalf("ledger rows %d, %v", ledgerRows, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".new-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// TestOddPath: any file name works, and Path returns it as given.
func TestOddPath(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a dir?x=1#frag%20")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "audit ?&%.db")
	s := openAt(t, path)
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}))
	if s.Path() != path {
		t.Fatalf("Path() = %q", s.Path())
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the database is not at the path: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 { // the file, -wal, -shm
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("files in the directory: %q", names)
	}
}

// testSigner signs the checkpoints of these tests.
var testSigner = audit.NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))

// checkpoints reads all of the account's checkpoints and checks that they
// chain: seq strictly increasing, each signing the previous one's
// signature, each verifying with testSigner's key at a stored chain head.
func checkpoints(t testing.TB, s audit.Store, account string) []*audit.Checkpoint {
	t.Helper()
	ctx := context.Background()
	cs, err := s.Checkpoints(ctx, audit.Scope{AccountID: account}, 0, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	evs := storetest.ReadChain(t, s, account, 7)
	var prev *audit.Checkpoint
	for _, c := range cs {
		if c.SourceAccountID != account {
			t.Fatalf("checkpoints of %s hold one of %s", account, c.SourceAccountID)
		}
		if prev != nil && c.Seq <= prev.Seq {
			t.Fatalf("%s: checkpoint seq %d after %d", account, c.Seq, prev.Seq)
		}
		want := ""
		if prev != nil {
			want = prev.Signature
		}
		if c.PrevSignature != want {
			t.Fatalf("%s: checkpoint at seq %d does not sign the previous signature", account, c.Seq)
		}
		if err := audit.VerifyCheckpoint(c, testSigner.PublicKey()); err != nil {
			t.Fatalf("%s: %v", account, err)
		}
		if c.Seq > int64(len(evs)) || evs[c.Seq-1].Hash != c.Hash {
			t.Fatalf("%s: checkpoint at seq %d is not at a stored event", account, c.Seq)
		}
		if c.CreatedAt.Location() != time.UTC || c.CreatedAt.Nanosecond()%1000 != 0 {
			t.Fatalf("%s: created_at %v is not UTC microseconds", account, c.CreatedAt)
		}
		prev = c
	}
	return cs
}

// TestCheckpointsTwoStoresOneFile: two Stores on one file, as two processes
// would have, checkpointing while appending: each account's checkpoints
// form one signed chain.
func TestCheckpointsTwoStoresOneFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	stores := []*Store{openAt(t, path), openAt(t, path)}
	accounts := []string{"acme", "globex"}
	const workersPerStore, rounds = 2, 15
	var wg sync.WaitGroup
	errs := make(chan error, len(stores)*workersPerStore*rounds*3)
	var mu sync.Mutex
	returned := map[string]*audit.Checkpoint{} // signature → what Checkpoint returned
	for si, s := range stores {
		for w := 0; w < workersPerStore; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := context.Background()
				for r := 0; r < rounds; r++ {
					account := accounts[(si+w+r)%2]
					errs <- s.Append(ctx, items(storetest.Event(t, account, time.Time{}), storetest.Event(t, accounts[(si+w+r+1)%2], time.Time{})))
					c, _, err := s.Checkpoint(ctx, audit.Scope{AccountID: account}, time.Now(), testSigner.Sign)
					errs <- err
					if err == nil {
						mu.Lock()
						returned[c.Signature] = c
						mu.Unlock()
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	total := 0
	for _, a := range accounts {
		// A final checkpoint covers the head; another one adds nothing.
		last, _, err := stores[0].Checkpoint(ctx, audit.Scope{AccountID: a}, time.Now(), testSigner.Sign)
		if err != nil {
			t.Fatal(err)
		}
		if again, created, err := stores[1].Checkpoint(ctx, audit.Scope{AccountID: a}, time.Now(), testSigner.Sign); err != nil || created || again.Signature != last.Signature {
			t.Fatalf("%s: checkpoint at the head again: created=%v %v", a, created, err)
		}
		returned[last.Signature] = last
		cs := checkpoints(t, stores[0], a)
		if again := checkpoints(t, stores[1], a); len(again) != len(cs) {
			t.Fatalf("the stores see %d and %d checkpoints of %s", len(cs), len(again), a)
		}
		if n := int64(len(storetest.ReadChain(t, stores[0], a, 7))); cs[len(cs)-1].Seq != n {
			t.Fatalf("%s: latest checkpoint at seq %d, head %d", a, cs[len(cs)-1].Seq, n)
		}
		latest, err := stores[1].LatestCheckpoint(ctx, audit.Scope{AccountID: a})
		if err != nil || !reflect.DeepEqual(latest, cs[len(cs)-1]) {
			t.Fatalf("%s: latest %+v, %v", a, latest, err)
		}
		// What Checkpoint returned is what is read back, field for field.
		for _, c := range cs {
			if r, ok := returned[c.Signature]; ok && !reflect.DeepEqual(r, c) {
				t.Fatalf("read back differs:\n got %+v\nwant %+v", *c, *r)
			}
		}
		total += len(cs)
	}
	if total < 4 {
		t.Fatalf("only %d checkpoints", total)
	}
	if due, err := stores[1].DueCheckpoints(ctx, 1, time.Hour, time.Now()); err != nil || len(due) != 0 {
		t.Fatalf("due after checkpointing every head: %v %v", due, err)
	}
}

func TestCheckpointsAppendOnly(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	s := openAt(t, path)
	ctx := context.Background()
	acme := audit.Scope{AccountID: "acme"}
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}), storetest.Event(t, "acme", time.Time{}))
	if _, _, err := s.Checkpoint(ctx, acme, base, testSigner.Sign); err != nil {
		t.Fatal(err)
	}
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}))
	if _, _, err := s.Checkpoint(ctx, acme, base.Add(time.Second), testSigner.Sign); err != nil {
		t.Fatal(err)
	}
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}))
	before := checkpoints(t, s, "acme")
	if len(before) != 2 {
		t.Fatalf("%d checkpoints", len(before))
	}
	db := rawDB(t, path)
	for _, c := range []struct{ sql, want string }{
		{`UPDATE np_audit_checkpoints SET signature = 'x'`, "np_audit_checkpoints is append-only: UPDATE is not allowed"},
		{`UPDATE np_audit_checkpoints SET created_at = created_at + 1 WHERE seq = 2`, "np_audit_checkpoints is append-only: UPDATE is not allowed"},
		{`DELETE FROM np_audit_checkpoints WHERE seq = 3`, "np_audit_checkpoints is append-only: DELETE is not allowed"},
		{`DELETE FROM np_audit_checkpoints`, "np_audit_checkpoints is append-only: DELETE is not allowed"},
		{`INSERT OR REPLACE INTO np_audit_checkpoints SELECT * FROM np_audit_checkpoints WHERE seq = 3`, "append-only"},
		{`REPLACE INTO np_audit_checkpoints SELECT source_account_id, seq, hash, created_at, prev_signature, key_id, 'forged'
			FROM np_audit_checkpoints WHERE seq = 2`, "append-only"},
		// Not chained to the latest signature, or not at a stored event.
		{`INSERT INTO np_audit_checkpoints SELECT source_account_id, 4, (SELECT hash FROM np_audit_events WHERE seq = 4),
			created_at, '', key_id, signature FROM np_audit_checkpoints WHERE seq = 3`, "must follow"},
		{`INSERT INTO np_audit_checkpoints SELECT source_account_id, 4, hash, created_at, signature, key_id, signature
			FROM np_audit_checkpoints WHERE seq = 3`, "must follow"},
		{`INSERT INTO np_audit_checkpoints SELECT source_account_id, 9, hash, created_at, signature, key_id, signature
			FROM np_audit_checkpoints WHERE seq = 3`, "must follow"},
	} {
		_, err := db.Exec(c.sql)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error containing %q", c.sql, err, c.want)
		}
	}
	after := checkpoints(t, s, "acme")
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("checkpoints changed:\n%+v\n%+v", before, after)
	}
	for _, name := range []string{"trg_audit_immutable_checkpoints_update", "trg_audit_immutable_checkpoints_delete"} {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name = ?`, name).Scan(&n); err != nil || n != 1 {
			t.Errorf("trigger %s: %d, %v", name, n, err)
		}
	}
	// The store's own next checkpoint still goes in.
	if c, created, err := s.Checkpoint(ctx, acme, base.Add(2*time.Second), testSigner.Sign); err != nil || !created || c.Seq != 4 {
		t.Fatalf("checkpoint after the attempts: %+v %v %v", c, created, err)
	}
	checkpoints(t, s, "acme")
}

// TestMigration0002: a file made before checkpoints existed (0001 only,
// with events) gets 0002 on the next Open, once.
func TestMigration0002(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "audit.db")
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}), storetest.Event(t, "acme", time.Time{}))
	s.Close()
	// Take the file back to its state before 0002.
	db := rawDB(t, path)
	for _, q := range []string{
		`DROP TABLE np_audit_checkpoints`, // drops its triggers too
		`DELETE FROM schema_migrations WHERE filename = '0002_checkpoints.sql'`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name LIKE '%checkpoints%'`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d checkpoint objects left", n)
	}
	db.Close()

	for round := 1; round <= 2; round++ {
		s := openAt(t, path)
		st, err := s.Migrations(ctx)
		if err != nil || st.Applied != 2 || st.Expected != 2 {
			t.Fatalf("round %d: Migrations() = %+v, %v", round, st, err)
		}
		storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}))
		c, created, err := s.Checkpoint(ctx, audit.Scope{AccountID: "acme"}, time.Now(), testSigner.Sign)
		if err != nil || !created || c.Seq != int64(2+round) {
			t.Fatalf("round %d: checkpoint %+v %v %v", round, c, created, err)
		}
		if cs := checkpoints(t, s, "acme"); len(cs) != round {
			t.Fatalf("round %d: %d checkpoints", round, len(cs))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db = rawDB(t, path)
	var rows, objects int
	db.QueryRow(`SELECT count(*) FROM schema_migrations WHERE filename = '0002_checkpoints.sql'`).Scan(&rows)
	db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE tbl_name = 'np_audit_checkpoints'`).Scan(&objects)
	if rows != 1 || objects != 4 { // the table and its three triggers
		t.Fatalf("0002 ledger rows %d, objects %d", rows, objects)
	}
}

// TestCheckpointEdges: what the contract suite leaves out.
func TestCheckpointEdges(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	ctx := context.Background()
	acme := audit.Scope{AccountID: "acme"}
	if _, err := s.Checkpoints(ctx, acme, 0, 0, -1); err == nil {
		t.Error("negative limit accepted")
	}
	if cs, err := s.Checkpoints(ctx, acme, 0, 0, 10); err != nil || len(cs) != 0 {
		t.Errorf("no checkpoints: %d, %v", len(cs), err)
	}
	_, err := s.LatestCheckpoint(ctx, acme)
	if audit.ErrorCode(err) != audit.ENOTFOUND || audit.ErrorMessage(err) != "no checkpoint yet" {
		t.Errorf("latest of none: %v", err)
	}
	_, _, err = s.Checkpoint(ctx, acme, base, testSigner.Sign)
	if audit.ErrorCode(err) != audit.ENOTFOUND || audit.ErrorMessage(err) != "account acme has no events to checkpoint" {
		t.Errorf("checkpoint of none: %v", err)
	}
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}))
	// sign sees the fields already set, and a time in another zone with
	// nanoseconds is stored as UTC microseconds.
	at := time.Date(2026, 11, 27, 13, 0, 0, 123456789, time.FixedZone("X", 3600))
	var seen audit.Checkpoint
	c, created, err := s.Checkpoint(ctx, acme, at, func(c *audit.Checkpoint) error {
		seen = *c
		return testSigner.Sign(c)
	})
	if err != nil || !created {
		t.Fatal(created, err)
	}
	if seen.SourceAccountID != "acme" || seen.Seq != 1 || seen.Hash == "" || seen.PrevSignature != "" ||
		seen.CreatedAt != at.UTC().Truncate(time.Microsecond) || seen.KeyID != "" {
		t.Fatalf("sign saw %+v", seen)
	}
	got, err := s.LatestCheckpoint(ctx, acme)
	if err != nil || !reflect.DeepEqual(got, c) || audit.VerifyCheckpoint(got, testSigner.PublicKey()) != nil {
		t.Fatalf("read back %+v, %v; want %+v", got, err, c)
	}
	// DueCheckpoints: the age boundary is inclusive, and an account whose
	// head is at its checkpoint is never due by age.
	created0 := c.CreatedAt
	for _, tc := range []struct {
		min  int64
		age  time.Duration
		now  time.Time
		want string
	}{
		{1, time.Minute, created0.Add(time.Hour), "[]"},
		{0, time.Minute, created0, "[acme]"}, // head - latest >= 0
	} {
		if due, err := s.DueCheckpoints(ctx, tc.min, tc.age, tc.now); err != nil || fmt.Sprint(due) != tc.want {
			t.Errorf("due(%d, %v): %v %v; want %s", tc.min, tc.age, due, err, tc.want)
		}
	}
	storetest.AppendAll(t, s, storetest.Event(t, "acme", time.Time{}))
	for _, tc := range []struct {
		now  time.Time
		want string
	}{
		{created0.Add(time.Minute - time.Microsecond), "[]"},
		{created0.Add(time.Minute), "[acme]"},
		{created0.Add(time.Minute + 999*time.Nanosecond), "[acme]"},
	} {
		if due, err := s.DueCheckpoints(ctx, 5, time.Minute, tc.now); err != nil || fmt.Sprint(due) != tc.want {
			t.Errorf("due at %v: %v %v; want %s", tc.now, due, err, tc.want)
		}
	}
}
