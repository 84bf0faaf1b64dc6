// Package pgtest runs a throwaway, real PostgreSQL server for tests.
//
// Typical use in a package that needs a database:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		url := pgtest.Default.NewDatabase(t) // fresh, empty database; dropped at cleanup
//		...
//	}
//
// Start looks for the server binaries with `pg_config --bindir`, then in
// /usr/lib/postgresql/*/bin (highest version). When none are found it fails
// with an error that says what to install: tests never skip silently.
// Setting NSELF_AUDIT_TEST_DATABASE_URL to the superuser URL of a running
// server makes Start reuse that server instead (Stop then leaves it alone).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the environment variable that, when set, makes Start reuse an
// existing server (superuser URL) instead of starting a cluster.
const EnvURL = "NSELF_AUDIT_TEST_DATABASE_URL"

const (
	startAttempts = 3                // pg_ctl start attempts, each on a fresh port
	readyTimeout  = 30 * time.Second // wait for a pgx connection to succeed
	opTimeout     = 60 * time.Second // CREATE/DROP DATABASE
)

// installHint is appended to every "binaries not found" error.
const installHint = "install the PostgreSQL server: `apt-get update && apt-get install -y postgresql-15` " +
	"(Debian/Ubuntu; package `postgresql` if 15 is unavailable), or run `bash scripts/test.sh`, which installs it when run as root; " +
	"alternatively set " + EnvURL + " to the superuser URL of a running server"

// Server is a running throwaway PostgreSQL cluster.
type Server struct {
	// URL is the superuser URL of the database "postgres".
	URL string

	external bool   // reused from EnvURL: Stop leaves it alone
	binDir   string // folder of initdb, pg_ctl, postgres
	root     string // temp folder (mode 0755) holding dataDir; removed by Stop
	dataDir  string // cluster data dir (mode 0700, owned by the server user)
	port     int
	cred     *syscall.Credential // non-nil when we run the server binaries as another user
	watchdog *exec.Cmd           // removes the cluster if this process dies without Stop

	stopOnce sync.Once
	stopErr  error
}

// Default is the server started by Main.
var Default *Server

// Main is for TestMain: it starts the server, sets Default, runs m.Run, stops
// the server (also when m.Run panics, and on SIGINT/SIGTERM) and exits with
// the code of m.Run. A start error is printed and exits 1. The cleanup
// functions run last, whatever happened.
func Main(m *testing.M, cleanup ...func()) {
	os.Exit(run(m, cleanup))
}

func run(m *testing.M, cleanup []func()) (code int) {
	defer func() {
		for _, f := range cleanup {
			f()
		}
	}()
	s, err := Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	Default = s
	defer func() {
		if err := s.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	defer func() { signal.Stop(sigs); close(done) }()
	go func() {
		select {
		case sig := <-sigs:
			fmt.Fprintf(os.Stderr, "pgtest: got %v, stopping PostgreSQL\n", sig)
			if err := s.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			}
			if sig == syscall.SIGTERM {
				os.Exit(143)
			}
			os.Exit(130)
		case <-done:
		}
	}()

	return m.Run()
}

// Start starts a cluster, or reuses the server named by
// NSELF_AUDIT_TEST_DATABASE_URL when that is set (then Stop does nothing to it).
// It returns an error saying what is missing and how to install it when no
// server binaries are found.
func Start() (*Server, error) {
	if u := os.Getenv(EnvURL); u != "" {
		s := &Server{URL: u, external: true}
		if err := waitReady(u, readyTimeout); err != nil {
			return nil, fmt.Errorf("%s is set but the server does not accept connections: %w", EnvURL, err)
		}
		return s, nil
	}

	binDir, err := findBinDir(exec.LookPath, "/usr/lib/postgresql/*/bin")
	if err != nil {
		return nil, err
	}
	s := &Server{binDir: binDir}
	if err := s.start(); err != nil {
		if stopErr := s.Stop(); stopErr != nil {
			err = fmt.Errorf("%w (cleanup: %v)", err, stopErr)
		}
		return nil, err
	}
	return s, nil
}

