package e2e

// An independent reading of a released model (fedgrid.model/v1): the
// contract promises that anyone can recompute its predictions from
// plan.forward, params and preprocess with no fedgrid code. This file does
// that with the standard library only — plain JSON maps, encoding/csv and its
// own small forward pass — and checks the result against
// `fedgrid model eval --json`.

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"testing"

	"github.com/fedgrid/fedgrid/internal/harness"
)

// mat is a row-major matrix; a parameter of shape [k] is a 1 x k matrix
// that add, sub and mul broadcast over rows.
type mat struct {
	rows, cols int
	data       []float64
}

func (m mat) at(r, c int) float64 { return m.data[r*m.cols+c] }

func newMat(rows, cols int) mat { return mat{rows, cols, make([]float64, rows*cols)} }

// recomputed is what the independent forward pass gives on a labelled CSV.
type recomputed struct {
	rows     int
	accuracy float64
	loss     float64
	auc      float64
	scores   []float64 // P(label = 1) per row
}

// recompute runs the model's preprocessing and forward ops on the rows of
// csvPath and scores them against the plan's label.
func recompute(model map[string]any, csvPath string) (*recomputed, error) {
	if f, _ := model["format"].(string); f != "fedgrid.model/v1" {
		return nil, fmt.Errorf("format %q", f)
	}
	pl, ok := model["plan"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("no plan")
	}
	features := strs(pl["features"])
	label, _ := pl["label"].(string)
	if len(features) == 0 || label == "" {
		return nil, fmt.Errorf("plan lacks features or label")
	}

	// The CSV, read with the standard library.
	f, err := os.Open(csvPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) < 2 {
		return nil, fmt.Errorf("%s has no rows", csvPath)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	rows := recs[1:]
	n := len(rows)

	// one_hot columns of the plan expand a feature into one input per category.
	oneHot := map[string][]string{}
	for _, p := range anys(pl["preprocess"]) {
		pp, _ := p.(map[string]any)
		if pp["op"] == "one_hot" {
			c, _ := pp["column"].(string)
			oneHot[c] = strs(pp["categories"])
		}
	}
	width := 0
	for _, ft := range features {
		if cats, ok := oneHot[ft]; ok {
			width += len(cats)
		} else {
			width++
		}
	}
	x := newMat(n, width)
	y := make([]float64, n)
	li, ok := col[label]
	if !ok {
		return nil, fmt.Errorf("label %q not in the CSV", label)
	}
	for r, rec := range rows {
		j := 0
		for _, ft := range features {
			ci, ok := col[ft]
			if !ok {
				return nil, fmt.Errorf("feature %q not in the CSV", ft)
			}
			if cats, ok := oneHot[ft]; ok {
				for k, c := range cats {
					if rec[ci] == c {
						x.data[r*width+j+k] = 1
					}
				}
				j += len(cats)
				continue
			}
			v, err := strconv.ParseFloat(rec[ci], 64)
			if err != nil {
				return nil, fmt.Errorf("row %d, %s: %v", r+1, ft, err)
			}
			x.data[r*width+j] = v
			j++
		}
		if y[r], err = strconv.ParseFloat(rec[li], 64); err != nil {
			return nil, fmt.Errorf("row %d, label: %v", r+1, err)
		}
	}

	// The preprocessing state released with the model, in order.
	for i, s := range anys(model["preprocess"]) {
		st, _ := s.(map[string]any)
		switch st["op"] {
		case "standardize":
			mean, std := floats(st["mean"]), floats(st["std"])
			if len(mean) != width || len(std) != width {
				return nil, fmt.Errorf("preprocess[%d]: %d means and %d stds for %d inputs", i, len(mean), len(std), width)
			}
			for k := range x.data {
				c := k % width
				x.data[k] = (x.data[k] - mean[c]) / std[c]
			}
		case "min_max":
			lo, hi := floats(st["min"]), floats(st["max"])
			if len(lo) != width || len(hi) != width {
				return nil, fmt.Errorf("preprocess[%d]: bad min_max widths", i)
			}
			for k := range x.data {
				c := k % width
				x.data[k] = (x.data[k] - lo[c]) / (hi[c] - lo[c])
			}
		case "one_hot": // applied when building x
		default:
			return nil, fmt.Errorf("preprocess[%d]: op %v not handled by this test", i, st["op"])
		}
	}

	// Parameters, then the forward ops in order.
	vals := map[string]mat{"x": x}
	params, _ := model["params"].(map[string]any)
	for name, p := range params {
		pm, _ := p.(map[string]any)
		shape, data := floats(pm["shape"]), floats(pm["data"])
		var m mat
		switch len(shape) {
		case 1:
			m = mat{1, int(shape[0]), data}
		case 2:
			m = mat{int(shape[0]), int(shape[1]), data}
		default:
			return nil, fmt.Errorf("param %s: shape %v", name, shape)
		}
		if len(data) != m.rows*m.cols {
			return nil, fmt.Errorf("param %s: %d numbers for shape %v", name, len(data), shape)
		}
		vals[name] = m
	}
	for i, o := range anys(pl["forward"]) {
		op, _ := o.(map[string]any)
		in := strs(op["in"])
		out, _ := op["out"].(string)
		args := make([]mat, len(in))
		for k, name := range in {
			v, ok := vals[name]
			if !ok {
				return nil, fmt.Errorf("forward[%d]: %q is not defined", i, name)
			}
			args[k] = v
		}
		res, err := apply(op["op"], args)
		if err != nil {
			return nil, fmt.Errorf("forward[%d]: %w", i, err)
		}
		vals[out] = res
	}

	// The loss's first input is the prediction.
	loss, _ := pl["loss"].(map[string]any)
	lin := strs(loss["in"])
	if len(lin) == 0 {
		return nil, fmt.Errorf("loss has no inputs")
	}
	pred, ok := vals[lin[0]]
	if !ok || pred.rows != n || pred.cols != 1 {
		return nil, fmt.Errorf("prediction %q is missing or not one column per row", lin[0])
	}
	out := &recomputed{rows: n, scores: make([]float64, n)}
	hits := 0
	for r := 0; r < n; r++ {
		v := pred.data[r]
		var p, l float64
		switch loss["op"] {
		case "bce": // v is a probability
			p = v
			if y[r] == 1 {
				l = -math.Log(p)
			} else {
				l = -math.Log1p(-p)
			}
		case "bce_logits": // v is a logit
			p = 1 / (1 + math.Exp(-v))
			l = math.Max(v, 0) - v*y[r] + math.Log1p(math.Exp(-math.Abs(v)))
		default:
			return nil, fmt.Errorf("loss %v not handled by this test", loss["op"])
		}
		out.scores[r] = p
		out.loss += l
		if (p > 0.5) == (y[r] == 1) {
			hits++
		}
	}
	out.loss /= float64(n)
	out.accuracy = float64(hits) / float64(n)
	out.auc = aucOf(out.scores, y)
	return out, nil
}

func apply(op any, a []mat) (mat, error) {
	unary := func(f func(float64) float64) (mat, error) {
		if len(a) != 1 {
			return mat{}, fmt.Errorf("%v takes one input", op)
		}
		m := newMat(a[0].rows, a[0].cols)
		for i, v := range a[0].data {
			m.data[i] = f(v)
		}
		return m, nil
	}
	binary := func(f func(x, y float64) float64) (mat, error) {
		if len(a) != 2 {
			return mat{}, fmt.Errorf("%v takes two inputs", op)
		}
		p, q := a[0], a[1]
		if p.cols != q.cols || (p.rows != q.rows && p.rows != 1 && q.rows != 1) {
			return mat{}, fmt.Errorf("%v: shapes %dx%d and %dx%d", op, p.rows, p.cols, q.rows, q.cols)
		}
		rows := max(p.rows, q.rows)
		m := newMat(rows, p.cols)
		for r := 0; r < rows; r++ {
			for c := 0; c < p.cols; c++ {
				m.data[r*p.cols+c] = f(p.at(min(r, p.rows-1), c), q.at(min(r, q.rows-1), c))
			}
		}
		return m, nil
	}
	switch op {
	case "matmul":
		if len(a) != 2 || a[0].cols != a[1].rows {
			return mat{}, fmt.Errorf("matmul of incompatible shapes")
		}
		p, q := a[0], a[1]
		m := newMat(p.rows, q.cols)
		for r := 0; r < p.rows; r++ {
			for c := 0; c < q.cols; c++ {
				var s float64
				for k := 0; k < p.cols; k++ {
					s += p.at(r, k) * q.at(k, c)
				}
				m.data[r*q.cols+c] = s
			}
		}
		return m, nil
	case "add":
		return binary(func(x, y float64) float64 { return x + y })
	case "sub":
		return binary(func(x, y float64) float64 { return x - y })
	case "mul":
		return binary(func(x, y float64) float64 { return x * y })
	case "relu":
		return unary(func(v float64) float64 { return math.Max(v, 0) })
	case "sigmoid":
		return unary(func(v float64) float64 { return 1 / (1 + math.Exp(-v)) })
	case "tanh":
		return unary(math.Tanh)
	}
	return mat{}, fmt.Errorf("op %v not handled by this test", op)
}

// aucOf is the probability that a random positive scores above a random
// negative, ties counting half; 0 when a class is missing.
func aucOf(score, y []float64) float64 {
	var pairs, wins float64
	for i := range score {
		if y[i] != 1 {
			continue
		}
		for j := range score {
			if y[j] == 1 {
				continue
			}
			pairs++
			switch {
			case score[i] > score[j]:
				wins++
			case score[i] == score[j]:
				wins += 0.5
			}
		}
	}
	if pairs == 0 {
		return 0
	}
	return wins / pairs
}

func anys(v any) []any { s, _ := v.([]any); return s }

func strs(v any) []string {
	var out []string
	for _, x := range anys(v) {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func floats(v any) []float64 {
	var out []float64
	for _, x := range anys(v) {
		f, _ := x.(float64)
		out = append(out, f)
	}
	return out
}

func readModelMap(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// checkRecompute recomputes a model written by `fedgrid result` on a CSV and
// compares with `fedgrid model eval --json`; it also checks the model's
// provenance and that the recomputation depends on the released weights.
func checkRecompute(t *testing.T, ctx context.Context, h *harness.Harness, modelPath, csvPath, gateway, datasetID, jobID string) {
	t.Helper()
	m := readModelMap(t, modelPath)
	pv, _ := m["provenance"].(map[string]any)
	if pv["gateway"] != gateway || pv["dataset"] != datasetID || pv["job"] != jobID {
		t.Errorf("%s: provenance %v, want gateway %s, dataset %s, job %s", modelPath, pv, gateway, datasetID, jobID)
	}
	if s, _ := pv["signature"].(string); s == "" {
		t.Errorf("%s: provenance carries no signature", modelPath)
	}

	got, err := recompute(m, csvPath)
	if err != nil {
		t.Fatalf("%s: recompute: %v", modelPath, err)
	}
	ev, err := h.ModelEval(ctx, modelPath, csvPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: recomputed accuracy %.6f loss %.9f auc %.6f; fedgrid model eval: accuracy %.6f loss %.9f auc %.6f",
		modelPath, got.accuracy, got.loss, got.auc, ev.Accuracy, ev.Loss, ev.AUC)
	if got.rows != ev.Rows {
		t.Errorf("rows: recomputed %d, fedgrid %d", got.rows, ev.Rows)
	}
	if got.accuracy != ev.Accuracy {
		t.Errorf("accuracy: recomputed %.6f, fedgrid model eval %.6f", got.accuracy, ev.Accuracy)
	}
	if !(math.Abs(got.loss-ev.Loss) <= 1e-6*math.Max(1, math.Abs(ev.Loss))) { // NaN fails too
		t.Errorf("loss: recomputed %.9f, fedgrid model eval %.9f", got.loss, ev.Loss)
	}
	if !(math.Abs(got.auc-ev.AUC) <= 1e-9) {
		t.Errorf("AUC: recomputed %.9f, fedgrid model eval %.9f", got.auc, ev.AUC)
	}

	// The recomputation must hang on the released numbers: negated weights
	// turn a good classifier into a bad one.
	for _, p := range m["params"].(map[string]any) {
		data := anys(p.(map[string]any)["data"])
		for i, v := range data {
			data[i] = -v.(float64)
		}
	}
	neg, err := recompute(m, csvPath)
	if err != nil {
		t.Fatal(err)
	}
	if neg.accuracy >= got.accuracy || neg.auc >= 0.5 {
		t.Errorf("negated weights: accuracy %.4f (was %.4f), AUC %.4f: the recomputation does not depend on the parameters", neg.accuracy, got.accuracy, neg.auc)
	}
}
