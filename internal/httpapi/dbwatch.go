package httpapi

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/ingest"
)

// A database that stops answering without refusing connections (a frozen
// server, a network partition) would hold every write for the whole write
// timeout. WatchDatabase probes it as /ready does; while the probes fail,
// writes are refused at once with 503 and Retry-After, and the writes
// already waiting for a commit are answered the same way when the
// database is found down. The first probe that succeeds lets writes in
// again.

const (
	watchInterval = time.Second
	// watchFailures consecutive failed probes (each allowed probeTimeout)
	// make the database count as down: one slow moment does not refuse
	// writes.
	watchFailures = 2
)

// errDatabaseDown answers the writes refused while the database is down.
var errDatabaseDown = audit.Errorf(audit.EUNAVAILABLE, "the database does not answer; retry later")

// dbState is the watcher's view: the current period's down channel, which
// closes when the database is found down; a new period, with a new
// channel, starts when it answers again. Writes read it without a lock.
type dbState struct {
	mu  sync.Mutex // serializes set
	cur atomic.Pointer[chan struct{}]
}

// downChan returns the channel that closes when the database is found
// down, already closed while it is down; nil when nothing watches.
func (d *dbState) downChan() <-chan struct{} {
	if p := d.cur.Load(); p != nil {
		return *p
	}
	return nil
}

// set records whether the database answers and reports whether that is
// a change.
func (d *dbState) set(answers bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	down := d.downChan()
	switch {
	case answers && (down == nil || isClosed(down)):
		ch := make(chan struct{})
		d.cur.Store(&ch)
		return true
	case !answers && down != nil && !isClosed(down):
		close(*d.cur.Load())
		return true
	}
	return false
}

// isClosed reports whether ch is closed (it is never sent on).
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// WatchDatabase probes the database every second until ctx ends, and
// gates the write routes on the result (see above). Without it, writes
// are never refused for want of a database, only timed out.
func (s *Server) WatchDatabase(ctx context.Context) {
	s.db.set(true)
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := s.store.Migrations(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			failures = 0
			if s.db.set(true) {
				s.logger.Info("the database answers again; writes are accepted")
			}
		default:
			if failures++; failures >= watchFailures && s.db.set(false) {
				s.logger.Warn("the database does not answer; writes are refused until it does", "err", err)
			}
		}
	}
}

// write hands items to the writer and waits for their commit: until
// writeTimeout, until the client leaves, or until the database is found
// down (errDatabaseDown). It is errDatabaseDown at once while the
// database is down. The wait builds no context of its own (see
// ingest.Writer.WriteUntil).
func (s *Server) write(r *http.Request, items ...*audit.AppendItem) error {
	down := s.db.downChan()
	if down != nil && isClosed(down) {
		return errDatabaseDown
	}
	err := s.writer.WriteUntil(r.Context(), down, writeTimeout, items...)
	if errors.Is(err, ingest.ErrStopped) {
		return errDatabaseDown
	}
	return err
}
