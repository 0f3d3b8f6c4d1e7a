package gateway

import (
	"math"
	"math/rand/v2"
	"testing"

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
