package plan

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/crypto/secagg"
	"github.com/fedgrid/fedgrid/dataset"
)

// Round 0 across three gateways: the statistics fitted from the securely
// summed counts, sums and sums of squares (through the wide fixed point of
// the secure aggregation) and from the gateways' extremes equal those
// fitted on all their rows pooled, to quantisation error, through chains of
// undeclared and declared steps.
func TestFitPlanEqualsPooled(t *testing.T) {
	all := loadTable(t, "pima_diabetes.csv")
	parts := deal(all, 3)
	cases := map[string][]PreprocessOp{
		"standardize":              {{Op: "standardize"}},
		"min_max":                  {{Op: "min_max"}},
		"min_max then standardize": {{Op: "min_max", Columns: []string{"glucose", "insulin"}}, {Op: "standardize"}},
		"declared then fitted": {
			{Op: "standardize", Columns: []string{"age", "mass"}, Mean: []float64{30, 40}, Std: []float64{7, 12}},
			{Op: "min_max", Columns: []string{"mass", "pedigree"}},
			{Op: "standardize", Columns: []string{"pedigree", "pregnant"}},
		},
	}
	for name, ops := range cases {
		t.Run(name, func(t *testing.T) {
			p := loadPlan(t, "logreg_pima.json")
			p.Preprocess = ops
			spec, err := FitNeeds(p)
			if err != nil {
				t.Fatal(err)
			}
			if spec.Empty() {
				t.Fatal("nothing to fit")
			}
			var lo, hi []float64
			wide, sums := wideSum(t, len(parts), func(k int) []float64 {
				s, l, h, err := LocalFit(context.Background(), p, spec, parts[k])
				if err != nil {
					t.Fatal(err)
				}
				if lo == nil {
					lo, hi = l, h
				}
				for k := range l {
					lo[k], hi[k] = min(lo[k], l[k]), max(hi[k], h[k])
				}
				return s
			})
			if sums[0] != float64(all.NumRows()) {
				t.Fatalf("summed %v rows, want %d", sums[0], all.NumRows())
			}
			fitted, err := FitPlan(p, spec, sums, lo, hi, wide.Error())
			if err != nil {
				t.Fatal(err)
			}
			got, err := DeclaredStates(fitted)
			if err != nil {
				t.Fatal(err)
			}
			_, want, err := Declare(context.Background(), p, all)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				for _, pair := range [][2][]float64{{got[i].Mean, want[i].Mean}, {got[i].Std, want[i].Std}, {got[i].Min, want[i].Min}, {got[i].Max, want[i].Max}} {
					if len(pair[0]) != len(pair[1]) {
						t.Fatalf("step %d: %d values, want %d", i, len(pair[0]), len(pair[1]))
					}
					for j := range pair[0] {
						if d := math.Abs(pair[0][j] - pair[1][j]); d > 1e-9*max(1, math.Abs(pair[1][j])) {
							t.Errorf("step %d (%s) input %d: federated %v, pooled %v", i, want[i].Op, j, pair[0][j], pair[1][j])
						}
					}
				}
			}
			// A gateway takes the fitted statistics into its own plan.
			q, err := TakeFitted(p, fitted)
			if err != nil {
				t.Fatal(err)
			}
			if again, _ := FitNeeds(q); !again.Empty() {
				t.Fatalf("the taken plan still needs %+v", again)
			}
		})
	}
}

// A constant column (in every gateway) fits std 1 and max = min+1, as fitPreprocess does.
func TestFitPlanConstantColumn(t *testing.T) {
	tab, err := dataset.ReadCSV(strings.NewReader("a,b,y\n0.1,1,0\n0.1,2,1\n0.1,3,0\n"), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	p := loadPlan(t, "logreg_pima.json")
	p.Features, p.Label = []string{"a", "b"}, "y"
	p.Params["w"] = ParamDef{Shape: []int{2, 1}, Init: "zeros"}
	for _, ops := range [][]PreprocessOp{{{Op: "standardize"}}, {{Op: "min_max"}}} {
		p.Preprocess = ops
		spec, err := FitNeeds(p)
		if err != nil {
			t.Fatal(err)
		}
		wide, _ := secagg.NewWide(3)
		s, lo, hi, err := LocalFit(context.Background(), p, spec, tab)
		if err != nil {
			t.Fatal(err)
		}
		words := make([]uint32, wide.Length(len(s)))
		wide.Encode(words, s)
		// Three gateways holding the same rows.
		for i := range words {
			words[i] *= 3
		}
		wide.Decode(s, words)
		fitted, err := FitPlan(p, spec, s, lo, hi, wide.Error())
		if err != nil {
			t.Fatal(err)
		}
		got := fitted.Preprocess[0]
		if ops[0].Op == "standardize" && (got.Std[0] != 1 || math.Abs(got.Mean[0]-0.1) > wide.Error()) {
			t.Fatalf("constant column: mean %v std %v, want 0.1 and 1", got.Mean[0], got.Std[0])
		}
		if ops[0].Op == "min_max" && (got.Min[0] != 0.1 || got.Max[0] != 1.1) {
			t.Fatalf("constant column: min %v max %v, want 0.1 and 1.1", got.Min[0], got.Max[0])
		}
	}
}

func TestTakeFittedRefuses(t *testing.T) {
	p := loadPlan(t, "logreg_pima.json")
	other := loadPlan(t, "logreg_pima.json")
	other.Preprocess = []PreprocessOp{{Op: "min_max", Min: make([]float64, 8), Max: make([]float64, 8)}}
	if _, err := TakeFitted(p, other); err == nil {
		t.Fatal("a fitted plan with another step was taken")
	}
	short := loadPlan(t, "logreg_pima.json")
	short.Preprocess[0].Mean, short.Preprocess[0].Std = []float64{1}, []float64{1}
	if _, err := TakeFitted(p, short); err == nil {
		t.Fatal("a fitted plan with too few statistics was taken")
	}
}

// deal deals t's rows into n parts, round robin.
func deal(t *dataset.Table, n int) []*dataset.Table {
	idx := make([][]int, n)
	for r := range t.NumRows() {
		idx[r%n] = append(idx[r%n], r)
	}
	parts := make([]*dataset.Table, n)
	for k, rows := range idx {
		parts[k] = t.Select(rows)
	}
	return parts
}

// wideSum adds the n parties' values (party k's from part(k)) as secure
// aggregation does: each encoded in the wide fixed point, the words summed
// mod 2^32, the total decoded.
func wideSum(t *testing.T, n int, part func(k int) []float64) (secagg.Wide, []float64) {
	t.Helper()
	wide, err := secagg.NewWide(n)
	if err != nil {
		t.Fatal(err)
	}
	var sum []uint32
	var values int
	for k := range n {
		x := part(k)
		words := make([]uint32, wide.Length(len(x)))
		if c := wide.Encode(words, x); c != 0 {
			t.Fatalf("party %d: %d values clipped", k, c)
		}
		if sum == nil {
			sum, values = make([]uint32, len(words)), len(x)
		}
		for i, w := range words {
			sum[i] += w
		}
	}
	out := make([]float64, values)
	if err := wide.Decode(out, sum); err != nil {
		t.Fatal(err)
	}
	return wide, out
}
