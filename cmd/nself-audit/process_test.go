package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/pgtest"
	"github.com/nself-org/nself-audit/internal/postgres"
	"github.com/nself-org/nself-audit/internal/sqlite"
)

// binDir holds the binary built for this test run; TestMain removes it.
var binDir string

// buildBinary builds the real binary once per test run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp(binDir, "nself-audit-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nself-audit")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is the binary running as a child process.
type process struct {
	*service
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
}

// stop sends SIGINT and waits for the exit; it may be called again.
func (p *process) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	<-p.exited
}

// syncBuffer is a bytes.Buffer safe for the child's writes and our reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProcess runs the binary on dbURL and waits until it is ready.
func startProcess(t *testing.T, dbURL string) *service {
	t.Helper()
	return runProcess(t, "DATABASE_URL="+dbURL, "PLUGIN_INTERNAL_SECRET="+testSecret).service
}

// runProcess runs the binary with env added to ours (less DATABASE_URL and
// the secrets, which only env sets) on a free port, and waits until it is
// ready. It is stopped with SIGINT at the end of the test.
func runProcess(t *testing.T, env ...string) *process {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cmd := exec.Command(bin)
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "DATABASE_URL", "PLUGIN_INTERNAL_SECRET", "PLUGIN_SECRET", "NSELF_AUDIT_DATA_DIR", "PORT", "HOST":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, "NSELF_AUDIT_DATA_DIR="+filepath.Join(t.TempDir(), "data")) // env may name another
	cmd.Env = append(cmd.Env, append(env, "PORT="+strconv.Itoa(port))...)
	cmd.Dir = t.TempDir() // nothing the process writes lands in the source tree
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	p := &process{cmd: cmd, logs: logs, exited: exited}
	t.Cleanup(p.stop)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; {
		res, err := http.Get(base + "/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("process exited before it was ready:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("process not ready after 30 s: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.service = &service{t: t, url: base}
	return p
}

// TestTwoProcessesOneChain: two service processes on one database, both
// written to concurrently, keep one unbroken chain per account.
func TestTwoProcessesOneChain(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.Default.NewDatabase(t)
	p1 := startProcess(t, dbURL)
	p2 := startProcess(t, dbURL)
	const clients, each = 8, 30
	postFromBoth(t, p1, p2, []string{"acme", "globex", "initech"}, clients, each)
	store, err := postgres.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	counts := verifyChains(t, store, "acme", "globex", "initech")
	total := 0
	for _, n := range counts {
		total += n
	}
	if total != clients*each || len(counts) != 3 {
		t.Fatalf("chains %v hold %d events, want %d in 3 accounts", counts, total, clients*each)
	}
}

// TestVerbs runs the command line as main does: migrate twice, version,
// unknown verbs, and configuration errors that name the variable.
func TestVerbs(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.Default.NewDatabase(t)
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	good := []string{"DATABASE_URL", dbURL, "PLUGIN_INTERNAL_SECRET", testSecret}
	// Runs get a data folder of their own: nothing may be written into
	// the source tree.
	dataDir := t.TempDir()
	runCmd := func(args []string, getenv func(string) string) (int, string, string) {
		var out, errOut bytes.Buffer
		// A configuration that is unexpectedly valid serves until ctx ends.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		withDataDir := func(k string) string {
			if v := getenv(k); v != "" || k != "NSELF_AUDIT_DATA_DIR" {
				return v
			}
			return dataDir
		}
		code := run(ctx, args, withDataDir, &out, &errOut)
		return code, out.String(), errOut.String()
	}

	all, err := postgres.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd([]string{"migrate"}, env(good...))
	if want := fmt.Sprintf("applied %d now, %d of %d", len(all), len(all), len(all)); code != 0 || !strings.Contains(out, want) {
		t.Fatalf("first migrate: %d %q %q; want %q", code, out, errOut, want)
	}
	// migrate needs no plugin token (nself doctor's fix command runs it bare).
	code, out, _ = runCmd([]string{"migrate"}, env("DATABASE_URL", dbURL))
	if want := fmt.Sprintf("applied 0 now, %d of %d", len(all), len(all)); code != 0 || !strings.Contains(out, want) {
		t.Fatalf("second migrate: %d %q; want %q", code, out, want)
	}
	if code, out, _ := runCmd([]string{"version"}, env()); code != 0 || strings.TrimSpace(out) == "" {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, _, errOut := runCmd([]string{"frobnicate"}, env()); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Fatalf("unknown verb: %d %q", code, errOut)
	}

	bad := []struct {
		env  []string
		want string
	}{
		{[]string{"DATABASE_URL", "sqlite:", "PLUGIN_INTERNAL_SECRET", testSecret}, "DATABASE_URL: sqlite: needs a file path"},
		{[]string{"DATABASE_URL", "mysql://x", "PLUGIN_INTERNAL_SECRET", testSecret}, "DATABASE_URL: must start with"},
		{[]string{"DATABASE_URL", dbURL}, "PLUGIN_INTERNAL_SECRET: required with PostgreSQL"},
		{[]string{"DATABASE_URL", dbURL, "PLUGIN_SECRET", "short"}, "PLUGIN_SECRET: must be at least 16"},
		{append(good, "PORT", "http"), "PORT: must be a number"},
		{append(good, "PORT", "70000"), "PORT"},
		{append(good, "HOST", "example.com"), "HOST: must be an IP address"},
		{append(good, "HASURA_GRAPHQL_JWT_SECRET", `{"type":"HS256"`), "HASURA_GRAPHQL_JWT_SECRET"},
		{append(good, "HASURA_GRAPHQL_JWT_SECRET", `{"type":"XX999","key":"k"}`), "HASURA_GRAPHQL_JWT_SECRET"},
		{append(good, "LOG_LEVEL", "loud"), "LOG_LEVEL"},
		{append(good, "NSELF_AUDIT_SIGNING_KEY", "not-base64!"), "NSELF_AUDIT_SIGNING_KEY"},
		{append(good, "NSELF_AUDIT_SIGNING_KEY", "AAAA"), "NSELF_AUDIT_SIGNING_KEY"},
		{append(good, "NSELF_AUDIT_SIGNING_KEY_FILE", "/nonexistent"), "NSELF_AUDIT_SIGNING_KEY_FILE: cannot read"},
		{append(good, "NSELF_AUDIT_CHECKPOINT_EVENTS", "0"), "NSELF_AUDIT_CHECKPOINT_EVENTS"},
		{append(good, "NSELF_AUDIT_CHECKPOINT_SECONDS", "soon"), "NSELF_AUDIT_CHECKPOINT_SECONDS"},
		{append(good, "NSELF_AUDIT_QUERY_CONCURRENCY", "0"), "NSELF_AUDIT_QUERY_CONCURRENCY: must be a whole number"},
		{append(good, "NSELF_AUDIT_QUERY_CONCURRENCY", "many"), "NSELF_AUDIT_QUERY_CONCURRENCY: must be a whole number"},
		{[]string{"DATABASE_URL", dbURL, "PLUGIN_INTERNAL_SECRET_FILE", "/nonexistent"}, "PLUGIN_INTERNAL_SECRET_FILE: cannot read"},
	}
	for _, c := range bad {
		code, _, errOut := runCmd(nil, env(c.env...))
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 1 || len(lines) != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("env %v: exit %d, stderr %q; want exit 1 and one line containing %q", c.env, code, errOut, c.want)
		}
		if strings.Contains(errOut, testSecret) {
			t.Errorf("the secret leaked into the error: %q", errOut)
		}
	}

	// PLUGIN_SECRET is an alias, and *_FILE variables read the value from a file.
	file := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(file, []byte(testSecret+"\n"), 0o600)
	cfg, err := LoadConfig(env("DATABASE_URL", dbURL, "PLUGIN_INTERNAL_SECRET_FILE", file))
	if err != nil || cfg.Secret != testSecret {
		t.Fatalf("secret from file: %v", err)
	}
	cfg, err = LoadConfig(env("DATABASE_URL", dbURL, "PLUGIN_SECRET", testSecret))
	if err != nil || cfg.Secret != testSecret || cfg.Addr() != "127.0.0.1:3843" {
		t.Fatalf("PLUGIN_SECRET alias and defaults: %+v %v", cfg, err)
	}
	// The signing key from the environment, in either accepted length.
	seed := make([]byte, 32)
	for i := range seed {
		seed[i] = byte(i)
	}
	want := ed25519.NewKeyFromSeed(seed)
	for _, raw := range [][]byte{seed, want} {
		cfg, err := LoadConfig(env(append(good, "NSELF_AUDIT_SIGNING_KEY", base64.StdEncoding.EncodeToString(raw))...))
		if err != nil || !want.Equal(cfg.SigningKey) {
			t.Errorf("signing key of %d bytes: %v", len(raw), err)
		}
	}
	// Which store: PostgreSQL URLs, else the embedded file.
	for _, c := range []struct{ url, dataDir, path string }{
		{"", "", "data/nself-audit.db"},
		{"", "/var/lib/audit", "/var/lib/audit/nself-audit.db"},
		{"sqlite:/tmp/a.db", "", "/tmp/a.db"},
		{"sqlite:///tmp/b.db", "", "/tmp/b.db"},
		{"file:rel/c.db", "", "rel/c.db"},
		{dbURL, "", ""},
	} {
		cfg, err := LoadConfig(env("DATABASE_URL", c.url, "NSELF_AUDIT_DATA_DIR", c.dataDir))
		if c.path == "" { // PostgreSQL without a secret: fine to migrate, not to serve
			if err != nil || cfg.Embedded() || cfg.requireSecret() == nil {
				t.Errorf("%q without a secret: %v", c.url, err)
			}
			continue
		}
		if err != nil || cfg.SQLitePath != c.path || !cfg.Embedded() || cfg.Secret != "" {
			t.Errorf("DATABASE_URL=%q NSELF_AUDIT_DATA_DIR=%q: %+v, %v; want embedded at %s", c.url, c.dataDir, cfg, err, c.path)
		}
	}
}

