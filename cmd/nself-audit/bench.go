package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchUsage is printed by `nself-audit bench -h` and on usage errors.
const benchUsage = `usage: nself-audit bench [--url URL] [--mode single|batch|query|stats] [--concurrency N]
                         [--duration D] [--accounts N] [--batch-size N] [--max-events N] [--json]

Loads a running nself-audit over HTTP with keep-alive clients and prints
one summary: requests, events, errors by status, events/s, requests/s and
latency percentiles (per query kind in query mode).

  single  POST /api/v1/events, one event per request
  batch   POST /api/v1/events/batch, --batch-size events per request
  query   GET /api/v1/events: newest 50, actor filter, action prefix plus
          time range, resource filter, and a deep cursor page (20
          next_cursor hops, followed once at start, then requested again)
  stats   GET /api/v1/stats over the whole account

Events are spread over the accounts acct-0 .. acct-(N-1). The plugin token
is read from $PLUGIN_INTERNAL_SECRET, or from --secret-file. The run ends
after --duration, or after --max-events events when that is set; requests
in flight then finish. Exit status: 0 when at least one request
succeeded, 1 when none did or the server could not be reached, 2 on a
usage error.
`

// benchConfig is what one bench run does.
type benchConfig struct {
	URL         string
	Secret      string
	Mode        string
	Concurrency int
	Duration    time.Duration
	Accounts    int
	BatchSize   int
	MaxEvents   int64
}

// benchVerb is `nself-audit bench`.
func benchVerb(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defURL := getenv("NSELF_AUDIT_URL")
	if defURL == "" {
		defURL = "http://127.0.0.1:3843"
	}
	cfg := benchConfig{}
	fs.StringVar(&cfg.URL, "url", defURL, "base URL of the running service (default $NSELF_AUDIT_URL)")
	secretFile := fs.String("secret-file", "", "file holding the plugin token (default: $PLUGIN_INTERNAL_SECRET)")
	fs.StringVar(&cfg.Mode, "mode", "single", "single, batch, query or stats")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "concurrent keep-alive clients")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to run")
	fs.IntVar(&cfg.Accounts, "accounts", 1, "accounts to spread the load over (acct-0 .. acct-N-1)")
	fs.IntVar(&cfg.BatchSize, "batch-size", 1000, "events per batch request (1 to 1000)")
	fs.Int64Var(&cfg.MaxEvents, "max-events", 0, "stop after this many events are sent (0: by duration only)")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object")
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage+"\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "nself-audit bench: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("unexpected argument %q", fs.Arg(0))
	case cfg.Mode != "single" && cfg.Mode != "batch" && cfg.Mode != "query" && cfg.Mode != "stats":
		return usageErr("--mode: must be single, batch, query or stats")
	case cfg.Concurrency < 1 || cfg.Concurrency > 10000:
		return usageErr("--concurrency: must be from 1 to 10000")
	case cfg.Duration <= 0:
		return usageErr("--duration: must be positive")
	case cfg.Accounts < 1 || cfg.Accounts > 100000:
		return usageErr("--accounts: must be from 1 to 100000")
	case cfg.BatchSize < 1 || cfg.BatchSize > 1000:
		return usageErr("--batch-size: must be from 1 to 1000")
	case cfg.MaxEvents < 0:
		return usageErr("--max-events: must be 0 or more")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErr("--url: must be an http:// or https:// URL, such as http://127.0.0.1:3843")
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	cfg.Secret = getenv("PLUGIN_INTERNAL_SECRET")
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return usageErr("--secret-file: %v", err)
		}
		cfg.Secret = strings.TrimSpace(string(b))
	}
	if cfg.Secret == "" {
		return usageErr("no plugin token: set PLUGIN_INTERNAL_SECRET or pass --secret-file")
	}

	sum, err := runBench(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "nself-audit bench: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(sum)
	} else {
		sum.print(stdout)
	}
	if sum.Requests-sum.Errors <= 0 {
		fmt.Fprintln(stderr, "nself-audit bench: no request succeeded")
		return 1
	}
	return 0
}

// The five query kinds of query mode, in the order they are reported.
const (
	qNewest   = "newest_50"
	qActor    = "actor"
	qAction   = "action_prefix_time_range"
	qResource = "resource"
	qDeep     = "deep_cursor_page"
)

