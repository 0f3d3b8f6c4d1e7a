package plan

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// mlpPlan is bench/trainbench's model: 20 inputs, ReLU hidden layers,
// one logit, BCE on logits, SGD, batch 256.
func mlpPlan(t testing.TB, hidden ...int) *Plan {
	t.Helper()
	feats := make([]string, 20)
	for j := range feats {
		feats[j] = fmt.Sprintf("f%d", j)
	}
	type m = map[string]any
	params := m{}
	var fwd []m
	in, from := "x", 20
	for i, to := range append(hidden, 1) {
		w, b, h := fmt.Sprintf("w%d", i), fmt.Sprintf("b%d", i), fmt.Sprintf("h%d", i)
		params[w] = m{"shape": []int{from, to}, "init": "glorot"}
		params[b] = m{"shape": []int{to}, "init": "zeros"}
		fwd = append(fwd, m{"op": "matmul", "in": []string{in, w}, "out": h}, m{"op": "add", "in": []string{h, b}, "out": h})
		if i < len(hidden) {
			fwd = append(fwd, m{"op": "relu", "in": []string{h}, "out": h})
		}
		in, from = h, to
	}
	b, _ := json.Marshal(m{
		"format": Format, "features": feats, "label": "y", "params": params, "forward": fwd,
		"loss": m{"op": "bce_logits", "in": []string{in, "y"}}, "optimizer": m{"name": "sgd", "learning_rate": 0.05},
		"train": m{"epochs": 1, "batch_size": 256, "seed": 1},
	})
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func stepSetup(t testing.TB, p *Plan, f32 bool) (gradEngine, *optimizer, [][]float64, [][]float64, []float64, []float64) {
	pr, err := compile(p)
	if err != nil {
		t.Fatal(err)
	}
	params, err := initParams(p, pr, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	x, y := make([]float64, 256*20), make([]float64, 256)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	for i := range y {
		y[i] = float64(rng.IntN(2))
	}
	return newNativeEngine(pr, params, 256, f32), newOptimizer(p.Optimizer, params), params, zerosLike(params), x, y
}

// TestNativeStepAllocs: a training step allocates nothing (the float64
// engine hands large products to gonum, which may: it is tested on a small
// model).
func TestNativeStepAllocs(t *testing.T) {
	for _, f32 := range []bool{true, false} {
		hidden := []int{64, 256}
		if !f32 {
			hidden = []int{16, 8}
		}
		eng, o, params, grads, x, y := stepSetup(t, mlpPlan(t, hidden...), f32)
		eng.step(x, y, 200, grads) // a partial batch's shapes are cached on first use
		if n := testing.AllocsPerRun(10, func() {
			eng.step(x, y, 256, grads)
			eng.step(x, y, 200, grads)
			o.step(params, grads)
		}); n != 0 {
			t.Errorf("f32=%v: %v allocations per step", f32, n)
		}
		eng.close()
	}
}

// BenchmarkNativeStep times one training step (forward, backward,
// SGD) of the trainbench models on a batch of 256.
func BenchmarkNativeStep(b *testing.B) {
	for _, c := range []struct {
		name   string
		hidden []int
	}{{"logreg", nil}, {"mlp64", []int{64}}, {"mlp256", []int{256, 256}}} {
		for _, f32 := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/f32=%v", c.name, f32), func(b *testing.B) {
				eng, o, params, grads, x, y := stepSetup(b, mlpPlan(b, c.hidden...), f32)
				defer eng.close()
				for b.Loop() {
					eng.step(x, y, 256, grads)
					o.step(params, grads)
				}
			})
		}
	}
}

// TestSplitEngine: the batch-splitting engine gives the one-engine loss and
// gradients up to float32 rounding, on full, odd and small batches.
func TestSplitEngine(t *testing.T) {
	p := mlpPlan(t, 64, 256)
	eng, _, params, grads, x, y := stepSetup(t, p, true)
	defer eng.close()
	if _, ok := eng.(*splitEngine); !ok {
		t.Fatalf("engine %T, want a split engine for this model", eng)
	}
	pr, _ := compile(p)
	one := newNative[float32](pr, params, 256)
	defer one.close()
	want := zerosLike(params)
	for _, n := range []int{256, 201, 70, 63, 40, 1} {
		lw, _ := one.step(x, y, n, want)
		lg, _ := eng.step(x, y, n, grads)
		if math.Abs(lg-lw) > 1e-5*(1+math.Abs(lw)) {
			t.Errorf("n=%d: loss split %v, one engine %v", n, lg, lw)
		}
		for i := range want {
			for j := range want[i] {
				if math.Abs(grads[i][j]-want[i][j]) > 1e-5*(1+math.Abs(want[i][j])) {
					t.Fatalf("n=%d: d/d %s[%d] split %v, one engine %v", n, pr.paramNames[i], j, grads[i][j], want[i][j])
				}
			}
		}
	}
}
