package node

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedgrid/fedgrid/obs"
)

// nodeMetrics are a node's own series; nil when the node has no registry.
type nodeMetrics struct {
	training *prometheus.HistogramVec // outcome: succeeded, failed
	cache    *prometheus.CounterVec   // result: hit, miss
}

func registerer(reg *prometheus.Registry) prometheus.Registerer {
	if reg == nil {
		return nil
	}
	return reg
}

func newNodeMetrics(reg *prometheus.Registry) *nodeMetrics {
	if reg == nil {
		return nil
	}
	m := &nodeMetrics{training: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: obs.Namespace, Name: "node_training_duration_seconds",
		Help:    "How long training one job's plan took on this node, by outcome: succeeded or failed.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 18),
	}, []string{"outcome"})}
	m.training.WithLabelValues("succeeded")
	m.training.WithLabelValues("failed")
	m.cache = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: obs.Namespace, Name: "node_shard_cache_total",
		Help: "Jobs whose rows the shard cache held (hit) or that fetched them (miss)."}, []string{"result"})
	m.cache.WithLabelValues("hit")
	m.cache.WithLabelValues("miss")
	reg.MustRegister(m.training, m.cache)
	return m
}

// register adds the series that read the node's state when scraped.
func (m *nodeMetrics) register(reg *prometheus.Registry, n *Node) {
	if m == nil {
		return
	}
	reg.MustRegister(n.peer.Collectors()...) // connections by path, hole punches
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: obs.Namespace, Name: "node_jobs_running",
		Help: "Jobs this node is running now."}, func() float64 {
		n.mu.Lock()
		defer n.mu.Unlock()
		return float64(len(n.running))
	}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: obs.Namespace, Name: "node_slots",
		Help: "Jobs this node runs at once at most (--slots)."}, func() float64 { return float64(cap(n.slots)) }))
}

func (m *nodeMetrics) trained(start time.Time, err error) {
	if m == nil {
		return
	}
	outcome := "succeeded"
	if err != nil {
		outcome = "failed"
	}
	m.training.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
}

func (m *nodeMetrics) cached(hit bool) {
	if m == nil {
		return
	}
	result := "miss"
	if hit {
		result = "hit"
	}
	m.cache.WithLabelValues(result).Inc()
}
