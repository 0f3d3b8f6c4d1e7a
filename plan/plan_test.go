package plan

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
)

func loadTable(t testing.TB, name string) *dataset.Table {
	t.Helper()
	f, err := os.Open("../dataset/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := dataset.ReadCSV(f, dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func loadPlan(t testing.TB, name string) *Plan {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

// mutate loads a test plan as generic JSON, applies f, and returns the bytes.
func mutate(t testing.TB, name string, f func(m map[string]any)) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseRefusals(t *testing.T) {
	fwd := func(m map[string]any) []any { return m["forward"].([]any) }
	for _, c := range []struct {
		name string
		in   []byte
		want string
	}{
		{"unknown op", mutate(t, "mlp_pima.json", func(m map[string]any) {
			fwd(m)[3].(map[string]any)["op"] = "exec_shell"
		}), `forward[3]: unknown op "exec_shell"`},
		{"unknown field", mutate(t, "mlp_pima.json", func(m map[string]any) { m["command"] = "rm -rf /" }), `unknown field "command"`},
		{"unknown nested field", mutate(t, "mlp_pima.json", func(m map[string]any) {
			fwd(m)[0].(map[string]any)["code"] = "x"
		}), `unknown field "code"`},
		{"format", mutate(t, "mlp_pima.json", func(m map[string]any) { m["format"] = "fedgrid.plan/v9" }), `format is "fedgrid.plan/v9"`},
		{"undefined ref", mutate(t, "mlp_pima.json", func(m map[string]any) {
			fwd(m)[3].(map[string]any)["in"] = []any{"hidden", "w2"}
		}), `forward[3] matmul: input "hidden" is not defined before this op`},
		{"use before def", mutate(t, "mlp_pima.json", func(m map[string]any) {
			fwd(m)[0].(map[string]any)["in"] = []any{"h", "w1"}
		}), `forward[0] matmul: input "h" is not defined`},
		{"label in forward", mutate(t, "mlp_pima.json", func(m map[string]any) {
			fwd(m)[1].(map[string]any)["in"] = []any{"h", "y"}
		}), `label y may only be used by the loss`},
		{"overwrite param", mutate(t, "mlp_pima.json", func(m map[string]any) {
			fwd(m)[0].(map[string]any)["out"] = "w2"
		}), `output "w2" would overwrite a parameter`},
		{"arity", mutate(t, "mlp_pima.json", func(m map[string]any) {
			fwd(m)[2].(map[string]any)["in"] = []any{"h", "h"}
		}), `forward[2] relu: takes 1 input(s), has 2`},
		{"epochs", mutate(t, "mlp_pima.json", func(m map[string]any) {
			m["train"].(map[string]any)["epochs"] = 1e6
		}), `train.epochs is 1000000`},
		{"param shape", mutate(t, "mlp_pima.json", func(m map[string]any) {
			m["params"].(map[string]any)["w1"] = map[string]any{"shape": []any{8, 0}}
		}), `params.w1: shape [8 0]`},
		{"param count", mutate(t, "mlp_pima.json", func(m map[string]any) {
			m["params"].(map[string]any)["w1"] = map[string]any{"shape": []any{1000, 20000}}
		}), `more than the limit of 10000000`},
		{"unused param", mutate(t, "mlp_pima.json", func(m map[string]any) {
			m["params"].(map[string]any)["w9"] = map[string]any{"shape": []any{8, 2}}
		}), `params.w9 is never used`},
		{"loss", mutate(t, "mlp_pima.json", func(m map[string]any) {
			m["loss"].(map[string]any)["op"] = "hinge"
		}), `loss: unknown op "hinge"`},
		{"optimizer", mutate(t, "mlp_pima.json", func(m map[string]any) {
			m["optimizer"].(map[string]any)["name"] = "lbfgs"
		}), `optimizer: unknown name "lbfgs"`},
		{"type", mutate(t, "mlp_pima.json", func(m map[string]any) { m["train"].(map[string]any)["epochs"] = "many" }), `field "train.epochs"`},
		{"trailing", append(mutate(t, "mlp_pima.json", func(map[string]any) {}), []byte(" {}")...), "unexpected data after"},
		{"empty", []byte(""), "empty input"},
		// A key twice: the reviewer would read one value and the node run the other.
		{"key twice", bytes.Replace(mutate(t, "mlp_pima.json", func(map[string]any) {}), []byte(`"train":{`), []byte(`"train":{"epochs":1,`), 1), `field "train.epochs" is given twice`},
		{"key twice at the top", bytes.Replace(mutate(t, "mlp_pima.json", func(map[string]any) {}), []byte(`{`), []byte(`{"name":"a",`), 1), `field "name" is given twice`},
		{"case-folded key", bytes.Replace(mutate(t, "mlp_pima.json", func(map[string]any) {}), []byte(`"train":{`), []byte(`"Train":{`), 1), `unknown field "Train"`},
		{"trailing brace", append(mutate(t, "mlp_pima.json", func(map[string]any) {}), '}'), "unexpected data after"},
		{"too big", make([]byte, MaxPlanBytes+1), "more than the limit"},
	} {
		_, err := Parse(c.in)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want it to contain %q", c.name, err, c.want)
		}
	}
}

func TestCheckShapes(t *testing.T) {
	p := loadPlan(t, "mlp_pima.json")
	tab := loadTable(t, "pima_diabetes.csv")
	r, err := Check(p, tab.Columns())
	if err != nil {
		t.Fatal(err)
	}
	if r.ParamCount != 8*16+16+16+1 || r.Inputs != 8 || r.Outputs != 1 || r.Task != TaskBinary {
		t.Errorf("report %+v", r)
	}
	if got := FormatShape(r.Shapes["h"]); got != "[N,16]" {
		t.Errorf("h is %s", got)
	}
	if got := FormatShape(r.Shapes["y_hat"]); got != "[N,1]" {
		t.Errorf("y_hat is %s", got)
	}
	s := r.String()
	for _, want := range []string{"total", "161", "forward[3]", "[N,16]", "bce"} {
		if !strings.Contains(s, want) {
			t.Errorf("report text lacks %q:\n%s", want, s)
		}
	}
	// Without columns.
	if _, err := Check(p, nil); err != nil {
		t.Fatal(err)
	}

	// The error of the brief, word for word.
	b := mutate(t, "mlp_pima.json", func(m map[string]any) {
		m["params"].(map[string]any)["w2"] = map[string]any{"shape": []any{8, 1}}
	})
	p2, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Check(p2, nil)
	if err == nil || err.Error() != "forward[3] matmul: inner dimensions differ: h is [N,16], w2 is [8,1]" {
		t.Errorf("got %v", err)
	}
	for _, c := range []struct {
		name string
		f    func(m map[string]any)
		cols []dataset.Column
		want string
	}{
		{"missing feature", func(m map[string]any) {}, []dataset.Column{{Name: "glucose", Type: "number"}}, `features[0]: column "pregnant" is not in the data set`},
		{"category feature", func(m map[string]any) {}, func() []dataset.Column {
			c := tab.Columns()
			c[1].Type = "category"
			return c
		}(), `features[1]: column "glucose" is a category column`},
		{"missing label", func(m map[string]any) { m["label"] = "outcome" }, tab.Columns(), `label: column "outcome" is not in the data set`},
		{"bias shape", func(m map[string]any) {
			m["params"].(map[string]any)["b1"] = map[string]any{"shape": []any{8}}
		}, nil, `forward[1] add: shapes do not match: h is [N,16], b1 is [8]`},
		{"bce needs sigmoid", func(m map[string]any) {
			m["loss"].(map[string]any)["in"] = []any{"z", "y"}
		}, nil, `loss bce: prediction z must be the output of a sigmoid op`},
		{"bce width", func(m map[string]any) {
			m["params"].(map[string]any)["w2"] = map[string]any{"shape": []any{16, 3}}
		}, nil, `loss bce: prediction y_hat is [N,3]; binary cross-entropy needs [N,1]`},
	} {
		p, err := Parse(mutate(t, "mlp_pima.json", c.f))
		if err == nil {
			_, err = Check(p, c.cols)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

func trainHoldout(t *testing.T, planFile, csv string) (*Model, *Evaluation) {
	return trainSplit(t, planFile, csv, 1)
}

func trainSplit(t *testing.T, planFile, csv string, splitSeed int64) (*Model, *Evaluation) {
	t.Helper()
	p := loadPlan(t, planFile)
	tab := loadTable(t, csv)
	train, holdout := tab.Split(0.2, splitSeed)
	m, err := Train(context.Background(), p, train, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Evaluate(m, holdout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: holdout accuracy %.4f loss %.4f auc %.4f (validation accuracy %.4f, %d steps)",
		planFile, ev.Accuracy, ev.Loss, ev.AUC, m.Metrics.ValidationAccuracy, m.Metrics.Steps)
	return m, ev
}

// meanHoldout trains on five different 80/20 splits (split seeds 1..5) and
// returns the mean holdout accuracy and AUC: one split of 114-154 rows is
// too noisy to judge a model by (a single split moves accuracy by +-0.05).
func meanHoldout(t *testing.T, planFile, csv string) (acc, auc float64) {
	for seed := int64(1); seed <= 5; seed++ {
		_, ev := trainSplit(t, planFile, csv, seed)
		acc += ev.Accuracy / 5
		auc += ev.AUC / 5
	}
	t.Logf("%s: mean holdout accuracy %.4f, AUC %.4f", planFile, acc, auc)
	return acc, auc
}

func TestLogRegPima(t *testing.T) {
	acc, auc := meanHoldout(t, "logreg_pima.json", "pima_diabetes.csv")
	if acc < 0.74 || auc < 0.8 {
		t.Errorf("mean holdout accuracy %.4f (want >= 0.74), AUC %.4f (want >= 0.8)", acc, auc)
	}
}

func TestLogRegWDBC(t *testing.T) {
	acc, auc := meanHoldout(t, "logreg_wdbc.json", "wdbc_breast_cancer.csv")
	if acc < 0.95 || auc < 0.98 {
		t.Errorf("mean holdout accuracy %.4f (want >= 0.95), AUC %.4f (want >= 0.98)", acc, auc)
	}
}

func TestMLPPima(t *testing.T) {
	acc, _ := meanHoldout(t, "mlp_pima.json", "pima_diabetes.csv")
	if acc < 0.72 {
		t.Errorf("mean holdout accuracy %.4f, want >= 0.72", acc)
	}
	m, _ := trainHoldout(t, "mlp_pima.json", "pima_diabetes.csv")
	tl := m.Metrics.TrainLoss
	if len(tl) != 30 || !(tl[len(tl)-1] < tl[0]) || tl[0] > math.Log(2)+0.1 {
		t.Errorf("train loss did not fall: %v", tl)
	}
}

func TestModelRoundTripAndPredict(t *testing.T) {
	m, ev := trainHoldout(t, "mlp_pima.json", "pima_diabetes.csv")
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"format", "plan", "params", "preprocess", "metrics"} {
		if _, ok := generic[k]; !ok {
			t.Errorf("model JSON lacks %q", k)
		}
	}
	if _, ok := generic["metrics"].(map[string]any)["validation_accuracy"]; !ok {
		t.Error("metrics lacks validation_accuracy")
	}
	m2, err := ParseModel(b)
	if err != nil {
		t.Fatal(err)
	}
	holdout := loadTable(t, "pima_diabetes.csv")
	_, holdout = holdout.Split(0.2, 1)
	ev2, err := Evaluate(m2, holdout)
	if err != nil {
		t.Fatal(err)
	}
	if *ev2 != *ev {
		t.Errorf("evaluation changed after round trip: %+v vs %+v", ev2, ev)
	}
	pred, err := m2.Predict(holdout)
	if err != nil {
		t.Fatal(err)
	}
	if len(pred) != holdout.NumRows() || len(pred[0]) != 1 || pred[0][0] <= 0 || pred[0][0] >= 1 {
		t.Fatalf("pred %v", pred[:1])
	}
	// A hand computation of row 0 from the JSON alone.
	x := make([]float64, 8)
	for j, f := range m.Plan.Features {
		v, _ := holdout.Numeric(f)
		x[j] = (v[0] - m.Preprocess[0].Mean[j]) / m.Preprocess[0].Std[j]
	}
	w1, b1, w2, b2 := m.Params["w1"].Data, m.Params["b1"].Data, m.Params["w2"].Data, m.Params["b2"].Data
	z := b2[0]
	for k := 0; k < 16; k++ {
		h := b1[k]
		for j := 0; j < 8; j++ {
			h += x[j] * w1[j*16+k]
		}
		z += max(h, 0) * w2[k]
	}
	if want := 1 / (1 + math.Exp(-z)); math.Abs(pred[0][0]-want) > 1e-12 {
		t.Errorf("Predict row 0 = %v, hand computation %v", pred[0][0], want)
	}

	// Tampering is caught.
	for name, f := range map[string]func(g map[string]any){
		"param shape": func(g map[string]any) {
			g["params"].(map[string]any)["w1"].(map[string]any)["shape"] = []any{16, 8}
		},
		"param data": func(g map[string]any) {
			w := g["params"].(map[string]any)["b1"].(map[string]any)
			w["data"] = w["data"].([]any)[:3]
		},
		"missing param": func(g map[string]any) { delete(g["params"].(map[string]any), "b2") },
		"preprocess":    func(g map[string]any) { g["preprocess"] = []any{} },
		"extra field":   func(g map[string]any) { g["weights"] = 1 },
		"format":        func(g map[string]any) { g["format"] = "onnx" },
	} {
		var g map[string]any
		_ = json.Unmarshal(b, &g)
		f(g)
		bb, _ := json.Marshal(g)
		if _, err := ParseModel(bb); err == nil {
			t.Errorf("%s: tampered model accepted", name)
		}
	}
}

func TestTrainDeterministicAndCancel(t *testing.T) {
	p := loadPlan(t, "mlp_pima.json")
	tab := loadTable(t, "pima_diabetes.csv")
	p.Train.Epochs = 5
	a, err := Train(context.Background(), p, tab, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var calls []Progress
	b, err := Train(context.Background(), p, tab, TrainOptions{Progress: func(pg Progress) { calls = append(calls, pg) }})
	if err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Error("two runs with the same seed differ")
	}
	if len(calls) != 5 || calls[4].Epoch != 5 || calls[4].Epochs != 5 || calls[4].Loss != b.Metrics.TrainLoss[4] {
		t.Errorf("progress calls %+v", calls)
	}
	p.Train.Seed = 8
	c, err := Train(context.Background(), p, tab, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if jc, _ := json.Marshal(c); string(jc) == string(ja) {
		t.Error("a different seed gave the same model")
	}
	// Cancelled: stops with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	p.Train.Epochs = 1000
	n := 0
	_, err = Train(ctx, p, tab, TrainOptions{Progress: func(Progress) {
		if n++; n == 2 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || n != 2 {
		t.Errorf("cancel: err %v after %d epochs", err, n)
	}
}

func TestPartialLastBatch(t *testing.T) {
	// 614 training rows, batch 100: six full batches and one of 14.
	p := loadPlan(t, "logreg_pima.json")
	p.Train.BatchSize = 100
	p.Train.Epochs = 3
	tab := loadTable(t, "pima_diabetes.csv")
	m, err := Train(context.Background(), p, tab, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Metrics.TrainRows != 614 || m.Metrics.Steps != 3*7 {
		t.Errorf("rows %d steps %d, want 614 and 21", m.Metrics.TrainRows, m.Metrics.Steps)
	}
}

// TestTrainErrorsShowNoData: a training error reaches the requester, who
// may not see the data: it names the column and the rule, never a cell's
// value or the row that broke it.
func TestTrainErrorsShowNoData(t *testing.T) {
	p := loadPlan(t, "logreg_pima.json")
	head := "pregnant,glucose,pressure,triceps,insulin,mass,pedigree,age,diabetes\n"
	for _, c := range []struct {
		label, secret string
	}{
		{"0\n1\n4242.5\n1\n", "4242.5"}, // numeric, not 0/1
		{"0\nJane Doe\n1\n1\n", "Jane"}, // text
	} {
		var b strings.Builder
		b.WriteString(head)
		for i, y := range strings.Split(strings.TrimSpace(c.label), "\n") {
			fmt.Fprintf(&b, "%d,%d,70,20,80,30.5,0.5,%d,%s\n", i, 100+i, 30+i, y)
		}
		tab, err := dataset.ReadCSV(strings.NewReader(b.String()), dataset.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = Train(context.Background(), p, tab, TrainOptions{})
		if err == nil {
			t.Fatalf("label %q: trained", c.label)
		}
		msg := err.Error()
		if strings.Contains(msg, c.secret) || strings.Contains(msg, "row") || !strings.Contains(msg, `"diabetes"`) {
			t.Errorf("error shows data or does not name the label: %s", msg)
		}
	}
}
