package main

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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
