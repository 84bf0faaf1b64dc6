package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/internal/audit"
)

// TestEventListJSON: a list page written by eventList.MarshalJSON, and a
// batch answer by batchResult's, have the bytes encoding/json gives for the
// same values through writeJSON's encoder.
func TestEventListJSON(t *testing.T) {
	type reflected struct { // eventList without its MarshalJSON
		Events     []*audit.Event `json:"events"`
		NextCursor *string        `json:"next_cursor"`
	}
	ev := func(i int, text string) *audit.Event {
		return &audit.Event{ID: uuid.New(), SourceAccountID: "acct", Seq: int64(i), OccurredAt: time.Now(),
			RecordedAt: time.Now(), ActorID: text, Action: "doc.read", Metadata: audit.CanonicalJSON(`{"a":"` + text + `"}`)}
	}
	cursor := "AQAGYUAIix7DAaIcrjgYdFi5Kgngws3C32e7r6tDQFknYPm5-B4V"
	for _, l := range []eventList{
		{Events: []*audit.Event{}},
		{Events: []*audit.Event{ev(1, "a<b>&c")}},
		{Events: []*audit.Event{ev(1, "x"), ev(2, "\u2028"), ev(3, "é")}, NextCursor: &cursor},
	} {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(reflected(l)); err != nil {
			t.Fatal(err)
		}
		got, err := l.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(append(got, '\n'), want.Bytes()) {
			t.Fatalf("eventList.MarshalJSON:\n got %s\nwant %s", got, want.Bytes())
		}
		want.Reset()
		if err := enc.Encode(struct {
			Events []*audit.Event `json:"events"`
		}{l.Events}); err != nil {
			t.Fatal(err)
		}
		if got, _ := (batchResult{l.Events}).MarshalJSON(); !bytes.Equal(append(got, '\n'), want.Bytes()) {
			t.Fatalf("batchResult.MarshalJSON:\n got %s\nwant %s", got, want.Bytes())
		}
	}
}

// TestWriteJSONHeadersNotShared: writeJSON sets its headers from shared
// slices; a header added to one answer afterwards must not reach another
// answer, or the shared values.
func TestWriteJSONHeadersNotShared(t *testing.T) {
	a, b := httptest.NewRecorder(), httptest.NewRecorder()
	writeJSON(a, http.StatusOK, map[string]int{"n": 1})
	writeJSON(b, http.StatusOK, map[string]int{"n": 2})
	a.Header().Add("Cache-Control", "private")
	a.Header().Add("Content-Type", "text/plain")
	if got := b.Header().Values("Cache-Control"); len(got) != 1 || got[0] != "no-store" {
		t.Errorf("the other answer's Cache-Control: %q", got)
	}
	if got := b.Header().Values("Content-Type"); len(got) != 1 || got[0] != "application/json; charset=utf-8" {
		t.Errorf("the other answer's Content-Type: %q", got)
	}
	if len(noStore) != 1 || noStore[0] != "no-store" || len(jsonContentType) != 1 {
		t.Errorf("shared values changed: %q %q", noStore, jsonContentType)
	}
}
