package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// hasuraPayload reads a recorded Hasura delivery of internal/capture.
func hasuraPayload(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "internal", "capture", "testdata", "hasura", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var hookHeaders = map[string]string{"X-Plugin-Secret": testSecret}

// exportEvents reads an account's chain, in seq order.
func exportEvents(t *testing.T, s *service, account string) []map[string]any {
	t.Helper()
	r := s.get("/api/v1/events/export", pluginHeaders(account))
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(r.raw)), "\n") {
		if line == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// verifyOK checks the account's chain through GET /api/v1/verify and
// returns how many events it holds.
func verifyOK(t *testing.T, s *service, account string) int {
	t.Helper()
	r := s.get("/api/v1/verify", pluginHeaders(account))
	if r.body["ok"] != true {
		t.Fatalf("verify %s: %s", account, r.raw)
	}
	return int(r.body["checked"].(float64))
}

// TestHasuraHook: every recorded Hasura delivery becomes one event of the
// right account through the write path; retries, the wrapped form and
// concurrent duplicates store it once; secrets are never stored; chains
// verify. On both stores.
func TestHasuraHook(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withJWT(`{"type":"HS256","key":"`+hsKey+`"}`))
		const route = "/api/v1/hooks/hasura"
		for _, c := range []struct{ file, account, action, actorType string }{
			{"insert.json", "acme", "orders.insert", "user"},
			{"update.json", "acme", "auth.users.update", "user"},
			{"delete.json", "globex", "orders.delete", "system"},
			{"manual.json", "acme", "documents.manual", "system"},
			{"wrapped.json", "acme", "comments.insert", "user"},
		} {
			r := s.do("POST", route, hookHeaders, hasuraPayload(t, c.file))
			if r.status != 201 || r.body["source_account_id"] != c.account || r.body["action"] != c.action ||
				r.body["actor_type"] != c.actorType || r.body["source"] != "hasura" {
				t.Fatalf("%s: %d %s", c.file, r.status, r.raw)
			}
		}
		first := s.get("/api/v1/events?action=orders.insert", pluginHeaders("acme")).events()[0]

		// Hasura's retries: the same event id with another delivery_info,
		// in sequence and all at once, and the wrapped form of it.
		retry := strings.Replace(hasuraPayload(t, "insert.json"), `"current_retry": 0`, `"current_retry": 1`, 1)
		var wg sync.WaitGroup
		replies := make(chan *response, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				replies <- s.do("POST", route, hookHeaders, retry)
			}()
		}
		wg.Wait()
		close(replies)
		for r := range replies {
			if r.status != 200 || r.header.Get("Idempotent-Replayed") != "true" || r.body["id"] != first["id"] {
				t.Fatalf("retry: %d %s", r.status, r.raw)
			}
		}
		if r := s.do("POST", route, hookHeaders, `{"payload":`+hasuraPayload(t, "insert.json")+`}`); r.status != 200 || r.body["id"] != first["id"] {
			t.Fatalf("wrapped retry: %d %s", r.status, r.raw)
		}
		// Another change under an id already used is a conflict, not a replay.
		other := strings.Replace(hasuraPayload(t, "insert.json"), "Ada Lovelace", "Charles Babbage", 1)
		if r := s.do("POST", route, hookHeaders, other); r.status != 409 || r.errorCode() != "conflict" {
			t.Fatalf("same id, other row: %d %s", r.status, r.raw)
		}

		// Account: the event's decides; a header naming another is refused,
		// one naming the same is fine; neither session nor row: the header's.
		fresh := func(body, id string) string {
			return strings.Replace(body, `"id": "`, `"id": "`+id+`-`, 1)
		}
		if r := s.do("POST", route, map[string]string{"X-Plugin-Secret": testSecret, "X-Source-Account-Id": "acme"}, fresh(hasuraPayload(t, "delete.json"), "a1")); r.status != 400 ||
			!strings.Contains(r.errorMessage(), `belongs to account "globex"`) {
			t.Fatalf("account header naming another account: %d %s", r.status, r.raw)
		}
		if r := s.do("POST", route, map[string]string{"X-Plugin-Secret": testSecret, "X-Source-Account-Id": "globex"}, fresh(hasuraPayload(t, "delete.json"), "a2")); r.status != 201 {
			t.Fatalf("account header naming the event's account: %d %s", r.status, r.raw)
		}
		anon := strings.Replace(fresh(hasuraPayload(t, "manual.json"), "a3"), `"source_account_id": "acme",`, "", 1)
		if r := s.do("POST", route, map[string]string{"X-Plugin-Secret": testSecret, "X-Source-Account-Id": "initech"}, anon); r.status != 201 || r.body["source_account_id"] != "initech" {
			t.Fatalf("no account in the event: %d %s", r.status, r.raw)
		}
		if r := s.do("POST", route, hookHeaders, fresh(anon, "a4")); r.status != 201 || r.body["source_account_id"] != "primary" {
			t.Fatalf("no account anywhere: %d %s", r.status, r.raw)
		}
		// The key columns come from ?key=.
		if r := s.do("POST", route+"?key=customer", hookHeaders, fresh(hasuraPayload(t, "insert.json"), "k1")); r.status != 201 || r.body["resource_id"] != "Ada Lovelace" {
			t.Fatalf("?key=customer: %d %s", r.status, r.raw)
		}

		// Refusals.
		user := hsToken(t, claims{user: "u1", role: "admin", account: "acme", allowed: []string{"admin"}})
		for _, c := range []struct {
			path    string
			headers map[string]string
			body    string
			status  int
		}{
			{route, nil, hasuraPayload(t, "insert.json"), 401},
			{route, map[string]string{"X-Plugin-Secret": "wrong-secret-0123456789"}, hasuraPayload(t, "insert.json"), 401},
			{route, bearer(user), hasuraPayload(t, "insert.json"), 403},
			{route + "?colour=red", hookHeaders, hasuraPayload(t, "insert.json"), 400},
			{route + "?key=", hookHeaders, hasuraPayload(t, "insert.json"), 400},
			{route + "?key=a&key=b", hookHeaders, hasuraPayload(t, "insert.json"), 400},
			{route, hookHeaders, `{"id":"x"}`, 400},
			{route, hookHeaders, strings.Replace(hasuraPayload(t, "insert.json"), `"op": "INSERT"`, `"op": "TRUNCATE"`, 1), 400},
		} {
			if r := s.do("POST", c.path, c.headers, c.body); r.status != c.status {
				t.Errorf("POST %s with %v: %d %s; want %d", c.path, c.headers, r.status, r.raw, c.status)
			}
		}
		if r := s.do("GET", route, hookHeaders, ""); r.status != 405 {
			t.Errorf("GET on the hook route: %d", r.status)
		}

		// Nothing secret was stored; every chain verifies and holds what was
		// delivered, once.
		for _, account := range []string{"acme", "globex", "initech", "primary"} {
			for _, e := range exportEvents(t, s, account) {
				raw, _ := json.Marshal(e)
				for _, secret := range []string{"ak_live_51Hx", "whsec_x1", "$2a$10$", "tok_9f8e7d"} {
					if bytes.Contains(raw, []byte(secret)) {
						t.Errorf("a secret (%s) is stored: %s", secret, raw)
					}
				}
			}
		}
		for account, want := range map[string]int{"acme": 5, "globex": 2, "initech": 1, "primary": 1} {
			if n := verifyOK(t, s, account); n != want {
				t.Errorf("%s holds %d events, want %d", account, n, want)
			}
		}
	})
}

