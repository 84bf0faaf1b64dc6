package httpapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
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

// dbState is the watcher's view. up is cancelled when the database is
// found down, and replaced by a fresh one when it answers again.
type dbState struct {
	mu     sync.Mutex
	up     context.Context
	cancel context.CancelFunc
}

// upContext returns the context of the current period during which the
// database answers: already done while it is down, nil when nothing
// watches.
func (d *dbState) upContext() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.up
}

// set records whether the database answers and reports whether that is
// a change.
func (d *dbState) set(answers bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case answers && (d.up == nil || d.up.Err() != nil):
		d.up, d.cancel = context.WithCancel(context.Background())
		return true
	case !answers && d.up != nil && d.up.Err() == nil:
		d.cancel()
		return true
	}
	return false
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

// writeContext is the context a write waits for its commit in: it ends
// after writeTimeout, when the client leaves, or when the database is found
// down (its cause is then errDatabaseDown). It is errDatabaseDown at once
// while the database is down.
func (s *Server) writeContext(r *http.Request) (context.Context, func(), error) {
	up := s.db.upContext()
	if up != nil && up.Err() != nil {
		return nil, nil, errDatabaseDown
	}
	ctx, cancelCause := context.WithCancelCause(r.Context())
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	stop := func() bool { return false }
	if up != nil {
		stop = context.AfterFunc(up, func() { cancelCause(errDatabaseDown) })
	}
	return ctx, func() { stop(); cancel(); cancelCause(nil) }, nil
}

// writeWaitError answers err of a write that waited in ctx: when the wait was
// cut because the database was found down, that is the answer.
func (s *Server) writeWaitError(w http.ResponseWriter, r *http.Request, ctx context.Context, err error) {
	if context.Cause(ctx) == errDatabaseDown {
		err = errDatabaseDown
	}
	s.writeError(w, r, err)
}
