// Package storetest is the contract every audit.Store must meet: one suite,
// run by each store's tests against a real database, so the stores behave
// the same through the interface.
package storetest

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/internal/audit"
)

// Run runs the contract suite. open returns a new, empty, ready store and
// registers its cleanup.
func Run(t *testing.T, open func(t *testing.T) audit.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s audit.Store)
	}{
		{"AppendAndRead", testAppendAndRead},
		{"ChainAcrossBatches", testChainAcrossBatches},
		{"ConcurrentAppends", testConcurrentAppends},
		{"Idempotency", testIdempotency},
		{"Isolation", testIsolation},
		{"Filters", testFilters},
		{"Paging", testPaging},
		{"EventsBySeq", testEventsBySeq},
		{"Stats", testStats},
		{"Metadata", testMetadata},
		{"Checkpoints", testCheckpoints},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

var base = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// Event returns a valid event of account; fields are "key=value" pairs of
// EventInput; a zero at means now.
func Event(t testing.TB, account string, at time.Time, fields ...string) *audit.Event {
	t.Helper()
	in := &audit.EventInput{ActorID: "u1", Action: "doc.read"}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "actor_id":
			in.ActorID = v
		case "actor_type":
			in.ActorType = v
		case "action":
			in.Action = v
		case "resource_type":
			in.ResourceType = v
		case "resource_id":
			in.ResourceID = v
		case "outcome":
			in.Outcome = v
		case "severity":
			in.Severity = v
		case "source":
			in.Source = v
		case "metadata":
			in.Metadata = []byte(v)
		default:
			t.Fatalf("storetest: unknown field %q", k)
		}
	}
	if !at.IsZero() {
		s := at.Format(time.RFC3339Nano)
		in.OccurredAt = &s
	}
	e, err := in.Validate(account, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// AppendAll appends the events in one batch and fails t unless all are stored.
func AppendAll(t testing.TB, s audit.Store, events ...*audit.Event) {
	t.Helper()
	items := make([]*audit.AppendItem, len(events))
	for i, e := range events {
		items[i] = &audit.AppendItem{Event: e}
	}
	if err := s.Append(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Err != nil || it.Replayed {
			t.Fatalf("item: err %v replayed %v", it.Err, it.Replayed)
		}
	}
}

// VerifyChain reads the account's whole chain page by page, verifies it and
// returns its length.
func VerifyChain(t testing.TB, s audit.Store, account string) int64 {
	t.Helper()
	return int64(len(ReadChain(t, s, account, 100)))
}

// ReadChain reads the account's whole chain, pageSize events a page,
// verifies every event and link, and returns the events in seq order.
func ReadChain(t testing.TB, s audit.Store, account string, pageSize int) []*audit.Event {
	t.Helper()
	v := audit.NewChainVerifier()
	var all []*audit.Event
	var after int64
	for {
		evs, err := s.Chain(context.Background(), audit.Scope{AccountID: account}, after, pageSize)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.SourceAccountID != account {
				t.Fatalf("chain of %s holds an event of %s", account, e.SourceAccountID)
			}
			if err := v.Check(e); err != nil {
				t.Fatalf("account %s: %v", account, err)
			}
		}
		all = append(all, evs...)
		if len(evs) < pageSize {
			return all
		}
		after = evs[len(evs)-1].Seq
	}
}

