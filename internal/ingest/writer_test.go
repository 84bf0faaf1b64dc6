package ingest

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/sqlite"
	"github.com/nself-org/nself-audit/internal/storetest"
)

// countingStore records the size of every Append on a real store, and can
// hold each call for a while so that requests queue up behind it.
type countingStore struct {
	audit.Store
	hold  time.Duration
	fail  error
	mu    sync.Mutex
	sizes []int
}

func (c *countingStore) Append(ctx context.Context, items []*audit.AppendItem) error {
	c.mu.Lock()
	c.sizes = append(c.sizes, len(items))
	c.mu.Unlock()
	time.Sleep(c.hold)
	if c.fail != nil {
		return c.fail
	}
	return c.Store.Append(ctx, items)
}

func (c *countingStore) calls() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.sizes...)
}

func newStore(t *testing.T) audit.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "audit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func item(t *testing.T, account string) *audit.AppendItem {
	t.Helper()
	e, err := (&audit.EventInput{ActorID: "u1", Action: "doc.read"}).Validate(account, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &audit.AppendItem{Event: e}
}

// writeConcurrently runs n Writes at once and returns their errors.
func writeConcurrently(t *testing.T, w *Writer, n int) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.Write(context.Background(), item(t, []string{"acme", "globex"}[i%2]))
		}()
	}
	wg.Wait()
	return errs
}

func TestGroupCommit(t *testing.T) {
	t.Parallel()
	store := &countingStore{Store: newStore(t), hold: 20 * time.Millisecond}
	w := New(store, Config{MaxBatch: 16})
	go w.Run()
	defer w.Close(context.Background())

	const n = 100
	for _, err := range writeConcurrently(t, w, n) {
		if err != nil {
			t.Fatal(err)
		}
	}
	calls := store.calls()
	total := 0
	for _, size := range calls {
		total += size
		if size > 16 {
			t.Errorf("a batch of %d events; MaxBatch is 16", size)
		}
	}
	if total != n {
		t.Fatalf("%d events appended, want %d", total, n)
	}
	// While one transaction is held, the others queue: far fewer
	// transactions than requests.
	if len(calls) > n/4 {
		t.Errorf("%d transactions for %d concurrent requests: no grouping", len(calls), n)
	}
	if got := storetest.VerifyChain(t, store, "acme") + storetest.VerifyChain(t, store, "globex"); got != n {
		t.Fatalf("chains hold %d events, want %d", got, n)
	}
}

func TestFailedBatchAnswersEveryWaiter(t *testing.T) {
	t.Parallel()
	boom := errors.New("disk on fire")
	store := &countingStore{Store: newStore(t), fail: boom, hold: 10 * time.Millisecond}
	w := New(store, Config{})
	go w.Run()
	defer w.Close(context.Background())
	for i, err := range writeConcurrently(t, w, 20) {
		if !errors.Is(err, boom) {
			t.Fatalf("write %d: %v; want the store's error", i, err)
		}
	}
	if n := storetest.VerifyChain(t, store, "acme"); n != 0 {
		t.Fatalf("%d events stored after failed commits", n)
	}
}

// TestCloseCommitsQueued: Close waits for what is queued, and refuses
// writes after it.
func TestCloseCommitsQueued(t *testing.T) {
	t.Parallel()
	store := &countingStore{Store: newStore(t), hold: 30 * time.Millisecond}
	w := New(store, Config{MaxBatch: 5})
	go w.Run()
	done := make(chan []error)
	go func() { done <- writeConcurrently(t, w, 40) }()
	time.Sleep(40 * time.Millisecond) // let requests queue behind the held batch
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	acknowledgedStored(t, store, <-done)
	if err := w.Write(context.Background(), item(t, "acme")); audit.ErrorCode(err) != audit.EUNAVAILABLE {
		t.Fatalf("write after Close: %v", err)
	}
}

func TestWriteHonoursContext(t *testing.T) {
	t.Parallel()
	w, store := busyWriter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := w.Write(ctx, item(t, "acme")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write with an expiring context: %v", err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Fatalf("Write returned after %v; it should not wait for the commit once ctx ends", d)
	}
	// Its batch had not started: it is not stored.
	onlyFirstStored(t, w, store)
}

// busyWriter returns a writer whose store holds each Append for 300 ms,
// busy with a first write of one event of acme.
func busyWriter(t *testing.T) (*Writer, *countingStore) {
	t.Helper()
	store := &countingStore{Store: newStore(t), hold: 300 * time.Millisecond}
	w := New(store, Config{})
	go w.Run()
	t.Cleanup(func() { w.Close(context.Background()) })
	go w.Write(context.Background(), item(t, "acme")) // occupies the writer
	time.Sleep(20 * time.Millisecond)
	return w, store
}

// onlyFirstStored closes w and fails unless busyWriter's first write is
// all that was stored: the writes given up while it ran were dropped.
func onlyFirstStored(t *testing.T, w *Writer, store *countingStore) {
	t.Helper()
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls := store.calls(); len(calls) != 1 || calls[0] != 1 {
		t.Fatalf("appends %v; want one of 1 event (the writes given up dropped)", calls)
	}
	if n := storetest.VerifyChain(t, store.Store, "acme"); n != 1 {
		t.Fatalf("%d events stored, want 1", n)
	}
}

