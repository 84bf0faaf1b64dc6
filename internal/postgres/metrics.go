package postgres

import "github.com/prometheus/client_golang/prometheus"

// PoolCollector exports the connection pool's state as
// nself_audit_db_pool_* gauges.
func (s *Store) PoolCollector() prometheus.Collector { return poolCollector{s} }

type poolCollector struct{ s *Store }

var (
	poolTotal    = prometheus.NewDesc("nself_audit_db_pool_connections", "Open connections of the database pool.", nil, nil)
	poolAcquired = prometheus.NewDesc("nself_audit_db_pool_acquired_connections", "Connections in use.", nil, nil)
	poolIdle     = prometheus.NewDesc("nself_audit_db_pool_idle_connections", "Idle connections.", nil, nil)
	poolMax      = prometheus.NewDesc("nself_audit_db_pool_max_connections", "The pool's limit.", nil, nil)
	poolWaits    = prometheus.NewDesc("nself_audit_db_pool_acquire_waits_total", "Acquisitions that had to wait for a connection.", nil, nil)
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolTotal, poolAcquired, poolIdle, poolMax, poolWaits} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.pool.Stat()
	ch <- prometheus.MustNewConstMetric(poolTotal, prometheus.GaugeValue, float64(st.TotalConns()))
	ch <- prometheus.MustNewConstMetric(poolAcquired, prometheus.GaugeValue, float64(st.AcquiredConns()))
	ch <- prometheus.MustNewConstMetric(poolIdle, prometheus.GaugeValue, float64(st.IdleConns()))
	ch <- prometheus.MustNewConstMetric(poolMax, prometheus.GaugeValue, float64(st.MaxConns()))
	ch <- prometheus.MustNewConstMetric(poolWaits, prometheus.CounterValue, float64(st.EmptyAcquireCount()))
}
