package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/internal/pgtest"
)

// soakConfig is one soak run. The suite runs a short form; scripts/soak.sh
// runs the long one through the NSELF_AUDIT_SOAK_* variables.
type soakConfig struct {
	duration time.Duration // NSELF_AUDIT_SOAK_DURATION, default 15s
	rate     int           // requests per second, NSELF_AUDIT_SOAK_RATE, default 50
	store    string        // NSELF_AUDIT_SOAK_STORE: postgres (default) or sqlite
	sample   time.Duration // time between samples: duration/24, at least 1 s
}

func soakConfigFromEnv(t *testing.T) soakConfig {
	c := soakConfig{duration: 15 * time.Second, rate: 50, store: "postgres"}
	if v := os.Getenv("NSELF_AUDIT_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Second {
			t.Fatalf("NSELF_AUDIT_SOAK_DURATION: want a duration of 10s or more, got %q", v)
		}
		c.duration = d
	}
	if v := os.Getenv("NSELF_AUDIT_SOAK_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			t.Fatalf("NSELF_AUDIT_SOAK_RATE: want requests per second from 1 to 100000, got %q", v)
		}
		c.rate = n
	}
	if v := os.Getenv("NSELF_AUDIT_SOAK_STORE"); v != "" {
		if v != "postgres" && v != "sqlite" {
			t.Fatalf("NSELF_AUDIT_SOAK_STORE: want postgres or sqlite, got %q", v)
		}
		c.store = v
	}
	c.sample = max(c.duration/24, time.Second)
	return c
}

// soakSample is the service process's state at one moment.
type soakSample struct {
	at         time.Duration
	rssKiB     int64 // VmRSS from /proc/PID/status
	heapBytes  int64 // nself_audit_go_memstats_heap_inuse_bytes
	goroutines int64 // nself_audit_go_goroutines
	fds        int64 // entries of /proc/PID/fd: files, sockets of clients and of the database pool
	dbConns    int64 // nself_audit_db_pool_connections (postgres)
	dbMax      int64 // nself_audit_db_pool_max_connections
}

