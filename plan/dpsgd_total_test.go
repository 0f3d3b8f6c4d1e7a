package plan

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
)

// overflowPlan squares a feature standardized with std 1e-6 five times: a
// salary far from the declared mean overflows to +Inf, so its gradient is
// NaN or infinite; near the mean everything is finite. Whether a run fails
// would tell whether some row's salary is far from mean.
func overflowPlan(t *testing.T, dp bool) *Plan {
	t.Helper()
	priv := ""
	if dp {
		priv = `, "privacy": {"dp_sgd": {"max_grad_norm": 1, "noise_multiplier": 1.1}, "delta": 1e-5}`
	}
	p, err := Parse([]byte(`{"format": "` + Format + `", "name": "probe",
	 "features": ["salary"], "label": "y",
	 "preprocess": [{"op": "standardize", "mean": [50000], "std": [1e-6]}],
	 "params": {"w": {"shape": [1, 1], "init": "ones"}},
	 "forward": [
	  {"op": "mul", "in": ["x", "x"], "out": "a"},
	  {"op": "mul", "in": ["a", "a"], "out": "b"},
	  {"op": "mul", "in": ["b", "b"], "out": "c"},
	  {"op": "mul", "in": ["c", "c"], "out": "d"},
	  {"op": "mul", "in": ["d", "d"], "out": "e"},
	  {"op": "matmul", "in": ["e", "w"], "out": "z"},
	  {"op": "sigmoid", "in": ["z"], "out": "y_hat"}],
	 "loss": {"op": "bce", "in": ["y_hat", "y"]},
	 "optimizer": {"name": "sgd", "learning_rate": 0.1},
	 "train": {"epochs": 2, "batch_size": 8, "seed": 1}` + priv + `}`))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func salaryTable(t *testing.T, secret float64, label string) *dataset.Table {
	t.Helper()
	var b strings.Builder
	b.WriteString("salary,y\n")
	for i := range 40 {
		fmt.Fprintf(&b, "%d,%d\n", 50000, i%2)
	}
	fmt.Fprintf(&b, "%g,%s\n", secret, label)
	tab, err := dataset.ReadCSV(strings.NewReader(b.String()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// TestDPSGDIsTotal: with dp_sgd, a row whose gradient is not finite, or
// whose label the loss cannot take, counts as a zero gradient: training
// succeeds with finite parameters whatever the secret row holds. Without
// dp_sgd the same plan fails, with an error that names no epoch or value.
func TestDPSGDIsTotal(t *testing.T) {
	for _, secret := range []float64{50000, 90000} {
		for _, label := range []string{"1", "7"} {
			m, err := Train(context.Background(), overflowPlan(t, true), salaryTable(t, secret, label), TrainOptions{})
			if err != nil {
				t.Fatalf("DP-SGD with salary %g, label %s: %v", secret, label, err)
			}
			for name, v := range m.Params {
				for _, x := range v.Data {
					if math.IsNaN(x) || math.IsInf(x, 0) {
						t.Fatalf("salary %g: %s holds %v", secret, name, x)
					}
				}
			}
		}
	}
	_, err := Train(context.Background(), overflowPlan(t, false), salaryTable(t, 90000, "1"), TrainOptions{})
	if err == nil {
		t.Fatal("the plan without DP-SGD trained; the test proves nothing")
	}
	for _, leak := range []string{"epoch", "Inf", "NaN", "90000", "row"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("error %q carries %q", err, leak)
		}
	}
}

func TestClipScale(t *testing.T) {
	for _, c := range []struct {
		g    [][]float64
		want float64
	}{
		{[][]float64{{0.3, 0.4}}, 1},
		{[][]float64{{3, 4}}, 0.2},
		{[][]float64{{math.NaN(), 0}}, 0},
		{[][]float64{{1}, {math.Inf(-1)}}, 0},
		{[][]float64{{1e200, 1e200}}, 1 / (math.Sqrt2 * 1e200)},
		{[][]float64{{0, 0}}, 1},
	} {
		if got := clipScale(c.g, 1); math.Abs(got-c.want) > 1e-12*c.want {
			t.Errorf("clipScale(%v) = %g, want %g", c.g, got, c.want)
		}
	}
}
