package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/internal/pgtest"
)

// buildBinary builds the real binary once per test run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "nself-audit-bin-")
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

// startProcess runs the binary as a separate process on dbURL and waits
// until it is ready.
func startProcess(t *testing.T, dbURL string) *service {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "PLUGIN_INTERNAL_SECRET="+testSecret, "PORT="+strconv.Itoa(port))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; {
		res, err := http.Get(base + "/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process not ready after 30 s: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &service{t: t, url: base, dbURL: dbURL}
}

// TestTwoProcessesOneChain: two service processes on one database, both
// written to concurrently, keep one unbroken chain per account.
func TestTwoProcessesOneChain(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.Default.NewDatabase(t)
	p1 := startProcess(t, dbURL)
	p2 := startProcess(t, dbURL)
	const clients, each = 8, 30
	var wg sync.WaitGroup
	errs := make(chan string, clients*each)
	for c := 0; c < clients; c++ {
		target := []*service{p1, p2}[c%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				account := []string{"acme", "globex", "initech"}[(c+i)%3]
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
	counts := verifyChains(t, dbURL)
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
	runCmd := func(args []string, getenv func(string) string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), args, getenv, &out, &errOut)
		return code, out.String(), errOut.String()
	}

	code, out, errOut := runCmd([]string{"migrate"}, env(good...))
	if code != 0 || !strings.Contains(out, "applied 1 now") {
		t.Fatalf("first migrate: %d %q %q", code, out, errOut)
	}
	code, out, _ = runCmd([]string{"migrate"}, env(good...))
	if code != 0 || !strings.Contains(out, "applied 0 now, 1 of 1") {
		t.Fatalf("second migrate: %d %q", code, out)
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
		{[]string{"PLUGIN_INTERNAL_SECRET", testSecret}, "DATABASE_URL: required"},
		{[]string{"DATABASE_URL", "mysql://x", "PLUGIN_INTERNAL_SECRET", testSecret}, "DATABASE_URL: must start with"},
		{[]string{"DATABASE_URL", dbURL}, "PLUGIN_INTERNAL_SECRET: required"},
		{[]string{"DATABASE_URL", dbURL, "PLUGIN_SECRET", "short"}, "PLUGIN_SECRET: must be at least 16"},
		{append(good, "PORT", "http"), "PORT: must be a number"},
		{append(good, "PORT", "70000"), "PORT"},
		{append(good, "HOST", "example.com"), "HOST: must be an IP address"},
		{append(good, "HASURA_GRAPHQL_JWT_SECRET", `{"type":"HS256"`), "HASURA_GRAPHQL_JWT_SECRET"},
		{append(good, "HASURA_GRAPHQL_JWT_SECRET", `{"type":"XX999","key":"k"}`), "HASURA_GRAPHQL_JWT_SECRET"},
		{append(good, "LOG_LEVEL", "loud"), "LOG_LEVEL"},
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
}
