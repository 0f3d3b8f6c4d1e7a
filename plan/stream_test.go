package plan

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
)

// streamHoldout is meanHoldout with the training streamed through a buffer
// of bufRows rows.
func streamHoldout(t *testing.T, planFile, csv string, bufRows int, engine Engine) (acc, auc float64) {
	t.Helper()
	p := loadPlan(t, planFile)
	tab := loadTable(t, csv)
	for seed := int64(1); seed <= 5; seed++ {
		train, holdout := tab.Split(0.2, seed)
		m, err := TrainSource(context.Background(), p, train, TrainOptions{BufferRows: bufRows, Engine: engine})
		if err != nil {
			t.Fatal(err)
		}
		ev, err := Evaluate(m, holdout)
		if err != nil {
			t.Fatal(err)
		}
		acc += ev.Accuracy / 5
		auc += ev.AUC / 5
	}
	t.Logf("%s streamed (buffer %d rows, %s): mean holdout accuracy %.4f, AUC %.4f", planFile, bufRows, engine, acc, auc)
	return acc, auc
}

// A buffer of 64 rows (a tenth of the training rows) trains models as good
// as the full shuffle, on the thresholds of the in-memory tests.
func TestStreamedTrainingQuality(t *testing.T) {
	for _, c := range []struct {
		plan, csv       string
		minAcc, minAUC  float64
		engine          Engine
		bufRows, blocks int
	}{
		{"logreg_pima.json", "pima_diabetes.csv", 0.74, 0.8, EngineNative, 64, 0},
		{"logreg_wdbc.json", "wdbc_breast_cancer.csv", 0.95, 0.98, EngineNative, 64, 0},
		{"mlp_pima.json", "pima_diabetes.csv", 0.72, 0, EngineNative, 64, 0},
		{"logreg_pima.json", "pima_diabetes.csv", 0.74, 0.8, EngineGorgonia, 64, 0},
	} {
		t.Run(fmt.Sprintf("%s/%s", c.plan, c.engine), func(t *testing.T) {
			acc, auc := streamHoldout(t, c.plan, c.csv, c.bufRows, c.engine)
			if acc < c.minAcc || auc < c.minAUC {
				t.Errorf("mean holdout accuracy %.4f (want >= %.2f), AUC %.4f (want >= %.2f)", acc, c.minAcc, auc, c.minAUC)
			}
		})
	}
}

