package gateway_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/node"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// A node streams a job's rows once (job/data) into its shard cache; later
// jobs on the same dataset version and shard read them from the cache:
// another plan on the whole dataset, and every round after the first of a
// data-parallel job. A damaged cache file is fetched again.
func TestShardCacheSavesFetches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	e.AddNode(t, ctx, func(c *node.Config) { c.Metrics, c.DataDir = reg, dir })
	gwID := e.gw.Peer().ID()
	streams := func() int { return int(metricValue(t, e.gw.Metrics(), "fedgrid_job_data_streams_total", "")) }
	cache := func() (hit, miss int) {
		return int(metricValue(t, reg, "fedgrid_node_shard_cache_total", "hit")), int(metricValue(t, reg, "fedgrid_node_shard_cache_total", "miss"))
	}
	run := func(planJSON []byte) {
		t.Helper()
		j, err := e.clients[0].Submit(ctx, gwID, e.ds.ID, planJSON)
		if err != nil {
			t.Fatal(err)
		}
		if j, err = e.clients[0].Wait(ctx, gwID, j.ID, nil); err != nil || j.State != wire.StateSucceeded {
			t.Fatalf("job: %+v %v", j, err)
		}
	}
	shards := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, "shards", "*.shard"))
		return m
	}

	run(e.plan)
	if s, files := streams(), shards(); s != 1 || len(files) != 1 {
		t.Fatalf("first job: %d streams, cache files %v", s, files)
	}
	mlp := readFile(t, filepath.Join("..", "plan", "testdata", "mlp_pima.json"))
	run(mlp)
	if hit, miss := cache(); streams() != 1 || hit != 1 || miss != 1 {
		t.Fatalf("a second plan on the same version: %d streams, %d hits, %d misses", streams(), hit, miss)
	}

	var p map[string]any
	if err := json.Unmarshal(e.plan, &p); err != nil {
		t.Fatal(err)
	}
	tr := p["train"].(map[string]any)
	tr["workers"], tr["rounds"], tr["epochs"] = 2, 3, 2
	fed, _ := json.Marshal(p)
	run(fed)
	// Round 1 streams both shards; rounds 2 and 3 read them from the cache.
	if hit, miss := cache(); streams() != 3 || hit != 1+4 || miss != 1+2 || len(shards()) != 3 {
		t.Fatalf("data-parallel, 2 shards x 3 rounds: %d streams, %d hits, %d misses, files %v", streams(), hit, miss, shards())
	}

	// Damage the whole dataset's file: the next job fetches it again.
	for _, f := range shards() {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)-100] ^= 0xff
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run(e.plan)
	if s := streams(); s != 4 {
		t.Fatalf("after damaging the cache: %d streams, want 4", s)
	}
}

// A node that streams a job (its memory is less than the rows need in
// memory) gives the run a scratch directory in its shard cache: the rows
// come from the cache file for the statistics pass and the first epoch
// only, and the scratch file is gone when the job ends.
func TestStreamedJobReadsItsRowsTwice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	p, err := plan.Parse(e.plan)
	if err != nil {
		t.Fatal(err)
	}
	inMem, err := plan.TrainMemory(p, e.ds.Rows)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	type run struct {
		scratch   string
		rows      int // rows the source gave
		trainRows int
		streamed  bool
	}
	runs := make(chan run, 1)
	e.AddNode(t, ctx, func(c *node.Config) {
		c.DataDir, c.MaxMemory = dir, inMem-1
		c.Train = func(ctx context.Context, p *plan.Plan, src dataset.Source, o plan.TrainOptions) (*plan.Model, error) {
			cs := &countRows{Source: src}
			m, err := plan.TrainSource(ctx, p, cs, o)
			if err == nil {
				runs <- run{o.ScratchDir, cs.rows, m.Metrics.TrainRows, m.Metrics.TrainRows+m.Metrics.ValidationRows == src.NumRows() && o.MaxMemory < inMem}
			}
			return m, err
		}
	})
	j, err := e.clients[0].Submit(ctx, e.gw.Peer().ID(), e.ds.ID, e.plan)
	if err != nil {
		t.Fatal(err)
	}
	if j, err = e.clients[0].Wait(ctx, e.gw.Peer().ID(), j.ID, nil); err != nil || j.State != wire.StateSucceeded {
		t.Fatalf("job: %+v %v", j, err)
	}
	r := <-runs
	if !r.streamed || r.scratch != filepath.Join(dir, "shards") {
		t.Fatalf("run: %+v", r)
	}
	if want := r.trainRows + e.ds.Rows; r.rows != want {
		t.Errorf("the shard gave %d rows over %d epochs; want %d (the statistics pass and the first epoch)", r.rows, p.Train.Epochs, want)
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, "shards", "*.tmp")); len(tmp) != 0 {
		t.Errorf("left behind: %v", tmp)
	}
}

// countRows counts the rows a source gives.
type countRows struct {
	dataset.Source
	rows int
}

func (s *countRows) Scan(ctx context.Context, from, to, batchRows int, fn func(*dataset.Batch) error) error {
	return s.Source.Scan(ctx, from, to, batchRows, func(b *dataset.Batch) error {
		s.rows += b.Len
		return fn(b)
	})
}

// metricValue is a counter's value in reg, of the series whose only
// label has value label ("" for a series without labels).
func metricValue(t *testing.T, reg prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if (label == "" && len(m.GetLabel()) == 0) || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s{%s}", name, label)
	return 0
}
