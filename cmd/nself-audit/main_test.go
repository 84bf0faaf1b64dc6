package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/auth"
	"github.com/nself-org/nself-audit/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testSecret = "test-plugin-secret-0123456789abcdef"

// service is one running nself-audit, wired as in production, on its own
// database and port.
type service struct {
	t     *testing.T
	url   string // base URL
	dbURL string // superuser URL of its database
	main  *Main
}

type option func(*Config)

func withJWT(raw string) option {
	return func(c *Config) {
		cfg, err := auth.ParseJWTConfig(raw)
		if err != nil {
			panic(err)
		}
		c.JWT = cfg
	}
}

// start runs the service on a fresh database; dbURL reuses a database.
func start(t *testing.T, dbURL string, opts ...option) *service {
	t.Helper()
	if dbURL == "" {
		dbURL = pgtest.Default.NewDatabase(t)
	}
	cfg := &Config{DatabaseURL: dbURL, Host: "127.0.0.1", Port: 0, Secret: testSecret}
	for _, o := range opts {
		o(cfg)
	}
	m := NewMain(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := m.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &service{t: t, url: "http://" + m.Addr(), dbURL: dbURL, main: m}
}

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

// errorCode returns body.error.code.
func (r *response) errorCode() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func (r *response) errorMessage() string {
	e, _ := r.body["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

func (r *response) events() []map[string]any {
	list, _ := r.body["events"].([]any)
	out := make([]map[string]any, len(list))
	for i, v := range list {
		out[i] = v.(map[string]any)
	}
	return out
}

// pluginHeaders authenticate with the plugin token for account.
func pluginHeaders(account string) map[string]string {
	h := map[string]string{"Authorization": "Bearer " + testSecret}
	if account != "" {
		h["X-Source-Account-Id"] = account
	}
	return h
}

func (s *service) do(method, path string, headers map[string]string, body string) *response {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := &response{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			s.t.Fatalf("%s %s: answer is not a JSON object (%v): %s", method, path, err, raw)
		}
	}
	return r
}

// post records an event for account and fails the test unless it is 201.
func (s *service) post(account, body string) map[string]any {
	s.t.Helper()
	r := s.do("POST", "/api/v1/events", pluginHeaders(account), body)
	if r.status != http.StatusCreated {
		s.t.Fatalf("POST %s: %d %s", body, r.status, r.raw)
	}
	return r.body
}

// get fails the test unless the answer is 200.
func (s *service) get(path string, headers map[string]string) *response {
	s.t.Helper()
	r := s.do("GET", path, headers, "")
	if r.status != http.StatusOK {
		s.t.Fatalf("GET %s: %d %s", path, r.status, r.raw)
	}
	return r
}

// verifyChains reads every account's chain from the database in seq order
// and verifies it; it returns the number of events per account.
func verifyChains(t *testing.T, dbURL string) map[string]int {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `SELECT id, source_account_id, seq, occurred_at, recorded_at, actor_id, actor_type,
		action, resource_type, resource_id, outcome, severity, ip_address, user_agent, request_id, source,
		metadata::text, prev_hash, hash FROM np_nself_audit.np_audit_events ORDER BY source_account_id, seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	counts := map[string]int{}
	verifiers := map[string]*audit.ChainVerifier{}
	for rows.Next() {
		var e audit.Event
		var meta string
		if err := rows.Scan(&e.ID, &e.SourceAccountID, &e.Seq, &e.OccurredAt, &e.RecordedAt, &e.ActorID, &e.ActorType,
			&e.Action, &e.ResourceType, &e.ResourceID, &e.Outcome, &e.Severity, &e.IPAddress, &e.UserAgent,
			&e.RequestID, &e.Source, &meta, &e.PrevHash, &e.Hash); err != nil {
			t.Fatal(err)
		}
		if e.Metadata, err = audit.Canonicalize([]byte(meta)); err != nil {
			t.Fatal(err)
		}
		v := verifiers[e.SourceAccountID]
		if v == nil {
			v = audit.NewChainVerifier()
			verifiers[e.SourceAccountID] = v
		}
		if err := v.Check(&e); err != nil {
			t.Fatalf("account %s: %v", e.SourceAccountID, err)
		}
		counts[e.SourceAccountID]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

// superuserExec runs sql on the service's database as the superuser.
func superuserExec(t *testing.T, dbURL, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
}

func jsonBody(v any) string {
	var b bytes.Buffer
	json.NewEncoder(&b).Encode(v)
	return b.String()
}