// NewServer starts a cluster of the test's own, stopped and removed at
// cleanup: for tests that halt or restart their server, which must not be
// the shared Default. It starts one even when NSELF_AUDIT_TEST_DATABASE_URL
// is set, and fails the test when no server binaries are found.
func NewServer(t testing.TB) *Server {
	t.Helper()
	binDir, err := findBinDir(exec.LookPath, "/usr/lib/postgresql/*/bin")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{binDir: binDir}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Server) start() error {
	if os.Geteuid() == 0 {
		cred, err := postgresCredential()
		if err != nil {
			return err
		}
		s.cred = cred
	}

	// The parent must be traversable by the server user, the data dir private to it.
	root, err := os.MkdirTemp("/tmp", "nself-audit-pgtest-")
	if err != nil {
		return fmt.Errorf("pgtest: create temp dir: %w", err)
	}
	s.root = root
	if err := os.Chmod(root, 0o755); err != nil {
		return fmt.Errorf("pgtest: chmod %s: %w", root, err)
	}
	s.dataDir = filepath.Join(root, "data")
	s.startWatchdog()

	if err := s.initdb(); err != nil {
		return err
	}

	var errs []string
	for attempt := 1; attempt <= startAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("pgtest: pick a free port: %w", err)
		}
		s.port = port
		if err := s.pgCtlStart(); err != nil {
			errs = append(errs, fmt.Sprintf("attempt %d (port %d): %v", attempt, port, err))
			// pg_ctl may give up while a postmaster is still coming up: make sure it is gone.
			_, _ = s.pgCtl("stop", "-m", "immediate", "-w", "-t", "10")
			continue
		}
		s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
		if err := waitReady(s.URL, readyTimeout); err != nil {
			return fmt.Errorf("pgtest: server started on port %d but does not accept connections: %w\n%s", port, err, s.logTail())
		}
		return nil
	}
	return fmt.Errorf("pgtest: could not start PostgreSQL from %s after %d attempts:\n%s\n%s",
		s.binDir, startAttempts, strings.Join(errs, "\n"), s.logTail())
}

func (s *Server) initdb() error {
	var failures []string
	for _, locale := range []string{"C.UTF-8", "C"} { // C.UTF-8 may be missing: fall back to C
		if err := s.mkDataDir(); err != nil {
			return err
		}
		out, err := s.command(filepath.Join(s.binDir, "initdb"),
			"-D", s.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale="+locale,
			"--no-sync").CombinedOutput()
		if err == nil {
			return nil
		}
		failures = append(failures, fmt.Sprintf("--locale=%s: %v\n%s", locale, err, tail(string(out), 20)))
	}
	return fmt.Errorf("pgtest: initdb (%s) failed:\n%s", s.binDir, strings.Join(failures, "\n"))
}

// mkDataDir (re)creates an empty data dir owned by the server user.
func (s *Server) mkDataDir() error {
	if err := os.RemoveAll(s.dataDir); err != nil {
		return fmt.Errorf("pgtest: remove %s: %w", s.dataDir, err)
	}
	if err := os.Mkdir(s.dataDir, 0o700); err != nil {
		return fmt.Errorf("pgtest: create data dir: %w", err)
	}
	if s.cred != nil {
		if err := os.Chown(s.dataDir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: chown %s to postgres: %w", s.dataDir, err)
		}
	}
	return nil
}

func (s *Server) pgCtlStart() error {
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s "+
		"-c fsync=off -c max_connections=200 -c shared_buffers=128MB", s.port, s.dataDir)
	out, err := s.pgCtl("start", "-w", "-t", "60", "-l", s.logPath(), "-o", opts)
	if err != nil {
		return fmt.Errorf("pg_ctl start: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (s *Server) pgCtl(args ...string) ([]byte, error) {
	return s.command(filepath.Join(s.binDir, "pg_ctl"), append([]string{"-D", s.dataDir}, args...)...).CombinedOutput()
}

// command runs a server binary as the server user (postgres when we are root).
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.root // must be accessible to the server user
	cmd.Env = cleanEnv()
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
		// Later entries win: exec.Cmd keeps the last value of a duplicated key.
		cmd.Env = append(cmd.Env, "HOME="+s.root, "USER=postgres", "LOGNAME=postgres")
	}
	return cmd
}

// cleanEnv drops variables (PGDATA, PGPORT, ...) that would steer the
// PostgreSQL tools elsewhere.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startWatchdog starts a detached shell that, once this process has died
// without calling Stop (test panic, -timeout, SIGKILL), shuts the cluster
// down and removes its files. Stop kills it. Best effort: failure is ignored.
func (s *Server) startWatchdog() {
	const script = `
parent=$1 root=$2 data=$3
running() { kill -0 "$1" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
while running "$parent"; do sleep 1; done
if [ -f "$data/postmaster.pid" ]; then
	pid=$(head -n 1 "$data/postmaster.pid")
	if [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null; then
		i=0
		while running "$pid" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
		kill -KILL "$pid" 2>/dev/null
	fi
fi
rm -rf "$root"
`
	cmd := exec.Command("/bin/sh", "-c", script, "pgtest-watchdog", strconv.Itoa(os.Getpid()), s.root, s.dataDir)
	// Own session: not hit by a terminal's ^C meant for the tests; stdio is
	// /dev/null so `go test` does not wait for it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return
	}
	s.watchdog = cmd
}

