package pgtest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	var n int
	err := connect(t, Default.URL).QueryRow(context.Background(),
		`SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n)
	if err != nil {
		t.Fatalf("query pg_database: %v", err)
	}
	return n == 1
}

func TestNewDatabase(t *testing.T) {
	if Default == nil {
		t.Fatal("Default is nil: Main did not set it")
	}
	ctx := context.Background()
	var nameA, nameB string

	t.Run("isolated", func(t *testing.T) {
		urlA := Default.NewDatabase(t)
		urlB := Default.NewDatabase(t)
		if urlA == urlB {
			t.Fatalf("NewDatabase returned the same URL twice: %s", urlA)
		}
		a, b := connect(t, urlA), connect(t, urlB)

		if err := a.QueryRow(ctx, `SELECT current_database()`).Scan(&nameA); err != nil {
			t.Fatalf("query A: %v", err)
		}
		if err := b.QueryRow(ctx, `SELECT current_database()`).Scan(&nameB); err != nil {
			t.Fatalf("query B: %v", err)
		}
		if nameA == nameB || nameA == "postgres" || nameB == "postgres" {
			t.Fatalf("databases not distinct fresh ones: %q, %q", nameA, nameB)
		}
		t.Logf("databases %s and %s", nameA, nameB)

		if _, err := a.Exec(ctx, `CREATE TABLE only_in_a (id int); INSERT INTO only_in_a VALUES (1)`); err != nil {
			t.Fatalf("create table in A: %v", err)
		}
		var inA, inB *string
		if err := a.QueryRow(ctx, `SELECT to_regclass('only_in_a')::text`).Scan(&inA); err != nil || inA == nil {
			t.Fatalf("table not visible in A: %v, %v", inA, err)
		}
		if err := b.QueryRow(ctx, `SELECT to_regclass('only_in_a')::text`).Scan(&inB); err != nil {
			t.Fatalf("query B: %v", err)
		}
		if inB != nil {
			t.Fatalf("table created in A is visible in B as %q", *inB)
		}
		if !databaseExists(t, nameA) || !databaseExists(t, nameB) {
			t.Fatalf("pg_database lacks %s or %s", nameA, nameB)
		}
		// Connections a and b stay open: the cleanup's DROP ... WITH (FORCE)
		// must cope (cleanups run last-registered first, so they close first
		// anyway; FORCE covers leaked connections).
	})
	if nameA == "" || nameB == "" {
		t.Fatal("subtest did not record database names")
	}
	for _, name := range []string{nameA, nameB} {
		if databaseExists(t, name) {
			t.Errorf("database %s still exists after the subtest's cleanup", name)
		}
	}
}

func TestDropForcesOpenConnections(t *testing.T) {
	var name string
	t.Run("leak", func(t *testing.T) {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, Default.NewDatabase(t)) // deliberately never closed
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	if databaseExists(t, name) {
		t.Errorf("database %s with an open connection was not dropped", name)
	}
}

func TestStartStop(t *testing.T) {
	if os.Getenv(EnvURL) != "" {
		t.Skipf("%s is set: Start reuses that server, so there is no cluster of ours to stop", EnvURL)
	}
	t0 := time.Now()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster start took %v (%s, port %d)", time.Since(t0).Round(time.Millisecond), s.binDir, s.port)
	defer s.Stop()

	if !strings.HasPrefix(s.root, "/tmp/") {
		t.Errorf("temp dir %s is not under /tmp", s.root)
	}
	for dir, want := range map[string]os.FileMode{s.root: 0o755, s.dataDir: 0o700} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %o, want %o", dir, got, want)
		}
	}
	if want := "postgres://postgres@127.0.0.1:" + strconv.Itoa(s.port) + "/postgres?sslmode=disable"; s.URL != want {
		t.Errorf("URL = %q, want %q", s.URL, want)
	}
	var one int
	if err := connect(t, s.URL).QueryRow(context.Background(), `SELECT 1`).Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: %v, %v", one, err)
	}
	pid := s.postmasterPID()
	if pid == 0 || !processRunning(pid) {
		t.Fatalf("no running postmaster found (pid %d)", pid)
	}

	t0 = time.Now()
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("cluster stop took %v", time.Since(t0).Round(time.Millisecond))
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := os.Stat(s.root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s still there after Stop (stat: %v)", s.root, err)
	}
	if processRunning(pid) {
		t.Errorf("postmaster %d still running after Stop", pid)
	}
}

func TestFindBinDir(t *testing.T) {
	noPgConfig := func(string) (string, error) { return "", errors.New("not found") }

	base := t.TempDir()
	for _, v := range []string{"9.6", "15", "16", "13"} {
		bin := filepath.Join(base, v, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o755)
		if v == "16" {
			mode = 0o644 // not executable: must be ignored
		}
		if err := os.WriteFile(filepath.Join(bin, "initdb"), nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	got, err := findBinDir(noPgConfig, filepath.Join(base, "*", "bin"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(base, "15", "bin"); got != want {
		t.Errorf("findBinDir = %s, want %s", got, want)
	}

	_, err = findBinDir(noPgConfig, filepath.Join(t.TempDir(), "*", "bin"))
	if err == nil {
		t.Fatal("findBinDir found binaries in an empty tree")
	}
	for _, want := range []string{"not found", "pg_config", "initdb", "apt-get install -y postgresql-15", EnvURL} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestUniqueName(t *testing.T) {
	seen := map[string]bool{}
	for _, tn := range []string{"TestX", "TestX", strings.Repeat("TestVeryLong/Sub-test ", 10)} {
		n := uniqueName(tn)
		if len(n) > 63 {
			t.Errorf("%q is longer than 63 bytes", n)
		}
		if seen[n] {
			t.Errorf("duplicate name %q", n)
		}
		seen[n] = true
		if strings.Trim(n, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("%q has characters outside [a-z0-9_]", n)
		}
	}
}

// TestHaltResume: a halted server refuses connections and keeps its data;
// resumed, it answers on the same URL with the data still there.
func TestHaltResume(t *testing.T) {
	s := NewServer(t)
	if s == Default || s.URL == Default.URL {
		t.Fatal("NewServer returned the shared server")
	}
	dbURL := s.NewDatabase(t)
	ctx := context.Background()
	conn := connect(t, dbURL)
	if _, err := conn.Exec(ctx, `CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"fast", "immediate"} {
		if err := s.Halt(mode); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if c, err := pgx.Connect(cctx, dbURL); err == nil {
			c.Close(ctx)
			cancel()
			t.Fatalf("halted (%s) server accepts connections", mode)
		}
		cancel()
		if err := s.Resume(); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := connect(t, dbURL).QueryRow(ctx, `SELECT n FROM kept`).Scan(&n); err != nil || n != 42 {
			t.Fatalf("after halt -m %s and resume: %d, %v", mode, n, err)
		}
	}
	if err := s.Halt("slow"); err == nil {
		t.Error("Halt accepted an unknown mode")
	}
}

// TestFreezeThaw: a frozen server keeps its connections open and answers
// nothing; thawed, it answers on the same connection.
func TestFreezeThaw(t *testing.T) {
	s := NewServer(t)
	conn := connect(t, s.NewDatabase(t))
	ctx := context.Background()
	if err := s.Freeze(); err != nil {
		t.Fatal(err)
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	err := conn.Ping(qctx)
	cancel()
	if err == nil {
		t.Fatal("a frozen server answered")
	}
	if err := s.Thaw(); err != nil {
		t.Fatal(err)
	}
	c2 := connect(t, s.URL)
	var one int
	if err := c2.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil || one != 1 {
		t.Fatalf("after thaw: %v", err)
	}
}
