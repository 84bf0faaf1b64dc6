package main

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/internal/pgtest"
)

// TestDatabaseOutageUnderLoad: PostgreSQL goes away under write load, as
// in a restart (pg_ctl stop -m fast), a crash (-m immediate) and a hang or
// network partition (every server process stopped with SIGSTOP: open
// connections stay open and nothing answers). While it is away, /ready
// answers 503 and writes answer 503 with Retry-After: at once when the
// server refuses connections, within a few seconds when it hangs (the
// database watch finds it down), never after the 30 s write timeout, never
// a 500. Within 5 s of the database's return the same service process is
// ready again. The clients retry what was refused with the same
// idempotency keys, and afterwards every acknowledged event is stored
// exactly once and every chain verifies.
func TestDatabaseOutageUnderLoad(t *testing.T) {
	for _, c := range []struct {
		mode    string
		outage  time.Duration // how long the database is away
		slowest time.Duration // the longest a write may wait for its 503
	}{
		{"fast", 3 * time.Second, time.Second},
		{"immediate", 3 * time.Second, time.Second},
		// Found down after two probes of up to 2 s each, a second apart.
		{"frozen", 8 * time.Second, 7 * time.Second},
	} {
		mode := c.mode
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			srv := pgtest.NewServer(t) // its own: halting the shared one would stop every test
			dbURL := srv.NewDatabase(t)
			p := runProcess(t, "DATABASE_URL="+dbURL, "PLUGIN_INTERNAL_SECRET="+testSecret)
			load := startWriteLoad(p.url, 8, "acme", "globex")
			defer func() {
				select {
				case <-load.stop:
				default:
					load.halt()
				}
			}()
			time.Sleep(500 * time.Millisecond)
			if load.ackedCount() == 0 {
				t.Fatal("nothing acknowledged before the outage")
			}

			away, back := func() error { return srv.Halt(mode) }, srv.Resume
			if mode == "frozen" {
				away, back = srv.Freeze, srv.Thaw
			}
			if err := away(); err != nil {
				t.Fatal(err)
			}
			// While the database is down, /ready says so, fast.
			probe := &http.Client{Timeout: 10 * time.Second}
			ready := func() (int, string, time.Duration) {
				start := time.Now()
				res, err := probe.Get(p.url + "/ready")
				if err != nil {
					t.Fatalf("/ready: %v", err)
				}
				res.Body.Close()
				return res.StatusCode, res.Header.Get("Retry-After"), time.Since(start)
			}
			probes := 0
			var slowestProbe time.Duration
			for down := time.Now(); time.Since(down) < c.outage; probes++ {
				status, retryAfter, took := ready()
				slowestProbe = max(slowestProbe, took)
				if status != 503 || retryAfter == "" {
					t.Errorf("/ready with the database down: %d (Retry-After %q), want 503 with Retry-After", status, retryAfter)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if slowestProbe > 3*time.Second {
				t.Errorf("/ready took %v with the database down", slowestProbe)
			}
			ackedDown := load.ackedCount()

			if err := back(); err != nil {
				t.Fatal(err)
			}
			returned := time.Now()
			for {
				if status, _, _ := ready(); status == 200 {
					break
				}
				if time.Since(returned) > 5*time.Second {
					t.Fatalf("not ready 5 s after the database returned:\n%s", p.logs.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			recovered := time.Since(returned)
			// Writes are acknowledged again.
			for deadline := time.Now().Add(5 * time.Second); load.ackedCount() < ackedDown+100; {
				if time.Now().After(deadline) {
					t.Fatalf("writes not acknowledged again 5 s after ready: %d since the outage", load.ackedCount()-ackedDown)
				}
				time.Sleep(50 * time.Millisecond)
			}
			load.halt()

			load.mu.Lock()
			refused, noAnswer, slowest503, replays := load.statuses[503], load.noAnswer, load.slowest503, load.statuses[200]
			load.mu.Unlock()
			if refused < 8 {
				t.Errorf("%d writes refused with 503 while the database was away; want at least one per client", refused)
			}
			if noAnswer > 0 {
				t.Errorf("%d writes got no answer; the service stayed up and must answer each", noAnswer)
			}
			if slowest503 > c.slowest {
				t.Errorf("the slowest 503 took %v, want %v at most: a quick refusal, not a wait", slowest503, c.slowest)
			}
			created, replayed := load.retryUnacked(t, p.url)
			st := openStoreOf(t, "postgres", dbURL, "")
			stored := load.checkStored(t, st)
			t.Logf("%s: %d /ready probes while down (503, slowest %v); %d writes refused with 503 (slowest %v), 0 unanswered; "+
				"ready %v after the database returned; %d retries answered 200 (stored after their 503: replayed, not duplicated); "+
				"%d left to retry after the load (%d stored, %d replayed); %d events stored, each key once, chains verify",
				mode, probes, slowestProbe.Round(time.Millisecond), refused, slowest503.Round(time.Millisecond),
				recovered.Round(time.Millisecond), replays, created+replayed, created, replayed, stored)
		})
	}
}

// TestSIGTERMWithStuckClient: a client that never finishes sending its
// request cannot hold a graceful stop past the shutdown timeout. The
// requests in flight get the timeout less the writer's reserve; what is
// still open then is cut (the client gets no answer), what is queued is
// committed, and the process exits 1, saying so. Every acknowledged event
// is stored.
func TestSIGTERMWithStuckClient(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	env := []string{"PLUGIN_INTERNAL_SECRET=" + testSecret, "NSELF_AUDIT_DATA_DIR=" + dataDir}
	p := runProcess(t, env...)
	load := startWriteLoad(p.url, 4, "acme")
	addr := strings.TrimPrefix(p.url, "http://")
	stuck, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	fmt.Fprintf(stuck, "POST /api/v1/events HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n{\"actor", addr, testSecret)
	time.Sleep(300 * time.Millisecond)

	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.exited
	elapsed := time.Since(start)
	load.halt()
	if elapsed < shutdownTimeout-commitReserve-time.Second || elapsed > shutdownTimeout {
		t.Errorf("stopped after %v; want the requests' share of the timeout, %v, and at most %v", elapsed, shutdownTimeout-commitReserve, shutdownTimeout)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.logs.String(), "requests still in flight after 15s were cut") {
		t.Errorf("exit code %d, want 1 with the cut logged:\n%s", code, p.logs.String())
	}
	stuck.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := stuck.Read(make([]byte, 512)); n != 0 || err == nil {
		t.Errorf("the stuck client got %d bytes, %v; want its connection closed without an answer", n, err)
	}

	p2 := runProcess(t, env...)
	created, replayed := load.retryUnacked(t, p2.url)
	p2.stop()
	st := openStoreOf(t, "sqlite", "", dataDir)
	stored := load.checkStored(t, st)
	t.Logf("stop with a stuck client: %v, exit 1, the stuck request cut; %d retried (%d stored, %d replayed); %d events stored, each key once",
		elapsed.Round(time.Millisecond), created+replayed, created, replayed, stored)
}
