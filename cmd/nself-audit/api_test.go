package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/client"
)

func TestHealthAndReady(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		for _, path := range []string{"/health", "/ready"} {
			r := s.do("GET", path, nil, "")
			if r.status != 200 {
				t.Fatalf("%s: %d %s", path, r.status, r.raw)
			}
			m, _ := r.body["migrations"].(map[string]any)
			if m["applied"] != m["expected"] || m["expected"].(float64) < 1 {
				t.Errorf("%s migrations = %v; want applied == expected >= 1", path, m)
			}
		}
		if r := s.do("GET", "/health", nil, ""); r.body["status"] != "ok" || r.body["version"] == "" {
			t.Errorf("health body %s", r.raw)
		}
	})
}

// TestDatabaseGone: when the database stops answering, the probes say so
// and writes answer 503 with Retry-After, never a hang or a 500.
func TestDatabaseGone(t *testing.T) {
	t.Parallel()
	s := start(t, "postgres")
	s.post("", `{"actor_id":"u1","action":"user.login"}`)
	u, _ := url.Parse(s.dbURL)
	name := strings.TrimPrefix(u.Path, "/")
	u.Path = "/postgres"
	superuserExec(t, u.String(), fmt.Sprintf(`DROP DATABASE %q WITH (FORCE)`, name))

	r := s.do("GET", "/health", nil, "")
	if r.status != 503 || r.body["status"] != "degraded" || r.body["migrations"] == nil {
		t.Errorf("health without database: %d %s", r.status, r.raw)
	}
	if r := s.do("GET", "/ready", nil, ""); r.status != 503 {
		t.Errorf("ready without database: %d %s", r.status, r.raw)
	}
	r = s.do("POST", "/api/v1/events", pluginHeaders(""), `{"actor_id":"u1","action":"user.login"}`)
	if r.status != 503 || r.errorCode() != "unavailable" || r.header.Get("Retry-After") == "" {
		t.Errorf("write without database: %d %s (Retry-After %q)", r.status, r.raw, r.header.Get("Retry-After"))
	}
	if r := s.do("GET", "/api/v1/events", pluginHeaders(""), ""); r.status != 503 {
		t.Errorf("read without database: %d %s", r.status, r.raw)
	}
	// The client reads the probes' 503 answers, and retries a 503 (after
	// its Retry-After) before it reports it.
	c := s.client("", client.WithRetries(1))
	ctx := context.Background()
	if h, err := c.Health(ctx); err != nil || h.Status != "degraded" || h.Reason != "database unavailable" {
		t.Errorf("client Health without database: %+v %v", h, err)
	}
	if h, err := c.Ready(ctx); err != nil || h.Status != "not_ready" {
		t.Errorf("client Ready without database: %+v %v", h, err)
	}
	began := time.Now()
	_, err := c.PostEvent(ctx, client.NewEvent{ActorID: "u1", Action: "user.login"})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Code != client.CodeUnavailable || time.Since(began) < time.Second {
		t.Errorf("client write without database: %v after %s; want a 503 after one retry a second later", err, time.Since(began))
	}
}

