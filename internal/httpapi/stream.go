package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
)

// StreamConfig tunes the live tail. Zero values take the defaults.
type StreamConfig struct {
	Heartbeat time.Duration // comment frame interval; default 15 s
	Poll      time.Duration // look for events of other processes; default 1 s
	Max       int           // concurrent streams of this process; default 100
	// Page and Span bound one query: at most Page events (default 500)
	// among at most Span seqs (default 50000), so that a rare filter over a
	// long catch-up costs many short queries, not one long one.
	Page int
	Span int64
}

// Defaults of StreamConfig.
const (
	DefaultStreamHeartbeat = 15 * time.Second
	DefaultStreamPoll      = time.Second
	DefaultMaxStreams      = 100
)

const (
	defaultStreamPage = 500
	defaultStreamSpan = 50000
	// streamMinGap spaces a stream's reads under a steady flow of commits:
	// each wake-up that comes sooner waits for the rest of the gap, and
	// the commits of the wait are read together.
	streamMinGap = 50 * time.Millisecond
	// streamWriteWindow is how long one write to the client may take; a
	// client that stops reading is dropped after it.
	streamWriteWindow = 30 * time.Second
)

// handleStream is the live tail: Server-Sent Events of the caller's
// visible events that match the list filters, in seq order. It is driven by
// the database: it remembers the last seq it delivered or passed over,
// reads what comes after it up to the chain head, and waits for a commit
// of this process (the notifier), the fallback poll (commits of other
// processes), or the heartbeat. So catch-up after Last-Event-ID and live
// events are one sequence, with no gap and no duplicate between them.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	q := r.URL.Query()
	for _, k := range []string{"limit", "sort", "cursor"} {
		if q.Has(k) {
			s.writeError(w, r, audit.Errorf(audit.EINVALID, "%s: not taken by the stream, which sends every matching event in seq order", k))
			return
		}
	}
	f, err := audit.ParseFilterQuery(q, "last_event_id")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	resume, resuming, err := lastEventID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		s.writeError(w, r, audit.Errorf(audit.EUNAVAILABLE, "too many open streams; retry later"))
		return
	}
	// Shutdown ends every stream (CloseStreams), as does the client leaving.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.streamsCtx, cancel)()
	if s.streamsCtx.Err() != nil {
		s.writeError(w, r, audit.Errorf(audit.EUNAVAILABLE, "the service is shutting down; retry later"))
		return
	}

	// Subscribe before reading the head: a commit after the read is then
	// sure to wake us.
	var wake <-chan struct{}
	if s.notifier != nil {
		sub := s.notifier.Subscribe(p.AccountID)
		defer sub.Close()
		wake = sub.C
	}
	scope := scopeOf(p)
	head, err := s.head(ctx, scope)
	if err != nil {
		if ctx.Err() != nil && r.Context().Err() == nil {
			err = audit.Errorf(audit.EUNAVAILABLE, "the service is shutting down; retry later")
		}
		s.writeError(w, r, err)
		return
	}
	last := head // without Last-Event-ID: only new events
	if resuming {
		last = resume
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	// The server's write timeout would end the stream: each write gets its
	// own deadline instead. When the stream ends (shutdown), a write blocked
	// on a client that does not read ends at once rather than after its
	// window. The kick is over before the handler returns, so it never
	// touches the connection's next request.
	out := &streamOut{w: w, rc: http.NewResponseController(w)}
	kicked := make(chan struct{})
	stopKick := context.AfterFunc(ctx, func() {
		defer close(kicked)
		out.cut()
	})
	defer func() {
		if !stopKick() {
			<-kicked
		}
	}()
	if !out.extend() {
		return
	}
	w.WriteHeader(http.StatusOK)
	if out.flush() != nil {
		return
	}

	heartbeat := time.NewTicker(s.stream.Heartbeat)
	defer heartbeat.Stop()
	poll := time.NewTicker(s.stream.Poll)
	defer poll.Stop()
	var frame []byte
	for {
		// Deliver (last, head]: every event up to the head is committed,
		// so what the filter or the scope leaves out is passed over for good.
		for last < head {
			to := min(head, last+s.stream.Span)
			qctx, qcancel := context.WithTimeout(ctx, readTimeout)
			evs, err := s.store.EventsBySeq(qctx, scope, f, last, to, s.stream.Page)
			qcancel()
			if err != nil {
				if ctx.Err() == nil {
					// The status is sent: end the stream; the client
					// reconnects with Last-Event-ID and gets a JSON error
					// while the database does not answer.
					s.logger.Warn("stream interrupted", "request_id", requestID(r), "err", err)
				}
				return
			}
			for _, e := range evs {
				// The bytes of GET /api/v1/events/{id}: compact JSON, one line.
				data, err := e.MarshalJSON()
				if err == nil && bytes.ContainsAny(data, "\r\n") {
					err = errors.New("the event's JSON spans lines") // would break the frame
				}
				if err != nil {
					s.logger.Error("stream: encode event", "request_id", requestID(r), "seq", e.Seq, "err", err)
					return
				}
				frame = append(frame[:0], "id: "...)
				frame = strconv.AppendInt(frame, e.Seq, 10)
				frame = append(frame, "\nevent: event\ndata: "...)
				frame = append(frame, data...)
				frame = append(frame, "\n\n"...)
				if out.write(frame) != nil {
					return
				}
				last = e.Seq
			}
			if len(evs) < s.stream.Page {
				last = to
			}
		}
		if out.flush() != nil {
			return
		}
		cycle := time.Now()
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
				break wait
			case <-poll.C:
				break wait
			case <-heartbeat.C:
				if out.write([]byte(": heartbeat\n\n")) != nil || out.flush() != nil {
					return
				}
			}
		}
		if d := streamMinGap - time.Since(cycle); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		if head, err = s.head(ctx, scope); err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("stream interrupted", "request_id", requestID(r), "err", err)
			}
			return
		}
	}
}