// TestEmbeddedFirstRun: with no DATABASE_URL and no secret, the service
// starts on a SQLite file in the data folder, says so in its first log line,
// keeps a generated token in the folder (0600, folder 0700), reuses it on
// the next start, and lets a token from the environment win.
func TestEmbeddedFirstRun(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	p := runProcess(t, "NSELF_AUDIT_DATA_DIR="+dir)
	first := strings.SplitN(p.logs.String(), "\n", 2)[0]
	dbFile := filepath.Join(dir, "nself-audit.db")
	if !strings.Contains(first, "store=sqlite") || !strings.Contains(first, "file="+dbFile) {
		t.Errorf("first log line %q does not name the store and file %s", first, dbFile)
	}
	secretPath := filepath.Join(dir, "plugin-secret")
	raw, err := os.ReadFile(secretPath)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(string(raw))
	if len(secret) < 32 {
		t.Errorf("generated secret has %d characters, want 32 or more", len(secret))
	}
	keyPath := filepath.Join(dir, "signing-key")
	keyRaw, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, secretPath: 0o600, dbFile: 0o600, keyPath: 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	if strings.Contains(p.logs.String(), secret) {
		t.Error("the secret is printed in the output")
	}
	if !strings.Contains(p.logs.String(), `curl -H "Authorization: Bearer $(cat `+secretPath+`)"`) {
		t.Errorf("no ready-to-paste curl line:\n%s", p.logs.String())
	}
	h := map[string]string{"Authorization": "Bearer " + secret}
	if r := p.do("POST", "/api/v1/events", h, `{"actor_id":"u1","action":"first.run"}`); r.status != 201 {
		t.Fatalf("POST with the generated secret: %d %s", r.status, r.raw)
	}
	p.stop()

	// Second start: same secret, same key, same file, the event is still there.
	p2 := runProcess(t, "NSELF_AUDIT_DATA_DIR="+dir)
	if r := p2.get("/api/v1/events", h); len(r.events()) != 1 {
		t.Fatalf("after restart: %s", r.raw)
	}
	key, err := audit.ParseSigningKey(string(keyRaw))
	if err != nil {
		t.Fatal(err)
	}
	if pk := p2.get("/api/v1/public-key", h).body; pk["key_id"] != audit.NewSigner(key).KeyID() {
		t.Errorf("after restart the service signs with key %v, not the kept one", pk["key_id"])
	}
	// The first process checkpointed what it wrote before it stopped.
	if r := p2.do("GET", "/api/v1/checkpoints/latest", h, ""); r.status != 200 || r.body["seq"] != 1.0 {
		t.Errorf("no checkpoint of the first run's event: %d %s", r.status, r.raw)
	}
	p2.stop()

	// A secret in the environment wins over the file.
	p3 := runProcess(t, "NSELF_AUDIT_DATA_DIR="+dir, "PLUGIN_INTERNAL_SECRET="+testSecret)
	if r := p3.do("GET", "/api/v1/events", h, ""); r.status != 401 {
		t.Errorf("file secret still accepted with PLUGIN_INTERNAL_SECRET set: %d", r.status)
	}
	if r := p3.get("/api/v1/events", pluginHeaders("")); len(r.events()) != 1 {
		t.Errorf("environment secret: %s", r.raw)
	}
}