func TestCreateAndGetEvent(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		headers := pluginHeaders("acme")
		headers["X-Source-Plugin"] = "billing"
		r := s.do("POST", "/api/v1/events", headers, `{
		"actor_id": "user-42", "actor_type": "user", "action": "invoice.paid",
		"resource_type": "invoice", "resource_id": "inv-7", "outcome": "success", "severity": "warning",
		"ip_address": "2001:db8::1", "user_agent": "curl/8", "request_id": "req-1",
		"occurred_at": "2026-11-27T10:00:00.123456789+02:00", "metadata": {"amount": 12.5, "currency": "EUR"}}`)
		if r.status != http.StatusCreated {
			t.Fatalf("POST: %d %s", r.status, r.raw)
		}
		e := r.body
		want := map[string]any{
			"source_account_id": "acme", "seq": 1.0, "actor_id": "user-42", "actor_type": "user", "action": "invoice.paid",
			"resource_type": "invoice", "resource_id": "inv-7", "outcome": "success", "severity": "warning",
			"ip_address": "2001:db8::1", "user_agent": "curl/8", "request_id": "req-1", "source": "billing",
			"occurred_at": "2026-11-27T08:00:00.123456Z", "prev_hash": strings.Repeat("0", 64),
		}
		for k, v := range want {
			if e[k] != v {
				t.Errorf("%s = %v, want %v", k, e[k], v)
			}
		}
		if m, _ := e["metadata"].(map[string]any); m["amount"] != 12.5 || m["currency"] != "EUR" {
			t.Errorf("metadata = %v", e["metadata"])
		}
		id, err := uuid.Parse(e["id"].(string))
		if err != nil || id.Version() != 7 {
			t.Fatalf("id %v is not a UUIDv7: %v", e["id"], err)
		}
		if h, _ := e["hash"].(string); len(h) != 64 {
			t.Errorf("hash %q", h)
		}
		if loc := r.header.Get("Location"); loc != "/api/v1/events/"+id.String() {
			t.Errorf("Location %q", loc)
		}

		got := s.get("/api/v1/events/"+id.String(), pluginHeaders("acme"))
		for k := range want {
			if got.body[k] != e[k] {
				t.Errorf("GET %s = %v, POST said %v", k, got.body[k], e[k])
			}
		}
		if got.body["hash"] != e["hash"] || got.body["recorded_at"] != e["recorded_at"] {
			t.Errorf("GET hash/recorded_at differ from POST: %s", got.raw)
		}

		// Not visible from another account, absent, or not a UUID.
		if r := s.do("GET", "/api/v1/events/"+id.String(), pluginHeaders("globex"), ""); r.status != 404 || r.errorCode() != "not_found" {
			t.Errorf("other account: %d %s", r.status, r.raw)
		}
		if r := s.do("GET", "/api/v1/events/"+uuid.NewString(), pluginHeaders("acme"), ""); r.status != 404 {
			t.Errorf("absent: %d %s", r.status, r.raw)
		}
		for _, bad := range []string{"42", "not-a-uuid", "01900000000070008000000000000001", "%27%20OR%201=1--"} {
			if r := s.do("GET", "/api/v1/events/"+bad, pluginHeaders("acme"), ""); r.status != 400 || !strings.Contains(r.errorMessage(), "id: not a UUID") {
				t.Errorf("id %q: %d %s", bad, r.status, r.raw)
			}
		}
	})
}

// seed records a fixed set of events in account acme (and one in globex)
// with distinct times, and returns their ids by name.
func seed(t *testing.T, s *service) map[string]string {
	t.Helper()
	base := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	rows := []struct {
		name, body string
	}{
		{"a", `{"actor_id":"alice","action":"user.login","resource_type":"session","resource_id":"s1","source":"auth"}`},
		{"b", `{"actor_id":"alice","action":"user.logout","resource_type":"session","resource_id":"s1","source":"auth"}`},
		{"c", `{"actor_id":"bob","action":"user.login","outcome":"failure","severity":"warning","source":"auth"}`},
		{"d", `{"actor_id":"bob","action":"doc.delete","resource_type":"doc","resource_id":"d9","outcome":"denied","severity":"critical","source":"files"}`},
		{"e", `{"actor_type":"system","action":"backup.run","source":"cron"}`},
		{"f", `{"actor_id":"svc-1","actor_type":"service","action":"doc.read","resource_type":"doc","resource_id":"d9","source":"files"}`},
		{"g", `{"actor_id":"alice","action":"users.list","severity":"error","source":"admin"}`},
	}
	ids := map[string]string{}
	for i, r := range rows {
		body := strings.TrimSuffix(r.body, "}") + fmt.Sprintf(`,"occurred_at":"%s"}`, base.Add(time.Duration(i)*time.Hour).Format(time.RFC3339))
		ids[r.name] = s.post("acme", body)["id"].(string)
	}
	s.post("globex", `{"actor_id":"alice","action":"user.login"}`)
	return ids
}

func names(ids map[string]string, evs []map[string]any) string {
	byID := map[string]string{}
	for n, id := range ids {
		byID[id] = n
	}
	var out []string
	for _, e := range evs {
		n, ok := byID[e["id"].(string)]
		if !ok {
			n = "?"
		}
		out = append(out, n)
	}
	return strings.Join(out, "")
}

