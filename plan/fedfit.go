package plan

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedgrid/fedgrid/dataset"
)

// Federated preprocessing. A standardize or min_max op of a federation's
// plan that declares no statistics is fitted across the gateways in a
// round 0, never on one gateway's rows alone:
//
//   - standardize: each gateway contributes its row count and, for every
//     input column the op covers, the sum and the sum of squares of the raw
//     values, through secure aggregation (the coordinator learns only the
//     totals); mean = sum/n and std = sqrt(sumsq/n - mean^2).
//   - min_max: minima and maxima cannot be summed; each gateway releases its
//     own minimum and maximum of the covered columns (under its rules: its
//     officer's approval of the federation on review-gated data) and the
//     coordinator takes the smallest and the largest.
//
// Every scaling op is an increasing affine map of each column, so the raw
// columns' statistics give those of a column after any chain of ops:
// FitPlan walks the ops in order as fitPreprocess does and declares the
// fitted statistics in the plan every gateway trains with from round 1.

// FitSpec is what round 0 collects for a plan: the input columns (indexes
// into the model's input x, see PreprocessState) whose sums are aggregated
// and those whose extremes each gateway releases.
type FitSpec struct {
	Width    int   `json:"width"`
	Sums     []int `json:"sums,omitempty"`
	Extremes []int `json:"extremes,omitempty"`
}

// Empty reports whether the plan has nothing to fit.
func (s FitSpec) Empty() bool { return len(s.Sums) == 0 && len(s.Extremes) == 0 }

// SumValues is the number of values a gateway contributes to round 0's
// secure sum: its row count, then each Sums column's sum and sum of squares.
func (s FitSpec) SumValues() int { return 1 + 2*len(s.Sums) }

// Undeclared reports whether a standardize or min_max op leaves its
// statistics to be fitted on the data.
func Undeclared(pp PreprocessOp) bool {
	return pp.Op == "standardize" && pp.Mean == nil || pp.Op == "min_max" && pp.Min == nil
}

// FitNeeds returns what round 0 collects for p (Empty when every op
// declares its statistics).
func FitNeeds(p *Plan) (FitSpec, error) {
	pr, err := compile(p)
	if err != nil {
		return FitSpec{}, err
	}
	spec := FitSpec{Width: pr.inputs}
	sums, ext := make([]bool, pr.inputs), make([]bool, pr.inputs)
	for _, pp := range p.Preprocess {
		if !Undeclared(pp) {
			continue
		}
		for j, c := range scaledColumns(p, pp, pr.inputs) {
			switch {
			case !c:
			case pp.Op == "standardize":
				sums[j] = true
			default:
				ext[j] = true
			}
		}
	}
	for j := range pr.inputs {
		if sums[j] {
			spec.Sums = append(spec.Sums, j)
		}
		if ext[j] {
			spec.Extremes = append(spec.Extremes, j)
		}
	}
	return spec, nil
}

// FitColumns names the input columns of spec's indexes (for people: the
// officer's request, errors).
func FitColumns(p *Plan, idx []int) []string {
	var names []string
	hot := map[string]int{}
	for _, q := range p.Preprocess {
		if q.Op == "one_hot" {
			hot[q.Column] = len(q.Categories)
		}
	}
	j := 0
	for _, f := range p.Features {
		if k, ok := hot[f]; ok {
			j += k
			continue
		}
		if slices.Contains(idx, j) {
			names = append(names, f)
		}
		j++
	}
	return names
}

// LocalFit is one gateway's part of round 0 on its rows src, read in one
// streamed pass (fitRows): the values it adds to the secure sum
// (spec.SumValues of them) and the minima and maxima of the spec.Extremes
// columns. A column's sum is n*mean and its sum of squares m2 + n*mean^2,
// from Welford's running mean and sum of squared deviations. Extremes
// alone come from the source's stored ones when it has them.
func LocalFit(ctx context.Context, p *Plan, spec FitSpec, src dataset.Source) (sums, lo, hi []float64, err error) {
	if src.NumRows() == 0 {
		return nil, nil, nil, errors.New("the dataset has no rows")
	}
	pr, err := compile(p)
	if err != nil {
		return nil, nil, nil, err
	}
	if pr.inputs != spec.Width {
		return nil, nil, nil, fmt.Errorf("internal: the plan has %d input columns, the fit %d", pr.inputs, spec.Width)
	}
	rd, err := newInputReader(p, pr, src.Columns())
	if err != nil {
		return nil, nil, nil, err
	}
	var st *colStats
	if len(spec.Sums) == 0 { // extremes only: the stored ones when the source has them
		st, _ = storedExtremes(pr, rd, src)
	}
	if st == nil {
		if st, err = fitRows(ctx, p, pr, rd, src); err != nil {
			return nil, nil, nil, err
		}
	}
	sums = make([]float64, spec.SumValues())
	sums[0] = st.n
	for k, j := range spec.Sums {
		sums[1+2*k], sums[2+2*k] = st.n*st.mean[j], st.m2[j]+st.n*st.mean[j]*st.mean[j]
	}
	lo, hi = make([]float64, len(spec.Extremes)), make([]float64, len(spec.Extremes))
	for k, j := range spec.Extremes {
		lo[k], hi[k] = st.lo[j], st.hi[j]
	}
	for _, v := range slices.Concat(sums, lo, hi) {
		if !finite(v) {
			return nil, nil, nil, errors.New("a scaled feature's statistics are not finite (values too large)")
		}
	}
	return sums, lo, hi, nil
}