// TestSoak runs the real binary under a steady mix of requests (single
// and batch writes, list pages with cursors, stats, chain verification,
// some on fresh connections) at a fixed rate, samples its resident memory,
// heap, goroutines, open descriptors and database connections, and checks
// that they are flat at the end: the last quarter's peak within 10% (and a
// small absolute slack) of the second quarter's (database connections
// within the pool's limit), and, once the load stops
// and the clients close their connections, goroutines and descriptors back
// to where they started. It also checks the load was held and that every
// acknowledged event is stored in chains that verify. The short form runs
// in the suite; `bash scripts/soak.sh` runs minutes of it.
func TestSoak(t *testing.T) {
	t.Parallel()
	cfg := soakConfigFromEnv(t)
	env := []string{"PLUGIN_INTERNAL_SECRET=" + testSecret, "LOG_LEVEL=warn"}
	if cfg.store == "postgres" {
		env = append(env, "DATABASE_URL="+pgtest.Default.NewDatabase(t))
	} else {
		env = append(env, "NSELF_AUDIT_DATA_DIR="+t.TempDir())
	}
	p := runProcess(t, env...)
	pid := p.cmd.Process.Pid
	metricsClient := &http.Client{Timeout: 10 * time.Second}
	take := func(at time.Duration) soakSample {
		s := soakSample{at: at}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
					s.rssKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				}
			}
		}
		if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			s.fds = int64(len(fds))
		}
		req, _ := http.NewRequest("GET", p.url+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+testSecret)
		res, err := metricsClient.Do(req)
		if err != nil {
			t.Errorf("GET /metrics: %v", err)
			return s
		}
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			name, value, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue
			}
			n, _ := strconv.ParseFloat(value, 64)
			switch name {
			case "nself_audit_go_goroutines":
				s.goroutines = int64(n)
			case "nself_audit_go_memstats_heap_inuse_bytes":
				s.heapBytes = int64(n)
			case "nself_audit_db_pool_connections":
				s.dbConns = int64(n)
			case "nself_audit_db_pool_max_connections":
				s.dbMax = int64(n)
			}
		}
		return s
	}
	start := take(0)

	// The load: one request per tick, handed to a pool of clients. A tick
	// that finds every client busy is missed: the rate was not held.
	const clients = 32
	transport := &http.Transport{MaxIdleConnsPerHost: clients, IdleConnTimeout: time.Minute}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	accounts := []string{"acct-0", "acct-1", "acct-2", "acct-3"}
	var (
		sent, missed, failed, written atomic.Int64
		mu                            sync.Mutex
		latency                       = map[string][]time.Duration{}
		failures                      []string
	)
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 42))
			for i := range work {
				kind, req, events := soakRequest(p.url, accounts[i%len(accounts)], i, rnd)
				req.Header.Set("Authorization", "Bearer "+testSecret)
				req.Header.Set("X-Source-Account-Id", accounts[i%len(accounts)])
				req.Close = i%20 == 7 // one request in twenty on a fresh connection
				t0 := time.Now()
				res, err := client.Do(req)
				took := time.Since(t0)
				status := 0
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					status = res.StatusCode
				}
				mu.Lock()
				latency[kind] = append(latency[kind], took)
				if status/100 != 2 {
					failed.Add(1)
					if len(failures) < 10 {
						failures = append(failures, fmt.Sprintf("%s: %d %v", kind, status, err))
					}
				} else {
					written.Add(int64(events))
				}
				mu.Unlock()
			}
		}()
	}

	samples := []soakSample{start}
	t.Logf("soak: %s store, %d requests/s for %v, %d clients, a sample every %v", cfg.store, cfg.rate, cfg.duration, clients, cfg.sample)
	t.Logf("%8s %10s %10s %11s %5s %8s %9s", "time", "rss_MiB", "heap_MiB", "goroutines", "fds", "db_conns", "requests")
	logSample := func(s soakSample) {
		t.Logf("%8v %10.1f %10.1f %11d %5d %8d %9d", s.at.Round(time.Second), float64(s.rssKiB)/1024, float64(s.heapBytes)/(1<<20),
			s.goroutines, s.fds, s.dbConns, sent.Load())
	}
	logSample(start)
	began := time.Now()
	// Samples are taken aside, so that a slow /metrics never delays the load.
	stopSampling, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(cfg.sample)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				s := take(time.Since(began))
				samples = append(samples, s)
				logSample(s)
			}
		}
	}()
	// The requests due by now are sent on every tick (a late tick sends
	// what it owes); one that finds every client busy is missed.
	tick := time.NewTicker(5 * time.Millisecond)
	for issued := int64(0); time.Since(began) < cfg.duration; <-tick.C {
		for due := int64(time.Since(began).Seconds() * float64(cfg.rate)); issued < due; issued++ {
			select {
			case work <- int(issued):
				sent.Add(1)
			default:
				missed.Add(1)
			}
		}
	}
	tick.Stop()
	elapsed := time.Since(began)
	close(stopSampling)
	<-sampled
	close(work)
	wg.Wait()
	// Rest: clients close their connections; the service lets go of what
	// the load held.
	transport.CloseIdleConnections()
	time.Sleep(2 * time.Second)
	rest := take(time.Since(began))
	logSample(rest)

	// Verdict.
	n := len(samples)
	if n < 8 {
		t.Fatalf("only %d samples", n)
	}
	warm, end := samples[n/4:n/2], samples[3*n/4:]
	peak := func(ss []soakSample, f func(soakSample) int64) int64 {
		var m int64
		for _, s := range ss {
			m = max(m, f(s))
		}
		return m
	}
	type metric struct {
		name  string
		f     func(soakSample) int64
		slack int64 // allowed absolute growth on top of 10%
		unit  string
	}
	// A short run (the suite's, next to other tests on a busy machine) may
	// still be warming up, and its clients compete for the CPU.
	rssSlack, minHeld := int64(8<<10), 0.95 // KiB
	if cfg.duration < time.Minute {
		rssSlack, minHeld = 32<<10, 0.90
	}
	metrics := []metric{
		{"resident memory", func(s soakSample) int64 { return s.rssKiB }, rssSlack, "KiB"},
		{"goroutines", func(s soakSample) int64 { return s.goroutines }, 2 * clients, ""},
		{"open descriptors", func(s soakSample) int64 { return s.fds }, 2 * clients, ""},
		{"database connections", func(s soakSample) int64 { return s.dbConns }, 2, ""},
	}
	flat := true
	for _, m := range metrics {
		w, e := peak(warm, m.f), peak(end, m.f)
		ok := e <= w+w/10+m.slack
		if m.name == "database connections" {
			// The pool opens connections as concurrency asks, up to its
			// limit, and keeps them: bounded by the limit is flat.
			ok = e <= max(w+m.slack, start.dbMax)
		}
		flat = flat && ok
		verdict := "flat"
		if !ok {
			verdict = "GROWING"
			t.Errorf("%s grows: peak %d%s in the second quarter, %d%s in the last", m.name, w, m.unit, e, m.unit)
		}
		t.Logf("%-21s start %8d  second-quarter peak %8d  last-quarter peak %8d  at rest %8d %-4s %s",
			m.name, m.f(start), w, e, m.f(rest), m.unit, verdict)
	}
	if rest.goroutines > start.goroutines+5 {
		t.Errorf("goroutines at rest %d, at the start %d: not released", rest.goroutines, start.goroutines)
	}
	if rest.fds > start.fds+12 { // the pool keeps up to its idle database connections
		t.Errorf("open descriptors at rest %d, at the start %d: not released", rest.fds, start.fds)
	}

	// The load was held and answered.
	target := float64(cfg.rate) * elapsed.Seconds()
	held := float64(sent.Load()) / target
	if held < minHeld {
		t.Errorf("load not held: %d requests sent of %.0f due (%d ticks missed)", sent.Load(), target, missed.Load())
	}
	for _, f := range failures {
		t.Errorf("failed request: %s", f)
	}
	var kinds []string
	for k := range latency {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		ls := latency[k]
		slices.Sort(ls)
		t.Logf("%-7s %7d requests  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms", k, len(ls),
			ms(ls[len(ls)/2].Microseconds()), ms(ls[len(ls)*99/100].Microseconds()), ms(ls[len(ls)-1].Microseconds()))
	}

	// Every acknowledged event is stored, in chains that verify.
	var stored int64
	for _, a := range accounts {
		r := p.get("/api/v1/stats", pluginHeaders(a))
		total, _ := r.body["total"].(float64)
		stored += int64(total)
		if v := p.get("/api/v1/verify", pluginHeaders(a)); v.body["ok"] != true {
			t.Errorf("chain of %s: %s", a, v.raw)
		}
	}
	if stored != written.Load() {
		t.Errorf("%d events acknowledged, %d stored", written.Load(), stored)
	}
	t.Logf("load: %d requests in %v (%.1f/s of %d/s due, %.1f%% held, %d ticks missed), %d failed; %d events acknowledged, %d stored, chains verify; resources %s",
		sent.Load(), elapsed.Round(time.Second), float64(sent.Load())/elapsed.Seconds(), cfg.rate, 100*held, missed.Load(),
		failed.Load(), written.Load(), stored, map[bool]string{true: "flat", false: "NOT flat"}[flat])
}

