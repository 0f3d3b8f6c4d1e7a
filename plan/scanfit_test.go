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

// smallBatches is a source whose scans give at most max rows a batch, so
// that a streamed pass crosses many batch boundaries.
type smallBatches struct {
	dataset.Source
	max int
}

func (s smallBatches) Scan(ctx context.Context, from, to, batchRows int, fn func(*dataset.Batch) error) error {
	return s.Source.Scan(ctx, from, to, min(batchRows, s.max), fn)
}

// offsetTable has a column far from 0 with a small spread (a+1e8: the sum
// of squares minus n*mean^2 loses every digit of its variance), a wide
// one, a category and a 0/1 label; rows > loadBatchRows, so a pass reads
// several batches.
func offsetTable(t *testing.T, rows int) *dataset.Table {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	var b strings.Builder
	b.WriteString("a,b,c,label\n")
	for range rows {
		a := 1e8 + rng.NormFloat64()
		v := rng.NormFloat64() * 1e3
		fmt.Fprintf(&b, "%s,%s,%s,%d\n", dataset.FormatNumber(a), dataset.FormatNumber(v), []string{"x", "y", "z"}[rng.IntN(3)], rng.IntN(2))
	}
	tab, err := dataset.ReadCSV(strings.NewReader(b.String()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func offsetPlan(t *testing.T) *Plan {
	t.Helper()
	p := loadPlan(t, "logreg_pima.json")
	p.Features, p.Label = []string{"a", "b", "c"}, "label"
	p.Preprocess = []PreprocessOp{{Op: "one_hot", Column: "c", Categories: []string{"x", "y", "z"}},
		{Op: "min_max", Columns: []string{"b"}}, {Op: "standardize"}}
	p.Params["w"] = ParamDef{Shape: []int{5, 1}, Init: "zeros"}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

// near reports whether got is within rel of want, relative to max(1, |want|).
func near(got, want, rel float64) bool {
	return math.Abs(got-want) <= rel*max(1, math.Abs(want))
}

// Declare's streamed fit (Welford over batches) equals the in-memory fit
// (two passes over the loaded inputs, fitPreprocess) to 1e-9 relative,
// also on a column whose variance a sum of squares would lose, and
// whatever the source's batches.
func TestDeclareStreamedEqualsInMemoryFit(t *testing.T) {
	tab := offsetTable(t, 3*loadBatchRows+17)
	p := offsetPlan(t)
	pr, err := compile(p)
	if err != nil {
		t.Fatal(err)
	}
	x, err := rawInputs(p, tab, pr.inputs)
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int, tab.NumRows())
	for i := range all {
		all[i] = i
	}
	want := fitPreprocess(p, x, pr.inputs, all)
	for _, src := range []dataset.Source{tab, smallBatches{tab, 7}} {
		q, got, err := Declare(context.Background(), p, src)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%d states, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i].Op != want[i].Op || !slices.Equal(got[i].Categories, want[i].Categories) {
				t.Fatalf("state %d: %+v, want %+v", i, got[i], want[i])
			}
			for _, pair := range [][2][]float64{{got[i].Mean, want[i].Mean}, {got[i].Std, want[i].Std}, {got[i].Min, want[i].Min}, {got[i].Max, want[i].Max}} {
				if len(pair[0]) != len(pair[1]) {
					t.Fatalf("state %d (%s): %d values, want %d", i, want[i].Op, len(pair[0]), len(pair[1]))
				}
				for j := range pair[1] {
					if !near(pair[0][j], pair[1][j], 1e-9) {
						t.Fatalf("state %d (%s) input %d: %v, want %v", i, want[i].Op, j, pair[0][j], pair[1][j])
					}
				}
			}
		}
		// The column a: mean 1e8, std about 1 (not 0, not noise).
		if sd := want[2].Std[3]; !(sd > 0.9 && sd < 1.1) {
			t.Fatalf("in-memory std of a is %v", sd)
		}
		if spec, _ := FitNeeds(q); !spec.Empty() {
			t.Fatal("the declared plan leaves statistics to fit")
		}
		states, err := DeclaredStates(q)
		if err != nil {
			t.Fatal(err)
		}
		for i := range states {
			if !slices.Equal(states[i].Mean, got[i].Mean) || !slices.Equal(states[i].Std, got[i].Std) || !slices.Equal(states[i].Min, got[i].Min) || !slices.Equal(states[i].Max, got[i].Max) {
				t.Fatalf("state %d of the declared plan differs from the fitted one", i)
			}
		}
	}
}

// A plan that declares all its statistics is not fitted: Declare reads no
// row (a source whose scans fail shows it), but still checks the columns.
func TestDeclareReadsNothingWhenDeclared(t *testing.T) {
	tab := offsetTable(t, 50)
	p := offsetPlan(t)
	q, want, err := Declare(context.Background(), p, tab)
	if err != nil {
		t.Fatal(err)
	}
	q2, got, err := Declare(context.Background(), q, failingScan{tab})
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if !slices.Equal(got[i].Mean, want[i].Mean) || !slices.Equal(got[i].Min, want[i].Min) {
			t.Fatalf("state %d differs when declared", i)
		}
	}
	if !slices.EqualFunc(q.Preprocess, q2.Preprocess, func(a, b PreprocessOp) bool {
		return slices.Equal(a.Mean, b.Mean) && slices.Equal(a.Std, b.Std) && slices.Equal(a.Min, b.Min) && slices.Equal(a.Max, b.Max)
	}) {
		t.Fatal("the declared plan changed")
	}
	if _, _, err := Declare(context.Background(), p, failingScan{tab}); err == nil || !strings.Contains(err.Error(), "read data") {
		t.Fatalf("a fit over a failing source: %v", err)
	}
	other, err := dataset.ReadCSV(strings.NewReader("a,bb,c,label\n1,2,x,0\n"), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Declare(context.Background(), q, failingScan{other}); err == nil || !strings.Contains(err.Error(), `"b"`) {
		t.Fatalf("a missing column: %v", err)
	}
}

type failingScan struct{ dataset.Source }

func (failingScan) Scan(context.Context, int, int, int, func(*dataset.Batch) error) error {
	return fmt.Errorf("disk on fire")
}

// LocalFit's streamed sums equal the sums over the loaded inputs to 1e-12
// relative (the sum of squares from Welford's m2 + n*mean^2), and its
// extremes exactly.
func TestLocalFitStreamedEqualsInMemory(t *testing.T) {
	tab := offsetTable(t, 2*loadBatchRows+5)
	p := offsetPlan(t)
	p.Preprocess = []PreprocessOp{p.Preprocess[0], {Op: "standardize", Columns: []string{"a"}}, {Op: "min_max", Columns: []string{"b"}}}
	spec, err := FitNeeds(p)
	if err != nil {
		t.Fatal(err)
	}
	x, err := rawInputs(p, tab, spec.Width)
	if err != nil {
		t.Fatal(err)
	}
	n := tab.NumRows()
	want := []float64{float64(n)}
	for _, j := range spec.Sums {
		var s, ss float64
		for r := range n {
			v := x[r*spec.Width+j]
			s, ss = s+v, ss+v*v
		}
		want = append(want, s, ss)
	}
	for _, src := range []dataset.Source{tab, smallBatches{tab, 100}} {
		sums, lo, hi, err := LocalFit(context.Background(), p, spec, src)
		if err != nil {
			t.Fatal(err)
		}
		for k := range want {
			if !near(sums[k], want[k], 1e-12) {
				t.Fatalf("sum %d: %v, want %v", k, sums[k], want[k])
			}
		}
		for k, j := range spec.Extremes {
			l, h := math.Inf(1), math.Inf(-1)
			for r := range n {
				l, h = min(l, x[r*spec.Width+j]), max(h, x[r*spec.Width+j])
			}
			if lo[k] != l || hi[k] != h {
				t.Fatalf("extremes of input %d: [%v, %v], want [%v, %v]", j, lo[k], hi[k], l, h)
			}
		}
	}
}

// EvalSums streamed equals the model scored on the whole table at once
// (Model.score): the counts and histograms exactly, the loss sum to 1e-12
// relative.
func TestEvalSumsStreamedEqualsInMemory(t *testing.T) {
	tab := offsetTable(t, 2*loadBatchRows+33)
	p := offsetPlan(t)
	p.Train.Epochs = 2
	m, err := Train(context.Background(), p, tab, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pr, loss, score, y, err := m.score(tab)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float64, 3+2*EvalBins)
	want[0] = float64(tab.NumRows())
	for r := range loss {
		want[1] += loss[r]
		if (score[r] > 0.5) == (y[r] == 1) {
			want[2]++
		}
		b := min(EvalBins-1, max(0, int(score[r]*EvalBins)))
		if y[r] == 1 {
			want[3+b]++
		} else {
			want[3+EvalBins+b]++
		}
	}
	if pr.task != TaskBinary {
		t.Fatalf("task %s", pr.task)
	}
	for _, src := range []dataset.Source{tab, smallBatches{tab, 5}} {
		got, err := EvalSums(context.Background(), m, src)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || !near(got[1], want[1], 1e-12) {
			t.Fatalf("%d sums, loss sum %v; want %d, %v", len(got), got[1], len(want), want[1])
		}
		got[1] = want[1]
		if !slices.Equal(got, want) {
			t.Fatal("the counts or histograms differ from the in-memory scoring")
		}
	}
	// A label the loss cannot take is refused with the rule, not a value.
	bad, err := dataset.ReadCSV(strings.NewReader("a,b,c,label\n1,2,x,0\n3,4,y,2\n"), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EvalSums(context.Background(), m, bad); err == nil || !strings.Contains(err.Error(), `label "label" holds values other than 0 and 1`) || strings.Contains(err.Error(), "read data") {
		t.Fatalf("bad labels: %v", err)
	}
}

// rangedTable is a table whose number columns' extremes are known without
// a scan (as colstore.Version's stored statistics), and whose scans fail
// when noScan is set.
type rangedTable struct {
	*dataset.Table
	noScan bool
}

func (r rangedTable) ColumnRange(c int) (lo, hi float64, ok bool) {
	col := r.Columns()[c]
	v, err := r.Numeric(col.Name)
	if err != nil || len(v) == 0 {
		return 0, 0, false
	}
	return slices.Min(v), slices.Max(v), true
}

func (r rangedTable) Scan(ctx context.Context, from, to, batchRows int, fn func(*dataset.Batch) error) error {
	if r.noScan {
		return fmt.Errorf("scanned")
	}
	return r.Table.Scan(ctx, from, to, batchRows, fn)
}

// When only min_max statistics are left to fit, Declare and LocalFit take
// the extremes from a source's stored ones and read no row, with the same
// result as the in-memory fit; anything undeclared for standardize still
// reads the rows (the variance of stored sums is not exact).
func TestMinMaxFromStoredExtremes(t *testing.T) {
	tab := offsetTable(t, 500)
	p := offsetPlan(t)
	// standardize declared (from a first fit), min_max left to fit.
	q, _, err := Declare(context.Background(), p, tab)
	if err != nil {
		t.Fatal(err)
	}
	q.Preprocess[1].Min, q.Preprocess[1].Max = nil, nil
	_, want, err := Declare(context.Background(), q, tab)
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := Declare(context.Background(), q, rangedTable{tab, true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if !slices.Equal(got[i].Min, want[i].Min) || !slices.Equal(got[i].Max, want[i].Max) || !slices.Equal(got[i].Mean, want[i].Mean) || !slices.Equal(got[i].Std, want[i].Std) {
			t.Fatalf("state %d from stored extremes %+v, scanned %+v", i, got[i], want[i])
		}
	}
	spec, err := FitNeeds(q)
	if err != nil || len(spec.Sums) != 0 || len(spec.Extremes) != 1 {
		t.Fatalf("fit spec %+v %v", spec, err)
	}
	s1, lo1, hi1, err := LocalFit(context.Background(), q, spec, tab)
	if err != nil {
		t.Fatal(err)
	}
	s2, lo2, hi2, err := LocalFit(context.Background(), q, spec, rangedTable{tab, true})
	if err != nil || !slices.Equal(s1, s2) || !slices.Equal(lo1, lo2) || !slices.Equal(hi1, hi2) {
		t.Fatalf("LocalFit from stored extremes %v %v %v (%v), scanned %v %v %v", s2, lo2, hi2, err, s1, lo1, hi1)
	}
	// standardize left to fit: the rows are read.
	if _, _, err := Declare(context.Background(), p, rangedTable{tab, true}); err == nil || !strings.Contains(err.Error(), "scanned") {
		t.Fatalf("standardize fitted without reading the rows: %v", err)
	}
}
