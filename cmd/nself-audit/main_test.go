package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nself-org/nself-audit/client"
	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/auth"
	"github.com/nself-org/nself-audit/internal/pgtest"
	"github.com/nself-org/nself-audit/internal/storetest"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nself-audit-test-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	pgtest.Main(m, func() { os.RemoveAll(dir) })
}

const testSecret = "test-plugin-secret-0123456789abcdef"

// testSigningKey signs the checkpoints of in-process services.
var testSigningKey = ed25519.NewKeyFromSeed([]byte("nself-audit test signing key 32b"))

// service is one running nself-audit, wired as in production, on its own
// database and port.
type service struct {
	t     testing.TB
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

// stores are the stores every API test runs against.
var stores = []string{"postgres", "sqlite"}

// eachStore runs fn as a parallel subtest per store.
func eachStore(t *testing.T, fn func(t *testing.T, store string)) {
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			fn(t, store)
		})
	}
}

// start runs the service on a fresh database of the store given
// ("postgres" or "sqlite").
func start(t testing.TB, store string, opts ...option) *service {
	t.Helper()
	switch store {
	case "postgres":
		return startOn(t, pgtestDatabase(t), "", opts...)
	case "sqlite":
		return startOn(t, "", filepath.Join(t.TempDir(), "audit.db"), opts...)
	}
	t.Fatalf("unknown store %q", store)
	return nil
}

// pgtestDatabase returns a fresh PostgreSQL database.
func pgtestDatabase(t testing.TB) string { return pgtest.Default.NewDatabase(t) }

// startOn runs the service on the PostgreSQL database dbURL, or on the
// SQLite file sqlitePath.
func startOn(t testing.TB, dbURL, sqlitePath string, opts ...option) *service {
	t.Helper()
	cfg := &Config{DatabaseURL: dbURL, SQLitePath: sqlitePath, Host: "127.0.0.1", Port: 0, Secret: testSecret,
		SigningKey: testSigningKey, CheckpointEvents: 1000} // no CheckpointInterval: no automatic checkpoints
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

// client returns a client of the service with the plugin token, acting for
// account ("" names none: primary).
func (s *service) client(account string, opts ...client.Option) *client.Client {
	s.t.Helper()
	if account != "" {
		opts = append([]client.Option{client.WithAccount(account)}, opts...)
	}
	c, err := client.New(s.url, testSecret, opts...)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
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
	if len(raw) > 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
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

// verifyChains verifies the chains of the accounts through the service's
// store and returns the number of events of each.
func verifyChains(t *testing.T, store audit.Store, accounts ...string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, a := range accounts {
		counts[a] = int(storetest.VerifyChain(t, store, a))
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
