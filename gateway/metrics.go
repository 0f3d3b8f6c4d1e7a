package gateway

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fedgrid/fedgrid/wire"
)

// metrics are the gateway's Prometheus series, served at GET /metrics.
type metrics struct {
	reg           *prometheus.Registry
	submitted     prometheus.Counter
	completed     prometheus.Counter
	failed        prometheus.Counter
	cancelled     prometheus.Counter
	leaseExpiries prometheus.Counter
	grants        prometheus.Counter
	claims        prometheus.Counter
	directOffers  prometheus.Counter
	gossipSends   prometheus.Counter
	nodeRequests  prometheus.Counter
	pings         prometheus.Counter
	dispatch      prometheus.Histogram
}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "fedgrid", Name: name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	m.submitted = counter("jobs_submitted_total", "Jobs accepted into the queue.")
	m.completed = counter("jobs_completed_total", "Jobs that finished with a stored result.")
	m.failed = counter("jobs_failed_total", "Jobs that failed (training error, retry budget spent, deadline).")
	m.cancelled = counter("jobs_cancelled_total", "Jobs cancelled by their requester or an admin.")
	m.leaseExpiries = counter("lease_expiries_total", "Leases lost because a node stopped heartbeating or ran out of time.")
	m.grants = counter("lease_grants_total", "Leases granted to nodes (one per attempt).")
	m.claims = counter("claims_total", "Claims received from nodes, granted or not.")
	m.directOffers = counter("offers_direct_total", "Jobs offered to one node over a direct stream.")
	m.gossipSends = counter("offer_gossip_sends_total", "Gossiped offers times the nodes subscribed when each was published.")
	m.pings = counter("node_pings_total", "Pings received from enrolled nodes.")
	m.nodeRequests = counter("node_requests_total", "Requests received from enrolled nodes (pings, claims, fetches, heartbeats, results).")
	m.dispatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "fedgrid", Name: "dispatch_latency_seconds",
		Help:    "Time from a job entering the queue to a node's lease on it.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	m.reg.MustRegister(m.dispatch)
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "fedgrid", Name: name, Help: help}, f))
	}
	gauge("jobs_queued", "Jobs waiting for a node.", func() float64 {
		n, err := g.store.CountJobs(wire.StateQueued)
		if err != nil {
			return -1
		}
		return float64(n)
	})
	gauge("jobs_running", "Jobs leased to a node.", func() float64 {
		n, err := g.store.CountJobs(wire.StateRunning)
		if err != nil {
			return -1
		}
		return float64(n)
	})
	gauge("nodes_live", "Enrolled nodes that pinged lately.", func() float64 {
		_, live := g.capacity.free(g.cfg.Now())
		return float64(live)
	})
	gauge("node_free_slots", "Free job slots on live nodes.", func() float64 {
		free, _ := g.capacity.free(g.cfg.Now())
		return float64(free)
	})
	m.reg.MustRegister(collectors.NewGoCollector())
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