// TestEmbeddedTwoProcesses: two service processes on one SQLite file keep
// one unbroken chain per account.
func TestEmbeddedTwoProcesses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p1 := runProcess(t, "NSELF_AUDIT_DATA_DIR="+dir, "PLUGIN_INTERNAL_SECRET="+testSecret)
	p2 := runProcess(t, "NSELF_AUDIT_DATA_DIR="+dir, "PLUGIN_INTERNAL_SECRET="+testSecret)
	const clients, each = 6, 25
	postFromBoth(t, p1.service, p2.service, []string{"acme", "globex"}, clients, each)
	store, err := sqlite.Open(context.Background(), filepath.Join(dir, "nself-audit.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if counts := verifyChains(t, store, "acme", "globex"); counts["acme"]+counts["globex"] != clients*each {
		t.Fatalf("chains %v, want %d events", counts, clients*each)
	}
}

// TestKill9KeepsAcknowledged: under concurrent load, the process is killed
// with SIGKILL; after a restart on the same store, every event that got a
// 2xx is there, every chain verifies, and the clients whose requests got no
// answer retry them with the same idempotency key without making a
// duplicate: the store holds each key exactly once.
func TestKill9KeepsAcknowledged(t *testing.T) {
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			env := []string{"PLUGIN_INTERNAL_SECRET=" + testSecret}
			dbURL, dataDir := "", t.TempDir()
			if store == "postgres" {
				dbURL = pgtest.Default.NewDatabase(t)
				env = append(env, "DATABASE_URL="+dbURL)
			} else {
				env = append(env, "NSELF_AUDIT_DATA_DIR="+dataDir)
			}
			p := runProcess(t, env...)
			load := startWriteLoad(p.url, 8, "acme", "globex")
			time.Sleep(700 * time.Millisecond)
			p.cmd.Process.Kill()
			<-p.exited
			time.Sleep(200 * time.Millisecond)
			load.halt()
			acked := load.ackedCount()
			if acked == 0 {
				t.Fatal("no event was acknowledged before the kill")
			}

			p2 := runProcess(t, env...)
			created, replayed := load.retryUnacked(t, p2.url)
			resent := load.resendAcked(t, p2.url, 50)
			p2.stop()
			st := openStoreOf(t, store, dbURL, dataDir)
			stored := load.checkStored(t, st)
			t.Logf("%s: %d acknowledged before SIGKILL; %d unanswered retried after restart (%d stored by the retry, %d already stored: replayed); "+
				"%d acknowledged resent (replayed); %d events stored, each key once, chains verify", store, acked, created+replayed, created, replayed, resent, stored)
		})
	}
}