func TestListFilters(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		ids := seed(t, s)
		cases := []struct {
			path, want string
		}{
			{"/api/v1/events", "gfedcba"},
			{"/api/v1/events?sort=asc", "abcdefg"},
			{"/api/v1/events?sort=desc&limit=2", "gf"},
			{"/api/v1/events?actor_id=alice", "gba"},
			{"/api/v1/events?actor_type=system", "e"},
			{"/api/v1/events?action=user.login", "ca"},
			{"/api/v1/events?action=user.*", "cba"}, // not users.list
			{"/api/v1/events?action=doc.*&sort=asc", "df"},
			{"/api/v1/events?resource_type=doc", "fd"},
			{"/api/v1/events?resource_type=doc&resource_id=d9", "fd"},
			{"/api/v1/events?resource_id=s1", "ba"},
			{"/api/v1/events?outcome=denied", "d"},
			{"/api/v1/events?outcome=failure", "c"},
			{"/api/v1/events?severity=critical", "d"},
			{"/api/v1/events?severity=info", "feba"},
			{"/api/v1/events?source=files", "fd"},
			{"/api/v1/events?since=2026-11-20T12:00:00Z", "gfedc"},
			{"/api/v1/events?until=2026-11-20T12:00:00Z", "ba"},
			{"/api/v1/events?since=2026-11-20T11:00:00Z&until=2026-11-20T13:00:00Z", "cb"},
			{"/api/v1/events?actor_id=alice&action=user.*&since=2026-11-20T10:30:00Z", "b"},
			{"/api/v1/events?actor_id=nobody", ""},
			{"/api/v1/events?actor_id=%27%20OR%20%271%27=%271", ""},
			{"/api/v1/events?resource_id=x%27%3B%20DROP%20TABLE%20np_nself_audit.np_audit_events%3B--", ""},
			{"/api/v1/actors/alice/events", "gba"},
			{"/api/v1/actors/alice/events?action=user.*&sort=asc", "ab"},
			{"/api/v1/actors/bob/events?severity=critical", "d"},
			{"/api/v1/actors/nobody/events", ""},
		}
		for _, c := range cases {
			r := s.get(c.path, pluginHeaders("acme"))
			if got := names(ids, r.events()); got != c.want {
				t.Errorf("%s: got %q, want %q", c.path, got, c.want)
			}
		}
		// The globex event is never in acme's lists, and vice versa.
		if got := s.get("/api/v1/events", pluginHeaders("globex")).events(); len(got) != 1 || got[0]["source_account_id"] != "globex" {
			t.Errorf("globex sees %v", got)
		}
		if r := s.do("GET", "/api/v1/actors/alice/events?actor_id=bob", pluginHeaders("acme"), ""); r.status != 400 {
			t.Errorf("actor_id in path and query: %d", r.status)
		}
	})
}

// walk follows next_cursor to the end and returns the ids in order.
func walk(t *testing.T, s *service, path string, headers map[string]string, during func(page int)) []string {
	t.Helper()
	var ids []string
	next := ""
	for page := 0; ; page++ {
		p := path
		if next != "" {
			p += "&cursor=" + url.QueryEscape(next)
		}
		r := s.get(p, headers)
		for _, e := range r.events() {
			ids = append(ids, e["id"].(string))
		}
		if during != nil {
			during(page)
		}
		c, ok := r.body["next_cursor"].(string)
		if !ok {
			if r.body["next_cursor"] != nil {
				t.Fatalf("next_cursor = %v", r.body["next_cursor"])
			}
			return ids
		}
		next = c
		if page > 1000 {
			t.Fatal("paging does not end")
		}
	}
}

