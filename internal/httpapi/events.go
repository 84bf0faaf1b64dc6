package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/internal/audit"
)

// handleCreateEvent records one event: decode, validate, hand to the
// group-commit writer, answer after the commit. 201 for a new event, 200
// with the original for a retry of an idempotency key.
func (s *Server) handleCreateEvent(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if !p.CanWrite {
		s.writeError(w, r, audit.Errorf(audit.EFORBIDDEN, "only the plugin token may record events; a Hasura JWT reads"))
		return
	}
	limitBody(w, r, MaxBodyBytes)
	in, err := audit.DecodeEventInput(r.Body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	switch {
	case key != "" && in.IdempotencyKey != "" && key != in.IdempotencyKey:
		s.writeError(w, r, audit.Errorf(audit.EINVALID, "idempotency_key: differs from the Idempotency-Key header"))
		return
	case key == "":
		key = in.IdempotencyKey
	}
	in.IdempotencyKey = key
	e, err := in.Validate(p.AccountID, r.Header.Get("X-Source-Plugin"), s.now())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	item := &audit.AppendItem{Event: e, IdempotencyKey: key}
	if key != "" {
		item.Fingerprint = in.Fingerprint(e)
	}
	s.writeItem(w, r, item, "")
}

// writeItem stores one event through the writer and answers: 201 with the
// event, 200 with the original for a replayed idempotency key, or the
// error. conflict, when set, is the message of a key reused for other
// content.
func (s *Server) writeItem(w http.ResponseWriter, r *http.Request, item *audit.AppendItem, conflict string) {
	if err := s.write(r, item); err != nil {
		s.writeError(w, r, err)
		return
	}
	if item.Err != nil {
		if conflict != "" && audit.ErrorCode(item.Err) == audit.ECONFLICT {
			item.Err = audit.Errorf(audit.ECONFLICT, "%s", conflict)
		}
		s.writeError(w, r, item.Err)
		return
	}
	status := http.StatusCreated
	if item.Replayed {
		status = http.StatusOK
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", "/api/v1/events/"+item.Event.ID.String())
	writeJSON(w, status, item.Event)
}

// MaxBatchBodyBytes caps a batch body: room for 1000 ordinary events.
const MaxBatchBodyBytes = 16 << 20

// handleCreateBatch records 1 to 1000 events of the caller's account, all
// or nothing: one invalid event is a 400 naming its index and nothing is
// stored. The events go into one transaction, in order, so they take
// consecutive seqs. An Idempotency-Key covers the whole batch.
func (s *Server) handleCreateBatch(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	if !p.CanWrite {
		s.writeError(w, r, audit.Errorf(audit.EFORBIDDEN, "only the plugin token may record events; a Hasura JWT reads"))
		return
	}
	limitBody(w, r, MaxBatchBodyBytes)
	ins, err := audit.DecodeBatch(r.Body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	source, now := r.Header.Get("X-Source-Plugin"), s.now()
	items := make([]*audit.AppendItem, len(ins))
	for i, in := range ins {
		e, err := in.Validate(p.AccountID, source, now)
		if err != nil {
			s.writeError(w, r, audit.Errorf(audit.EINVALID, "events[%d]: %s", i, audit.ErrorMessage(err)))
			return
		}
		items[i] = &audit.AppendItem{Event: e}
	}
	if key != "" {
		prints := sha256.New()
		for i, in := range ins {
			fmt.Fprintf(prints, "%s;", in.Fingerprint(items[i].Event))
		}
		if err := audit.CheckText("Idempotency-Key", key, audit.MaxIdempotencyLen); err != nil {
			s.writeError(w, r, err)
			return
		}
		// Each event gets its own key, derived with a separator that a
		// client's key cannot contain (control characters are refused).
		fingerprint := fmt.Sprintf("batch %d %x", len(items), prints.Sum(nil))
		for i, it := range items {
			it.IdempotencyKey = fmt.Sprintf("%s\x1f%d", key, i)
			it.Fingerprint, it.Group = fingerprint, key
		}
	}
	if err := s.write(r, items...); err != nil {
		s.writeError(w, r, err)
		return
	}
	body := batchResult{Events: make([]*audit.Event, len(items))}
	replayed := 0
	for i, it := range items {
		if it.Err != nil {
			if audit.ErrorCode(it.Err) == audit.ECONFLICT {
				it.Err = audit.Errorf(audit.ECONFLICT, "Idempotency-Key was already used for a different batch")
			}
			s.writeError(w, r, it.Err)
			return
		}
		if it.Replayed {
			replayed++
		}
		body.Events[i] = it.Event
	}
	status := http.StatusCreated
	if replayed == len(items) {
		status = http.StatusOK
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, status, body)
}

// batchResult is the body of a batch answer: the events in request order.
type batchResult struct {
	Events []*audit.Event `json:"events"`
}

// MarshalJSON writes the answer as encoding/json would (see eventList's).
func (l batchResult) MarshalJSON() ([]byte, error) {
	b := append(make([]byte, 0, 16+len(l.Events)*768), `{"events":`...)
	return append(appendEvents(b, l.Events), '}'), nil
}

// appendEvents appends evs as a JSON array, each by its AppendJSON.
func appendEvents(b []byte, evs []*audit.Event) []byte {
	b = append(b, '[')
	for i, e := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = e.AppendJSON(b)
	}
	return append(b, ']')
}

// eventList is the body of the list routes.
type eventList struct {
	Events     []*audit.Event `json:"events"`
	NextCursor *string        `json:"next_cursor"`
}

// MarshalJSON writes the page as encoding/json would, each event by its
// AppendJSON, without reflection and without scanning the events' output
// again (which encoding/json does to every Marshaler's).
func (l eventList) MarshalJSON() ([]byte, error) {
	b := append(make([]byte, 0, 64+len(l.Events)*768), `{"events":`...)
	b = append(appendEvents(b, l.Events), `,"next_cursor":`...)
	if l.NextCursor == nil {
		b = append(b, "null"...)
	} else {
		c, err := json.Marshal(*l.NextCursor)
		if err != nil {
			return nil, err
		}
		b = append(b, c...)
	}
	return append(b, '}'), nil
}

func (s *Server) handleListEvents(w http.ResponseWriter, r *http.Request) {
	s.listEvents(w, r, "")
}

// handleActorEvents lists one actor's events; the path names the actor, so
// the actor_id query parameter is refused rather than silently combined.
func (s *Server) handleActorEvents(w http.ResponseWriter, r *http.Request) {
	actor := r.PathValue("actor_id")
	if err := audit.CheckText("actor_id", actor, audit.MaxActorIDLen); err != nil {
		s.writeError(w, r, err)
		return
	}
	if r.URL.Query().Has("actor_id") {
		s.writeError(w, r, audit.Errorf(audit.EINVALID, "actor_id: already given in the path"))
		return
	}
	s.listEvents(w, r, actor)
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request, actor string) {
	scope := scopeOf(principal(r))
	f, rawCursor, err := audit.ParseListQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if actor != "" {
		f.ActorID = actor
	}
	if rawCursor != "" {
		if f.After, err = s.cursors.Decode(scope, f, rawCursor); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	evs, err := s.store.Events(ctx, scope, f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	body := eventList{Events: evs}
	if len(evs) > f.Limit {
		body.Events = evs[:f.Limit]
		next := s.cursors.Encode(scope, f, body.Events[f.Limit-1])
		body.NextCursor = &next
	}
	if body.Events == nil {
		body.Events = []*audit.Event{}
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) handleGetEvent(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == batchPath { // see batchPath
		s.methodNotAllowed(w, r, http.MethodPost)
		return
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil || len(r.PathValue("id")) != 36 {
		s.writeError(w, r, audit.Errorf(audit.EINVALID, "id: not a UUID"))
		return
	}
	if len(r.URL.Query()) > 0 {
		s.writeError(w, r, audit.Errorf(audit.EINVALID, "this route takes no query parameters"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	e, err := s.store.Event(ctx, scopeOf(principal(r)), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	f, iv, err := audit.ParseStatsQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	st, err := s.store.Stats(ctx, scopeOf(principal(r)), f, iv)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