var queryKinds = []string{qNewest, qActor, qAction, qResource, qDeep}

// deepPageHops is how many next_cursor links the deep-page query follows.
const deepPageHops = 20

// errorBackoff is the pause after a failed request, so that a dead server
// is not hammered in a tight loop.
const errorBackoff = 10 * time.Millisecond

// requestTimeout bounds one request.
const requestTimeout = 60 * time.Second

// benchSummary is what a run prints.
type benchSummary struct {
	Mode           string                   `json:"mode"`
	URL            string                   `json:"url"`
	Concurrency    int                      `json:"concurrency"`
	Accounts       int                      `json:"accounts"`
	BatchSize      int                      `json:"batch_size,omitempty"`
	Seconds        float64                  `json:"seconds"`
	Requests       int64                    `json:"requests"`
	Events         int64                    `json:"events"`
	Errors         int64                    `json:"errors"`
	ErrorsByStatus map[string]int64         `json:"errors_by_status"`
	EventsPerSec   float64                  `json:"events_per_s"`
	RequestsPerSec float64                  `json:"requests_per_s"`
	Latency        latencySummary           `json:"latency_ms"`
	Queries        map[string]*querySummary `json:"queries,omitempty"`
	Notes          []string                 `json:"notes,omitempty"`
}

// latencySummary is in milliseconds, over successful requests.
type latencySummary struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// querySummary is one query kind of query mode.
type querySummary struct {
	Requests int64          `json:"requests"`
	Errors   int64          `json:"errors"`
	Events   int64          `json:"events"`
	Latency  latencySummary `json:"latency_ms"`
}