// TestPagingWhileWriting: walking every page returns each event that
// existed before the walk exactly once, in order, while other events are
// being written, with times before, inside and after the walked range.
func TestPagingWhileWriting(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		base := time.Now().Add(-time.Hour).UTC()
		var existing []string
		for i := 0; i < 60; i++ {
			// Pairs share a timestamp: the id breaks the tie.
			at := base.Add(time.Duration(i/2) * time.Second).Format(time.RFC3339Nano)
			existing = append(existing, s.post("acme", fmt.Sprintf(`{"actor_id":"u%d","action":"doc.read","occurred_at":%q}`, i%3, at))["id"].(string))
		}
		for _, sortOrder := range []string{"desc", "asc"} {
			var written sync.WaitGroup
			during := func(page int) {
				// Each page: one event far in the past, one in the walked range,
				// one now.
				for _, offset := range []time.Duration{-48 * time.Hour, time.Duration(page) * time.Second, time.Hour} {
					at := base.Add(offset).Format(time.RFC3339Nano)
					written.Add(1)
					go func() {
						defer written.Done()
						// Half match the walked filter, half do not.
						for _, action := range []string{"doc.read", "doc.write"} {
							r := s.do("POST", "/api/v1/events", pluginHeaders("acme"), fmt.Sprintf(`{"actor_id":"w","action":%q,"occurred_at":%q}`, action, at))
							if r.status != 201 {
								t.Errorf("concurrent write: %d %s", r.status, r.raw)
							}
						}
					}()
				}
			}
			got := walk(t, s, "/api/v1/events?limit=7&action=doc.read&sort="+sortOrder, pluginHeaders("acme"), during)
			written.Wait()
			seen := map[string]int{}
			for _, id := range got {
				seen[id]++
			}
			for id, n := range seen {
				if n > 1 {
					t.Errorf("%s: event %s returned %d times", sortOrder, id, n)
				}
			}
			// Events written during the walk may or may not show; the ones
			// that existed before it show exactly once, in order.
			isExisting := map[string]bool{}
			for _, id := range existing {
				isExisting[id] = true
			}
			var gotExisting []string
			for _, id := range got {
				if isExisting[id] {
					gotExisting = append(gotExisting, id)
				}
			}
			want := append([]string(nil), existing...)
			if sortOrder == "desc" {
				// Same time: higher id first. UUIDv7 ids of one process grow.
				sort.Sort(sort.Reverse(sort.StringSlice(want)))
			}
			if strings.Join(gotExisting, ",") != strings.Join(want, ",") {
				t.Errorf("%s: events that existed before the walk, got\n %v\nwant %v", sortOrder, gotExisting, want)
			}
			// With writers of the same filter too: no duplicate across pages.
			all := walk(t, s, "/api/v1/events?limit=9&sort="+sortOrder, pluginHeaders("acme"), during)
			written.Wait()
			dup := map[string]bool{}
			for _, id := range all {
				if dup[id] {
					t.Errorf("%s unfiltered: event %s twice", sortOrder, id)
				}
				dup[id] = true
			}
			for _, id := range existing {
				if !dup[id] {
					t.Errorf("%s unfiltered: event %s missing", sortOrder, id)
				}
			}
		}
		verifyChains(t, s.main.store, "acme")
	})
}

func TestStats(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		seed(t, s)
		r := s.get("/api/v1/stats", pluginHeaders("acme"))
		b := r.body
		if b["total"] != 7.0 || b["distinct_actors"] != 3.0 {
			t.Errorf("total %v distinct_actors %v; want 7 and 3 (alice, bob, svc-1)", b["total"], b["distinct_actors"])
		}
		if b["first_event_at"] != "2026-11-20T10:00:00.000000Z" || b["last_event_at"] != "2026-11-20T16:00:00.000000Z" {
			t.Errorf("first %v last %v", b["first_event_at"], b["last_event_at"])
		}
		byAction := b["by_action"].([]any)
		if top := byAction[0].(map[string]any); top["action"] != "user.login" || top["count"] != 2.0 || len(byAction) != 6 {
			t.Errorf("by_action %v", byAction)
		}
		checkMap := func(name string, want map[string]float64) {
			got, _ := b[name].(map[string]any)
			if len(got) != len(want) {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s[%s] = %v, want %v", name, k, got[k], v)
				}
			}
		}
		checkMap("by_actor_type", map[string]float64{"user": 5, "system": 1, "service": 1})
		checkMap("by_outcome", map[string]float64{"success": 5, "failure": 1, "denied": 1})
		checkMap("by_severity", map[string]float64{"info": 4, "warning": 1, "critical": 1, "error": 1})
		if tl := b["timeline"].([]any); len(tl) != 1 || tl[0].(map[string]any)["bucket"] != "2026-11-20T00:00:00.000000Z" || tl[0].(map[string]any)["count"] != 7.0 {
			t.Errorf("day timeline %v", tl)
		}
		if tl := s.get("/api/v1/stats?interval=hour&actor_id=alice", pluginHeaders("acme")).body["timeline"].([]any); len(tl) != 3 ||
			tl[2].(map[string]any)["bucket"] != "2026-11-20T16:00:00.000000Z" {
			t.Errorf("hour timeline for alice %v", tl)
		}
		if r := s.get("/api/v1/stats?action=doc.*", pluginHeaders("acme")); r.body["total"] != 2.0 {
			t.Errorf("filtered total %v", r.body["total"])
		}
		if r := s.get("/api/v1/stats", pluginHeaders("empty")); r.body["total"] != 0.0 || r.body["first_event_at"] != nil {
			t.Errorf("empty account stats %s", r.raw)
		}
	})
}