// TestWriteUntilStopAndTimeout: WriteUntil's stop and timeout end the wait
// as an ended context does, and the waiting items are then dropped.
func TestWriteUntilStopAndTimeout(t *testing.T) {
	t.Parallel()
	w, store := busyWriter(t)
	start := time.Now()
	if err := w.WriteUntil(context.Background(), nil, 50*time.Millisecond, item(t, "acme")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write with a timeout: %v, want context.DeadlineExceeded", err)
	}
	stop := make(chan struct{})
	time.AfterFunc(30*time.Millisecond, func() { close(stop) })
	if err := w.WriteUntil(context.Background(), stop, time.Minute, item(t, "acme")); !errors.Is(err, ErrStopped) {
		t.Fatalf("write with a closed stop: %v, want ErrStopped", err)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Fatalf("the two writes returned after %v; they should not wait for the commit", d)
	}
	if err := w.WriteUntil(context.Background(), stop, 0, item(t, "acme")); !errors.Is(err, ErrStopped) {
		t.Fatalf("write with a stop closed before: %v, want ErrStopped", err)
	}
	// Their batch had not started: none of them is stored.
	onlyFirstStored(t, w, store)
}

// flakyStore fails its first Appends with a deadlock, as PostgreSQL may
// under contention, then behaves.
type flakyStore struct {
	audit.Store
	failures int
	calls    int
}

type sqlStateErr string

func (e sqlStateErr) Error() string    { return "deadlock detected" }
func (e sqlStateErr) SQLState() string { return string(e) }

func (f *flakyStore) Append(ctx context.Context, items []*audit.AppendItem) error {
	f.calls++
	if f.calls <= f.failures {
		return sqlStateErr("40P01")
	}
	return f.Store.Append(ctx, items)
}

// TestTransientFailureRetried: a deadlock is retried and the write
// succeeds; a batch that keeps failing answers the error after Attempts.
func TestTransientFailureRetried(t *testing.T) {
	t.Parallel()
	store := &flakyStore{Store: newStore(t), failures: 2}
	w := New(store, Config{Attempts: 3})
	go w.Run()
	defer w.Close(context.Background())
	if err := w.Write(context.Background(), item(t, "acme")); err != nil {
		t.Fatalf("write after two deadlocks: %v", err)
	}
	if store.calls != 3 || storetest.VerifyChain(t, store, "acme") != 1 {
		t.Fatalf("%d attempts; want 3 and one stored event", store.calls)
	}

	always := &flakyStore{Store: newStore(t), failures: 100}
	w2 := New(always, Config{Attempts: 3})
	go w2.Run()
	defer w2.Close(context.Background())
	if err := w2.Write(context.Background(), item(t, "acme")); err == nil || always.calls != 3 {
		t.Fatalf("write against a store that always deadlocks: %v after %d attempts", err, always.calls)
	}
}

// TestInFlight: with InFlight 2, two batches commit at once and never
// more; every write is answered, and Close waits for the batches in flight.
func TestInFlight(t *testing.T) {
	t.Parallel()
	store := &overlapStore{countingStore: countingStore{Store: newStore(t), hold: 15 * time.Millisecond}}
	w := New(store, Config{MaxBatch: 4, InFlight: 2})
	go w.Run()
	done := make(chan []error)
	go func() { done <- writeConcurrently(t, w, 60) }()
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := store.active.Load(); n != 0 {
		t.Fatalf("Close returned with %d batches committing", n)
	}
	acknowledgedStored(t, store, <-done)
	if peak := store.peak.Load(); peak != 2 {
		t.Fatalf("at most %d batches committed at once; want 2", peak)
	}
}

// TestSmallInFlight: batches that start with a small request are held to
// SmallInFlight at once, batches of large requests still reach InFlight.
func TestSmallInFlight(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		perWrite int
		want     int64
	}{{"small", 1, 2}, {"large", 3, 3}} {
		t.Run(c.name, func(t *testing.T) {
			store := &overlapStore{countingStore: countingStore{Store: newStore(t), hold: 15 * time.Millisecond}}
			w := New(store, Config{MaxBatch: 4, InFlight: 3, SmallInFlight: 2, SmallEvents: 3})
			go w.Run()
			defer w.Close(context.Background())
			var wg sync.WaitGroup
			for i := range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					items := make([]*audit.AppendItem, c.perWrite)
					for j := range items {
						items[j] = item(t, []string{"acme", "globex"}[i%2])
					}
					if err := w.Write(context.Background(), items...); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if peak := store.peak.Load(); peak != c.want {
				t.Fatalf("at most %d batches committed at once; want %d", peak, c.want)
			}
		})
	}
}

// overlapStore records how many Appends run at once.
type overlapStore struct {
	countingStore
	active, peak atomic.Int64
}

func (o *overlapStore) Append(ctx context.Context, items []*audit.AppendItem) error {
	n := o.active.Add(1)
	defer o.active.Add(-1)
	for {
		p := o.peak.Load()
		if n <= p || o.peak.CompareAndSwap(p, n) {
			break
		}
	}
	return o.countingStore.Append(ctx, items)
}

// acknowledgedStored fails unless every write either succeeded or was
// refused as unavailable (the writer closing), some succeeded, and the
// chains of acme and globex hold exactly the acknowledged events.
func acknowledgedStored(t *testing.T, store audit.Store, errs []error) {
	t.Helper()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case audit.ErrorCode(err) != audit.EUNAVAILABLE:
			t.Fatalf("write: %v; want success or EUNAVAILABLE", err)
		}
	}
	stored := storetest.VerifyChain(t, store, "acme") + storetest.VerifyChain(t, store, "globex")
	if int(stored) != ok || ok == 0 {
		t.Fatalf("%d writes acknowledged, %d events stored; want equal and > 0", ok, stored)
	}
}
