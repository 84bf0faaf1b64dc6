package main

import (
	"fmt"
	"strings"
	"testing"
)

func batchBody(n int, extra string) string {
	var evs []string
	for i := 0; i < n; i++ {
		evs = append(evs, fmt.Sprintf(`{"actor_id":"u%d","action":"batch.item","metadata":{"i":%d}%s}`, i%4, i, extra))
	}
	return `{"events":[` + strings.Join(evs, ",") + `]}`
}

func TestBatch(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withJWT(`{"type":"HS256","key":"`+hsKey+`"}`))
		h := pluginHeaders("acme")
		s.post("acme", `{"actor_id":"u","action":"before.batch"}`)
		r := s.do("POST", "/api/v1/events/batch", h, batchBody(5, ""))
		if r.status != 201 {
			t.Fatalf("batch: %d %s", r.status, r.raw)
		}
		evs := r.events()
		if len(evs) != 5 {
			t.Fatalf("%d events answered", len(evs))
		}
		for i, e := range evs {
			if e["seq"] != float64(i+2) || e["metadata"].(map[string]any)["i"] != float64(i) || e["source_account_id"] != "acme" {
				t.Errorf("event %d: seq %v metadata %v", i, e["seq"], e["metadata"])
			}
		}

		// All or nothing: one bad event stores none and names its index.
		bad := strings.Replace(batchBody(4, ""), `"actor_id":"u2"`, `"actor_id":"u2","severity":"loud"`, 1)
		if r := s.do("POST", "/api/v1/events/batch", h, bad); r.status != 400 || !strings.HasPrefix(r.errorMessage(), "events[2]: severity") {
			t.Fatalf("bad event at index 2: %d %s", r.status, r.raw)
		}
		for _, c := range []struct{ body, want string }{
			{`{"events":[]}`, "events: holds 0 events"},
			{batchBody(1001, ""), "events: holds 1001 events"},
			{`{}`, "events: required"},
			{`{"Events":[{"action":"a.b","actor_id":"u"}]}`, "Events: unknown field"},
			{`{"events":[{"action":"a.b","actor_id":"u"}],"events":[]}`, "events: given more than once"},
			{`{"events":[{"action":"a.b","actor_id":"u"}],"extra":1}`, "extra: unknown field"},
			{`{"events":[{"action":"a.b","actor_id":"u","idempotency_key":"k"}]}`, "events[0]: idempotency_key"},
			{`{"events":[{"action":"a.b","actor_id":"u"},{"action":"a.b"`, "body: truncated JSON"},
			{`{"events":[{"action":"a.b","actor_id":"u"}, 7]}`, "events[1]: expected a JSON object"},
		} {
			if r := s.do("POST", "/api/v1/events/batch", h, c.body); r.status != 400 || !strings.Contains(r.errorMessage(), c.want) {
				t.Errorf("%.60s: %d %s; want 400 %q", c.body, r.status, r.raw, c.want)
			}
		}
		if counts := verifyChains(t, s.main.store, "acme"); counts["acme"] != 6 {
			t.Fatalf("acme holds %d events after refused batches, want 6", counts["acme"])
		}

		// Idempotency-Key covers the whole batch.
		hk := pluginHeaders("acme")
		hk["Idempotency-Key"] = "import-1"
		first := s.do("POST", "/api/v1/events/batch", hk, batchBody(3, ""))
		again := s.do("POST", "/api/v1/events/batch", hk, batchBody(3, ""))
		if first.status != 201 || again.status != 200 || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry: %d then %d", first.status, again.status)
		}
		for i := range first.events() {
			if first.events()[i]["id"] != again.events()[i]["id"] {
				t.Fatalf("retry answered other events")
			}
		}
		for _, other := range []string{batchBody(4, ""), batchBody(2, ""), batchBody(3, `,"severity":"error"`)} {
			if r := s.do("POST", "/api/v1/events/batch", hk, other); r.status != 409 || !strings.Contains(r.errorMessage(), "different batch") {
				t.Errorf("key reused for another batch: %d %s", r.status, r.raw)
			}
		}
		if counts := verifyChains(t, s.main.store, "acme"); counts["acme"] != 9 {
			t.Fatalf("acme holds %d events, want 9 (nothing from the conflicting batches)", counts["acme"])
		}

		admin := hsToken(t, claims{user: "root", role: "admin", account: "acme", allowed: []string{"admin"}})
		if r := s.do("POST", "/api/v1/events/batch", bearer(admin), batchBody(1, "")); r.status != 403 {
			t.Errorf("JWT batch: %d", r.status)
		}
		big := `{"events":[{"action":"a.b","actor_id":"u","metadata":{"x":"` + strings.Repeat("x", 17<<20) + `"}}]}`
		if r := s.do("POST", "/api/v1/events/batch", h, big); r.status != 413 {
			t.Errorf("17 MiB batch: %d", r.status)
		}
		if r := s.do("POST", "/api/v1/events/batch", h, batchBody(1000, "")); r.status != 201 || len(r.events()) != 1000 {
			t.Errorf("1000 events: %d", r.status)
		}
	})
}
