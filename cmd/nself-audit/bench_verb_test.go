package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"testing"
)

// runBenchVerb runs `nself-audit bench --json args...` against s and
// returns the decoded summary. No timing is asserted: only what was sent,
// what failed and what was stored.
func runBenchVerb(t *testing.T, s *service, args ...string) *benchSummary {
	t.Helper()
	getenv := func(k string) string {
		if k == "PLUGIN_INTERNAL_SECRET" {
			return testSecret
		}
		return ""
	}
	var stdout, stderr bytes.Buffer
	args = append([]string{"bench", "--url", s.url, "--json"}, args...)
	if code := run(context.Background(), args, getenv, &stdout, &stderr); code != 0 {
		t.Fatalf("%v: exit %d\nstdout: %s\nstderr: %s", args, code, stdout.String(), stderr.String())
	}
	var sum benchSummary
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
		t.Fatalf("%v: summary is not JSON: %v\n%s", args, err, stdout.String())
	}
	if sum.Errors != 0 || len(sum.ErrorsByStatus) != 0 {
		t.Fatalf("%v: %d errors %v\n%s", args, sum.Errors, sum.ErrorsByStatus, stdout.String())
	}
	if sum.Requests <= 0 {
		t.Fatalf("%v: no requests\n%s", args, stdout.String())
	}
	return &sum
}

// countOf is GET /api/v1/stats total of account.
func countOf(s *service, account string) int64 {
	n, _ := s.get("/api/v1/stats", pluginHeaders(account)).body["total"].(float64)
	return int64(n)
}

// storedTotal is the sum of GET /api/v1/stats totals over acct-0..n-1.
func storedTotal(s *service, accounts int) int64 {
	var total int64
	for i := range accounts {
		total += countOf(s, "acct-"+strconv.Itoa(i))
	}
	return total
}

func TestBenchVerb(t *testing.T) {
	s := start(t, "sqlite")
	const accounts = 2
	want := int64(0)

	single := runBenchVerb(t, s, "--mode", "single", "--concurrency", "4", "--duration", "1s",
		"--accounts", strconv.Itoa(accounts))
	if single.Mode != "single" || single.Events <= 0 || single.Events != single.Requests {
		t.Fatalf("single: %+v", single)
	}
	want += single.Events
	if got := storedTotal(s, accounts); got != want {
		t.Fatalf("single: reported %d events, the service stores %d", want, got)
	}

	batch := runBenchVerb(t, s, "--mode", "batch", "--concurrency", "2", "--duration", "1s",
		"--accounts", strconv.Itoa(accounts), "--batch-size", "250")
	if batch.Events <= 0 || batch.Events != batch.Requests*250 {
		t.Fatalf("batch: %+v", batch)
	}
	want += batch.Events
	if got := storedTotal(s, accounts); got != want {
		t.Fatalf("batch: reported %d events in all, the service stores %d", want, got)
	}

	// --max-events stops the load at exactly that many events, the last
	// batch cut short.
	capped := runBenchVerb(t, s, "--mode", "batch", "--concurrency", "3", "--duration", "30s",
		"--accounts", strconv.Itoa(accounts), "--batch-size", "100", "--max-events", "1050")
	if capped.Events != 1050 {
		t.Fatalf("--max-events 1050: %+v", capped)
	}
	want += capped.Events
	if got := storedTotal(s, accounts); got != want {
		t.Fatalf("--max-events: reported %d events in all, the service stores %d", want, got)
	}

	query := runBenchVerb(t, s, "--mode", "query", "--concurrency", "4", "--duration", "1s",
		"--accounts", strconv.Itoa(accounts))
	for _, k := range queryKinds {
		q := query.Queries[k]
		if q == nil || q.Requests <= 0 || q.Errors != 0 || q.Latency.Max <= 0 {
			t.Errorf("query kind %s: %+v", k, q)
		}
	}
	if len(query.Queries) != len(queryKinds) {
		t.Errorf("query kinds: %v", query.Queries)
	}
	if query.Events <= 0 {
		t.Errorf("query: no events read: %+v", query)
	}
	// The deep page is 21 pages deep in every account that holds more
	// than 1,000 events.
	deepEnough := true
	for i := range accounts {
		if countOf(s, "acct-"+strconv.Itoa(i)) <= 1000 {
			deepEnough = false
		}
	}
	if deepEnough && len(query.Notes) != 0 {
		t.Errorf("query notes: %v", query.Notes)
	}

	stats := runBenchVerb(t, s, "--mode", "stats", "--concurrency", "2", "--duration", "500ms",
		"--accounts", strconv.Itoa(accounts))
	if stats.Events != 0 || stats.Latency.P50 <= 0 {
		t.Errorf("stats: %+v", stats)
	}
	// Reading wrote nothing.
	if got := storedTotal(s, accounts); got != want {
		t.Fatalf("after query and stats: the service stores %d events, want %d", got, want)
	}
}