func TestBadInput(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		big := `{"actor_id":"u","action":"a.b","metadata":{"x":"` + strings.Repeat("x", 1<<20) + `"}}`
		deep := `{"actor_id":"u","action":"a.b","metadata":{"x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}}`
		cases := []struct {
			name, method, path, body string
			status                   int
			code, msg                string
		}{
			{"malformed json", "POST", "/api/v1/events", `{"action":`, 400, "invalid_request", "body: truncated JSON"},
			{"not json", "POST", "/api/v1/events", `action=user.login`, 400, "invalid_request", "malformed JSON"},
			{"empty body", "POST", "/api/v1/events", ``, 400, "invalid_request", "body: empty"},
			{"wrong type", "POST", "/api/v1/events", `{"actor_id":7,"action":"a.b"}`, 400, "invalid_request", "actor_id: expected a string"},
			{"unknown field", "POST", "/api/v1/events", `{"actor_id":"u","action":"a.b","who":"x"}`, 400, "invalid_request", "who: unknown field"},
			{"unknown enum", "POST", "/api/v1/events", `{"actor_id":"u","action":"a.b","outcome":"maybe"}`, 400, "invalid_request", "outcome: must be one of"},
			{"nul byte", "POST", "/api/v1/events", `{"actor_id":"u\u0000","action":"a.b"}`, 400, "invalid_request", "NUL"},
			{"bad time", "POST", "/api/v1/events", `{"actor_id":"u","action":"a.b","occurred_at":"2026-13-01T00:00:00Z"}`, 400, "invalid_request", "occurred_at"},
			{"bad ip", "POST", "/api/v1/events", `{"actor_id":"u","action":"a.b","ip_address":"localhost"}`, 400, "invalid_request", "ip_address"},
			{"missing action", "POST", "/api/v1/events", `{"actor_id":"u"}`, 400, "invalid_request", "action: required"},
			{"metadata array", "POST", "/api/v1/events", `{"actor_id":"u","action":"a.b","metadata":[]}`, 400, "invalid_request", "metadata: must be a JSON object"},
			{"deep nesting", "POST", "/api/v1/events", deep, 400, "invalid_request", ""},
			{"too large", "POST", "/api/v1/events", big, 413, "payload_too_large", "larger than 1024 KiB"},
			{"limit zero", "GET", "/api/v1/events?limit=0", "", 400, "invalid_request", "limit"},
			{"limit high", "GET", "/api/v1/events?limit=1001", "", 400, "invalid_request", "limit"},
			{"unknown param", "GET", "/api/v1/events?colour=red", "", 400, "invalid_request", "colour: unknown query parameter"},
			{"bad sort", "GET", "/api/v1/events?sort=sideways", "", 400, "invalid_request", "sort"},
			{"bad since", "GET", "/api/v1/events?since=tuesday", "", 400, "invalid_request", "since"},
			{"bad cursor", "GET", "/api/v1/events?cursor=abc", "", 400, "invalid_request", "cursor"},
			{"forged cursor", "GET", "/api/v1/events?cursor=" + strings.Repeat("A", 76), "", 400, "invalid_request", "cursor"},
			{"stats bad interval", "GET", "/api/v1/stats?interval=week", "", 400, "invalid_request", "interval"},
			{"stats unknown", "GET", "/api/v1/stats?limit=5", "", 400, "invalid_request", "limit: unknown query parameter"},
			{"get with query", "GET", "/api/v1/events/" + uuid.NewString() + "?x=1", "", 400, "invalid_request", ""},
			{"long actor path", "GET", "/api/v1/actors/" + strings.Repeat("a", 300) + "/events", "", 400, "invalid_request", "actor_id"},
			{"bad account header", "GET", "/api/v1/events", "", 400, "invalid_request", "X-Source-Account-Id"},
			{"no route", "GET", "/api/v1/nothing", "", 404, "not_found", "no route"},
			{"wrong method", "DELETE", "/api/v1/events", "", 405, "method_not_allowed", "DELETE"},
			{"put event", "PUT", "/api/v1/events/" + uuid.NewString(), "{}", 405, "method_not_allowed", ""},
			{"get batch", "GET", "/api/v1/events/batch", "", 405, "method_not_allowed", "GET"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				h := pluginHeaders("")
				if c.name == "bad account header" {
					h["X-Source-Account-Id"] = "not ok!"
				}
				r := s.do(c.method, c.path, h, c.body)
				if r.status != c.status || r.errorCode() != c.code || !strings.Contains(r.errorMessage(), c.msg) {
					t.Fatalf("%d %s; want %d %s containing %q", r.status, r.raw, c.status, c.code, c.msg)
				}
			})
		}
		// Nothing of the above was stored.
		if r := s.get("/api/v1/stats", pluginHeaders("")); r.body["total"] != 0.0 {
			t.Fatalf("bad requests stored events: total %v", r.body["total"])
		}
	})
}