// TestSIGTERMUnderLoad: on SIGTERM the service stops accepting (a new
// connection is refused), finishes the requests in flight (one whose body
// is still arriving gets its 201), commits what is queued and exits 0
// well within its shutdown timeout. After a restart every acknowledged
// event is stored, and the clients' retries of what was refused or went
// unanswered make no duplicate.
func TestSIGTERMUnderLoad(t *testing.T) {
	for _, store := range stores {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			env := []string{"PLUGIN_INTERNAL_SECRET=" + testSecret}
			dbURL, dataDir := "", t.TempDir()
			if store == "postgres" {
				dbURL = pgtestDatabase(t)
				env = append(env, "DATABASE_URL="+dbURL)
			} else {
				env = append(env, "NSELF_AUDIT_DATA_DIR="+dataDir)
			}
			p := runProcess(t, env...)
			load := startWriteLoad(p.url, 8, "acme", "globex")
			time.Sleep(500 * time.Millisecond)

			// A request in flight: headers and half of the body sent.
			addr := strings.TrimPrefix(p.url, "http://")
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			body := `{"actor_id":"slow","action":"slow.inflight"}`
			fmt.Fprintf(conn, "POST /api/v1/events HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nX-Source-Account-Id: acme\r\n"+
				"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", addr, testSecret, len(body), body[:10])
			time.Sleep(100 * time.Millisecond) // the server has read the headers

			start := time.Now()
			p.cmd.Process.Signal(syscall.SIGTERM)
			// Stop accepting: new connections are refused while the
			// request in flight still holds the process.
			refused := false
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					refused = true
					break
				}
				c.Close()
			}
			if !refused {
				t.Error("new connections still accepted 3 s after SIGTERM")
			}
			time.Sleep(500 * time.Millisecond) // the request in flight holds the process
			select {
			case <-p.exited:
				t.Fatalf("exited with a request in flight\n%s", p.logs.String())
			default:
			}
			// Finish the request: it is answered, not dropped.
			fmt.Fprint(conn, body[10:])
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("the request in flight got no answer: %v", err)
			}
			var slow struct{ ID string }
			json.NewDecoder(res.Body).Decode(&slow)
			res.Body.Close()
			if res.StatusCode != 201 || slow.ID == "" {
				t.Fatalf("the request in flight: %d, want 201", res.StatusCode)
			}

			<-p.exited
			elapsed := time.Since(start)
			load.halt()
			if code := p.cmd.ProcessState.ExitCode(); code != 0 {
				t.Fatalf("exit code %d after SIGTERM\n%s", code, p.logs.String())
			}
			if elapsed > shutdownTimeout {
				t.Fatalf("shutdown took %v, longer than its %v timeout", elapsed, shutdownTimeout)
			}
			acked := load.ackedCount()
			if acked == 0 {
				t.Fatal("nothing was acknowledged")
			}

			p2 := runProcess(t, env...)
			if r := p2.do("GET", "/api/v1/events/"+slow.ID, pluginHeaders("acme"), ""); r.status != 200 {
				t.Errorf("the event of the request in flight is not stored: %d", r.status)
			}
			created, replayed := load.retryUnacked(t, p2.url)
			p2.stop()
			st := openStoreOf(t, store, dbURL, dataDir)
			stored := load.checkStored(t, st)
			t.Logf("%s: %d acknowledged under load, the request in flight answered 201, shutdown took %v (exit 0); "+
				"%d retried after restart (%d stored, %d replayed); %d load events stored, each key once",
				store, acked, elapsed.Round(time.Millisecond), created+replayed, created, replayed, stored)
		})
	}
}

// postFromBoth posts clients×each events concurrently, clients alternating
// between the two services and events between the accounts, and fails the
// test on any answer but 201.
func postFromBoth(t *testing.T, s1, s2 *service, accounts []string, clients, each int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan string, clients*each)
	for c := 0; c < clients; c++ {
		target := []*service{s1, s2}[c%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				account := accounts[(c+i)%len(accounts)]
				r := target.do("POST", "/api/v1/events", pluginHeaders(account), fmt.Sprintf(`{"actor_id":"c%d","action":"load.multi","metadata":{"i":%d}}`, c, i))
				if r.status != 201 {
					errs <- fmt.Sprintf("%d %s", r.status, r.raw)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// openStoreOf opens, for the test's own reading, the store that a process
// of the test wrote to: PostgreSQL at dbURL or the SQLite file in dataDir.
func openStoreOf(t *testing.T, store, dbURL, dataDir string) audit.Store {
	t.Helper()
	var st audit.Store
	var err error
	if store == "postgres" {
		st, err = postgres.Open(context.Background(), dbURL)
	} else {
		st, err = sqlite.Open(context.Background(), filepath.Join(dataDir, "nself-audit.db"))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