// Every epoch feeds each training row once, none of the validation rows,
// in a new order, from a buffer that never holds more than its window.
func TestStreamFeedsEveryTrainingRowOncePerEpoch(t *testing.T) {
	const n = 1000
	var b strings.Builder
	b.WriteString("id,label\n")
	for i := range n {
		fmt.Fprintf(&b, "%d,%d\n", i, i%2)
	}
	tab, err := dataset.ReadCSV(strings.NewReader(b.String()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	p := loadPlan(t, "logreg_pima.json")
	p.Features, p.Label = []string{"id"}, "label"
	p.Preprocess = nil
	p.Params["w"] = ParamDef{Shape: []int{1, 1}, Init: "zeros"}
	p.Train.BatchSize = 32
	const window = 3
	f := newTestFeeder(t, p, tab, window)
	sp := f.sp
	val := map[int]bool{}
	for _, blk := range sp.val {
		for r := blk.from; r < blk.to; r++ {
			val[r] = true
		}
	}
	if len(val) == 0 || sp.trainRows+sp.valRows != n {
		t.Fatalf("split: %d validation rows, %d + %d rows of %d", len(val), sp.trainRows, sp.valRows, n)
	}
	var orders [][]int
	for epoch := 0; epoch < 2; epoch++ {
		var seen []int
		fed, err := f.batches(context.Background(), 32, func(xb, yb []float64, rows int) error {
			if rows > 32 {
				t.Fatalf("batch of %d rows", rows)
			}
			for _, v := range xb[:rows] {
				seen = append(seen, int(v))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if fed != sp.trainRows || len(seen) != sp.trainRows {
			t.Fatalf("epoch %d fed %d rows (%d seen), want %d", epoch, fed, len(seen), sp.trainRows)
		}
		sorted := slices.Sorted(slices.Values(seen))
		for i, r := range sorted {
			if val[r] || (i > 0 && sorted[i-1] == r) {
				t.Fatalf("row %d fed twice or is a validation row", r)
			}
		}
		if got, limit := len(f.bufY), window*sp.blockRows+32; got > limit {
			t.Fatalf("buffer holds %d rows, more than %d", got, limit)
		}
		orders = append(orders, seen)
	}
	if slices.Equal(orders[0], orders[1]) {
		t.Error("two epochs fed the rows in the same order")
	}
	// Shuffled within a window: rows from far apart blocks end up side by side.
	jumps := 0
	for i := 1; i < len(orders[0]); i++ {
		if d := orders[0][i] - orders[0][i-1]; d > sp.blockRows || d < -sp.blockRows {
			jumps++
		}
	}
	if jumps < len(orders[0])/4 {
		t.Errorf("only %d of %d neighbouring rows come from different blocks", jumps, len(orders[0]))
	}
}

// newTestFeeder is the feeder of a streamed run of p over src with a
// window of window blocks (its preprocessing not yet fitted).
func newTestFeeder(t *testing.T, p *Plan, src dataset.Source, window int) *streamFeeder {
	t.Helper()
	pr, err := compile(p)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := newInputReader(p, pr, src.Columns())
	if err != nil {
		t.Fatal(err)
	}
	sp := newStreamPlan(p, pr, src, src.NumRows())
	return &streamFeeder{blockReader: newBlockReader(p, pr, src, rd, sp.blockRows, true), sp: sp, window: window, rng: newShuffle(p.Train.Seed)}
}

func newShuffle(seed int64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x73687566666c65))
}

// statesFromStats fits what fitPreprocess fits, for chained ops too.
func TestStatesFromStatsMatchFitPreprocess(t *testing.T) {
	p := loadPlan(t, "logreg_pima.json")
	p.Preprocess = []PreprocessOp{{Op: "standardize"}, {Op: "min_max", Columns: []string{"glucose", "mass"}}, {Op: "standardize", Columns: []string{"age"}}}
	tab := loadTable(t, "pima_diabetes.csv")
	pr, err := compile(p)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := newInputReader(p, pr, tab.Columns())
	if err != nil {
		t.Fatal(err)
	}
	x, _, err := loadInputs(context.Background(), tab, rd)
	if err != nil {
		t.Fatal(err)
	}
	rows := []int{}
	st := newColStats(pr.inputs)
	for r := 0; r < tab.NumRows(); r += 3 {
		rows = append(rows, r)
		st.addRows(x[r*pr.inputs : (r+1)*pr.inputs])
	}
	want := fitPreprocess(p, slices.Clone(x), pr.inputs, rows)
	got := statesFromStats(p, pr.inputs, st)
	if len(got) != len(want) {
		t.Fatalf("%d states, want %d", len(got), len(want))
	}
	for i := range want {
		for _, pair := range [][2][]float64{{got[i].Mean, want[i].Mean}, {got[i].Std, want[i].Std}, {got[i].Min, want[i].Min}, {got[i].Max, want[i].Max}} {
			for j := range pair[1] {
				if math.Abs(pair[0][j]-pair[1][j]) > 1e-9*max(1, math.Abs(pair[1][j])) {
					t.Fatalf("state %d (%s) column %d: %v, want %v", i, want[i].Op, j, pair[0][j], pair[1][j])
				}
			}
		}
	}
}

// With a memory limit below what the whole table needs, TrainSource
// streams (the model says so through its block-based split) and stays
// usable; DP-SGD refuses instead, with a reason.
func TestTrainSourceStreamsUnderMemoryLimit(t *testing.T) {
	p := loadPlan(t, "logreg_pima.json")
	tab := loadTable(t, "pima_diabetes.csv")
	inMem, err := TrainMemory(p, tab.NumRows())
	if err != nil {
		t.Fatal(err)
	}
	need, err := NeedMemory(p, tab.NumRows())
	if err != nil {
		t.Fatal(err)
	}
	if need > inMem {
		t.Fatalf("NeedMemory %d more than TrainMemory %d", need, inMem)
	}
	whole, err := Train(context.Background(), p, tab, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := TrainSource(context.Background(), p, tab, TrainOptions{MaxMemory: inMem - 1})
	if err != nil {
		t.Fatal(err)
	}
	if m.Metrics.TrainRows+m.Metrics.ValidationRows != tab.NumRows() || m.Metrics.ValidationAccuracy < 0.7 {
		t.Errorf("streamed: %d+%d rows, validation accuracy %.3f", m.Metrics.TrainRows, m.Metrics.ValidationRows, m.Metrics.ValidationAccuracy)
	}
	if slices.Equal(m.Params["w"].Data, whole.Params["w"].Data) {
		t.Error("the run under the limit did not stream (same weights as in memory)")
	}
	same, err := TrainSource(context.Background(), p, tab, TrainOptions{MaxMemory: inMem})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(same.Params["w"].Data, whole.Params["w"].Data) {
		t.Error("a run that fits in memory is not the table's run")
	}
	dp := loadPlan(t, "dp_logreg_pima.json")
	if _, err := TrainSource(context.Background(), dp, tab, TrainOptions{MaxMemory: 1000}); err == nil || !strings.Contains(err.Error(), "DP-SGD") {
		t.Errorf("DP-SGD under a small limit: %v", err)
	}
	if _, err := TrainSource(context.Background(), p, tab, TrainOptions{MaxMemory: 1000}); err == nil || !strings.Contains(err.Error(), "streaming the data needs") {
		t.Errorf("a limit too small even to stream: %v", err)
	}
}

// numbersOnly is a source that, like a columnar version, gives number
// columns without their text.
type numbersOnly struct{ *dataset.Table }

func (s numbersOnly) Scan(ctx context.Context, from, to, batchRows int, fn func(*dataset.Batch) error) error {
	return s.Table.Scan(ctx, from, to, batchRows, func(b *dataset.Batch) error {
		c := *b
		c.Raw = slices.Clone(b.Raw)
		for i := range c.Raw {
			if c.Num[i] != nil {
				c.Raw[i] = nil
			}
		}
		return fn(&c)
	})
}

// A one_hot over a number column reads the cells' canonical text from a
// source that keeps only numbers: the same model as from the table.
func TestOneHotFromNumbersOnlySource(t *testing.T) {
	p := loadPlan(t, "logreg_pima.json")
	p.Preprocess = append([]PreprocessOp{{Op: "one_hot", Column: "pregnant", Categories: []string{"0", "1", "2", "3"}}}, p.Preprocess...)
	p.Params["w"] = ParamDef{Shape: []int{len(p.Features) + 3, 1}, Init: "zeros"}
	tab := loadTable(t, "pima_diabetes.csv")
	want, err := TrainSource(context.Background(), p, tab, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := TrainSource(context.Background(), p, numbersOnly{tab}, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Params["w"].Data, want.Params["w"].Data) {
		t.Fatal("one_hot over a numbers-only source trains another model")
	}
	var hot float64
	for _, v := range want.Params["w"].Data[:4] {
		hot += math.Abs(v)
	}
	if hot == 0 {
		t.Fatal("the one_hot columns were all zero")
	}
}
