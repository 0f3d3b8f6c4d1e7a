package gateway

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/obs"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// metrics are the gateway's Prometheus series, served at GET /metrics
// (docs/metrics.md lists them). Job states are the job's own state names.
type metrics struct {
	reg           *prometheus.Registry
	http          *obs.HTTPMetrics
	submitted     prometheus.Counter
	ended         *prometheus.CounterVec   // state: succeeded, failed, cancelled
	duration      *prometheus.HistogramVec // state
	leaseExpiries prometheus.Counter
	grants        prometheus.Counter
	claims        prometheus.Counter
	directOffers  prometheus.Counter
	gossipSends   prometheus.Counter
	nodeRequests  prometheus.Counter
	dataStreams   prometheus.Counter
	pings         prometheus.Counter
	dispatch      prometheus.Histogram
	now           func() time.Time
}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{reg: obs.NewRegistry("gateway", p2p.Version)}
	m.http = obs.NewHTTPMetrics(m.reg)
	m.now = func() time.Time { return g.cfg.Now() }
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: obs.Namespace, Name: name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	m.submitted = counter("jobs_submitted_total", "Jobs accepted into the queue.")
	m.ended = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: obs.Namespace, Name: "jobs_ended_total",
		Help: "Jobs that ended, by their final state: succeeded, failed or cancelled."}, []string{"state"})
	for _, s := range []string{wire.StateSucceeded, wire.StateFailed, wire.StateCancelled} {
		m.ended.WithLabelValues(s)
	}
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: obs.Namespace, Name: "job_duration_seconds",
		Help:    "Time from a job's first lease to its end (training, retries included), by final state.",
		Buckets: prometheus.ExponentialBuckets(0.1, 2, 18)}, []string{"state"})
	for _, s := range []string{wire.StateSucceeded, wire.StateFailed, wire.StateCancelled} {
		m.duration.WithLabelValues(s)
	}
	m.reg.MustRegister(m.ended, m.duration)
	m.leaseExpiries = counter("lease_expiries_total", "Leases lost because a node stopped heartbeating or ran out of time.")
	m.grants = counter("lease_grants_total", "Leases granted to nodes (one per attempt).")
	m.claims = counter("claims_total", "Claims received from nodes, granted or not.")
	m.directOffers = counter("offers_direct_total", "Jobs offered to one node over a direct stream.")
	m.gossipSends = counter("offer_gossip_sends_total", "Gossiped offers times the nodes subscribed when each was published.")
	m.pings = counter("node_pings_total", "Pings received from enrolled nodes.")
	m.nodeRequests = counter("node_requests_total", "Requests received from enrolled nodes (pings, claims, fetches, heartbeats, results).")
	m.dataStreams = counter("job_data_streams_total", "Job data streams (job/data) started: a node's shard cache did not hold the rows.")
	m.dispatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: obs.Namespace, Name: "dispatch_latency_seconds",
		Help:    "Time from a job entering the queue to a node's lease on it.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	m.reg.MustRegister(m.dispatch)
	m.reg.MustRegister(&stateCollector{g: g})
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: obs.Namespace, Name: name, Help: help}, f))
	}
	gauge("nodes_live", "Enrolled nodes that pinged lately.", func() float64 {
		_, live := g.capacity.free(g.cfg.Now())
		return float64(live)
	})
	gauge("node_free_slots", "Free job slots on live nodes.", func() float64 {
		free, _ := g.capacity.free(g.cfg.Now())
		return float64(free)
	})
	return m
}

// jobEnded counts a job that reached a final state and, if it ever
// started, how long it took.
func (m *metrics) jobEnded(state string, started time.Time) {
	m.ended.WithLabelValues(state).Inc()
	if !started.IsZero() {
		m.duration.WithLabelValues(state).Observe(m.now().Sub(started).Seconds())
	}
}

func (m *metrics) handler() http.Handler { return obs.Handler(m.reg) }

var (
	jobsDesc   = prometheus.NewDesc("fedgrid_jobs", "Jobs now queued or running (shards of data-parallel jobs included).", []string{"state"}, nil)
	reviewDesc = prometheus.NewDesc("fedgrid_review_queue_depth",
		"Requests waiting for a reviewer, by kind: release, budget or permission.", []string{"kind"}, nil)
	reservedDesc = prometheus.NewDesc("fedgrid_epsilon_reserved",
		"Privacy budget (epsilon) reserved by jobs whose release is not decided yet, over all users.", nil, nil)
	spentDesc  = prometheus.NewDesc("fedgrid_epsilon_spent", "Privacy budget (epsilon) spent, over all users.", nil, nil)
	budgetDesc = prometheus.NewDesc("fedgrid_epsilon_budget", "Privacy budget (epsilon) granted, over all users.", nil, nil)
	scrapeDesc = prometheus.NewDesc("fedgrid_store_scrape_errors_total",
		"Reads of the store for these series that failed (the series are then left out).", nil, nil)
)

// stateCollector reads the store when scraped: jobs by state, the review
// queue and the epsilon totals.
type stateCollector struct {
	g      *Gateway
	errors atomic.Int64
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{jobsDesc, reviewDesc, reservedDesc, spentDesc, budgetDesc, scrapeDesc} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.g.store
	// Counted from the state index: a scrape decodes no job (with a thousand
	// nodes, decoding every queued job on each scrape was most of its cost).
	for _, state := range []string{wire.StateQueued, wire.StateRunning} {
		if n, err := st.CountJobs(state); err == nil {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(n), state)
		} else {
			c.errors.Add(1)
		}
	}
	if rs, err := st.Requests(store.RequestFilter{State: wire.RequestPending}); err == nil {
		by := map[string]int{wire.KindRelease: 0, wire.KindBudget: 0, wire.KindPermission: 0}
		for _, r := range rs {
			by[r.Kind]++
		}
		for k, n := range by {
			ch <- prometheus.MustNewConstMetric(reviewDesc, prometheus.GaugeValue, float64(n), k)
		}
	} else {
		c.errors.Add(1)
	}
	if us, err := st.Users(); err == nil {
		var budget, reserved, spent int64
		for _, u := range us {
			budget += u.BudgetMicroEps
			reserved += u.ReservedMicroEps
			spent += u.SpentMicroEps
		}
		ch <- prometheus.MustNewConstMetric(budgetDesc, prometheus.GaugeValue, float64(budget)/1e6)
		ch <- prometheus.MustNewConstMetric(reservedDesc, prometheus.GaugeValue, float64(reserved)/1e6)
		ch <- prometheus.MustNewConstMetric(spentDesc, prometheus.GaugeValue, float64(spent)/1e6)
	} else {
		c.errors.Add(1)
	}
	ch <- prometheus.MustNewConstMetric(scrapeDesc, prometheus.CounterValue, float64(c.errors.Load()))
}
