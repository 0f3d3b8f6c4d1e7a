package plan

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedgrid/fedgrid/dataset"
)

// Federated evaluation: a model scored on several gateways' rows, of which
// only sums leave (through secure aggregation): the row count, the loss
// summed over rows, the rows predicted right, and, for a binary model, the
// histograms of its scores P(y=1) over EvalBins fixed bins of [0, 1], one
// per class. The area under the ROC curve is computed from the summed
// histograms: pairs in different bins are ordered exactly, pairs in the
// same bin count half, so it differs from the exact AUC by at most
// sum_b pos_b*neg_b / (2*pos*neg) (FedEvaluation.AUCError).

// EvalBins is the number of score bins of a binary model's histograms.
const EvalBins = 1000

// EvalValues is the number of values one gateway adds to the secure sum of
// an evaluation of a model with plan p.
func EvalValues(p *Plan) (int, error) {
	pr, err := compile(p)
	if err != nil {
		return 0, err
	}
	if pr.task == TaskBinary {
		return 3 + 2*EvalBins, nil
	}
	return 3, nil
}

// ModelPlan is the model's plan with the model's preprocessing statistics
// declared: the plan a gateway needs to score the model without fitting
// anything on its rows.
func ModelPlan(m *Model) (*Plan, error) {
	pr, err := m.compile()
	if err != nil {
		return nil, err
	}
	return declareStates(m.Plan, m.Preprocess, pr.inputs), nil
}

// EvalSums is one gateway's part of an evaluation on its rows src:
// [rows, loss sum, rows right, (binary) positives' histogram, negatives' histogram].
// It reads src in one streamed pass, scoring a batch of rows at a time, so
// its memory is bounded whatever the rows; the sums add the rows in order,
// as over the whole table.
func EvalSums(ctx context.Context, m *Model, src dataset.Source) ([]float64, error) {
	pr, err := m.compile()
	if err != nil {
		return nil, err
	}
	cols := src.Columns()
	if !slices.ContainsFunc(cols, func(c dataset.Column) bool { return c.Name == m.Plan.Label }) {
		return nil, fmt.Errorf("label: column %q is not in the data set", m.Plan.Label)
	}
	if err := checkColumns(m.Plan, cols); err != nil {
		return nil, err
	}
	rd, err := newInputReader(m.Plan, pr, cols)
	if err != nil {
		return nil, err
	}
	out := make([]float64, 3)
	if pr.task == TaskBinary {
		out = make([]float64, 3+2*EvalBins)
	}
	params := m.paramList(pr)
	br := newBlockReader(m.Plan, pr, src, rd, scanBlockRows(src.NumRows()), true)
	err = br.scan(ctx, func(x, y []float64, n int) error {
		for _, st := range m.Preprocess {
			applyState(st, x, pr.inputs)
		}
		loss, score := pr.rowLosses(pr.forward(params, x, n), y, n)
		out[0] += float64(n)
		for r := range n {
			out[1] += loss[r]
			switch pr.task {
			case TaskBinary:
				pos := y[r] == 1
				if (score[r] > 0.5) == pos {
					out[2]++
				}
				b := min(EvalBins-1, max(0, int(score[r]*EvalBins)))
				if pos {
					out[3+b]++
				} else {
					out[3+EvalBins+b]++
				}
			case TaskMulticlass:
				if score[r] == y[r] {
					out[2]++
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !finite(out[1]) {
		return nil, errors.New("the model's loss on these rows is not finite")
	}
	return out, nil
}

// FedEvaluation is a model's quality on the rows of several gateways, from
// the sums of their EvalSums.
type FedEvaluation struct {
	Rows     int     `json:"rows"`
	Task     string  `json:"task"`
	Loss     float64 `json:"loss"`               // mean over rows
	Correct  int     `json:"correct,omitempty"`  // classification: rows predicted right
	Accuracy float64 `json:"accuracy,omitempty"` // classification
	// AUC (binary, both classes present) from the summed score histograms,
	// within AUCError of the exact AUC of the pooled rows.
	AUC      float64 `json:"auc,omitempty"`
	AUCError float64 `json:"auc_error,omitempty"`
	Bins     int     `json:"bins,omitempty"`
}

// EvalFromSums reads the summed EvalSums of the gateways. Counts are
// rounded to integers (exact while the sums' error is below 0.5); the loss
// keeps the sum's error, divided by the rows.
func EvalFromSums(p *Plan, sums []float64) (*FedEvaluation, error) {
	pr, err := compile(p)
	if err != nil {
		return nil, err
	}
	want, _ := EvalValues(p)
	if len(sums) != want {
		return nil, fmt.Errorf("evaluation sums have %d values, want %d", len(sums), want)
	}
	count := func(v float64) int { return int(math.Round(v)) }
	n := count(sums[0])
	if n < 1 {
		return nil, errors.New("the evaluation summed no rows")
	}
	ev := &FedEvaluation{Rows: n, Task: pr.task, Loss: sums[1] / float64(n)}
	if pr.task == TaskRegression {
		return ev, nil
	}
	ev.Correct = count(sums[2])
	ev.Accuracy = float64(ev.Correct) / float64(n)
	if pr.task != TaskBinary {
		return ev, nil
	}
	ev.Bins = EvalBins
	pos, neg := sums[3:3+EvalBins], sums[3+EvalBins:]
	var np, nn, below, same float64 // below: negatives in lower bins so far
	for b := range EvalBins {
		p, q := float64(count(pos[b])), float64(count(neg[b]))
		np, nn = np+p, nn+q
		ev.AUC += p * (below + q/2)
		same += p * q
		below += q
	}
	if np == 0 || nn == 0 {
		ev.AUC = 0
		return ev, nil
	}
	ev.AUC /= np * nn
	ev.AUCError = same / (2 * np * nn)
	return ev, nil
}
