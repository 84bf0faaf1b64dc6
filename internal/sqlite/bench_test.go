package sqlite

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nself-org/nself-audit/internal/audit"
)

// benchEvent is a typical event: a user action on a resource with a little
// metadata, as Validate would produce it.
func benchEvent(account string, i int) *audit.Event {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return &audit.Event{
		ID:              uuid.Must(uuid.NewV7()),
		SourceAccountID: account,
		OccurredAt:      now,
		RecordedAt:      now,
		ActorID:         fmt.Sprintf("user-%d", i%50),
		ActorType:       "user",
		Action:          []string{"user.login", "doc.read", "doc.update", "admin.settings.change"}[i%4],
		ResourceType:    "doc",
		ResourceID:      fmt.Sprintf("doc-%d", i%1000),
		Outcome:         "success",
		Severity:        "info",
		IPAddress:       "203.0.113.7",
		UserAgent:       "Mozilla/5.0 (X11; Linux x86_64) bench",
		RequestID:       fmt.Sprintf("req-%d", i),
		Source:          "bench",
		Metadata:        audit.CanonicalJSON(fmt.Sprintf(`{"attempt":%d,"mfa":true,"tags":["a","b"]}`, i)),
	}
}

// BenchmarkAppendBatch1000 measures batch ingest: one Append of 1000
// events of one account per iteration, each committed durably.
func BenchmarkAppendBatch1000(b *testing.B) {
	s := openTemp(b)
	ctx := context.Background()
	const size = 1000
	var n int
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		items := make([]*audit.AppendItem, size)
		for i := range items {
			items[i] = &audit.AppendItem{Event: benchEvent("acme", n+i)}
		}
		n += size
		b.StartTimer()
		start := time.Now()
		if err := s.Append(ctx, items); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
}

// BenchmarkAppendSingle measures concurrent one-event Appends (8 callers a
// core): each is its own transaction and fsync, so this is the store
// without the ingest package's group commit.
func BenchmarkAppendSingle(b *testing.B) {
	s := openTemp(b)
	ctx := context.Background()
	b.SetParallelism(8)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if err := s.Append(ctx, []*audit.AppendItem{{Event: benchEvent("acme", i)}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
