package httpapi

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/auth"
)

// noDeadline lifts the server's write timeout for a long stream.
var noDeadline time.Time

// chainPage is how many events a chain walk reads per query: memory stays
// constant (at most three pages: one read, one queued, one being fetched)
// whatever the chain's length.
const chainPage = 2000

// chainWalk reads the account's chain after a seq, page by page, one page
// ahead of its reader so that the database's work and ours overlap.
type chainWalk struct {
	pages  chan []*audit.Event
	err    error // set before pages is closed
	cancel context.CancelFunc
}

func (s *Server) walkChain(ctx context.Context, scope audit.Scope, after int64) *chainWalk {
	return walk(ctx, after, func(ctx context.Context, after int64) ([]*audit.Event, error) {
		return s.store.Chain(ctx, scope, after, chainPage)
	})
}

// walkFiltered walks the chain through a filter: the events of
// (after, to] (to 0: to the end) that match f.
func (s *Server) walkFiltered(ctx context.Context, scope audit.Scope, f audit.Filter, after, to int64) *chainWalk {
	return walk(ctx, after, func(ctx context.Context, after int64) ([]*audit.Event, error) {
		return s.store.EventsBySeq(ctx, scope, f, after, to, chainPage)
	})
}

// walk calls page with the last seq read until it returns a short page.
func walk(ctx context.Context, after int64, page func(ctx context.Context, after int64) ([]*audit.Event, error)) *chainWalk {
	ctx, cancel := context.WithCancel(ctx)
	w := &chainWalk{pages: make(chan []*audit.Event, 1), cancel: cancel}
	go func() {
		defer close(w.pages)
		for {
			evs, err := page(ctx, after)
			if err != nil {
				if ctx.Err() == nil { // not the walk's own end
					w.err = err
				}
				return
			}
			if len(evs) > 0 {
				select {
				case w.pages <- evs:
				case <-ctx.Done():
					return
				}
				after = evs[len(evs)-1].Seq
			}
			if len(evs) < chainPage {
				return
			}
		}
	}()
	return w
}

// next returns the next page; nil at the end or on error (see err).
func (w *chainWalk) next() []*audit.Event { return <-w.pages }

// close stops the walk and waits for its reader to finish.
func (w *chainWalk) close() {
	w.cancel()
	for range w.pages {
	}
}

// requireWholeAccount lets through callers who may read every event of
// their account: the plugin token and admin roles. A chain is never
// verified or exported for a part of an account.
func requireWholeAccount(p *auth.Principal) error {
	if !p.ReadAll {
		return audit.Errorf(audit.EFORBIDDEN, "only the plugin token or an admin role may read the whole chain")
	}
	return nil
}

// seqParams parses from_seq and to_seq (both optional, ≥ 1, from ≤ to) and
// refuses any other parameter but the ones in extra.
func seqParams(q url.Values, extra ...string) (from, to int64, err error) {
	allowed := map[string]bool{"from_seq": true, "to_seq": true}
	for _, e := range extra {
		allowed[e] = true
	}
	for k, v := range q {
		if !allowed[k] {
			return 0, 0, audit.Errorf(audit.EINVALID, "%s: unknown query parameter", audit.Clip(k, 64))
		}
		if len(v) > 1 {
			return 0, 0, audit.Errorf(audit.EINVALID, "%s: given more than once", k)
		}
	}
	parse := func(name string) (int64, error) {
		if !q.Has(name) {
			return 0, nil
		}
		n, err := strconv.ParseInt(q.Get(name), 10, 64)
		if err != nil || n < 1 {
			return 0, audit.Errorf(audit.EINVALID, "%s: must be an integer of at least 1", name)
		}
		return n, nil
	}
	if from, err = parse("from_seq"); err != nil {
		return 0, 0, err
	}
	if to, err = parse("to_seq"); err != nil {
		return 0, 0, err
	}
	if from > 0 && to > 0 && from > to {
		return 0, 0, audit.Errorf(audit.EINVALID, "from_seq: must not be greater than to_seq")
	}
	return from, to, nil
}

type verifyHead struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

type verifyResult struct {
	OK             bool       `json:"ok"`
	Checked        int64      `json:"checked"`
	Head           verifyHead `json:"head"`
	FirstBrokenSeq *int64     `json:"first_broken_seq"`
	Reason         string     `json:"reason"`
}

