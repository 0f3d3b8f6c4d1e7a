package gateway

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// TestQueryNoiseCalibration: over 2,000 answers, the mean's noise has the
// standard deviation the response promises (within 10%: about four standard
// errors) and the promised 95% interval covers the true mean about 95% of the
// time; for the gaussian mechanism likewise.
func TestQueryNoiseCalibration(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]float64, 500)
	var sum float64
	for i := range vals {
		vals[i] = rng.Float64()*120 - 10 // some outside [0, 100]: clamped
		sum += min(max(vals[i], 0), 100)
	}
	truth := sum / 500
	for _, req := range []wire.QueryRequest{
		{Stat: wire.StatMean, Column: "x", Epsilon: 1, Lower: 0, Upper: 100},
		{Stat: wire.StatMean, Column: "x", Epsilon: 1, Lower: 0, Upper: 100, Mechanism: wire.MechanismGaussian, Delta: 1e-5},
	} {
		mech, err := checkQuery(&req)
		if err != nil {
			t.Fatal(err)
		}
		const n = 2000
		var sq float64
		covered := 0
		var scale float64
		for range n {
			r, err := answer(mech, &req, vals)
			if err != nil {
				t.Fatal(err)
			}
			sq += (r.Value - truth) * (r.Value - truth)
			if r.CI95[0] <= truth && truth <= r.CI95[1] {
				covered++
			}
			scale = r.Scale
		}
		rms := math.Sqrt(sq / n)
		if want := math.Sqrt2 * 100 / 500; mech.name == wire.MechanismLaplace && math.Abs(scale-want) > 1e-12 {
			t.Fatalf("laplace scale %v, want %v", scale, want)
		}
		if math.Abs(rms/scale-1) > 0.1 {
			t.Fatalf("%s: noise rms %v, promised %v", mech.name, rms, scale)
		}
		if frac := float64(covered) / n; frac < 0.92 || frac > 0.98 {
			t.Fatalf("%s: 95%% interval covered the truth %.3f of the time", mech.name, frac)
		}
		t.Logf("%s: rms %.4f promised %.4f, coverage %.3f", mech.name, rms, scale, float64(covered)/n)
	}
}

// A query's exact statistic accumulated over a stored version's batches
// equals the one over the whole column at once (the same additions in the
// same order), for every statistic.
func TestQueryScanMatchesWholeColumn(t *testing.T) {
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	var b strings.Builder
	b.WriteString("x,name\n")
	vals := make([]float64, 70_000) // more than one record batch
	for i := range vals {
		vals[i] = math.Round((rng.NormFloat64()*30+40)*1000) / 1000
		fmt.Fprintf(&b, "%s,n%d\n", dataset.FormatNumber(vals[i]), i%7)
	}
	d := &store.Dataset{Name: "x"}
	if err := st.PutDataset(d, []byte(b.String())); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{store: st}
	for _, stat := range []string{wire.StatCount, wire.StatSum, wire.StatMean, wire.StatHistogram} {
		req := &wire.QueryRequest{Stat: stat, Column: "x", Epsilon: 1, Lower: 0, Upper: 100, Bins: 7}
		got, err := g.scanQuery(context.Background(), d.ID, req)
		if err != nil {
			t.Fatal(err)
		}
		want := newQueryAcc(req)
		want.add(vals)
		if got.n != want.n || got.c != want.c || got.s != want.s || !slices.Equal(got.counts, want.counts) {
			t.Fatalf("%s: scan %+v, whole column %+v", stat, got, want)
		}
	}
	_, err = g.scanQuery(context.Background(), d.ID, &wire.QueryRequest{Stat: wire.StatSum, Column: "name", Epsilon: 1, Upper: 1})
	if err == nil || !strings.Contains(err.Error(), "not numeric") {
		t.Fatalf("text column: %v", err)
	}
}
