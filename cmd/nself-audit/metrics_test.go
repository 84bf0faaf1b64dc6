package main

import (
	"strings"
	"testing"
)

// TestMetrics: /metrics answers the plugin token only, in the Prometheus
// text format, with the requests, events, batches, commit latency, queue
// and chain head the service saw; every name starts nself_audit_.
func TestMetrics(t *testing.T) {
	eachStore(t, func(t *testing.T, store string) {
		s := start(t, store, withJWT(`{"type":"HS256","key":"`+hsKey+`"}`))
		if r := s.do("GET", "/metrics", nil, ""); r.status != 401 {
			t.Fatalf("metrics without the token: %d", r.status)
		}
		// Metrics name every account: a JWT, even an admin's, may not read them.
		for _, role := range []string{"user", "admin"} {
			jwt := hsToken(t, claims{user: "u1", role: role, account: "acme", allowed: []string{role}})
			if r := s.do("GET", "/metrics", bearer(jwt), ""); r.status != 403 {
				t.Fatalf("metrics with a %s JWT: %d, want 403", role, r.status)
			}
		}
		postN(s, "acme", 3)
		s.do("POST", "/api/v1/events/batch", pluginHeaders("globex"), batchBody(4, ""))
		s.get("/api/v1/events?limit=2", pluginHeaders("acme"))
		s.do("GET", "/api/v1/nowhere", pluginHeaders("acme"), "")
		if r := s.do("GET", "/api/v1/events/batch", pluginHeaders("acme"), ""); r.status != 405 {
			t.Fatalf("GET of the batch route: %d, want 405", r.status)
		}
		r := s.do("GET", "/metrics", pluginHeaders(""), "")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
			t.Fatalf("metrics: %d %s", r.status, r.header.Get("Content-Type"))
		}
		text := string(r.raw)
		for _, want := range []string{
			`nself_audit_http_requests_total{method="POST",route="POST /api/v1/events",status="201"} 3`,
			`nself_audit_http_requests_total{method="GET",route="GET /api/v1/events",status="200"} 1`,
			`nself_audit_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
			`nself_audit_http_requests_total{method="GET",route="POST /api/v1/events/batch",status="405"} 1`,
			`nself_audit_http_request_duration_seconds_bucket{method="POST",route="POST /api/v1/events/batch",le="+Inf"} 1`,
			`nself_audit_events_written_total{account="acme"} 3`,
			`nself_audit_events_written_total{account="globex"} 4`,
			`nself_audit_chain_head_seq{account="acme"} 3`,
			`nself_audit_chain_head_seq{account="globex"} 4`,
			`nself_audit_batch_size_count 4`,
			`nself_audit_commit_duration_seconds_count 4`,
			`nself_audit_queue_depth 0`,
			`nself_audit_commit_errors_total 0`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		if !strings.Contains(text, "nself_audit_go_goroutines") || !strings.Contains(text, "nself_audit_process_resident_memory_bytes") {
			t.Error("no runtime or process metrics")
		}
		if store == "postgres" && !strings.Contains(text, "nself_audit_db_pool_max_connections") {
			t.Error("no database pool metrics")
		}
		if strings.Contains(text, `route="GET /api/v1/events/{id}",status="405"`) {
			t.Error("the GET of the batch route counted as an event's GET")
		}
		for _, line := range strings.Split(text, "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if !strings.HasPrefix(line, "nself_audit_") {
				t.Errorf("metric without the nself_audit_ prefix: %s", line)
				break
			}
		}
	})
}