// hasuraServer is a stand-in for Hasura's metadata API that records what
// it is sent and answers from answer.
type hasuraServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []recorded
}

type recorded struct {
	path, secret string
	body         map[string]any
}

func newHasuraServer(t *testing.T, answer func(kind string) (int, string)) *hasuraServer {
	h := &hasuraServer{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		rec := recorded{path: r.URL.Path, secret: r.Header.Get("X-Hasura-Admin-Secret")}
		json.Unmarshal(raw, &rec.body)
		h.mu.Lock()
		h.requests = append(h.requests, rec)
		h.mu.Unlock()
		kind, _ := rec.body["type"].(string)
		status, body := answer(kind)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(h.Close)
	return h
}

// TestCaptureHasuraVerb: `capture hasura` prints the metadata request for
// the tables named, or for every tracked table read from Hasura, and with
// --apply sends it to the metadata API with the admin secret.
func TestCaptureHasuraVerb(t *testing.T) {
	t.Parallel()
	hasura := newHasuraServer(t, func(kind string) (int, string) {
		switch kind {
		case "export_metadata":
			return 200, `{"version":3,"sources":[{"name":"default","kind":"postgres","tables":[
				{"table":{"schema":"public","name":"orders"}},{"table":{"schema":"np_nself_audit","name":"np_audit_events"}},
				{"table":{"schema":"auth","name":"users"}}]}]}`
		case "bulk":
			return 200, `[{"message":"success"},{"message":"success"}]`
		}
		return 400, `{"code":"parse-failed","error":"unknown type","path":"$"}`
	})
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	runVerb := func(getenv func(string) string, args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		code := run(ctx, append([]string{"capture", "hasura"}, args...), getenv, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	hasuraEnv := env("HASURA_GRAPHQL_ENDPOINT", hasura.URL+"/v1/graphql", "HASURA_GRAPHQL_ADMIN_SECRET", "admin-secret-for-tests")

	// Printing needs no Hasura when the tables are named.
	code, out, errOut := runVerb(env(), "--table", "public.orders", "--table", "auth.users", "--key", "id")
	if code != 0 {
		t.Fatalf("print: %d %s", code, errOut)
	}
	var printed struct {
		Type string
		Args []struct {
			Type string
			Args map[string]any
		}
	}
	if err := json.Unmarshal([]byte(out), &printed); err != nil || printed.Type != "bulk" || len(printed.Args) != 2 {
		t.Fatalf("printed %s (%v)", out, err)
	}
	a := printed.Args[1].Args
	if printed.Args[1].Type != "pg_create_event_trigger" || a["name"] != "nself_audit_auth_users" || a["webhook"] != "http://nself-audit:3843/api/v1/hooks/hasura?key=id" ||
		a["enable_manual"] != true || a["source"] != "default" || compactJSON(a["headers"]) != `[{"name":"X-Plugin-Secret","value_from_env":"PLUGIN_INTERNAL_SECRET"}]` ||
		compactJSON(a["table"]) != `{"name":"users","schema":"auth"}` || compactJSON(a["insert"]) != `{"columns":"*"}` ||
		compactJSON(a["update"]) != `{"columns":"*"}` || compactJSON(a["delete"]) != `{"columns":"*"}` {
		t.Errorf("trigger definition %v", a)
	}
	if len(hasura.requests) != 0 {
		t.Fatalf("printing named tables called Hasura: %v", hasura.requests)
	}

	// --apply with every tracked table: export_metadata, then the bulk, both
	// with the admin secret, at /v1/metadata.
	code, out, errOut = runVerb(func(k string) string {
		if k == "NSELF_AUDIT_HOOK_URL" {
			return "http://audit.internal:3843/api/v1/hooks/hasura"
		}
		return hasuraEnv(k)
	}, "--apply", "--secret-env", "AUDIT_TOKEN")
	if code != 0 {
		t.Fatalf("apply: %d %s %s", code, out, errOut)
	}
	if len(hasura.requests) != 2 {
		t.Fatalf("%d requests to Hasura, want 2", len(hasura.requests))
	}
	for _, r := range hasura.requests {
		if r.path != "/v1/metadata" || r.secret != "admin-secret-for-tests" {
			t.Errorf("request to %s with admin secret %q", r.path, r.secret)
		}
	}
	if hasura.requests[0].body["type"] != "export_metadata" {
		t.Errorf("first request %v", hasura.requests[0].body)
	}
	bulk := hasura.requests[1].body
	args, _ := bulk["args"].([]any)
	if bulk["type"] != "bulk" || len(args) != 2 {
		t.Fatalf("applied %v", bulk)
	}
	var names []string
	for _, x := range args {
		a := x.(map[string]any)["args"].(map[string]any)
		names = append(names, a["name"].(string))
		if a["webhook"] != "http://audit.internal:3843/api/v1/hooks/hasura" || compactJSON(a["headers"]) != `[{"name":"X-Plugin-Secret","value_from_env":"AUDIT_TOKEN"}]` {
			t.Errorf("applied trigger %v", a)
		}
	}
	if strings.Join(names, ",") != "nself_audit_auth_users,nself_audit_orders" {
		t.Errorf("triggers %v: the plugin's own table must be left out", names)
	}
	if !strings.Contains(out, "event trigger nself_audit_orders on public.orders") {
		t.Errorf("apply output %q", out)
	}

	// Errors: Hasura refuses; no Hasura configured; the plugin's table named.
	refusing := newHasuraServer(t, func(string) (int, string) { return 400, `{"code":"already-exists","error":"nope","path":"$"}` })
	if code, _, errOut := runVerb(env("HASURA_GRAPHQL_ENDPOINT", refusing.URL, "HASURA_GRAPHQL_ADMIN_SECRET", "s"), "--table", "orders", "--apply"); code != 1 ||
		!strings.Contains(errOut, "Hasura answered 400 Bad Request") || !strings.Contains(errOut, "already-exists") {
		t.Errorf("refused apply: %d %q", code, errOut)
	}
	if code, _, errOut := runVerb(env(), "--apply", "--table", "orders"); code != 1 || !strings.Contains(errOut, "HASURA_GRAPHQL_ENDPOINT") {
		t.Errorf("apply without Hasura: %d %q", code, errOut)
	}
	if code, _, errOut := runVerb(env()); code != 1 || !strings.Contains(errOut, "without --table") {
		t.Errorf("no tables, no Hasura: %d %q", code, errOut)
	}
	if code, _, errOut := runVerb(env(), "--table", "np_nself_audit.np_audit_events"); code != 1 || !strings.Contains(errOut, "never captured") {
		t.Errorf("the plugin's own table: %d %q", code, errOut)
	}
	if code, _, _ := runVerb(env(), "--tabel", "x"); code != 2 {
		t.Errorf("unknown flag: exit %d", code)
	}
}

func compactJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestRedactColumnsConfig: NSELF_AUDIT_REDACT_COLUMNS adds patterns that
// the hook applies; a bad value is a start error naming the variable.
func TestRedactColumnsConfig(t *testing.T) {
	t.Parallel()
	getenv := func(v string) func(string) string {
		return func(k string) string {
			if k == "NSELF_AUDIT_REDACT_COLUMNS" {
				return v
			}
			return ""
		}
	}
	cfg, err := LoadConfig(getenv(" customer , iban"))
	if err != nil || strings.Join(cfg.Redact, ",") != "customer,iban" {
		t.Fatalf("LoadConfig: %v, %v", cfg, err)
	}
	if _, err := LoadConfig(getenv(`cust"omer`)); err == nil || !strings.HasPrefix(err.Error(), "NSELF_AUDIT_REDACT_COLUMNS: ") {
		t.Fatalf("a bad pattern: %v", err)
	}
	s := start(t, "sqlite", func(c *Config) { c.Redact = cfg.Redact })
	r := s.do("POST", "/api/v1/hooks/hasura", hookHeaders, hasuraPayload(t, "insert.json"))
	meta, _ := r.body["metadata"].(map[string]any)
	row, _ := meta["new"].(map[string]any)
	if r.status != 201 || row["customer"] != "[redacted]" || row["api_key"] != "[redacted]" || row["id"] != 1042.0 {
		t.Fatalf("with customer redacted: %d %s", r.status, r.raw)
	}
}