func testAppendAndRead(t *testing.T, s audit.Store) {
	ctx := context.Background()
	if err := s.Append(ctx, nil); err != nil {
		t.Fatalf("empty append: %v", err)
	}
	if seq, hash, err := s.Head(ctx, audit.Scope{AccountID: "acme"}); err != nil || seq != 0 || hash != audit.GenesisHash {
		t.Fatalf("head of an empty account: %d %s %v", seq, hash, err)
	}
	e := Event(t, "acme", base, "resource_type=doc", "resource_id=d1", "metadata={\"k\":[1,\"x\"]}")
	want := *e
	AppendAll(t, s, e)
	if e.Seq != 1 || e.PrevHash != audit.GenesisHash || len(e.Hash) != 64 {
		t.Fatalf("first event: seq %d prev %s hash %q", e.Seq, e.PrevHash, e.Hash)
	}
	if seq, hash, err := s.Head(ctx, audit.Scope{AccountID: "acme"}); err != nil || seq != 1 || hash != e.Hash {
		t.Fatalf("head after one event: %d %s %v", seq, hash, err)
	}
	got, err := s.Event(ctx, audit.Scope{AccountID: "acme"}, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	want.Seq, want.PrevHash, want.Hash = e.Seq, e.PrevHash, e.Hash
	if fmt.Sprintf("%+v", *got) != fmt.Sprintf("%+v", want) {
		t.Fatalf("read back differs:\n got %+v\nwant %+v", *got, want)
	}
	if _, err := s.Event(ctx, audit.Scope{AccountID: "acme"}, uuid.New()); audit.ErrorCode(err) != audit.ENOTFOUND {
		t.Fatalf("absent event: %v", err)
	}
	if _, err := s.Chain(ctx, audit.Scope{AccountID: "acme", ActorID: "u1"}, 0, 10); audit.ErrorCode(err) != audit.EFORBIDDEN {
		t.Fatalf("chain with an actor scope: %v", err)
	}
	st, err := s.Migrations(ctx)
	if err != nil || st.Expected == 0 || st.Applied != st.Expected {
		t.Fatalf("Migrations() = %+v, %v", st, err)
	}
}

func testChainAcrossBatches(t *testing.T, s audit.Store) {
	for b := 0; b < 5; b++ {
		var evs []*audit.Event
		for i := 0; i < 7; i++ {
			account := []string{"acme", "globex"}[(b+i)%2]
			evs = append(evs, Event(t, account, time.Time{}))
		}
		AppendAll(t, s, evs...)
	}
	if n := VerifyChain(t, s, "acme") + VerifyChain(t, s, "globex"); n != 35 {
		t.Fatalf("chains hold %d events, want 35", n)
	}
}

func testConcurrentAppends(t *testing.T, s audit.Store) {
	const writers, batches, size = 6, 8, 4
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				var items []*audit.AppendItem
				for i := 0; i < size; i++ {
					account := []string{"acme", "globex", "initech"}[(w+b+i)%3]
					items = append(items, &audit.AppendItem{Event: Event(t, account, time.Time{}, fmt.Sprintf("actor_id=w%d", w))})
				}
				errs <- s.Append(context.Background(), items)
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
	total := VerifyChain(t, s, "acme") + VerifyChain(t, s, "globex") + VerifyChain(t, s, "initech")
	if total != writers*batches*size {
		t.Fatalf("chains hold %d events, want %d", total, writers*batches*size)
	}
}

func testIdempotency(t *testing.T, s audit.Store) {
	ctx := context.Background()
	item := func(account, key, fingerprint string) *audit.AppendItem {
		return &audit.AppendItem{Event: Event(t, account, time.Time{}), IdempotencyKey: key, Fingerprint: fingerprint}
	}
	first := item("acme", "k1", "f1")
	if err := s.Append(ctx, []*audit.AppendItem{first}); err != nil || first.Replayed || first.Err != nil {
		t.Fatalf("first: %v %+v", err, first)
	}
	retry, reuse, other := item("acme", "k1", "f1"), item("acme", "k1", "f2"), item("globex", "k1", "f1")
	dupA, dupB, plain := item("acme", "k2", "f3"), item("acme", "k2", "f3"), item("acme", "", "")
	if err := s.Append(ctx, []*audit.AppendItem{retry, reuse, other, dupA, dupB, plain}); err != nil {
		t.Fatal(err)
	}
	if !retry.Replayed || retry.Err != nil || retry.Event.ID != first.Event.ID || retry.Event.Hash != first.Event.Hash {
		t.Errorf("retry: replayed %v err %v id %s; want the first event %s", retry.Replayed, retry.Err, retry.Event.ID, first.Event.ID)
	}
	if audit.ErrorCode(reuse.Err) != audit.ECONFLICT || reuse.Replayed {
		t.Errorf("reuse for another event: %v", reuse.Err)
	}
	if other.Replayed || other.Err != nil || other.Event.Seq != 1 {
		t.Errorf("same key in another account: %+v", other)
	}
	if dupA.Replayed || !dupB.Replayed || dupB.Event.ID != dupA.Event.ID || dupB.Event.Seq != dupA.Event.Seq {
		t.Errorf("duplicate key in one batch: A replayed %v, B replayed %v", dupA.Replayed, dupB.Replayed)
	}
	if plain.Replayed || plain.Err != nil {
		t.Errorf("event without a key: %+v", plain)
	}
	if n := VerifyChain(t, s, "acme"); n != 3 {
		t.Errorf("acme holds %d events, want 3 (k1, k2, no key)", n)
	}
}

func testIsolation(t *testing.T, s audit.Store) {
	ctx := context.Background()
	a1 := Event(t, "acme", base, "actor_id=alice")
	a2 := Event(t, "acme", base.Add(time.Second), "actor_id=bob")
	g1 := Event(t, "globex", base, "actor_id=alice")
	AppendAll(t, s, a1, a2, g1)
	cases := []struct {
		scope audit.Scope
		want  int
	}{
		{audit.Scope{AccountID: "acme"}, 2},
		{audit.Scope{AccountID: "acme", ActorID: "alice"}, 1},
		{audit.Scope{AccountID: "acme", ActorID: "nobody"}, 0},
		{audit.Scope{AccountID: "globex"}, 1},
		{audit.Scope{AccountID: "initech"}, 0},
	}
	for _, c := range cases {
		evs, err := s.Events(ctx, c.scope, audit.Filter{Limit: 10})
		if err != nil || len(evs) != c.want {
			t.Errorf("%+v sees %d events, %v; want %d", c.scope, len(evs), err, c.want)
		}
		for _, e := range evs {
			if e.SourceAccountID != c.scope.AccountID || (c.scope.ActorID != "" && e.ActorID != c.scope.ActorID) {
				t.Errorf("%+v sees %s/%s", c.scope, e.SourceAccountID, e.ActorID)
			}
		}
		st, err := s.Stats(ctx, c.scope, audit.Filter{}, audit.Day)
		if err != nil || st.Total != int64(c.want) {
			t.Errorf("%+v stats total %v, %v; want %d", c.scope, st, err, c.want)
		}
	}
	// An actor filter cannot widen an actor scope.
	if evs, _ := s.Events(ctx, audit.Scope{AccountID: "acme", ActorID: "alice"}, audit.Filter{ActorID: "bob", Limit: 10}); len(evs) != 0 {
		t.Errorf("actor scope widened by a filter: %d events", len(evs))
	}
	for _, c := range []struct {
		scope audit.Scope
		id    uuid.UUID
	}{
		{audit.Scope{AccountID: "acme"}, g1.ID},
		{audit.Scope{AccountID: "globex"}, a1.ID},
		{audit.Scope{AccountID: "acme", ActorID: "alice"}, a2.ID},
	} {
		if _, err := s.Event(ctx, c.scope, c.id); audit.ErrorCode(err) != audit.ENOTFOUND {
			t.Errorf("%+v reads %s: %v", c.scope, c.id, err)
		}
	}
}

// seed appends seven events to acme, an hour apart, and one to globex;
// it returns their ids by letter.
func seed(t *testing.T, s audit.Store) map[uuid.UUID]string {
	rows := [][]string{
		{"actor_id=alice", "action=user.login", "resource_type=session", "resource_id=s1", "source=auth"},
		{"actor_id=alice", "action=user.logout", "resource_type=session", "resource_id=s1", "source=auth"},
		{"actor_id=bob", "action=user.login", "outcome=failure", "severity=warning", "source=auth"},
		{"actor_id=bob", "action=doc.delete", "resource_type=doc", "resource_id=d9", "outcome=denied", "severity=critical", "source=files"},
		{"actor_id=", "actor_type=system", "action=backup.run", "source=cron"},
		{"actor_id=svc-1", "actor_type=service", "action=doc.read", "resource_type=doc", "resource_id=d9", "source=files"},
		{"actor_id=alice", "action=users.list", "severity=error", "source=admin"},
	}
	names := map[uuid.UUID]string{}
	var evs []*audit.Event
	for i, fields := range rows {
		e := Event(t, "acme", base.Add(time.Duration(i)*time.Hour), fields...)
		names[e.ID] = string(rune('a' + i))
		evs = append(evs, e)
	}
	evs = append(evs, Event(t, "globex", base, "actor_id=alice", "action=user.login"))
	AppendAll(t, s, evs...)
	return names
}

func letters(names map[uuid.UUID]string, evs []*audit.Event) string {
	var b strings.Builder
	for _, e := range evs {
		n, ok := names[e.ID]
		if !ok {
			n = "?"
		}
		b.WriteString(n)
	}
	return b.String()
}

func testFilters(t *testing.T, s audit.Store) {
	names := seed(t, s)
	at := func(h int) time.Time { return base.Add(time.Duration(h) * time.Hour) }
	cases := []struct {
		scope audit.Scope
		f     audit.Filter
		want  string
	}{
		{audit.Scope{}, audit.Filter{}, "gfedcba"},
		{audit.Scope{}, audit.Filter{Asc: true}, "abcdefg"},
		{audit.Scope{}, audit.Filter{Limit: 2}, "gfe"},
		{audit.Scope{}, audit.Filter{Limit: 2, Asc: true}, "abc"},
		{audit.Scope{}, audit.Filter{ActorID: "alice"}, "gba"},
		{audit.Scope{}, audit.Filter{ActorID: ""}, "gfedcba"},
		{audit.Scope{}, audit.Filter{ActorType: "system"}, "e"},
		{audit.Scope{}, audit.Filter{ActorType: "service"}, "f"},
		{audit.Scope{}, audit.Filter{Action: "user.login"}, "ca"},
		{audit.Scope{}, audit.Filter{Action: "user"}, ""},
		{audit.Scope{}, audit.Filter{ActionPrefix: "user."}, "cba"}, // not users.list
		{audit.Scope{}, audit.Filter{ActionPrefix: "users."}, "g"},
		{audit.Scope{}, audit.Filter{ActionPrefix: "doc.", Asc: true}, "df"},
		{audit.Scope{}, audit.Filter{ActionPrefix: "nothing."}, ""},
		{audit.Scope{}, audit.Filter{ResourceType: "doc"}, "fd"},
		{audit.Scope{}, audit.Filter{ResourceType: "doc", ResourceID: "d9"}, "fd"},
		{audit.Scope{}, audit.Filter{ResourceID: "s1"}, "ba"},
		{audit.Scope{}, audit.Filter{Outcome: "denied"}, "d"},
		{audit.Scope{}, audit.Filter{Outcome: "failure"}, "c"},
		{audit.Scope{}, audit.Filter{Severity: "info"}, "feba"},
		{audit.Scope{}, audit.Filter{Source: "files"}, "fd"},
		{audit.Scope{}, audit.Filter{Since: at(2)}, "gfedc"},                                      // inclusive
		{audit.Scope{}, audit.Filter{Since: at(2).Add(time.Microsecond)}, "gfed"},                 // at µs resolution
		{audit.Scope{}, audit.Filter{Until: at(2)}, "ba"},                                         // exclusive
		{audit.Scope{}, audit.Filter{Until: at(2).Add(time.Microsecond)}, "cba"},                  // at µs resolution
		{audit.Scope{}, audit.Filter{Since: at(1), Until: at(3)}, "cb"},                           // both
		{audit.Scope{}, audit.Filter{ActorID: "alice", ActionPrefix: "user.", Since: at(1)}, "b"}, // combined
		{audit.Scope{}, audit.Filter{ActorID: "' OR '1'='1"}, ""},
		{audit.Scope{}, audit.Filter{ResourceID: "x'; DROP TABLE np_audit_events; --"}, ""},
		{audit.Scope{ActorID: "bob"}, audit.Filter{}, "dc"},
		{audit.Scope{ActorID: "bob"}, audit.Filter{ActorID: "alice"}, ""}, // a filter cannot widen the scope
		{audit.Scope{AccountID: "globex"}, audit.Filter{}, "?"},
		{audit.Scope{AccountID: "initech"}, audit.Filter{}, ""},
	}
	for _, c := range cases {
		if c.scope.AccountID == "" {
			c.scope.AccountID = "acme"
		}
		if c.f.Limit == 0 {
			c.f.Limit = audit.DefaultLimit
		}
		evs, err := s.Events(context.Background(), c.scope, c.f)
		if err != nil {
			t.Fatal(err)
		}
		if got := letters(names, evs); got != c.want {
			t.Errorf("%+v %+v: got %q, want %q", c.scope, c.f, got, c.want)
		}
	}
	// The table is intact after the injection attempts.
	if n := VerifyChain(t, s, "acme"); n != 7 {
		t.Fatalf("acme holds %d events", n)
	}
}

func testPaging(t *testing.T, s audit.Store) {
	// 30 events, three to a timestamp: ties are broken by id.
	var evs []*audit.Event
	for i := 0; i < 30; i++ {
		// Three actions interleaved in time: a prefix walk must merge them.
		evs = append(evs, Event(t, "acme", base.Add(time.Duration(i/3)*time.Second), "action="+[]string{"doc.read", "doc.write", "doc.share"}[i%3]))
	}
	AppendAll(t, s, evs...)
	for _, c := range []struct {
		asc    bool
		prefix string
	}{{false, ""}, {true, ""}, {false, "doc."}, {true, "doc."}} {
		asc := c.asc
		var got []*audit.Event
		f := audit.Filter{Limit: 4, Asc: asc, ActionPrefix: c.prefix}
		for page := 0; page < 20; page++ {
			evs, err := s.Events(context.Background(), audit.Scope{AccountID: "acme"}, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) <= f.Limit {
				got = append(got, evs...)
				break
			}
			got = append(got, evs[:f.Limit]...)
			last := evs[f.Limit-1]
			f.After = &audit.Cursor{OccurredAt: last.OccurredAt, ID: last.ID}
		}
		if len(got) != 30 {
			t.Fatalf("asc=%v: walked %d events, want 30", asc, len(got))
		}
		for i := 1; i < len(got); i++ {
			a, b := got[i-1], got[i]
			before := a.OccurredAt.Before(b.OccurredAt) || (a.OccurredAt.Equal(b.OccurredAt) && a.ID.String() < b.ID.String())
			if before != asc {
				t.Fatalf("asc=%v: events %d and %d out of order", asc, i-1, i)
			}
		}
	}
}

// testEventsBySeq: the chain through a filter, in seq order, bounded by
// seq on both sides, within scope, page by page.
func testEventsBySeq(t *testing.T, s audit.Store) {
	names := seed(t, s) // acme: a..g are seq 1..7, occurred an hour apart
	// A later batch whose events occurred earlier: seq order, not time order.
	h := Event(t, "acme", base.Add(-time.Hour), "actor_id=alice", "action=user.login")
	i := Event(t, "acme", base.Add(-2*time.Hour), "actor_id=bob", "action=doc.read")
	AppendAll(t, s, h, i)
	names[h.ID], names[i.ID] = "h", "i"
	at := func(h int) time.Time { return base.Add(time.Duration(h) * time.Hour) }
	cases := []struct {
		scope       audit.Scope
		f           audit.Filter
		after, to   int64
		limit       int
		want        string
		wantFirstSq int64
	}{
		{audit.Scope{}, audit.Filter{}, 0, 0, 100, "abcdefghi", 1},
		{audit.Scope{}, audit.Filter{}, 3, 0, 100, "defghi", 4},
		{audit.Scope{}, audit.Filter{}, 3, 5, 100, "de", 4},
		{audit.Scope{}, audit.Filter{}, 0, 0, 2, "ab", 1},
		{audit.Scope{}, audit.Filter{}, 9, 0, 100, "", 0},
		{audit.Scope{}, audit.Filter{}, 20, 0, 100, "", 0},
		{audit.Scope{}, audit.Filter{ActorID: "alice"}, 0, 0, 100, "abgh", 1},
		{audit.Scope{}, audit.Filter{ActorID: "alice"}, 1, 7, 100, "bg", 2},
		{audit.Scope{}, audit.Filter{ActionPrefix: "user."}, 0, 0, 100, "abch", 1},
		{audit.Scope{}, audit.Filter{ActionPrefix: "user."}, 0, 0, 2, "ab", 1},
		{audit.Scope{}, audit.Filter{Action: "user.login", Since: at(0)}, 0, 0, 100, "ac", 1},
		{audit.Scope{}, audit.Filter{Until: at(0)}, 0, 0, 100, "hi", 8},
		{audit.Scope{}, audit.Filter{Outcome: "denied", Severity: "critical", Source: "files"}, 0, 0, 100, "d", 4},
		{audit.Scope{}, audit.Filter{ResourceType: "doc", ResourceID: "d9"}, 0, 0, 100, "df", 4},
		{audit.Scope{}, audit.Filter{ActorType: "system"}, 0, 0, 100, "e", 5},
		{audit.Scope{}, audit.Filter{Limit: 1, Asc: true}, 0, 0, 100, "abcdefghi", 1}, // paging fields are ignored
		{audit.Scope{ActorID: "bob"}, audit.Filter{}, 0, 0, 100, "cdi", 3},
		{audit.Scope{ActorID: "bob"}, audit.Filter{ActorID: "alice"}, 0, 0, 100, "", 0}, // a filter cannot widen the scope
		{audit.Scope{AccountID: "globex"}, audit.Filter{}, 0, 0, 100, "?", 1},
		{audit.Scope{AccountID: "initech"}, audit.Filter{}, 0, 0, 100, "", 0},
		{audit.Scope{}, audit.Filter{ResourceID: "x'; DROP TABLE np_audit_events; --"}, 0, 0, 100, "", 0},
	}
	for _, c := range cases {
		if c.scope.AccountID == "" {
			c.scope.AccountID = "acme"
		}
		evs, err := s.EventsBySeq(context.Background(), c.scope, c.f, c.after, c.to, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if got := letters(names, evs); got != c.want {
			t.Errorf("%+v %+v (%d, %d] limit %d: got %q, want %q", c.scope, c.f, c.after, c.to, c.limit, got, c.want)
		}
		for k, e := range evs {
			if e.SourceAccountID != c.scope.AccountID || (k == 0 && e.Seq != c.wantFirstSq) || (k > 0 && e.Seq <= evs[k-1].Seq) {
				t.Errorf("%+v %+v: event %d is %s seq %d", c.scope, c.f, k, e.SourceAccountID, e.Seq)
			}
		}
	}
	// Walking page by page, after the last seq of each page, visits every
	// matching event once.
	var got []*audit.Event
	for after := int64(0); ; {
		evs, err := s.EventsBySeq(context.Background(), audit.Scope{AccountID: "acme"}, audit.Filter{ActorID: "alice"}, after, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		got = append(got, evs...)
		after = evs[len(evs)-1].Seq
	}
	if l := letters(names, got); l != "abgh" {
		t.Errorf("page walk: got %q, want abgh", l)
	}
	for _, limit := range []int{0, -1} {
		if _, err := s.EventsBySeq(context.Background(), audit.Scope{AccountID: "acme"}, audit.Filter{}, 0, 0, limit); err == nil {
			t.Errorf("limit %d: no error", limit)
		}
	}
}

func testStats(t *testing.T, s audit.Store) {
	seed(t, s)
	st, err := s.Stats(context.Background(), audit.Scope{AccountID: "acme"}, audit.Filter{}, audit.Day)
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != 7 || st.DistinctActors != 3 || *st.FirstEventAt != "2026-11-20T10:00:00.000000Z" || *st.LastEventAt != "2026-11-20T16:00:00.000000Z" {
		t.Errorf("totals: %+v", st)
	}
	wantActions := "user.login=2 backup.run=1 doc.delete=1 doc.read=1 user.logout=1 users.list=1"
	var gotActions []string
	for _, a := range st.ByAction {
		gotActions = append(gotActions, fmt.Sprintf("%s=%d", a.Action, a.Count))
	}
	if strings.Join(gotActions, " ") != wantActions {
		t.Errorf("by_action %v, want %s", gotActions, wantActions)
	}
	wantMaps := map[string]map[string]int64{
		"actor_type": {"user": 5, "system": 1, "service": 1},
		"outcome":    {"success": 5, "failure": 1, "denied": 1},
		"severity":   {"info": 4, "warning": 1, "critical": 1, "error": 1},
	}
	for name, got := range map[string]map[string]int64{"actor_type": st.ByActorType, "outcome": st.ByOutcome, "severity": st.BySeverity} {
		if fmt.Sprint(got) != fmt.Sprint(wantMaps[name]) {
			t.Errorf("by_%s = %v, want %v", name, got, wantMaps[name])
		}
	}
	if len(st.Timeline) != 1 || st.Timeline[0] != (audit.Bucket{Bucket: "2026-11-20T00:00:00.000000Z", Count: 7}) {
		t.Errorf("day timeline %v", st.Timeline)
	}
	st, err = s.Stats(context.Background(), audit.Scope{AccountID: "acme"}, audit.Filter{ActorID: "alice"}, audit.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := []audit.Bucket{
		{Bucket: "2026-11-20T10:00:00.000000Z", Count: 1},
		{Bucket: "2026-11-20T11:00:00.000000Z", Count: 1},
		{Bucket: "2026-11-20T16:00:00.000000Z", Count: 1},
	}
	if fmt.Sprint(st.Timeline) != fmt.Sprint(want) || st.Total != 3 {
		t.Errorf("hour timeline for alice %v, want %v", st.Timeline, want)
	}
	// An actor scope limits stats as it limits lists.
	st, err = s.Stats(context.Background(), audit.Scope{AccountID: "acme", ActorID: "bob"}, audit.Filter{}, audit.Day)
	if err != nil || st.Total != 2 || st.DistinctActors != 1 {
		t.Errorf("bob's stats %+v, %v", st, err)
	}
	empty, err := s.Stats(context.Background(), audit.Scope{AccountID: "nobody"}, audit.Filter{}, audit.Day)
	if err != nil || empty.Total != 0 || empty.FirstEventAt != nil || empty.ByAction == nil || empty.Timeline == nil || empty.ByOutcome == nil {
		t.Errorf("empty stats %+v, %v", empty, err)
	}
}

// testMetadata: metadata reads back byte for byte as hashed, whatever the
// store does to JSON internally.
func testMetadata(t *testing.T, s audit.Store) {
	meta := `{"z":1,"a":{"big":12345678901234567890,"tiny":1e-7,"s":"é\u2028\t\"q\""},"list":[true,null,1.50]}`
	e := Event(t, "acme", time.Time{}, "metadata="+meta)
	canon := string(e.Metadata)
	AppendAll(t, s, e)
	got, err := s.Event(context.Background(), audit.Scope{AccountID: "acme"}, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Metadata) != canon {
		t.Fatalf("metadata\n got %s\nwant %s", got.Metadata, canon)
	}
	if VerifyChain(t, s, "acme") != 1 {
		t.Fatal("chain")
	}
}

func testCheckpoints(t *testing.T, s audit.Store) {
	ctx := context.Background()
	signer := audit.NewSigner(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	acme := audit.Scope{AccountID: "acme"}
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)

	if _, _, err := s.Checkpoint(ctx, acme, t0, signer.Sign); audit.ErrorCode(err) != audit.ENOTFOUND {
		t.Fatalf("checkpoint of an empty account: %v", err)
	}
	if _, err := s.LatestCheckpoint(ctx, acme); audit.ErrorCode(err) != audit.ENOTFOUND {
		t.Fatalf("latest of none: %v", err)
	}
	due, err := s.DueCheckpoints(ctx, 1000, time.Minute, t0)
	if err != nil || len(due) != 0 {
		t.Fatalf("due with no events: %v %v", due, err)
	}

	for i := 0; i < 3; i++ {
		AppendAll(t, s, Event(t, "acme", time.Time{}))
	}
	AppendAll(t, s, Event(t, "globex", time.Time{}))
	// Without a checkpoint, any account with events is due.
	if due, err := s.DueCheckpoints(ctx, 1000, time.Hour, t0); err != nil || fmt.Sprint(due) != "[acme globex]" {
		t.Fatalf("due before any checkpoint: %v %v", due, err)
	}
	c1, created, err := s.Checkpoint(ctx, acme, t0, signer.Sign)
	if err != nil || !created {
		t.Fatalf("first checkpoint: %v created=%v", err, created)
	}
	if c1.Seq != 3 || c1.SourceAccountID != "acme" || c1.PrevSignature != "" || c1.KeyID != signer.KeyID() ||
		!c1.CreatedAt.Equal(t0.Truncate(time.Microsecond)) {
		t.Fatalf("first checkpoint %+v", c1)
	}
	head, _ := s.Chain(ctx, acme, 2, 1)
	if len(head) != 1 || c1.Hash != head[0].Hash {
		t.Fatalf("checkpoint hash %s is not the head's", c1.Hash)
	}
	// Nothing new: the same checkpoint, not a new one.
	again, created, err := s.Checkpoint(ctx, acme, t0.Add(time.Minute), signer.Sign)
	if err != nil || created || again.Signature != c1.Signature {
		t.Fatalf("checkpoint without new events: created=%v %v", created, err)
	}
	// The head moved by 2 events: due by count at 2, by age after maxAge.
	AppendAll(t, s, Event(t, "acme", time.Time{}), Event(t, "acme", time.Time{}))
	for _, c := range []struct {
		min  int64
		age  time.Duration
		now  time.Time
		want string
	}{
		{2, time.Hour, t0, "[acme globex]"},
		{3, time.Hour, t0, "[globex]"},
		{3, time.Minute, t0.Add(2 * time.Minute), "[acme globex]"},
	} {
		if due, err := s.DueCheckpoints(ctx, c.min, c.age, c.now); err != nil || fmt.Sprint(due) != c.want {
			t.Errorf("due(min %d, age %v): %v %v; want %s", c.min, c.age, due, err, c.want)
		}
	}
	c2, created, err := s.Checkpoint(ctx, acme, t0.Add(time.Second), signer.Sign)
	if err != nil || !created || c2.Seq != 5 || c2.PrevSignature != c1.Signature {
		t.Fatalf("second checkpoint %+v created=%v %v", c2, created, err)
	}
	latest, err := s.LatestCheckpoint(ctx, acme)
	if err != nil || latest.Signature != c2.Signature {
		t.Fatalf("latest: %+v %v", latest, err)
	}
	all, err := s.Checkpoints(ctx, acme, 0, 0, 100)
	if err != nil || len(all) != 2 || all[0].Seq != 3 || all[1].Seq != 5 {
		t.Fatalf("checkpoints: %d %v", len(all), err)
	}
	for _, c := range all {
		if err := audit.VerifyCheckpoint(c, signer.PublicKey()); err != nil {
			t.Errorf("read back: %v", err)
		}
	}
	for _, c := range []struct {
		from, to int64
		limit    int
		want     int
	}{{4, 0, 100, 1}, {0, 4, 100, 1}, {3, 5, 100, 2}, {0, 0, 1, 1}, {6, 0, 100, 0}} {
		if got, err := s.Checkpoints(ctx, acme, c.from, c.to, c.limit); err != nil || len(got) != c.want {
			t.Errorf("Checkpoints(%d, %d, %d) = %d, %v; want %d", c.from, c.to, c.limit, len(got), err, c.want)
		}
	}
	// Other accounts see nothing of acme's; an actor scope is refused.
	if got, _ := s.Checkpoints(ctx, audit.Scope{AccountID: "globex"}, 0, 0, 100); len(got) != 0 {
		t.Errorf("globex sees %d checkpoints", len(got))
	}
	actorScope := audit.Scope{AccountID: "acme", ActorID: "u1"}
	if _, _, err := s.Checkpoint(ctx, actorScope, t0, signer.Sign); audit.ErrorCode(err) != audit.EFORBIDDEN {
		t.Errorf("checkpoint with an actor scope: %v", err)
	}
	if _, err := s.Checkpoints(ctx, actorScope, 0, 0, 10); audit.ErrorCode(err) != audit.EFORBIDDEN {
		t.Errorf("checkpoints with an actor scope: %v", err)
	}
	if _, err := s.LatestCheckpoint(ctx, actorScope); audit.ErrorCode(err) != audit.EFORBIDDEN {
		t.Errorf("latest checkpoint with an actor scope: %v", err)
	}
	// A failing signer stores nothing.
	AppendAll(t, s, Event(t, "acme", time.Time{}))
	boom := fmt.Errorf("no key")
	if _, _, err := s.Checkpoint(ctx, acme, t0, func(*audit.Checkpoint) error { return boom }); err == nil {
		t.Error("a failing signer's error was not returned")
	}
	if got, _ := s.Checkpoints(ctx, acme, 0, 0, 100); len(got) != 2 {
		t.Errorf("%d checkpoints after a failed signature, want 2", len(got))
	}
}
