package gateway_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedgrid/fedgrid/node"
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