func (s *benchSummary) print(w io.Writer) {
	fmt.Fprintf(w, "nself-audit bench: mode %s, %s, concurrency %d, accounts %d", s.Mode, s.URL, s.Concurrency, s.Accounts)
	if s.Mode == "batch" {
		fmt.Fprintf(w, ", batch size %d", s.BatchSize)
	}
	fmt.Fprintf(w, ", %.2f s\n", s.Seconds)
	fmt.Fprintf(w, "  requests  %d (%.1f/s)\n", s.Requests, s.RequestsPerSec)
	read := ""
	if s.Mode == "query" {
		read = " read"
	}
	fmt.Fprintf(w, "  events    %d%s (%.1f/s)\n", s.Events, read, s.EventsPerSec)
	fmt.Fprintf(w, "  errors    %d", s.Errors)
	if len(s.ErrorsByStatus) > 0 {
		keys := make([]string, 0, len(s.ErrorsByStatus))
		for k := range s.ErrorsByStatus {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s: %d", k, s.ErrorsByStatus[k])
		}
		fmt.Fprintf(w, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
	l := s.Latency
	fmt.Fprintf(w, "  latency   p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", l.P50, l.P90, l.P99, l.Max)
	if len(s.Queries) > 0 {
		fmt.Fprintf(w, "  %-26s %9s %7s %9s %9s %9s %9s\n", "query", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms")
		for _, k := range queryKinds {
			q := s.Queries[k]
			if q == nil {
				continue
			}
			fmt.Fprintf(w, "  %-26s %9d %7d %9.2f %9.2f %9.2f %9.2f\n", k, q.Requests, q.Errors,
				q.Latency.P50, q.Latency.P90, q.Latency.P99, q.Latency.Max)
		}
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}

// histogram records latencies in microseconds in log-linear buckets (under
// 1 % error), in constant memory, safe for concurrent use.
type histogram struct {
	counts [histBuckets]atomic.Int64
	max    atomic.Int64
	n      atomic.Int64
}

const (
	histSubBits = 7 // 128 sub-buckets per power of two
	histSub     = 1 << histSubBits
	histMaxUS   = 1 << 40 // ~12 days: everything above lands in the last bucket
	histBuckets = histSub + (40-histSubBits)*histSub
)

func histIndex(v int64) int {
	if v < histSub {
		return int(max(v, 0))
	}
	if v >= histMaxUS {
		return histBuckets - 1
	}
	shift := bits.Len64(uint64(v)) - histSubBits - 1
	return histSub + shift*histSub + int(v>>shift) - histSub
}

// histUpper is the largest value that falls into bucket i.
func histUpper(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	shift := (i - histSub) / histSub
	top := int64(i-histSub-shift*histSub+histSub) << shift
	return top + (int64(1) << shift) - 1
}

func (h *histogram) record(d time.Duration) {
	us := d.Microseconds()
	h.counts[histIndex(us)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

func (h *histogram) summary() latencySummary {
	n := h.n.Load()
	if n == 0 {
		return latencySummary{}
	}
	maxUS := h.max.Load()
	pct := func(p float64) float64 {
		rank := int64(math.Ceil(p * float64(n)))
		var seen int64
		for i := range h.counts {
			seen += h.counts[i].Load()
			if seen >= rank {
				return ms(min(histUpper(i), maxUS))
			}
		}
		return ms(maxUS)
	}
	return latencySummary{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: ms(maxUS)}
}

func ms(us int64) float64 { return math.Round(float64(us)/10) / 100 }

// bench is one run in progress.
type bench struct {
	cfg      benchConfig
	deadline time.Time

	reserved atomic.Int64 // events handed to requests, for --max-events
	requests atomic.Int64
	events   atomic.Int64
	errs     atomic.Int64
	latency  histogram

	errMu    sync.Mutex
	byStatus map[string]int64

	// query mode
	kinds map[string]*kindStats
	plans []*accountPlan
	notes []string
}

type kindStats struct {
	requests, errs, events atomic.Int64
	latency                histogram
}

// accountPlan is what query mode asks of one account.
type accountPlan struct {
	account      string
	deepCursor   string // "" when the account holds too few events
	since, until string // the middle half of the account's time span
}

// runBench runs cfg to its end and returns the summary. It returns an
// error, before any load, when the server cannot be reached or refuses the
// token.
func runBench(ctx context.Context, cfg benchConfig) (*benchSummary, error) {
	b := &bench{cfg: cfg, byStatus: map[string]int64{}}
	probe, err := b.conn()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.URL, err)
	}
	defer probe.close()
	// One request before the load: a wrong URL or token fails now, not as
	// a duration's worth of errors.
	if _, _, err := b.list(ctx, probe, b.account(0), url.Values{"limit": {"1"}}); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.URL, err)
	}
	if cfg.Mode == "query" {
		b.kinds = map[string]*kindStats{}
		for _, k := range queryKinds {
			b.kinds[k] = &kindStats{}
		}
		if err := b.planQueries(ctx, probe); err != nil {
			return nil, err
		}
	}

	begin := time.Now()
	b.deadline = begin.Add(cfg.Duration)
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.worker(ctx, w)
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin).Seconds()

	s := &benchSummary{
		Mode: cfg.Mode, URL: cfg.URL, Concurrency: cfg.Concurrency, Accounts: cfg.Accounts,
		Seconds:  math.Round(elapsed*1000) / 1000,
		Requests: b.requests.Load(), Events: b.events.Load(), Errors: b.errs.Load(),
		ErrorsByStatus: b.byStatus, Latency: b.latency.summary(), Notes: b.notes,
	}
	if cfg.Mode == "batch" {
		s.BatchSize = cfg.BatchSize
	}
	s.EventsPerSec = math.Round(float64(s.Events)/elapsed*10) / 10
	s.RequestsPerSec = math.Round(float64(s.Requests)/elapsed*10) / 10
	if b.kinds != nil {
		s.Queries = map[string]*querySummary{}
		for k, ks := range b.kinds {
			s.Queries[k] = &querySummary{Requests: ks.requests.Load(), Errors: ks.errs.Load(),
				Events: ks.events.Load(), Latency: ks.latency.summary()}
		}
	}
	return s, nil
}

func (b *bench) account(i int) string { return "acct-" + strconv.Itoa(i) }

// conn returns a new connection to the server (dialled at its first
// request).
func (b *bench) conn() (*benchConn, error) { return newBenchConn(b.cfg.URL, b.cfg.Secret) }

// more reports whether a worker may start another request, and reserves
// the events it will send (n wanted; the answer may be fewer under
// --max-events).
func (b *bench) more(ctx context.Context, want int64) (int64, bool) {
	if ctx.Err() != nil || !time.Now().Before(b.deadline) {
		return 0, false
	}
	if b.cfg.MaxEvents <= 0 || want == 0 {
		return want, true
	}
	prev := b.reserved.Add(want) - want
	if prev >= b.cfg.MaxEvents {
		return 0, false
	}
	return min(want, b.cfg.MaxEvents-prev), true
}

func (b *bench) worker(ctx context.Context, w int) {
	rng := rand.New(rand.NewPCG(uint64(w)+1, uint64(time.Now().UnixNano())))
	gen := &eventGen{rng: rng, worker: w}
	c, err := b.conn()
	if err != nil {
		return // runBench's probe has checked the URL
	}
	defer c.close()
	var buf bytes.Buffer
	for i := 0; ; i++ {
		var ok bool
		switch b.cfg.Mode {
		case "single":
			if _, ok = b.more(ctx, 1); !ok {
				return
			}
			buf.Reset()
			gen.appendEvent(&buf)
			ok = b.post(ctx, c, "/api/v1/events", b.account(rng.IntN(b.cfg.Accounts)), buf.Bytes(), 1)
		case "batch":
			var n int64
			if n, ok = b.more(ctx, int64(b.cfg.BatchSize)); !ok {
				return
			}
			buf.Reset()
			buf.WriteString(`{"events":[`)
			for j := range n {
				if j > 0 {
					buf.WriteByte(',')
				}
				gen.appendEvent(&buf)
			}
			buf.WriteString("]}")
			ok = b.post(ctx, c, "/api/v1/events/batch", b.account(rng.IntN(b.cfg.Accounts)), buf.Bytes(), n)
		case "query":
			if _, ok = b.more(ctx, 0); !ok {
				return
			}
			ok = b.query(ctx, c, rng, queryKinds[(w+i)%len(queryKinds)])
		case "stats":
			if _, ok = b.more(ctx, 0); !ok {
				return
			}
			ok = b.stats(ctx, c, b.account(rng.IntN(b.cfg.Accounts)))
		}
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-time.After(errorBackoff):
			}
		}
	}
}

