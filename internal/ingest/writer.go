// Package ingest is the group-commit writer: requests that arrive while a
// transaction is in flight wait together and go into the next one, so many
// small requests cost one commit.
package ingest

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
)

// ErrClosed is returned by Write after Close.
var ErrClosed = audit.Errorf(audit.EUNAVAILABLE, "the service is shutting down; retry later")

// Config tunes a Writer. Zero values take the defaults.
type Config struct {
	MaxBatch int // events per transaction; default 1000
	Queue    int // requests waiting for a batch; default 8192
	// Attempts is how often a batch that failed for a transient reason
	// (deadlock, serialization) is tried; default 3.
	Attempts int
	// InFlight is how many batches may be committing at once; default 1.
	// More is for a store whose Append links a batch to the ones still in
	// flight and pipelines them (PostgreSQL's); a store that takes one
	// write at a time would only make them wait on each other.
	InFlight int
	// SmallInFlight, when from 1 to InFlight-1, bounds the batches in
	// flight, the new one included, when the new batch starts with a
	// request of fewer than SmallEvents events. PostgreSQL's pipeline runs
	// small batches one after another on one connection, where a third one
	// in flight only split the same events into smaller batches, each
	// paying a transaction's fixed cost again (single POSTs, six A/B pairs:
	// 8 % fewer with three in flight, BENCHMARKS.md). 0: InFlight.
	SmallInFlight int
	SmallEvents   int
	Logger        *slog.Logger
	// OnCommit, when set, is told of every batch after its transaction:
	// the items, the time taken (retries included) and the error.
	OnCommit func(items []*audit.AppendItem, d time.Duration, err error)
}

// Writer batches appends. Run must be running for Write to make progress.
type Writer struct {
	store audit.Store
	cfg   Config
	reqs  chan *request

	mu     sync.RWMutex // guards closed against sends racing Close
	closed bool
	done   chan struct{}
}

type request struct {
	ctx    context.Context // the caller's: once it ends, nobody waits for the answer
	items  []*audit.AppendItem
	result chan error // buffered: the writer never blocks on a gone waiter
	// gone is set when the caller stopped waiting for another reason than
	// ctx (WriteUntil's stop or timeout).
	gone atomic.Bool
}

// New returns a Writer over store. Start it with go w.Run().
func New(store audit.Store, cfg Config) *Writer {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 8192
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 3
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 1
	}
	if cfg.SmallInFlight <= 0 || cfg.SmallInFlight > cfg.InFlight {
		cfg.SmallInFlight = cfg.InFlight
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Writer{store: store, cfg: cfg, reqs: make(chan *request, cfg.Queue), done: make(chan struct{})}
}

// Write appends items (one request: they go into the same transaction) and
// returns after they are committed, or with the error that kept them from
// being stored. Per-item outcomes (replays, conflicts) are in the items. If
// ctx ends first, Write returns ctx's error. The items are then dropped if
// their batch has not started yet; if it has, they may still be stored,
// which a retry with the same idempotency key resolves.
func (w *Writer) Write(ctx context.Context, items ...*audit.AppendItem) error {
	return w.WriteUntil(ctx, nil, 0, items...)
}

// ErrStopped is WriteUntil's answer when its stop channel closed first.
var ErrStopped = errors.New("ingest: the wait for the commit was stopped")

