package gateway_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/wire"
)

// trivialPlan trains one step on a tiny dataset: the benchmark measures the
// job machinery (gossip, claim, lease, fetch, result, store), not training.
const trivialPlan = `{"format":"fedgrid.plan/v1","name":"trivial","features":["x"],"label":"y",
 "params":{"w":{"shape":[1,1],"init":"zeros"},"b":{"shape":[1],"init":"zeros"}},
 "forward":[{"op":"matmul","in":["x","w"],"out":"z"},{"op":"add","in":["z","b"],"out":"z"},{"op":"sigmoid","in":["z"],"out":"y_hat"}],
 "loss":{"op":"bce","in":["y_hat","y"]},"optimizer":{"name":"sgd","learning_rate":0.1},"train":{"epochs":1,"batch_size":8,"seed":1}}`

const trivialCSV = "x,y\n0,0\n1,1\n2,1\n-1,0\n3,1\n-2,0\n0.5,1\n-0.5,0\n"

func counterValue(t testing.TB, g interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string, labels ...string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.Metric {
			for _, want := range labels {
				k, v, _ := strings.Cut(want, "=")
				found := false
				for _, lp := range m.Label {
					found = found || (lp.GetName() == k && lp.GetValue() == v)
				}
				if !found {
					continue metric
				}
			}
			if m.Counter != nil {
				sum += m.Counter.GetValue()
			}
		}
	}
	return sum
}

// BenchmarkDispatch measures submit-to-lease latency (p50, p99), throughput
// of trivial jobs, and claims per job, with 1, 10 and 50 nodes in one
// process. make bench runs it; BENCHMARKS.md has the figures.
func BenchmarkDispatch(b *testing.B) {
	for _, nodes := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) { benchDispatch(b, nodes) })
	}
}

func benchDispatch(b *testing.B, nodes int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := startCluster(b, ctx)
	st := c.gw.Store()
	if _, err := st.Setup("owner@example.org", "correct horse battery", "Owner"); err != nil {
		b.Fatal(err)
	}
	tbl, _ := dataset.ReadCSV(bytesReader([]byte(trivialCSV)), dataset.Limits{})
	ds := &store.Dataset{Name: "tiny", Tags: []string{"bench"}, Visibility: "public", Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := st.PutDataset(ds, []byte(trivialCSV)); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < nodes; i++ {
		c.startNode(b, ctx)
	}
	// Submitters: a few data scientists submitting concurrently.
	const submitters = 4
	var clients []*client.Client
	for i := 0; i < submitters; i++ {
		cl, _ := c.Scientist(b, ctx, fmt.Sprintf("ds%d@example.org", i))
		clients = append(clients, cl)
	}
	// Wait until every node has pinged, so that offers go to all of them.
	wait.For(b, 30*time.Second, "every node to be live", func() error {
		mfs, _ := c.gw.Metrics().Gather()
		live := 0.0
		for _, mf := range mfs {
			if mf.GetName() == "fedgrid_nodes_live" {
				live = mf.Metric[0].Gauge.GetValue()
			}
		}
		if int(live) < nodes {
			return fmt.Errorf("only %v of %d nodes live", live, nodes)
		}
		return nil
	})
	gwID := c.gw.Peer().ID()
	claims0 := counterValue(b, c.gw.Metrics(), "fedgrid_claims_total")
	done0 := counterValue(b, c.gw.Metrics(), "fedgrid_jobs_ended_total", "state=succeeded")
	b.ResetTimer()
	start := time.Now()
	ids := make([]string, b.N)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := 0; i < b.N; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			j, err := clients[i%submitters].Submit(ctx, gwID, ds.ID, []byte(trivialPlan))
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if err == nil {
				ids[i] = j.ID
			}
		}(i)
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	// Wait until all are done, watching the completion counter (reading
	// every job while they run would load the gateway being measured).
	if _, err := wait.Context(ctx, wait.Is(func() bool {
		return counterValue(b, c.gw.Metrics(), "fedgrid_jobs_ended_total", "state=succeeded")-done0 >= float64(b.N)
	})); err != nil {
		b.Fatalf("benchmark timed out: %v", err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	var lat []time.Duration
	for _, id := range ids {
		j, err := st.Job(id)
		if err != nil {
			b.Fatal(err)
		}
		if j.State != wire.StateSucceeded {
			b.Fatalf("job %s %s: %s", id, j.State, j.Error)
		}
		lat = append(lat, j.StartedAt.Sub(j.QueuedAt))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	claims := counterValue(b, c.gw.Metrics(), "fedgrid_claims_total") - claims0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
	b.ReportMetric(claims/float64(b.N), "claims/job")
	b.ReportMetric(pct(0.5), "burst-p50-ms")

	// Dispatch latency with free nodes: one job at a time, submit to lease.
	lat = lat[:0]
	for i := 0; i < 50; i++ {
		j, err := clients[i%submitters].Submit(ctx, gwID, ds.ID, []byte(trivialPlan))
		if err != nil {
			b.Fatal(err)
		}
		var sj *store.Job
		wait.For(b, time.Minute, "the job to finish", func() error {
			if sj, err = st.Job(j.ID); err != nil || !wire.Terminal(sj.State) {
				return fmt.Errorf("job %s: %v", j.ID, err)
			}
			return nil
		})
		if sj.State != wire.StateSucceeded {
			b.Fatalf("job %s %s", j.ID, sj.State)
		}
		// Submit to lease, from the job's own timestamps: the poll does not count.
		lat = append(lat, sj.StartedAt.Sub(sj.QueuedAt))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
