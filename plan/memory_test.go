package plan

import (
	"os"
	"strings"
	"testing"
)

func TestTrainMemory(t *testing.T) {
	wide, err := Parse([]byte(`{"format": "` + Format + `", "name": "wide",
	 "features": ["a", "b"], "label": "y",
	 "params": {"w1": {"shape": [2, 1000000]}, "w2": {"shape": [1000000, 1]}},
	 "forward": [
	  {"op": "matmul", "in": ["x", "w1"], "out": "h"},
	  {"op": "relu", "in": ["h"], "out": "h1"},
	  {"op": "relu", "in": ["h1"], "out": "h2"},
	  {"op": "relu", "in": ["h2"], "out": "h3"},
	  {"op": "matmul", "in": ["h3", "w2"], "out": "z"},
	  {"op": "sigmoid", "in": ["z"], "out": "y_hat"}],
	 "loss": {"op": "bce", "in": ["y_hat", "y"]},
	 "optimizer": {"name": "adam", "learning_rate": 0.01},
	 "train": {"epochs": 1, "batch_size": 32, "seed": 1}}`))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Check(wide, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Four [32, 1e6] values and their gradients, 8 bytes each: 2.048 GB,
	// plus 3e6 parameters times 6 copies.
	want := int64(4*32e6*8*2 + 3e6*8*6)
	if r.StepMemory < want || r.StepMemory > want+1<<20 {
		t.Errorf("step memory %d, want about %d", r.StepMemory, want)
	}
	if !strings.Contains(r.String(), "memory: 2.") {
		t.Errorf("plan check table lacks the memory line:\n%s", r)
	}
	m, err := TrainMemory(wide, 1000)
	if err != nil || m < r.StepMemory {
		t.Fatalf("train memory %d, %v; want at least the step's %d", m, err, r.StepMemory)
	}

	b, err := os.ReadFile("../examples/plans/logreg_pima.json")
	if err != nil {
		t.Fatal(err)
	}
	small, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	// 768 rows: the data (2 x 768 x 9 x 8 B), 154 validation rows of a few
	// values, a 32-row step.
	if m, err := TrainMemory(small, 768); err != nil || m > 1<<20 || m < 2*768*9*8 {
		t.Errorf("pima logreg on 768 rows: %d bytes, %v", m, err)
	}
	if got := FormatBytes(2_048_000_000); got != "2.05 GB" {
		t.Errorf("FormatBytes = %q", got)
	}
}