func TestIdempotentRetries(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		h := pluginHeaders("acme")
		h["Idempotency-Key"] = "order-1"
		first := s.do("POST", "/api/v1/events", h, `{"actor_id":"u1","action":"order.create"}`)
		if first.status != 201 {
			t.Fatalf("first: %d %s", first.status, first.raw)
		}
		again := s.do("POST", "/api/v1/events", h, `{"action":"order.create","actor_id":"u1"}`)
		if again.status != 200 || again.body["id"] != first.body["id"] || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry: %d %s", again.status, again.raw)
		}
		if r := s.do("POST", "/api/v1/events", h, `{"actor_id":"u1","action":"order.cancel"}`); r.status != 409 || r.errorCode() != "conflict" {
			t.Fatalf("key reused for another event: %d %s", r.status, r.raw)
		}
		// The body field works like the header; both must agree.
		body := `{"actor_id":"u1","action":"order.pay","idempotency_key":"order-2"}`
		a := s.do("POST", "/api/v1/events", pluginHeaders("acme"), body)
		b := s.do("POST", "/api/v1/events", pluginHeaders("acme"), body)
		if a.status != 201 || b.status != 200 || a.body["id"] != b.body["id"] {
			t.Fatalf("body key: %d %d", a.status, b.status)
		}
		if r := s.do("POST", "/api/v1/events", h, body); r.status != 400 || !strings.Contains(r.errorMessage(), "differs") {
			t.Fatalf("header and body keys differ: %d %s", r.status, r.raw)
		}

		// Many concurrent retries of one key: one event, one id for all.
		const n = 24
		var wg sync.WaitGroup
		ids := make([]string, n)
		statuses := make([]int, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hh := pluginHeaders("acme")
				hh["Idempotency-Key"] = "burst"
				r := s.do("POST", "/api/v1/events", hh, `{"actor_id":"u2","action":"order.burst"}`)
				statuses[i] = r.status
				ids[i], _ = r.body["id"].(string)
			}()
		}
		wg.Wait()
		created := 0
		for i := range ids {
			if ids[i] != ids[0] || ids[i] == "" {
				t.Fatalf("concurrent retries got different ids: %v", ids)
			}
			if statuses[i] == 201 {
				created++
			} else if statuses[i] != 200 {
				t.Fatalf("status %d", statuses[i])
			}
		}
		if created != 1 {
			t.Fatalf("%d requests created the event, want exactly 1", created)
		}
		if counts := verifyChains(t, s.main.store, "acme"); counts["acme"] != 3 {
			t.Fatalf("acme has %d events, want 3", counts["acme"])
		}
	})
}

// TestConcurrentPostsGroupCommit: many concurrent single-event POSTs to one
// service end up in one gap-free chain per account.
func TestConcurrentPostsGroupCommit(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		const clients, each = 16, 25
		var wg sync.WaitGroup
		var mu sync.Mutex
		seqs := map[string]map[float64]bool{"acme": {}, "globex": {}}
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					account := []string{"acme", "globex"}[(c+i)%2]
					e := s.post(account, fmt.Sprintf(`{"actor_id":"c%d","action":"load.test","metadata":{"i":%d}}`, c, i))
					mu.Lock()
					seqs[account][e["seq"].(float64)] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		counts := verifyChains(t, s.main.store, "acme", "globex")
		if counts["acme"]+counts["globex"] != clients*each {
			t.Fatalf("stored %v, want %d in all", counts, clients*each)
		}
		for account, set := range seqs {
			if len(set) != counts[account] {
				t.Errorf("%s: %d distinct seqs acknowledged, %d stored", account, len(set), counts[account])
			}
		}
	})
}

func TestActorPathRejectsBadText(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store)
		for _, actor := range []string{"a%00b", "a%ffb"} {
			r := s.do("GET", "/api/v1/actors/"+actor+"/events", pluginHeaders(""), "")
			if r.status != 400 || !strings.Contains(r.errorMessage(), "actor_id") {
				t.Errorf("actor %s: %d %s", actor, r.status, r.raw)
			}
		}
	})
}