// Stop stops the cluster (pg_ctl stop -m fast, then -m immediate if needed)
// and removes its data dir. It is idempotent, and does nothing to a server
// reused from NSELF_AUDIT_TEST_DATABASE_URL.
func (s *Server) Stop() error {
	if s == nil || s.external {
		return nil
	}
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Server) stop() error {
	var errs []error
	if pid := s.postmasterPID(); pid != 0 && processRunning(pid) {
		_ = s.Thaw() // a frozen server cannot shut down
		if out, err := s.pgCtl("stop", "-m", "fast", "-w", "-t", "30"); err != nil {
			if out2, err2 := s.pgCtl("stop", "-m", "immediate", "-w", "-t", "30"); err2 != nil {
				errs = append(errs, fmt.Errorf("pgtest: pg_ctl stop failed: -m fast: %v: %s; -m immediate: %v: %s",
					err, strings.TrimSpace(string(out)), err2, strings.TrimSpace(string(out2))))
			}
		}
		// pg_ctl -w returns once postmaster.pid is gone; the process may
		// still be exiting. Stop returns only when it is no longer running.
		if !waitStopped(pid, 10*time.Second) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			if !waitStopped(pid, 5*time.Second) {
				errs = append(errs, fmt.Errorf("pgtest: postmaster %d still running after SIGKILL", pid))
			}
		}
	}
	if s.watchdog != nil {
		_ = s.watchdog.Process.Kill()
		_ = s.watchdog.Wait()
		s.watchdog = nil
	}
	if s.root != "" {
		if err := os.RemoveAll(s.root); err != nil {
			errs = append(errs, fmt.Errorf("pgtest: remove %s: %w", s.root, err))
		}
	}
	return errors.Join(errs...)
}

// Halt stops the server as a database outage would, keeping its data:
// pg_ctl stop with mode "fast" (sessions are ended, as by an administrator's
// restart) or "immediate" (no shutdown checkpoint, as in a crash). Resume
// starts it again on the same port, so URLs given out stay valid. A server
// reused from NSELF_AUDIT_TEST_DATABASE_URL cannot be halted.
func (s *Server) Halt(mode string) error {
	if s.external {
		return fmt.Errorf("pgtest: cannot halt the server named by %s", EnvURL)
	}
	if mode != "fast" && mode != "immediate" {
		return fmt.Errorf("pgtest: halt mode %q: want fast or immediate", mode)
	}
	pid := s.postmasterPID()
	if out, err := s.pgCtl("stop", "-m", mode, "-w", "-t", "30"); err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop -m %s: %v: %s", mode, err, strings.TrimSpace(string(out)))
	}
	if pid != 0 && !waitStopped(pid, 10*time.Second) {
		return fmt.Errorf("pgtest: postmaster %d still running after pg_ctl stop", pid)
	}
	return nil
}

// Resume starts a halted server again on its port and waits until it
// accepts connections.
func (s *Server) Resume() error {
	if s.external {
		return fmt.Errorf("pgtest: cannot resume the server named by %s", EnvURL)
	}
	if err := s.pgCtlStart(); err != nil {
		return fmt.Errorf("pgtest: resume on port %d: %w\n%s", s.port, err, s.logTail())
	}
	return waitReady(s.URL, readyTimeout)
}

// Freeze stops every process of the server (SIGSTOP) as a hung host or a
// network partition would look to clients: connections stay open, new ones
// are accepted by the kernel, and nothing answers. Thaw lets it run again.
func (s *Server) Freeze() error { return s.signalAll(syscall.SIGSTOP) }

// Thaw undoes Freeze.
func (s *Server) Thaw() error { return s.signalAll(syscall.SIGCONT) }

