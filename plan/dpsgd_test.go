package plan

import (
	"context"
	"math"
	"strings"
	"testing"
)

// TestDPSGDPima is acceptance 3 of issue 4: DP-SGD on the diabetes set at
// epsilon <= 1 (delta 1e-5) reaches held-out accuracy >= 0.70. The noise
// is cryptographically random, so the figure varies between runs; the test
// takes the mean over five 80/20 splits.
func TestDPSGDPima(t *testing.T) {
	tab := loadTable(t, "pima_diabetes.csv")
	p := loadPlan(t, "dp_logreg_pima.json")
	var mean float64
	for seed := int64(1); seed <= 5; seed++ {
		train, holdout := tab.Split(0.2, seed)
		eps, err := p.Epsilon(train.NumRows())
		if err != nil {
			t.Fatal(err)
		}
		if eps > 1 {
			t.Fatalf("plan spends epsilon %.3f > 1", eps)
		}
		m, err := Train(context.Background(), p, train, TrainOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if m.Privacy == nil || m.Privacy.Epsilon != eps || m.Privacy.Delta != 1e-5 {
			t.Fatalf("model privacy %+v, want epsilon %v", m.Privacy, eps)
		}
		if len(m.Metrics.TrainLoss) != 0 || m.Metrics.ValidationRows != 0 {
			t.Errorf("a private run released data-dependent metrics: %+v", m.Metrics)
		}
		q, steps, _ := p.DPSteps(train.NumRows())
		if m.Metrics.Steps != steps {
			t.Errorf("ran %d steps, the accountant charged %d", m.Metrics.Steps, steps)
		}
		ev, err := Evaluate(m, holdout)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("split %d: epsilon %.3f (q %.3f, %d steps, delta 1e-5), holdout accuracy %.4f, AUC %.4f", seed, eps, q, steps, ev.Accuracy, ev.AUC)
		mean += ev.Accuracy / 5
	}
	t.Logf("DP-SGD mean holdout accuracy %.4f", mean)
	if mean < 0.70 {
		t.Errorf("mean holdout accuracy %.4f, want >= 0.70", mean)
	}
}

// TestDPSGDClipping: with full-batch sampling (q = 1) and negligible noise,
// a DP step is exactly the mean of the per-example gradients clipped to
// max_grad_norm.
func TestDPSGDClipping(t *testing.T) {
	tab := loadTable(t, "pima_diabetes.csv")
	tab = tab.Select([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	p := loadPlan(t, "dp_logreg_pima.json")
	p.Train.BatchSize = 10
	p.Privacy.DPSGD.NoiseMultiplier = 1e-12
	p.Privacy.DPSGD.MaxGradNorm = 0.3
	pr, x, y := batchFor(t, p, tab)
	params, _ := initParams(p, pr, nil)
	params[0][0], params[1][2] = 0.4, -0.7
	rows := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	dp, err := newDPState(p, pr, params, rows, nil, EngineNative)
	if err != nil {
		t.Fatal(err)
	}
	got := zerosLike(params)
	if err := dp.step(x, y, pr.inputs, got); err != nil {
		t.Fatal(err)
	}
	want := zerosLike(params)
	eng := newNativeEngine(pr, params, 1, false)
	defer eng.close()
	one := zerosLike(params)
	clipped := 0
	for _, r := range rows {
		eng.step(x[r*pr.inputs:(r+1)*pr.inputs], y[r:r+1], 1, one)
		n := 0.0
		for _, g := range one {
			for _, v := range g {
				n += v * v
			}
		}
		s := math.Min(1, 0.3/math.Sqrt(n))
		if s < 1 {
			clipped++
		}
		for i := range one {
			for j := range one[i] {
				want[i][j] += s * one[i][j] / 10
			}
		}
	}
	if clipped == 0 {
		t.Fatal("no gradient was clipped; the test would prove nothing")
	}
	for i := range want {
		for j := range want[i] {
			if math.Abs(got[i][j]-want[i][j]) > 1e-9 {
				t.Errorf("grad %s[%d] = %v, want %v", pr.paramNames[i], j, got[i][j], want[i][j])
			}
		}
	}
}

func TestDPSGDRefusals(t *testing.T) {
	for _, c := range []struct {
		name string
		f    func(m map[string]any)
		want string
	}{
		{"fitted stats", func(m map[string]any) { m["preprocess"] = []any{map[string]any{"op": "standardize"}} }, "must be declared"},
		{"validation split", func(m map[string]any) { m["train"].(map[string]any)["validation_fraction"] = 0.2 }, "validation_fraction must be 0"},
		{"no delta", func(m map[string]any) { delete(m["privacy"].(map[string]any), "delta") }, "privacy.delta"},
		{"stats length", func(m map[string]any) {
			m["preprocess"].([]any)[0].(map[string]any)["mean"] = []any{1, 2}
		}, "one value per scaled feature (8)"},
	} {
		_, err := Parse(mutate(t, "dp_logreg_pima.json", c.f))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	p := loadPlan(t, "logreg_pima.json")
	if _, err := p.Epsilon(100); err == nil {
		t.Error("Epsilon of a plan without privacy accepted")
	}
}