// failed counts an error: by HTTP status, or "transport" / "timeout".
func (b *bench) failed(status int, err error) {
	key := strconv.Itoa(status)
	if err != nil {
		key = "transport"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			key = "timeout"
		}
	}
	b.failedAs(key)
}

func (b *bench) failedAs(key string) {
	b.errs.Add(1)
	b.errMu.Lock()
	b.byStatus[key]++
	b.errMu.Unlock()
}

// post sends events and counts them when the answer is 201.
func (b *bench) post(ctx context.Context, c *benchConn, path, account string, body []byte, n int64) bool {
	t0 := time.Now()
	status, _, err := c.do(ctx, "POST", path, account, body)
	d := time.Since(t0)
	b.requests.Add(1)
	if err != nil || status != http.StatusCreated {
		if ctx.Err() != nil && err != nil {
			b.requests.Add(-1) // interrupted, not failed
			return false
		}
		b.failed(status, err)
		return false
	}
	b.events.Add(n)
	b.latency.record(d)
	return true
}

// listAnswer is the part of a list answer the bench reads.
type listAnswer struct {
	Events []struct {
		OccurredAt string `json:"occurred_at"`
	} `json:"events"`
	NextCursor *string `json:"next_cursor"`
}

// list is GET /api/v1/events?q for account, outside the measurements.
func (b *bench) list(ctx context.Context, c *benchConn, account string, q url.Values) (*listAnswer, int, error) {
	status, raw, err := c.do(ctx, "GET", "/api/v1/events?"+q.Encode(), account, nil)
	if err != nil {
		return nil, 0, err
	}
	if status != http.StatusOK {
		return nil, status, fmt.Errorf("GET /api/v1/events: %d %s", status, bytes.TrimSpace(raw[:min(len(raw), 300)]))
	}
	var a listAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, status, fmt.Errorf("GET /api/v1/events: %v", err)
	}
	return &a, status, nil
}

