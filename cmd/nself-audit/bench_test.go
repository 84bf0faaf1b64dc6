package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
)

// BenchmarkPostEvents measures single-event POSTs through the real service
// (HTTP, validation, group-commit writer, durable commit) from 64
// concurrent keep-alive clients, on each store. No timing is asserted; see
// BENCHMARKS.md for the figures.
func BenchmarkPostEvents(b *testing.B) {
	for _, store := range stores {
		b.Run(store, func(b *testing.B) {
			s := start(b, store)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
			var n atomic.Int64
			b.SetParallelism(32) // 64 clients on 2 cores
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					req, _ := http.NewRequest("POST", s.url+"/api/v1/events", strings.NewReader(fmt.Sprintf(
						`{"actor_id":"user-%d","action":"doc.read","resource_type":"doc","resource_id":"d%d","metadata":{"i":%d}}`, i%50, i%1000, i)))
					req.Header.Set("Authorization", "Bearer "+testSecret)
					res, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					res.Body.Close()
					if res.StatusCode != 201 {
						b.Errorf("status %d", res.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "events/s")
		})
	}
}

// seedEvents appends n events to account through the store, in batches of
// 1000, as the group-commit writer would.
func seedEvents(b *testing.B, store audit.Store, account string, n int) {
	b.Helper()
	ctx := context.Background()
	for done := 0; done < n; done += 1000 {
		items := make([]*audit.AppendItem, 0, 1000)
		for i := done; i < done+1000 && i < n; i++ {
			in := &audit.EventInput{ActorID: fmt.Sprintf("user-%d", i%500), Action: "doc.read", ResourceType: "doc",
				ResourceID: fmt.Sprintf("d%d", i%10000), Metadata: []byte(fmt.Sprintf(`{"i":%d,"mfa":true}`, i))}
			e, err := in.Validate(account, "bench", time.Now())
			if err != nil {
				b.Fatal(err)
			}
			items = append(items, &audit.AppendItem{Event: e})
		}
		if err := store.Append(ctx, items); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify1M measures GET /api/v1/verify over a chain of one
// million events (issue 4: under 10 s), through the real service. Seeding
// takes a minute or two per store and is not timed.
func BenchmarkVerify1M(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("NSELF_AUDIT_BENCH_EVENTS")); err == nil && v > 0 {
		n = v // a smaller chain, for profiling
	}
	for _, store := range stores {
		b.Run(store, func(b *testing.B) {
			s := start(b, store)
			seedEvents(b, s.main.store, "acme", n)
			b.ResetTimer()
			for b.Loop() {
				r := s.get("/api/v1/verify", pluginHeaders("acme"))
				if r.body["ok"] != true || r.body["checked"] != float64(n) {
					b.Fatalf("verify: %s", r.raw)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkPostBatch measures POST /api/v1/events/batch of 1000 events
// through the real service on each store, 4 concurrent clients.
func BenchmarkPostBatch(b *testing.B) {
	for _, store := range stores {
		b.Run(store, func(b *testing.B) {
			s := start(b, store)
			body := batchBody(1000, "")
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
			b.SetParallelism(2) // 4 clients on 2 cores
			start := time.Now()
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("POST", s.url+"/api/v1/events/batch", strings.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+testSecret)
					res, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 201 {
						b.Errorf("status %d", res.StatusCode)
						return
					}
					n.Add(1000)
				}
			})
			b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "events/s")
		})
	}
}
