package gateway_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/network"
)

// BenchmarkSearch measures a data scientist's search across 10, 50 and 100
// gateways on loopback, all in this process: latency of a whole search (DHT
// lookup, dial and catalog answer of every provider) and recall (the share
// of the gateways holding a matching dataset that the search returned).
// make bench runs it; BENCHMARKS.md has the figures.
func BenchmarkSearch(b *testing.B) {
	for _, n := range []int{10, 50, 100} {
		b.Run(fmt.Sprintf("gateways=%d", n), func(b *testing.B) { benchSearch(b, n) })
	}
}

func benchSearch(b *testing.B, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	const netName = "srchbench"
	nw, err := network.Start(ctx, network.Config{DataDir: b.TempDir(), Network: netName, Listen: []string{loopback}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = nw.Close() }()
	tbl, err := dataset.ReadCSV(bytesReader([]byte(trivialCSV)), dataset.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	type hosted struct {
		gw *gateway.Gateway
		id string
	}
	gws := make([]hosted, n)
	for i := range gws {
		g, err := gateway.Start(ctx, gateway.Config{DataDir: b.TempDir(), Network: netName, Listen: []string{loopback}, Bootstrap: nw.Addrs(), NoHTTP: true, Name: fmt.Sprintf("gw%03d", i)})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = g.Close() }()
		ds := &store.Dataset{Name: fmt.Sprintf("set %d", i), Tags: []string{"bench", fmt.Sprintf("g%d", i)}, Visibility: store.VisibilityPublic, Columns: tbl.Columns(), Rows: tbl.NumRows()}
		if err := g.Store().PutDataset(ds, []byte(trivialCSV)); err != nil {
			b.Fatal(err)
		}
		gws[i] = hosted{g, ds.ID}
	}
	start := time.Now()
	for _, h := range gws {
		for h.gw.IndexState(h.id).State != gateway.IndexProvided {
			if ctx.Err() != nil || time.Since(start) > 5*time.Minute {
				b.Fatalf("gateway %s never indexed its dataset: %+v", h.gw.ID(), h.gw.IndexState(h.id))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	indexed := time.Since(start)
	cl, err := client.New(ctx, client.Config{Network: netName, Bootstrap: nw.Addrs()})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var lat []time.Duration
	var recall float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		res, err := cl.Search(ctx, []string{"bench"}, nil)
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		seen := map[string]bool{}
		for _, r := range res {
			seen[r.Gateway] = true
		}
		recall += float64(len(seen)) / float64(n)
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(100*recall/float64(b.N), "recall-%")
	b.ReportMetric(indexed.Seconds(), "index-s")
	b.ReportMetric(0, "ns/op")
}
