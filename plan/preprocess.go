package plan

import (
	"fmt"
	"math"
	"slices"

	"github.com/fedgrid/fedgrid/dataset"
)

// PreprocessState is a fitted preprocessing step as stored in a model.
//
// How a model's input x is built from a data row, with no fedgrid code:
//  1. Walk plan.features in order. A feature named by a "one_hot" state adds
//     len(categories) columns: 1 where the cell's text equals the category,
//     else 0. Any other feature adds one column: its number.
//  2. Apply the "standardize" and "min_max" states in their order, to every
//     column j: standardize x[j] = (x[j]-mean[j])/std[j]; min_max
//     x[j] = (x[j]-min[j])/(max[j]-min[j]). Columns a step does not cover
//     carry mean 0, std 1 (min 0, max 1), and a constant column std 1
//     (max = min+1), so the formulas hold for every column.
type PreprocessState struct {
	Op         string    `json:"op"`
	Column     string    `json:"column,omitempty"`
	Categories []string  `json:"categories,omitempty"`
	Mean       []float64 `json:"mean,omitempty"`
	Std        []float64 `json:"std,omitempty"`
	Min        []float64 `json:"min,omitempty"`
	Max        []float64 `json:"max,omitempty"`
}

// rawInputs builds x (row-major, rows x len(inputLayout)) before scaling.
func rawInputs(p *Plan, t *dataset.Table, width int) ([]float64, error) {
	n := t.NumRows()
	x := make([]float64, n*width)
	hot := map[string][]string{}
	for _, pp := range p.Preprocess {
		if pp.Op == "one_hot" {
			hot[pp.Column] = pp.Categories
		}
	}
	j := 0
	for _, f := range p.Features {
		if cats, ok := hot[f]; ok {
			cells, err := t.Category(f)
			if err != nil {
				return nil, fmt.Errorf("feature %q: %w", f, err)
			}
			pos := make(map[string]int, len(cats))
			for k, c := range cats {
				pos[c] = k
			}
			for r, v := range cells {
				if k, ok := pos[v]; ok {
					x[r*width+j+k] = 1
				}
			}
			j += len(cats)
			continue
		}
		vals, err := t.Numeric(f)
		if err != nil {
			return nil, fmt.Errorf("feature %q: %w", f, err)
		}
		for r, v := range vals {
			x[r*width+j] = v
		}
		j++
	}
	if j != width {
		return nil, fmt.Errorf("internal: built %d input columns, want %d", j, width)
	}
	return x, nil
}

// scaledColumns returns which x columns a standardize/min_max op covers.
func scaledColumns(p *Plan, pp PreprocessOp, width int) []bool {
	hot := map[string]int{}
	for _, q := range p.Preprocess {
		if q.Op == "one_hot" {
			hot[q.Column] = len(q.Categories)
		}
	}
	cover := make([]bool, width)
	j := 0
	for _, f := range p.Features {
		if k, ok := hot[f]; ok {
			j += k
			continue
		}
		cover[j] = len(pp.Columns) == 0 || slices.Contains(pp.Columns, f)
		j++
	}
	return cover
}

// fitPreprocess fits the plan's preprocessing on the rows listed (the
// training rows) and applies it to all of x in place.
func fitPreprocess(p *Plan, x []float64, width int, rows []int) []PreprocessState {
	var states []PreprocessState
	for _, pp := range p.Preprocess {
		switch pp.Op {
		case "one_hot":
			states = append(states, PreprocessState{Op: "one_hot", Column: pp.Column, Categories: slices.Clone(pp.Categories)})
		case "standardize":
			cover := scaledColumns(p, pp, width)
			st := PreprocessState{Op: "standardize", Mean: make([]float64, width), Std: make([]float64, width)}
			k := 0 // index into declared statistics
			for j := 0; j < width; j++ {
				st.Std[j] = 1
				if cover[j] && pp.Mean != nil {
					st.Mean[j], st.Std[j] = pp.Mean[k], pp.Std[k]
					k++
					continue
				}
				if !cover[j] || len(rows) == 0 {
					continue
				}
				var sum float64
				for _, r := range rows {
					sum += x[r*width+j]
				}
				mean := sum / float64(len(rows))
				var ss float64
				for _, r := range rows {
					d := x[r*width+j] - mean
					ss += d * d
				}
				sd := math.Sqrt(ss / float64(len(rows)))
				if sd == 0 || !finite(sd) {
					sd = 1
				}
				st.Mean[j], st.Std[j] = mean, sd
			}
			applyState(st, x, width)
			states = append(states, st)
		case "min_max":
			cover := scaledColumns(p, pp, width)
			st := PreprocessState{Op: "min_max", Min: make([]float64, width), Max: make([]float64, width)}
			k := 0
			for j := 0; j < width; j++ {
				st.Max[j] = 1
				if cover[j] && pp.Min != nil {
					st.Min[j], st.Max[j] = pp.Min[k], pp.Max[k]
					k++
					continue
				}
				if !cover[j] || len(rows) == 0 {
					continue
				}
				lo, hi := math.Inf(1), math.Inf(-1)
				for _, r := range rows {
					v := x[r*width+j]
					lo, hi = min(lo, v), max(hi, v)
				}
				if hi == lo {
					hi = lo + 1
				}
				st.Min[j], st.Max[j] = lo, hi
			}
			applyState(st, x, width)
			states = append(states, st)
		}
	}
	return states
}