// FitPlan declares in a copy of p the statistics round 0 fitted: sums is
// the aggregated LocalFit sums of all gateways (each within sumErr of the
// exact total), lo and hi the smallest minima and largest maxima. It fits
// what fitPreprocess would fit on all the gateways' rows pooled: the same
// statistics, to the sums' quantisation error. A column whose variance is
// within that error of 0 counts as constant (std 1, as fitPreprocess).
func FitPlan(p *Plan, spec FitSpec, sums, lo, hi []float64, sumErr float64) (*Plan, error) {
	if len(sums) != spec.SumValues() || len(lo) != len(spec.Extremes) || len(hi) != len(spec.Extremes) {
		return nil, fmt.Errorf("round 0 has %d sums and %d/%d extremes, the plan needs %d and %d", len(sums), len(lo), len(hi), spec.SumValues(), len(spec.Extremes))
	}
	n := math.Round(sums[0])
	if n < 1 {
		return nil, errors.New("round 0 summed no rows")
	}
	w := spec.Width
	mean, sd := make([]float64, w), make([]float64, w)
	for k, j := range spec.Sums {
		m := sums[1+2*k] / n
		v := sums[2+2*k]/n - m*m
		// The quantisation error of sumsq/n and of mean^2, and float64 cancellation.
		tol := sumErr*(1+2*math.Abs(m)+sumErr/n)/n + 1e-12*m*m
		if !(v > tol) {
			v = 0
		}
		mean[j], sd[j] = m, math.Sqrt(v)
	}
	rawLo, rawHi := make([]float64, w), make([]float64, w)
	for k, j := range spec.Extremes {
		if !(lo[k] <= hi[k]) || !finite(lo[k]) || !finite(hi[k]) {
			return nil, fmt.Errorf("round 0: the extremes of input %d are not a finite range", j)
		}
		rawLo[j], rawHi[j] = lo[k], hi[k]
	}
	// x_now = a*x_raw + b per column, through the ops so far.
	a, b := make([]float64, w), make([]float64, w)
	for j := range a {
		a[j] = 1
	}
	q := p.clone()
	for i, pp := range q.Preprocess {
		if pp.Op != "standardize" && pp.Op != "min_max" {
			continue
		}
		cover := scaledColumns(p, pp, w)
		fit := Undeclared(pp)
		var s1, s2 []float64 // declared statistics, over the covered columns
		k := 0
		for j, c := range cover {
			if !c {
				continue
			}
			var off, scale float64 // x_next = (x_now - off) / scale
			switch {
			case pp.Op == "standardize" && fit:
				off, scale = a[j]*mean[j]+b[j], a[j]*sd[j]
				if scale == 0 || !finite(scale) {
					scale = 1
				}
				s1, s2 = append(s1, off), append(s2, scale)
			case pp.Op == "standardize":
				off, scale = pp.Mean[k], pp.Std[k]
			case fit:
				l, h := a[j]*rawLo[j]+b[j], a[j]*rawHi[j]+b[j]
				if rawHi[j] == rawLo[j] {
					h = l + 1
				}
				off, scale = l, h-l
				s1, s2 = append(s1, l), append(s2, h)
			default:
				off, scale = pp.Min[k], pp.Max[k]-pp.Min[k]
			}
			k++
			a[j], b[j] = a[j]/scale, (b[j]-off)/scale
		}
		switch {
		case fit && pp.Op == "standardize":
			q.Preprocess[i].Mean, q.Preprocess[i].Std = s1, s2
		case fit:
			q.Preprocess[i].Min, q.Preprocess[i].Max = s1, s2
		}
	}
	if _, err := DeclaredStates(q); err != nil {
		return nil, err
	}
	if _, err := compile(q); err != nil {
		return nil, fmt.Errorf("fitted plan: %w", err)
	}
	return q, nil
}

// TakeFitted returns a copy of p with the statistics that fitted declares
// for the ops p leaves undeclared, and nothing else of fitted: what a
// gateway takes from the coordinator after round 0 into its own copy of
// the federation's plan.
func TakeFitted(p, fitted *Plan) (*Plan, error) {
	if len(p.Preprocess) != len(fitted.Preprocess) {
		return nil, errors.New("the fitted plan has other preprocessing steps")
	}
	q := p.clone()
	for i, pp := range p.Preprocess {
		if !Undeclared(pp) {
			continue
		}
		f := fitted.Preprocess[i]
		if f.Op != pp.Op || !slices.Equal(f.Columns, pp.Columns) {
			return nil, fmt.Errorf("preprocess[%d] is another step in the fitted plan", i)
		}
		n := len(p.coveredFeatures(pp))
		switch {
		case pp.Op == "standardize" && (len(f.Mean) != n || len(f.Std) != n):
			return nil, fmt.Errorf("preprocess[%d] standardize needs %d fitted means and stds", i, n)
		case pp.Op == "min_max" && (len(f.Min) != n || len(f.Max) != n):
			return nil, fmt.Errorf("preprocess[%d] min_max needs %d fitted minima and maxima", i, n)
		}
		q.Preprocess[i].Mean, q.Preprocess[i].Std = slices.Clone(f.Mean), slices.Clone(f.Std)
		q.Preprocess[i].Min, q.Preprocess[i].Max = slices.Clone(f.Min), slices.Clone(f.Max)
	}
	pr, err := compile(q)
	if err != nil {
		return nil, fmt.Errorf("fitted plan: %w", err)
	}
	states, err := DeclaredStates(q)
	if err != nil {
		return nil, err
	}
	if err := checkStates(q, states, pr.inputs); err != nil {
		return nil, fmt.Errorf("fitted plan: %w", err)
	}
	return q, nil
}
