package plan

import (
	"context"
	"math"
	"reflect"
	"strings"
	"testing"
)

// hostedModel trains enginePlans["bce_logits relu"] (Adam) for the hosted
// model tests.
func hostedModel(t *testing.T) *Model {
	t.Helper()
	p, err := Parse([]byte(enginePlans["bce_logits relu"]))
	if err != nil {
		t.Fatal(err)
	}
	p.Train.Epochs = 3
	m, err := Train(context.Background(), p, synthTable(t, 200, 4), TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestResolve(t *testing.T) {
	m := hostedModel(t)
	settings := `{"format": "` + Format + `", "model": "m1", "name": "again",
	 "train": {"epochs": 2, "batch_size": 8, "seed": 9, "validation_fraction": 0.2},
	 "optimizer": {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9}}`
	p, err := Parse([]byte(settings))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Check(p, synthTable(t, 4, 1).Columns()); err == nil || !strings.Contains(err.Error(), "resolve") {
		t.Errorf("Check of an unresolved plan: %v, want an error asking to resolve it", err)
	}
	q, err := Resolve(p, m)
	if err != nil {
		t.Fatal(err)
	}
	if q.Model != "" || q.Name != "again" || !reflect.DeepEqual(q.Train, p.Train) || *q.Optimizer != *p.Optimizer {
		t.Errorf("resolved plan: model %q name %q train %+v optimizer %+v", q.Model, q.Name, q.Train, q.Optimizer)
	}
	if !reflect.DeepEqual(q.Forward, m.Plan.Forward) || !reflect.DeepEqual(q.Params, m.Plan.Params) ||
		!reflect.DeepEqual(q.Features, m.Plan.Features) || q.Label != m.Plan.Label || !reflect.DeepEqual(q.Preprocess, m.Plan.Preprocess) {
		t.Error("resolved plan lost the hosted model's features, preprocessing, parameters or forward ops")
	}
	// The resolved plan is a copy: changing it leaves the hosted model and
	// the request alone.
	hostedEpochs := m.Plan.Train.Epochs
	q.Train.Epochs++
	q.Optimizer.LearningRate = 1
	q.Forward[0].Op = "relu"
	if m.Plan.Train.Epochs != hostedEpochs || p.Optimizer.LearningRate != 0.01 || m.Plan.Forward[0].Op != "matmul" {
		t.Error("Resolve shares memory with its inputs")
	}

	// Without an optimizer the hosted model's stays.
	p2, err := Parse([]byte(`{"format": "` + Format + `", "model": "m1", "train": {"epochs": 1, "batch_size": 8}}`))
	if err != nil {
		t.Fatal(err)
	}
	q2, err := Resolve(p2, m)
	if err != nil {
		t.Fatal(err)
	}
	if q2.Optimizer.Name != "adam" || q2.Name != m.Plan.Name {
		t.Errorf("optimizer %+v name %q, want the hosted model's", q2.Optimizer, q2.Name)
	}

	// A plan without a model is itself; a missing model, or settings the
	// model cannot take, are refused with the model's name.
	if r, err := Resolve(m.Plan, nil); err != nil || r != m.Plan {
		t.Errorf("Resolve of a full plan = %p, %v; want the plan itself", r, err)
	}
	if _, err := Resolve(p, nil); err == nil || !strings.Contains(err.Error(), `"m1" is missing`) {
		t.Errorf("missing hosted model: %v", err)
	}
	dp, err := Parse([]byte(`{"format": "` + Format + `", "model": "m1", "train": {"epochs": 1, "batch_size": 8},
	 "privacy": {"dp_sgd": {"max_grad_norm": 1, "noise_multiplier": 1}, "delta": 1e-5}}`))
	if err != nil {
		t.Fatal(err)
	}
	// The hosted model fits standardize on the rows, which DP-SGD forbids.
	if _, err := Resolve(dp, m); err == nil || !strings.Contains(err.Error(), `hosted model "m1" with these settings`) {
		t.Errorf("DP settings on a model with fitted preprocessing: %v", err)
	}
}

// TestTrainInit: TrainOptions.Init starts from given parameters (a hosted
// model's), the rest from the plan's seeded initialization.
func TestTrainInit(t *testing.T) {
	m := hostedModel(t)
	tab := synthTable(t, 120, 5)
	p, err := Parse([]byte(`{"format": "` + Format + `", "model": "m1",
	 "train": {"epochs": 1, "batch_size": 16, "seed": 2, "validation_fraction": 0.25},
	 "optimizer": {"name": "sgd", "learning_rate": 1e-9}}`))
	if err != nil {
		t.Fatal(err)
	}
	q, err := Resolve(p, m)
	if err != nil {
		t.Fatal(err)
	}
	// A learning rate of 1e-9 leaves every parameter where it started.
	near := func(a, b []float64) bool {
		for i := range a {
			if math.Abs(a[i]-b[i]) > 1e-6 {
				return false
			}
		}
		return true
	}
	fresh, err := Train(context.Background(), q, tab, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cont, err := Train(context.Background(), q, tab, TrainOptions{Init: m.Params})
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range m.Params {
		if !near(cont.Params[name].Data, v.Data) {
			t.Errorf("%s: continued training did not start from the hosted values", name)
		}
		if name == "w1" && near(fresh.Params[name].Data, v.Data) {
			t.Errorf("%s: a fresh run starts at the hosted values; the test proves nothing", name)
		}
	}
	// Init gives only w1: the others are drawn as without Init.
	part, err := Train(context.Background(), q, tab, TrainOptions{Init: map[string]Tensor{"w1": m.Params["w1"]}})
	if err != nil {
		t.Fatal(err)
	}
	for name := range m.Params {
		want := fresh.Params[name].Data
		if name == "w1" {
			want = m.Params[name].Data
		}
		if !near(part.Params[name].Data, want) {
			t.Errorf("%s: partial Init gave the wrong start", name)
		}
	}
	// A tensor of the wrong shape is refused.
	bad := map[string]Tensor{"w1": {Shape: []int{6, 7}, Data: m.Params["w1"].Data}}
	if _, err := Train(context.Background(), q, tab, TrainOptions{Init: bad}); err == nil || !strings.Contains(err.Error(), `init: "w1" has shape [6 7]`) {
		t.Errorf("wrong init shape: %v", err)
	}
}

func TestEarlyStopping(t *testing.T) {
	tab := synthTable(t, 200, 6)
	plan := func(epochs int, es *EarlyStopping) *Plan {
		p, err := Parse([]byte(enginePlans["bce_logits relu"]))
		if err != nil {
			t.Fatal(err)
		}
		p.Train.Epochs, p.Train.EarlyStopping = epochs, es
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// min_delta larger than any loss: only the first epoch counts as an
	// improvement, so training stops after 1 + patience epochs and keeps
	// the first epoch's parameters.
	calls := 0
	m, err := Train(context.Background(), plan(10, &EarlyStopping{Patience: 2, MinDelta: 1e9}), tab,
		TrainOptions{Progress: func(Progress) { calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	if m.Metrics.Epochs != 3 || m.Metrics.BestEpoch != 1 || calls != 3 || len(m.Metrics.ValidationLossHistory) != 3 {
		t.Fatalf("epochs %d, best %d, progress calls %d, history %v; want 3, 1, 3, 3 entries",
			m.Metrics.Epochs, m.Metrics.BestEpoch, calls, m.Metrics.ValidationLossHistory)
	}
	if m.Metrics.ValidationLoss != m.Metrics.ValidationLossHistory[0] {
		t.Errorf("validation loss %v, want the best epoch's %v", m.Metrics.ValidationLoss, m.Metrics.ValidationLossHistory[0])
	}
	one, err := Train(context.Background(), plan(1, nil), tab, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Params, one.Params) {
		t.Error("early stopping did not restore the best epoch's parameters (those of a one-epoch run)")
	}

	// Patience longer than the run: every epoch runs; the best epoch is the
	// first minimum of the validation loss, and its metrics are reported.
	m, err = Train(context.Background(), plan(6, &EarlyStopping{Patience: 10}), tab, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := m.Metrics.ValidationLossHistory
	best := 0
	for i, v := range h {
		if v < h[best] {
			best = i
		}
	}
	if m.Metrics.Epochs != 6 || m.Metrics.BestEpoch != best+1 || m.Metrics.ValidationLoss != h[best] {
		t.Errorf("epochs %d best %d loss %v; want 6, %d, %v (history %v)", m.Metrics.Epochs, m.Metrics.BestEpoch, m.Metrics.ValidationLoss, best+1, h[best], h)
	}
}