// handleVerify recomputes the caller's account chain from the stored rows,
// page by page, and reports the first event that does not verify.
func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if err := requireWholeAccount(p); err != nil {
		s.writeError(w, r, err)
		return
	}
	from, to, err := seqParams(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	scope := audit.Scope{AccountID: p.AccountID}
	ctx := r.Context()
	// The recorded head, read before the walk: removing the newest events
	// leaves a chain that verifies, but the head still names the last event
	// written. Events committed during the walk come after it and do not
	// count against the chain.
	headSeq, headHash, err := s.store.Head(ctx, scope)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := audit.NewChainVerifier()
	after := int64(0)
	if from > 1 {
		// Start from the stored event before from_seq; the check of
		// from_seq's prev_hash links to it.
		prev, err := s.store.Chain(ctx, scope, from-2, 1)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if len(prev) == 1 && prev[0].Seq == from-1 {
			v = audit.NewChainVerifierAt(prev[0].Seq, prev[0].Hash)
		} else {
			v = audit.NewChainVerifierAt(from-1, "")
		}
		after = from - 1
	}
	// Verification takes as long as the chain is long: no write deadline.
	http.NewResponseController(w).SetWriteDeadline(noDeadline)
	res := verifyResult{OK: true, Reason: "every event checked verifies"}
	broken := func(seq int64, reason string) {
		res.OK, res.FirstBrokenSeq, res.Reason = false, &seq, reason
	}
	walk := s.walkChain(ctx, scope, after)
	defer walk.close()
pages:
	for evs := walk.next(); evs != nil; evs = walk.next() {
		for _, e := range evs {
			if to > 0 && e.Seq > to {
				break pages
			}
			if err := v.Check(e); err != nil {
				var ce *audit.ChainError
				errors.As(err, &ce)
				broken(ce.Seq, ce.Reason)
				break pages
			}
			if e.Seq == headSeq && e.Hash != headHash {
				broken(e.Seq, "hash differs from the recorded chain head")
				break pages
			}
			res.Checked++
		}
	}
	walk.close()
	if walk.err != nil {
		s.writeError(w, r, walk.err)
		return
	}
	last, lastHash := v.Head()
	if res.OK && last < headSeq && (to == 0 || to > last) && (from == 0 || headSeq >= from) {
		broken(last+1, fmt.Sprintf("missing: the recorded chain head is seq %d, but the stored events end at seq %d", headSeq, last))
	}
	res.Head.Seq, res.Head.Hash = last, lastHash
	if res.Checked == 0 {
		// Nothing in the range: the head is the chain's.
		res.Head.Seq, res.Head.Hash = headSeq, headHash
		if res.OK {
			res.Reason = "no events in this range"
		}
	}
	writeJSON(w, http.StatusOK, res)
}

// csvColumns is the header of a CSV export, in the JSON form's order.
var csvColumns = []string{"id", "source_account_id", "seq", "occurred_at", "recorded_at", "actor_id", "actor_type",
	"action", "resource_type", "resource_id", "outcome", "severity", "ip_address", "user_agent", "request_id", "source",
	"metadata", "prev_hash", "hash"}

// csvRecord is e as a CSV row: its values unaltered, times as in the JSON
// form, metadata as its canonical text (the bytes the hash covers; the JSON
// form writes <, > and & in it as \u003c, \u003e, \u0026).
func csvRecord(e *audit.Event, rec []string) []string {
	meta := string(e.Metadata)
	if meta == "" {
		meta = "{}" // as CanonicalJSON marshals
	}
	return append(rec[:0], e.ID.String(), e.SourceAccountID, strconv.FormatInt(e.Seq, 10),
		audit.FormatTime(e.OccurredAt), audit.FormatTime(e.RecordedAt), e.ActorID, e.ActorType, e.Action,
		e.ResourceType, e.ResourceID, e.Outcome, e.Severity, e.IPAddress, e.UserAgent, e.RequestID, e.Source,
		meta, e.PrevHash, e.Hash)
}

// handleExport streams the caller's account chain in seq order, page by
// page in constant memory: one JSON event a line (NDJSON, the default), or
// CSV with a header row. Without filters each NDJSON line holds every
// hashed field of every event, so the file verifies offline (nself-audit
// verify); the list filters narrow it to the matching events.
func (s *Server) handleExport(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if err := requireWholeAccount(p); err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	f, err := audit.ParseFilterQuery(q, "format", "from_seq", "to_seq")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	format := q.Get("format")
	switch format {
	case "", "ndjson":
		format = "ndjson"
	case "csv":
	default:
		s.writeError(w, r, audit.Errorf(audit.EINVALID, "format: must be ndjson or csv"))
		return
	}
	seqs := url.Values{}
	for _, k := range []string{"from_seq", "to_seq"} {
		if q.Has(k) {
			seqs[k] = q[k]
		}
	}
	from, to, err := seqParams(seqs)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	scope := audit.Scope{AccountID: p.AccountID}
	var walk *chainWalk
	if f.IsZero() {
		walk = s.walkChain(r.Context(), scope, max(from-1, 0))
	} else {
		walk = s.walkFiltered(r.Context(), scope, f, max(from-1, 0), to)
	}
	defer walk.close()
	// The first page is read before the status is sent, so an unavailable
	// database is still a 503 and not a truncated 200.
	evs := walk.next()
	if evs == nil && walk.err != nil {
		s.writeError(w, r, walk.err)
		return
	}
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", `attachment; filename="nself-audit-`+p.AccountID+`.`+format+`"`)
	// Streaming takes as long as the chain is long: each page gets its own
	// write deadline instead of the server's, so a client that stops
	// reading is still dropped.
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(streamWriteWindow))
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	cw := csv.NewWriter(w)
	rec := make([]string, 0, len(csvColumns))
	if format == "csv" {
		cw.Write(csvColumns)
	}
	for ; evs != nil; evs = walk.next() {
		rc.SetWriteDeadline(time.Now().Add(streamWriteWindow))
		for _, e := range evs {
			if to > 0 && e.Seq > to {
				cw.Flush()
				return
			}
			if format == "csv" {
				rec = csvRecord(e, rec)
				if cw.Write(rec) != nil {
					return // the client left
				}
			} else if err := enc.Encode(e); err != nil {
				return // the client left
			}
		}
		if cw.Flush(); cw.Error() != nil {
			return
		}
		rc.Flush()
	}
	cw.Flush() // the header of an export without rows
	if walk.err != nil {
		// The status is sent: end the stream early; the missing tail
		// shows in an offline verification.
		s.logger.Warn("export interrupted", "request_id", requestID(r), "err", walk.err)
	}
}