// planQueries follows next_cursor deepPageHops pages deep in each account
// and picks the time range of the action query: the middle half of the
// span between the account's oldest and newest events.
func (b *bench) planQueries(ctx context.Context, c *benchConn) error {
	short := 0
	for i := range b.cfg.Accounts {
		p := &accountPlan{account: b.account(i)}
		newest, _, err := b.list(ctx, c, p.account, url.Values{"limit": {"1"}})
		if err != nil {
			return err
		}
		oldest, _, err := b.list(ctx, c, p.account, url.Values{"limit": {"1"}, "sort": {"asc"}})
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		lo, hi := now.Add(-time.Hour), now
		if len(newest.Events) > 0 && len(oldest.Events) > 0 {
			t1, err1 := time.Parse(time.RFC3339Nano, oldest.Events[0].OccurredAt)
			t2, err2 := time.Parse(time.RFC3339Nano, newest.Events[0].OccurredAt)
			if err1 == nil && err2 == nil && t2.After(t1) {
				span := t2.Sub(t1)
				lo, hi = t1.Add(span/4), t1.Add(span*3/4)
			}
		}
		p.since, p.until = lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano)
		cursor := ""
		for hop := 0; hop < deepPageHops; hop++ {
			q := url.Values{"limit": {"50"}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			page, _, err := b.list(ctx, c, p.account, q)
			if err != nil {
				return err
			}
			if page.NextCursor == nil {
				break
			}
			cursor = *page.NextCursor
			if hop == deepPageHops-1 {
				p.deepCursor = cursor
			}
		}
		if p.deepCursor == "" {
			short++
			p.deepCursor = cursor // the deepest page there is ("" : the first)
		}
		b.plans = append(b.plans, p)
	}
	if short > 0 {
		b.notes = append(b.notes, fmt.Sprintf("%d of %d accounts hold fewer than %d events: their deep page is not %d pages deep",
			short, b.cfg.Accounts, (deepPageHops+1)*50, deepPageHops+1))
	}
	return nil
}

// query runs one query of kind and records it.
func (b *bench) query(ctx context.Context, c *benchConn, rng *rand.Rand, kind string) bool {
	p := b.plans[rng.IntN(len(b.plans))]
	q := url.Values{"limit": {"50"}}
	switch kind {
	case qActor:
		q.Set("actor_id", benchActor(rng.IntN(benchActors)))
	case qAction:
		q.Set("action", benchActionPrefixes[rng.IntN(len(benchActionPrefixes))]+".*")
		q.Set("since", p.since)
		q.Set("until", p.until)
	case qResource:
		r := rng.IntN(benchResources)
		q.Set("resource_type", benchResourceType(r))
		q.Set("resource_id", benchResourceID(r))
	case qDeep:
		if p.deepCursor != "" {
			q.Set("cursor", p.deepCursor)
		}
	}
	ks := b.kinds[kind]
	t0 := time.Now()
	status, raw, err := c.do(ctx, "GET", "/api/v1/events?"+q.Encode(), p.account, nil)
	d := time.Since(t0)
	if err != nil && ctx.Err() != nil {
		return false
	}
	b.requests.Add(1)
	ks.requests.Add(1)
	if err != nil || status != http.StatusOK {
		b.failed(status, err)
		ks.errs.Add(1)
		return false
	}
	count, ok := countEvents(raw)
	if !ok {
		b.failedAs("bad_body")
		ks.errs.Add(1)
		return false
	}
	n := int64(count)
	b.events.Add(n)
	ks.events.Add(n)
	b.latency.record(d)
	ks.latency.record(d)
	return true
}

// stats runs GET /api/v1/stats over the whole account.
func (b *bench) stats(ctx context.Context, c *benchConn, account string) bool {
	t0 := time.Now()
	status, _, err := c.do(ctx, "GET", "/api/v1/stats", account, nil)
	d := time.Since(t0)
	if err != nil && ctx.Err() != nil {
		return false
	}
	b.requests.Add(1)
	if err != nil || status != http.StatusOK {
		b.failed(status, err)
		return false
	}
	b.latency.record(d)
	return true
}

// The shape of generated events: 1,000 actors, 30 actions under 8
// prefixes, 10,000 resources of 6 types, small metadata.
const (
	benchActors    = 1000
	benchResources = 10000
)