// soakRequest is the i-th request of the mix, its kind and the number of
// events it writes: 70% single writes (a tenth with an idempotency key),
// 10% batches of 10, 14% list pages (newest, by actor, by action prefix
// and time), 5% stats and 1% chain verification.
func soakRequest(base, account string, i int, rnd *rand.Rand) (string, *http.Request, int) {
	actions := []string{"user.login", "user.logout", "doc.read", "doc.updated", "billing.invoice_paid", "file.uploaded"}
	event := func(j int) string { // j: the metadata's i
		return fmt.Sprintf(`{"actor_id":"user-%d","action":%q,"resource_type":"doc","resource_id":"r-%d","ip_address":"10.0.%d.%d","metadata":{"i":%d,"session":"s-%x"}}`,
			rnd.IntN(500), actions[rnd.IntN(len(actions))], rnd.IntN(10000), rnd.IntN(256), rnd.IntN(254)+1, j, rnd.Uint32())
	}
	post := func(path, body string) *http.Request {
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		return req
	}
	get := func(path string) *http.Request {
		req, _ := http.NewRequest("GET", base+path, nil)
		return req
	}
	switch r := i % 100; {
	case r < 70:
		req := post("/api/v1/events", event(i))
		if r%10 == 0 {
			req.Header.Set("Idempotency-Key", fmt.Sprintf("soak-%d", i))
		}
		return "single", req, 1
	case r < 80:
		evs := make([]string, 10)
		for j := range evs {
			evs[j] = event(j)
		}
		return "batch", post("/api/v1/events/batch", `{"events":[`+strings.Join(evs, ",")+`]}`), 10
	case r < 94:
		q := url.Values{"limit": {"50"}}
		switch r % 3 {
		case 0:
			q.Set("actor_id", fmt.Sprintf("user-%d", rnd.IntN(500)))
		case 1:
			q.Set("action", "user.*")
			q.Set("since", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))
		}
		return "list", get("/api/v1/events?" + q.Encode()), 0
	case r < 99:
		return "stats", get("/api/v1/stats"), 0
	default:
		return "verify", get("/api/v1/verify"), 0
	}
}
