package plan

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedgrid/fedgrid/dataset"
)

// Federated (data-parallel) training helpers for the coordinating gateway.

// Declare returns a copy of p whose standardize and min_max ops carry
// statistics fitted on every row of src, and those statistics as model
// preprocess states. Shards trained apart then scale their inputs alike,
// and the averaged model applies the same scaling. The statistics come
// from one streamed pass (fitRows), in bounded memory whatever the rows,
// and only when an op leaves them undeclared; when only min_max ones are
// left, from the source's stored extremes if it has them (storedExtremes).
func Declare(ctx context.Context, p *Plan, src dataset.Source) (*Plan, []PreprocessState, error) {
	pr, err := compile(p)
	if err != nil {
		return nil, nil, err
	}
	rd, err := newInputReader(p, pr, src.Columns())
	if err != nil {
		return nil, nil, err
	}
	st := newColStats(pr.inputs)
	switch {
	case slices.ContainsFunc(p.Preprocess, func(pp PreprocessOp) bool { return pp.Op == "standardize" && Undeclared(pp) }):
		st, err = fitRows(ctx, p, pr, rd, src)
	case slices.ContainsFunc(p.Preprocess, Undeclared): // min_max only: extremes
		var ok bool
		if st, ok = storedExtremes(pr, rd, src); !ok {
			st, err = fitRows(ctx, p, pr, rd, src)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	states := statesFromStats(p, pr.inputs, st)
	return declareStates(p, states, pr.inputs), states, nil
}

// ranged is a source that knows the exact minimum and maximum of its
// number columns without reading them (colstore.Version: the statistics
// stored at ingest, over the same float64 values a scan gives).
type ranged interface {
	ColumnRange(c int) (lo, hi float64, ok bool)
}

// storedExtremes is the minima and maxima of the numeric inputs from src's
// stored statistics (the other statistics left empty), when src has them
// for every numeric feature: min_max needs no pass over the rows then. A
// sum of squares is stored too, but the variance from it (sumsq/n -
// mean^2) is not exact, so standardize always reads the rows (fitRows).
func storedExtremes(pr *program, rd *inputReader, src dataset.Source) (*colStats, bool) {
	r, ok := src.(ranged)
	n := src.NumRows()
	if !ok || n == 0 {
		return nil, false
	}
	st := newColStats(pr.inputs)
	st.n = float64(n)
	for _, f := range rd.feats {
		if f.hot != nil {
			continue // one_hot inputs are never scaled
		}
		lo, hi, ok := r.ColumnRange(f.col)
		if !ok || !(lo <= hi) {
			return nil, false
		}
		st.lo[f.at], st.hi[f.at] = lo, hi
	}
	return st, true
}

// fitRows is the statistics of the raw inputs of every row of src (the
// first pass of a streamed run, over all the rows): Welford's mean and sum
// of squared deviations, minima and maxima, read a batch at a time. The
// labels are read, not checked: a fit is not training.
func fitRows(ctx context.Context, p *Plan, pr *program, rd *inputReader, src dataset.Source) (*colStats, error) {
	st := newColStats(pr.inputs)
	br := newBlockReader(p, pr, src, rd, scanBlockRows(src.NumRows()), false)
	err := br.scan(ctx, func(x, _ []float64, _ int) error {
		st.addRows(x)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// declareStates returns a copy of p whose standardize and min_max ops
// declare the statistics of states (one per op, as fitPreprocess makes
// them) for the columns they cover.
func declareStates(p *Plan, states []PreprocessState, width int) *Plan {
	q := p.clone()
	for i, pp := range q.Preprocess {
		if pp.Op != "standardize" && pp.Op != "min_max" {
			continue
		}
		st := states[i]
		var a, b []float64
		for j, c := range scaledColumns(p, pp, width) {
			if !c {
				continue
			}
			if pp.Op == "standardize" {
				a, b = append(a, st.Mean[j]), append(b, st.Std[j])
			} else {
				a, b = append(a, st.Min[j]), append(b, st.Max[j])
			}
		}
		if pp.Op == "standardize" {
			q.Preprocess[i].Mean, q.Preprocess[i].Std = a, b
		} else {
			q.Preprocess[i].Min, q.Preprocess[i].Max = a, b
		}
	}
	return q
}

// clone deep-copies the parts of a plan that Declare changes.
func (p *Plan) clone() *Plan {
	q := *p
	q.Preprocess = make([]PreprocessOp, len(p.Preprocess))
	copy(q.Preprocess, p.Preprocess)
	return &q
}

// Average is FedAvg: the weighted mean of several models' parameters
// (weights are typically the shards' row counts). Every model must have the
// same parameters with the same shapes.
func Average(params []map[string]Tensor, weights []float64) (map[string]Tensor, error) {
	if len(params) == 0 || len(params) != len(weights) {
		return nil, errors.New("average: need one weight per model")
	}
	var total float64
	for _, w := range weights {
		if !(w > 0) || math.IsInf(w, 0) {
			return nil, fmt.Errorf("average: weight %v must be positive", w)
		}
		total += w
	}
	out := map[string]Tensor{}
	for name, t0 := range params[0] {
		acc := Tensor{Shape: append([]int(nil), t0.Shape...), Data: make([]float64, len(t0.Data))}
		for i, m := range params {
			t, ok := m[name]
			if !ok || len(t.Data) != len(t0.Data) || fmt.Sprint(t.Shape) != fmt.Sprint(t0.Shape) {
				return nil, fmt.Errorf("average: model %d's parameter %q does not match the others", i, name)
			}
			f := weights[i] / total
			for k, v := range t.Data {
				acc.Data[k] += f * v
			}
		}
		out[name] = acc
	}
	for i, m := range params {
		if len(m) != len(out) {
			return nil, fmt.Errorf("average: model %d has %d parameters, want %d", i, len(m), len(out))
		}
	}
	return out, nil
}