var benchActions = []string{
	"user.login", "user.logout", "user.login_failed", "user.password_changed", "user.mfa_enabled",
	"user.created", "user.deleted", "doc.read", "doc.created", "doc.updated", "doc.deleted", "doc.shared",
	"doc.exported", "project.created", "project.archived", "project.member_added", "project.member_removed",
	"billing.invoice_paid", "billing.invoice_failed", "billing.plan_changed", "api_key.created",
	"api_key.revoked", "api_key.used", "file.uploaded", "file.downloaded", "file.deleted",
	"settings.updated", "settings.sso_configured", "admin.impersonation_started", "admin.role_granted",
}

var benchActionPrefixes = []string{"user", "doc", "project", "billing", "api_key", "file", "settings", "admin"}

var benchResourceTypes = []string{"doc", "project", "invoice", "api_key", "file", "user"}

func benchActor(i int) string        { return "user-" + strconv.Itoa(i) }
func benchResourceType(r int) string { return benchResourceTypes[r%len(benchResourceTypes)] }
func benchResourceID(r int) string   { return "res-" + strconv.Itoa(r) }

var benchAgents = []string{
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
	"nself-cli/0.9.4",
	"",
}

// eventGen writes realistic event bodies; one per worker (not shared).
type eventGen struct {
	rng    *rand.Rand
	worker int
	n      int64
}

// appendEvent writes one event as JSON. Every value is plain ASCII, so no
// escaping is needed.
func (g *eventGen) appendEvent(buf *bytes.Buffer) {
	r := g.rng
	g.n++
	action := benchActions[r.IntN(len(benchActions))]
	res := r.IntN(benchResources)
	b := buf.AvailableBuffer()
	b = append(b, `{"actor_id":"`...)
	b = append(b, benchActor(r.IntN(benchActors))...)
	actorType := "user"
	switch x := r.IntN(100); {
	case x < 5:
		actorType = "service"
	case x < 8:
		actorType = "api_key"
	}
	b = append(b, `","actor_type":"`...)
	b = append(b, actorType...)
	b = append(b, `","action":"`...)
	b = append(b, action...)
	b = append(b, `","resource_type":"`...)
	b = append(b, benchResourceType(res)...)
	b = append(b, `","resource_id":"`...)
	b = append(b, benchResourceID(res)...)
	outcome, severity := "success", "info"
	switch x := r.IntN(100); {
	case x < 1:
		outcome, severity = "denied", "warning"
	case x < 4:
		outcome, severity = "failure", "warning"
	case x < 5:
		severity = "error"
	}
	b = append(b, `","outcome":"`...)
	b = append(b, outcome...)
	b = append(b, `","severity":"`...)
	b = append(b, severity...)
	b = append(b, `","ip_address":"10.`...)
	b = strconv.AppendInt(b, int64(r.IntN(256)), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(r.IntN(256)), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(r.IntN(254)+1), 10)
	b = append(b, `","user_agent":"`...)
	b = append(b, benchAgents[r.IntN(len(benchAgents))]...)
	b = append(b, `","request_id":"req-`...)
	b = strconv.AppendInt(b, int64(g.worker), 36)
	b = append(b, '-')
	b = strconv.AppendInt(b, g.n, 36)
	b = append(b, `","source":"bench","metadata":{"session":"s-`...)
	b = strconv.AppendUint(b, r.Uint64()&0xffffffffff, 16)
	b = append(b, `","mfa":`...)
	b = strconv.AppendBool(b, r.IntN(3) != 0)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(r.IntN(3)+1), 10)
	b = append(b, `}}`...)
	buf.Write(b)
}

// countEvents counts the members of a list answer's "events" array, which
// the answer opens with, by scanning its bytes: decoding fifty events per
// query cost the generator more CPU than the server spent answering.
// TestCountEvents holds it to encoding/json. ok is false when raw does not
// open with an events array or ends inside it.
func countEvents(raw []byte) (n int, ok bool) {
	rest, found := bytes.CutPrefix(bytes.TrimLeft(raw, " \t\r\n"), []byte(`{"events":[`))
	if !found {
		return 0, false
	}
	depth, inString, escaped := 0, false, false
	for _, c := range rest {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth == 0 {
				n++
			}
			depth++
		case c == '}' || c == ']':
			if depth == 0 {
				return n, c == ']'
			}
			depth--
		case c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',':
		default:
			if depth == 0 {
				return 0, false // a scalar member: not an event
			}
		}
	}
	return 0, false
}
