package plan

import (
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
)

// TestBatchNormRunningStats: one training step of each engine moves the
// running statistics as PyTorch does (momentum, unbiased variance), and
// inference uses them.
func TestBatchNormRunningStats(t *testing.T) {
	p, err := Parse([]byte(enginePlans["batch_norm dropout"]))
	if err != nil {
		t.Fatal(err)
	}
	tab := synthTable(t, 64, 3)
	pr, x, y := batchFor(t, p, tab)
	const rows = 12
	// The batch statistics of the batch_norm input, from the reference forward pass.
	base, err := initParams(p, pr, nil)
	if err != nil {
		t.Fatal(err)
	}
	var bn step
	for _, st := range pr.steps {
		if st.op == "batch_norm" {
			bn = st
		}
	}
	vals := pr.run(base, x[:rows*pr.inputs], rows, true)
	k := pr.shape[bn.a][1]
	mean, bvar := make([]float64, k), make([]float64, k)
	batchStats(vals[bn.a], rows, k, mean, bvar)
	rm, rv := base[bn.stat[0]], base[bn.stat[1]]
	for j := 0; j < k; j++ {
		if rm[j] != 0 || rv[j] != 1 {
			t.Fatalf("running statistics start at %v, %v; want 0, 1", rm[j], rv[j])
		}
	}
	for _, kind := range []Engine{EngineNative, EngineNative64, EngineGorgonia} {
		params := cloneParams(base, nil)
		eng, err := newEngine(kind, pr, params, rows)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.step(x, y, rows, zerosLike(params)); err != nil {
			t.Fatal(err)
		}
		eng.close()
		for j := 0; j < k; j++ {
			wantM := 0.8*0 + 0.2*mean[j]
			wantV := 0.8*1 + 0.2*bvar[j]*rows/(rows-1)
			if math.Abs(params[bn.stat[0]][j]-wantM) > 1e-5 || math.Abs(params[bn.stat[1]][j]-wantV) > 1e-5 {
				t.Errorf("%s: running mean/var[%d] %v %v, want %v %v", kind, j, params[bn.stat[0]][j], params[bn.stat[1]][j], wantM, wantV)
			}
		}
		for i := range params {
			if !slices.Contains(pr.stats, i) && !slices.Equal(params[i], base[i]) {
				t.Errorf("%s: the step changed trainable parameter %s", kind, pr.paramNames[i])
			}
		}
	}

	// Inference: batch_norm normalises with the running statistics, so one
	// row's prediction does not depend on the other rows; dropout is off.
	m, err := Train(context.Background(), p, tab, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rv := m.Params["rv"].Data; rv[0] == 1 {
		t.Errorf("running variance unchanged by training: %v", rv)
	}
	pm := m.paramList(pr)
	all := pr.forward(pm, x[:10*pr.inputs], 10)[pr.pred]
	one := pr.forward(pm, x[3*pr.inputs:4*pr.inputs], 1)[pr.pred]
	for j := range one {
		if one[j] != all[3*pr.outputs+j] {
			t.Fatalf("inference of row 3 alone %v differs from within a batch %v", one, all[3*pr.outputs:4*pr.outputs])
		}
	}
	// A stored running variance below zero is refused.
	b, _ := json.Marshal(m)
	bad := strings.Replace(string(b), `"rv":{"shape":[8],"data":[`, `"rv":{"shape":[8],"data":[-`, 1)
	if _, err := ParseModel([]byte(bad)); err == nil || !strings.Contains(err.Error(), "running variance cannot be negative") {
		t.Errorf("negative running variance: %v", err)
	}
	train1 := pr.run(pm, x[:10*pr.inputs], 10, true)[pr.pred]
	if slices.Equal(train1, all) {
		t.Error("training mode gives the inference result")
	}
}

// TestPlanWeights: starting weights replace the drawn values; a model
// trained for one step with a tiny learning rate starts from them.
func TestPlanWeights(t *testing.T) {
	var p Plan
	if err := json.Unmarshal([]byte(enginePlans["dropout layer_norm"]), &p); err != nil {
		t.Fatal(err)
	}
	w2 := Tensor{Shape: []int{8, 1}, Data: []float64{1, 2, 3, 4, 5, 6, 7, 8}}
	p.Weights = map[string]Tensor{"w2": w2}
	b, _ := json.Marshal(&p)
	q, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := compile(q)
	if err != nil {
		t.Fatal(err)
	}
	params, err := initParams(q, pr, nil)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(pr.paramNames, "w2")
	if !slices.Equal(params[i], w2.Data) {
		t.Errorf("w2 starts at %v, want %v", params[i], w2.Data)
	}
	// Without weights the other parameters start where they would anyway.
	plain, _ := initParams(&Plan{Params: q.Params, Train: q.Train}, pr, nil)
	j := slices.Index(pr.paramNames, "w1")
	if !slices.Equal(params[j], plain[j]) {
		t.Error("weights for w2 changed w1's starting values")
	}
	// A hosted model's init wins over the plan's weights.
	params, _ = initParams(q, pr, map[string]Tensor{"w2": {Shape: []int{8, 1}, Data: make([]float64, 8)}})
	if params[i][0] != 0 {
		t.Errorf("init did not override the plan's weights: %v", params[i])
	}
}

// TestNewOpsRefused: bad settings of the new ops get a clear error.
func TestNewOpsRefused(t *testing.T) {
	base := enginePlans["batch_norm dropout"]
	for _, c := range []struct{ from, to, want string }{
		{`"p":0.2`, `"p":1`, "p is 1, must be 0 <= p < 1"},
		{`"p":0.2`, `"p":0.2,"eps":0.1`, "eps is for layer_norm and batch_norm only"},
		{`"momentum":0.2`, `"momentum":1.5`, "momentum is 1.5, must be 0 to 1"},
		{`"momentum":0.2`, `"eps":0`, "eps is 0, must be > 0"},
		{`"in":["h","rm","rv"]`, `"in":["h","rm"]`, "takes 3 input(s), has 2"},
		{`"in":["h","rm","rv"]`, `"in":["h","rm","h"]`, `input "h" must be a parameter`},
		{`{"op":"mul","in":["h","g"],"out":"h"}`, `{"op":"mul","in":["h","rv"],"out":"h"}`, `"rv" holds batch_norm running statistics`},
		{`"rm": {"shape":[8]}`, `"rm": {"shape":[7]}`, "running statistics must be vectors [8], one per feature: rm is [7]"},
		{`"batch_size": 16`, `"batch_size": 1`, "batch_norm needs batches of 2 rows or more"},
		{`"validation_fraction": 0.25}`, `"validation_fraction": 0}, "privacy": {"dp_sgd": {"noise_multiplier":1, "max_grad_norm":1}, "delta":1e-5}`, "use layer_norm"},
		{`"format"`, `"weights": {"nope": {"shape":[1], "data":[1]}}, "format"`, "weights.nope: not a parameter of the plan"},
		{`"format"`, `"weights": {"w2": {"shape":[3,8], "data":[1]}}, "format"`, "weights.w2: shape [3 8], the plan's params say [8 3]"},
		{`"format"`, `"weights": {"b2": {"shape":[3], "data":[1]}}, "format"`, "weights.b2: 1 numbers, shape [3] needs 3"},
		{`"format"`, `"weights": {"rv": {"shape":[8], "data":[1,1,1,-1,1,1,1,1]}}, "format"`, "weights.rv[3] is -1, but a running variance cannot be negative"},
	} {
		if !strings.Contains(base, c.from) {
			t.Fatalf("%q not in the plan", c.from)
		}
		_, err := Check(mustParseLoose(t, strings.Replace(base, c.from, c.to, 1)), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s -> %s: error %v, want %q", c.from, c.to, err, c.want)
		}
	}
}

func mustParseLoose(t *testing.T, s string) *Plan {
	t.Helper()
	var p Plan
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// TestDropoutLayerNormWithDPSGD: layer_norm (the norm DP-SGD allows) and
// dropout train under DP-SGD, each example with a mask of its own.
func TestDropoutLayerNormWithDPSGD(t *testing.T) {
	src := strings.Replace(enginePlans["dropout layer_norm"], `"validation_fraction": 0.25}`,
		`"validation_fraction": 0}, "privacy": {"dp_sgd": {"noise_multiplier": 0.8, "max_grad_norm": 1}, "delta": 1e-5}`, 1)
	src = strings.Replace(src, `{"op":"standardize","columns":["a","b"]}, {"op":"min_max"}`,
		`{"op":"standardize","columns":["a","b"],"mean":[0,1],"std":[1,3]}, {"op":"min_max","min":[0,-10,0,-5],"max":[1,10,10,5]}`, 1)
	p, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Train(context.Background(), p, synthTable(t, 200, 5), TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Privacy == nil || !(m.Privacy.Epsilon > 0) {
		t.Fatalf("privacy %+v", m.Privacy)
	}
}
