// Package metrics holds the service's Prometheus metrics, every name
// prefixed nself_audit_, on a registry of its own.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nself-org/nself-audit/internal/audit"
)

// Metrics is the set of the service's metrics.
type Metrics struct {
	reg *prometheus.Registry

	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	eventsWritten *prometheus.CounterVec
	batchSize     prometheus.Histogram
	commitLatency prometheus.Histogram
	commitErrors  prometheus.Counter
	chainHead     *prometheus.GaugeVec

	// headsMu orders the chain head gauge's updates: batches may commit
	// concurrently, and the gauge must not go back to an older head.
	headsMu sync.Mutex
	heads   map[string]int64
}

// New returns the metrics, registered with the Go and process collectors.
// queueDepth reports the writer's waiting requests.
func New(queueDepth func() int) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nself_audit_http_requests_total", Help: "HTTP requests by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nself_audit_http_request_duration_seconds", Help: "HTTP request latency by route pattern and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		eventsWritten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nself_audit_events_written_total", Help: "Events committed, by account.",
		}, []string{"account"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nself_audit_batch_size", Help: "Events per group-commit transaction.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000},
		}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nself_audit_commit_duration_seconds", Help: "Time of one group-commit transaction, retries included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nself_audit_commit_errors_total", Help: "Group-commit transactions that failed (nothing of them stored).",
		}),
		chainHead: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nself_audit_chain_head_seq", Help: "Seq of the last event this process committed, by account.",
		}, []string{"account"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.eventsWritten, m.batchSize, m.commitLatency, m.commitErrors, m.chainHead,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nself_audit_queue_depth", Help: "Write requests waiting for the next group commit.",
		}, func() float64 { return float64(queueDepth()) }),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "nself_audit"}),
	)
	// The Go runtime's metrics too carry the prefix: nself_audit_go_...
	prometheus.WrapRegistererWithPrefix("nself_audit_", m.reg).MustRegister(collectors.NewGoCollector())
	return m
}

// Register adds a collector, such as the database pool's.
func (m *Metrics) Register(c prometheus.Collector) { m.reg.MustRegister(c) }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObserveRequest records one HTTP request. route is the matched pattern
// ("" for no route), never the raw path: labels stay few.
func (m *Metrics) ObserveRequest(route, method string, status int, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route, method).Observe(d.Seconds())
}

// ObserveCommit records one group-commit transaction and what it stored.
func (m *Metrics) ObserveCommit(items []*audit.AppendItem, d time.Duration, err error) {
	m.batchSize.Observe(float64(len(items)))
	m.commitLatency.Observe(d.Seconds())
	if err != nil {
		m.commitErrors.Inc()
		return
	}
	heads := map[string]int64{}
	for _, it := range items {
		if it.Err != nil || it.Replayed {
			continue
		}
		m.eventsWritten.WithLabelValues(it.Event.SourceAccountID).Inc()
		if it.Event.Seq > heads[it.Event.SourceAccountID] {
			heads[it.Event.SourceAccountID] = it.Event.Seq
		}
	}
	m.headsMu.Lock()
	defer m.headsMu.Unlock()
	if m.heads == nil {
		m.heads = map[string]int64{}
	}
	for account, seq := range heads {
		if seq > m.heads[account] {
			m.heads[account] = seq
			m.chainHead.WithLabelValues(account).Set(float64(seq))
		}
	}
}