// head reads the account's chain head seq within readTimeout.
func (s *Server) head(ctx context.Context, scope audit.Scope) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	seq, _, err := s.store.Head(ctx, scope)
	return seq, err
}

// streamOut writes a stream, each write within streamWriteWindow, until
// cut ends it: from then on every write fails at once, also one that is
// blocked. The lock keeps a write's new deadline from undoing the cut.
type streamOut struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	mu    sync.Mutex
	isCut bool
}

var errStreamCut = errors.New("stream: ended")

// extend gives the next write its window; false once the stream is cut.
func (o *streamOut) extend() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.isCut {
		return false
	}
	o.rc.SetWriteDeadline(time.Now().Add(streamWriteWindow))
	return true
}

func (o *streamOut) write(b []byte) error {
	if !o.extend() {
		return errStreamCut
	}
	_, err := o.w.Write(b)
	return err
}

func (o *streamOut) flush() error {
	if !o.extend() {
		return errStreamCut
	}
	return o.rc.Flush()
}

// cut makes every write fail from now on, a blocked one included.
func (o *streamOut) cut() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.isCut = true
	o.rc.SetWriteDeadline(time.Now())
}

// lastEventID reads the resume position: the Last-Event-ID header (set by
// EventSource on reconnect) or the last_event_id parameter, not both.
func lastEventID(r *http.Request) (int64, bool, error) {
	hv, qv := r.Header.Values("Last-Event-ID"), r.URL.Query()["last_event_id"]
	var name, v string
	switch {
	case len(hv) > 0 && len(qv) > 0:
		return 0, false, audit.Errorf(audit.EINVALID, "last_event_id: give the Last-Event-ID header or the last_event_id parameter, not both")
	case len(hv) > 1:
		return 0, false, audit.Errorf(audit.EINVALID, "Last-Event-ID: given more than once")
	case len(hv) == 1:
		name, v = "Last-Event-ID", hv[0]
	case len(qv) == 1: // repeats are refused with the filters
		name, v = "last_event_id", qv[0]
	default:
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || strings.Trim(v, "0123456789") != "" {
		return 0, false, audit.Errorf(audit.EINVALID, "%s: must be the id (seq) of an event received, a non-negative integer", name)
	}
	return n, true, nil
}

// CloseStreams ends every open stream and refuses new ones: call it when
// the server shuts down (http.Server.RegisterOnShutdown), or Shutdown
// would wait for streams that never end by themselves.
func (s *Server) CloseStreams() { s.closeStreams() }