// WriteUntil is Write with two more ends to the wait, for a caller that
// would otherwise build a context for each write (three contexts cost a
// single-event POST about 6 µs of CPU, 8 % of the service's): when stop
// closes it returns ErrStopped, and after timeout (0: none) it returns
// context.DeadlineExceeded. Either way the items are dropped as for an
// ended ctx.
func (w *Writer) WriteUntil(ctx context.Context, stop <-chan struct{}, timeout time.Duration, items ...*audit.AppendItem) error {
	if len(items) == 0 {
		return nil
	}
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	req := &request{ctx: ctx, items: items, result: make(chan error, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		return ErrClosed
	}
	select {
	case w.reqs <- req:
		w.mu.RUnlock()
	case <-ctx.Done():
		w.mu.RUnlock()
		return ctx.Err()
	case <-stop:
		w.mu.RUnlock()
		return ErrStopped
	case <-expired:
		w.mu.RUnlock()
		return context.DeadlineExceeded
	}
	select {
	case err := <-req.result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		req.gone.Store(true)
		return ErrStopped
	case <-expired:
		req.gone.Store(true)
		return context.DeadlineExceeded
	}
}

// QueueDepth is the number of requests waiting for a batch.
func (w *Writer) QueueDepth() int { return len(w.reqs) }

// Run writes batches until Close, then commits what is still queued and
// returns.
func (w *Writer) Run() {
	defer close(w.done)
	// Batches commit in goroutines of their own when more than one may be
	// in flight; running counts them, and Run waits for them before it ends.
	var commits sync.WaitGroup
	defer commits.Wait()
	var mu sync.Mutex
	room := sync.NewCond(&mu) // signalled when a batch ends
	running := 0
	// waitRoom waits until at most limit batches run, this one included.
	waitRoom := func(limit int) {
		mu.Lock()
		defer mu.Unlock()
		for running > limit {
			room.Wait()
		}
	}
	finish := func() {
		mu.Lock()
		running--
		mu.Unlock()
		room.Broadcast()
	}
	var pending *request // taken from the queue but did not fit the last batch
	for {
		// A batch is counted before it is gathered, so that it takes
		// everything that queued while the others committed.
		mu.Lock()
		running++
		mu.Unlock()
		waitRoom(w.cfg.InFlight)
		var batch []*request
		if pending != nil {
			batch, pending = append(batch, pending), nil
		} else {
			req, ok := <-w.reqs
			if !ok {
				return
			}
			batch = append(batch, req)
		}
		n := len(batch[0].items)
		if n < w.cfg.SmallEvents {
			waitRoom(w.cfg.SmallInFlight)
		}
	fill:
		for n < w.cfg.MaxBatch {
			select {
			case req, ok := <-w.reqs:
				if !ok {
					break fill
				}
				if n+len(req.items) > w.cfg.MaxBatch {
					pending = req
					break fill
				}
				batch = append(batch, req)
				n += len(req.items)
			default:
				break fill
			}
		}
		if w.cfg.InFlight == 1 {
			w.commit(batch)
			finish()
			continue
		}
		commits.Add(1)
		go func() {
			defer commits.Done()
			w.commit(batch)
			finish()
		}()
	}
}

func (w *Writer) commit(batch []*request) {
	// A request whose caller has gone (its ctx ended, or it stopped
	// waiting, while it queued) is answered, not stored: its caller was
	// told it failed.
	live := batch[:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.result <- err
			continue
		}
		if r.gone.Load() {
			r.result <- ErrStopped
			continue
		}
		live = append(live, r)
	}
	batch = live
	if len(batch) == 0 {
		return
	}
	var items []*audit.AppendItem
	var events []*audit.Event
	for _, r := range batch {
		items = append(items, r.items...)
		for _, it := range r.items {
			events = append(events, it.Event)
		}
	}
	var err error
	start := time.Now()
	for attempt := 1; attempt <= w.cfg.Attempts; attempt++ {
		for i, it := range items { // undo what a failed attempt set
			it.Event, it.Replayed, it.Err = events[i], false, nil
		}
		// Not the requests' contexts: a batch is shared, and one client
		// leaving must not abort the others' commit.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = w.store.Append(ctx, items)
		cancel()
		if err == nil || !transient(err) {
			break
		}
		w.cfg.Logger.Warn("batch append failed; retrying", "attempt", attempt, "events", len(items), "err", err)
	}
	if err != nil {
		w.cfg.Logger.Error("batch append failed", "events", len(items), "err", err)
	}
	if w.cfg.OnCommit != nil {
		w.cfg.OnCommit(items, time.Since(start), err)
	}
	for _, r := range batch {
		r.result <- err
	}
}

// transient reports whether a retry of the same batch may succeed at once.
func transient(err error) bool {
	var te interface{ SQLState() string }
	if errors.As(err, &te) {
		switch te.SQLState() {
		case "40001", "40P01": // serialization failure, deadlock
			return true
		}
	}
	return false
}

// Close stops accepting writes, waits until everything queued is committed,
// and returns. ctx bounds the wait.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