func applyState(st PreprocessState, x []float64, width int) {
	switch st.Op {
	case "standardize":
		for i := range x {
			j := i % width
			x[i] = (x[i] - st.Mean[j]) / st.Std[j]
		}
	case "min_max":
		for i := range x {
			j := i % width
			x[i] = (x[i] - st.Min[j]) / (st.Max[j] - st.Min[j])
		}
	}
}

// checkStates verifies stored preprocessing against the plan: one state per
// plan op, in order, with the right widths and usable numbers.
func checkStates(p *Plan, states []PreprocessState, width int) error {
	if len(states) != len(p.Preprocess) {
		return fmt.Errorf("preprocess has %d steps, the plan %d", len(states), len(p.Preprocess))
	}
	for i, st := range states {
		pp := p.Preprocess[i]
		if st.Op != pp.Op {
			return fmt.Errorf("preprocess[%d] is %q, the plan's is %q", i, st.Op, pp.Op)
		}
		switch st.Op {
		case "one_hot":
			if st.Column != pp.Column || !slices.Equal(st.Categories, pp.Categories) {
				return fmt.Errorf("preprocess[%d] one_hot: column or categories differ from the plan's", i)
			}
		case "standardize":
			if len(st.Mean) != width || len(st.Std) != width {
				return fmt.Errorf("preprocess[%d] standardize: mean and std need %d values, have %d and %d", i, width, len(st.Mean), len(st.Std))
			}
			for j := range width {
				if !finite(st.Mean[j]) || !finite(st.Std[j]) || st.Std[j] <= 0 {
					// No values: fitted statistics are the data's.
					return fmt.Errorf("preprocess[%d] standardize: input %d needs a finite mean and a finite std > 0", i, j)
				}
			}
		case "min_max":
			if len(st.Min) != width || len(st.Max) != width {
				return fmt.Errorf("preprocess[%d] min_max: min and max need %d values, have %d and %d", i, width, len(st.Min), len(st.Max))
			}
			for j := range width {
				if !finite(st.Min[j]) || !finite(st.Max[j]) || st.Max[j] <= st.Min[j] {
					return fmt.Errorf("preprocess[%d] min_max: input %d needs a finite min and a finite max > min", i, j)
				}
			}
		}
	}
	return nil
}

// labels reads the label column and checks it suits the loss. Its errors
// go to the requester, who may not see the data: they name the column and
// the rule, never a value or the row that breaks it. With skip (DP-SGD, which
// must not fail because of a value in the data) a row whose label breaks the
// rule is marked in skip instead, and its label set to 0.
func labels(p *Plan, pr *program, t *dataset.Table, skip []bool) ([]float64, error) {
	y, err := t.Numeric(p.Label)
	if err != nil {
		return nil, fmt.Errorf("label: %w", err)
	}
	if err := checkLabels(p, pr, y, skip); err != nil {
		return nil, err
	}
	return y, nil
}

// checkLabels is labels' rule over y, rows numbered from 0 in skip.
func checkLabels(p *Plan, pr *program, y []float64, skip []bool) error {
	for r, v := range y {
		if labelOK(pr, v) {
			continue
		}
		if skip != nil {
			skip[r], y[r] = true, 0
			continue
		}
		return labelError(p, pr)
	}
	return nil
}

// labelError says which rule the label column breaks, with no value.
func labelError(p *Plan, pr *program) error {
	switch pr.lossOp {
	case "cross_entropy":
		return fmt.Errorf("label %q holds values that are not integers from 0 to %d; cross_entropy over %d classes needs them", p.Label, pr.outputs-1, pr.outputs)
	case "bce", "bce_logits":
		return fmt.Errorf("label %q holds values other than 0 and 1; %s needs a 0/1 label", p.Label, pr.lossOp)
	}
	return fmt.Errorf("label %q holds values that are not finite numbers", p.Label)
}

// labelOK reports whether v is a label the plan's loss can take.
func labelOK(pr *program, v float64) bool {
	switch pr.lossOp {
	case "bce", "bce_logits":
		return v == 0 || v == 1
	case "cross_entropy":
		return v == math.Trunc(v) && v >= 0 && int(v) < pr.outputs
	}
	return !math.IsNaN(v) && !math.IsInf(v, 0)
}