// signalAll sends sig to the postmaster first (so that it forks nothing
// meanwhile), then to its children.
func (s *Server) signalAll(sig syscall.Signal) error {
	if s.external {
		return fmt.Errorf("pgtest: cannot signal the server named by %s", EnvURL)
	}
	pid := s.postmasterPID()
	if pid == 0 || !processRunning(pid) {
		return errors.New("pgtest: the server is not running")
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("pgtest: signal postmaster %d: %w", pid, err)
	}
	for _, child := range childrenOf(pid) {
		if err := syscall.Kill(child, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("pgtest: signal %d: %w", child, err)
		}
	}
	return nil
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
		rest := string(b)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		if f := strings.Fields(rest); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// postmasterPID reads the postmaster's pid from postmaster.pid (0 if none).
func (s *Server) postmasterPID() int {
	if s.dataDir == "" {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// processRunning reports whether pid is alive and not a zombie (an exited
// postmaster stays a zombie until init reaps it).
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if _, statErr := os.Stat("/proc/self/stat"); statErr != nil { // no procfs
			return syscall.Kill(pid, 0) == nil
		}
		return false
	}
	// Format: "pid (comm) state ..."; comm may contain spaces and parentheses.
	rest := string(b)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	fields := strings.Fields(rest)
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

func waitStopped(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for processRunning(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

var dbSeq atomic.Uint64

// NewDatabase creates a fresh database with a unique name and returns its
// superuser URL. It registers t.Cleanup to drop the database (WITH (FORCE)).
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	if s == nil {
		t.Fatal("pgtest: NewDatabase on a nil *Server (is pgtest.Main called from TestMain?)")
	}
	name := uniqueName(t.Name())
	dbURL, err := withDatabase(s.URL, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := s.exec(`CREATE DATABASE ` + pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := s.exec(`DROP DATABASE IF EXISTS ` + pgx.Identifier{name}.Sanitize() + ` WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return dbURL
}

// exec runs one statement on the server's "postgres" database.
func (s *Server) exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

var nonIdent = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueName is "t_<test name>_<seq>_<random>", at most 63 bytes.
func uniqueName(testName string) string {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	suffix := fmt.Sprintf("_%d_%s", dbSeq.Add(1), hex.EncodeToString(rnd[:]))
	base := strings.Trim(nonIdent.ReplaceAllString(strings.ToLower(testName), "_"), "_")
	if limit := 63 - len("t_") - len(suffix); len(base) > limit {
		base = base[:limit]
	}
	return "t_" + base + suffix
}

// withDatabase returns rawURL with its database replaced by name.
func withDatabase(rawURL, name string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("parse server URL: %w", err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

// waitReady retries a pgx connection until it succeeds or timeout passes.
func waitReady(connURL string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, connURL)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(context.Background())
		}
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func postgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, but there is no `postgres` OS user to run the server as "+
			"(PostgreSQL refuses to run as root): %v; %s (the package creates the user)", err, installHint)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgtest: bad uid/gid %q/%q for user postgres", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// findBinDir returns the folder holding initdb, pg_ctl and postgres: the one
// named by `pg_config --bindir` if it has initdb, else the highest version
// matching pattern (a glob like /usr/lib/postgresql/*/bin).
func findBinDir(lookPath func(string) (string, error), pattern string) (string, error) {
	var tried []string
	if pgConfig, err := lookPath("pg_config"); err != nil {
		tried = append(tried, "`pg_config` is not on PATH")
	} else if out, err := exec.Command(pgConfig, "--bindir").Output(); err != nil {
		tried = append(tried, fmt.Sprintf("`%s --bindir` failed: %v", pgConfig, err))
	} else {
		dir := strings.TrimSpace(string(out))
		if isExecutable(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
		tried = append(tried, fmt.Sprintf("`pg_config --bindir` names %s, which has no initdb (client-only install?)", dir))
	}

	matches, _ := filepath.Glob(filepath.Join(pattern, "initdb"))
	var dirs []string
	for _, m := range matches {
		if isExecutable(m) {
			dirs = append(dirs, filepath.Dir(m))
		}
	}
	if len(dirs) == 0 {
		tried = append(tried, fmt.Sprintf("no %s", filepath.Join(pattern, "initdb")))
		return "", fmt.Errorf("pgtest: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: %s; %s",
			strings.Join(tried, "; "), installHint)
	}
	// .../<version>/bin: highest version wins (numeric, so 15 > 9.6).
	sort.Slice(dirs, func(i, j int) bool {
		return versionLess(filepath.Base(filepath.Dir(dirs[j])), filepath.Base(filepath.Dir(dirs[i])))
	})
	return dirs[0], nil
}

func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		ai, errA := strconv.Atoi(as[i])
		bi, errB := strconv.Atoi(bs[i])
		switch {
		case errA == nil && errB == nil && ai != bi:
			return ai < bi
		case (errA != nil || errB != nil) && as[i] != bs[i]:
			return as[i] < bs[i]
		}
	}
	return len(as) < len(bs)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func (s *Server) logPath() string { return filepath.Join(s.dataDir, "log") }

func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	return "server log (tail):\n" + tail(string(b), 30)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
