package plan

import (
	"fmt"
	"math"
)

// Memory estimates are upper bounds in bytes, counted as float64 whatever
// the engine (the native engine's float32 needs half).
const (
	bytesPerValue = 8
	// paramCopies: a parameter's value, its gradient, the optimizer's two
	// moments, an engine's own copy and the early-stopping best copy.
	paramCopies = 6
	// dataCopies: the parsed table's column and the training inputs x.
	dataCopies = 2
)

// stepMemory is what one training step at batch rows holds: the value and
// the gradient of every op's output (the activations of the forward pass and
// their gradients in the backward pass), and the parameters with their
// gradients and optimizer state.
func (pr *program) stepMemory(batch int) float64 {
	isParam := make(map[int]bool, len(pr.paramSlot))
	params := 0.0
	for _, s := range pr.paramSlot {
		isParam[s] = true
		params += float64(size(pr.shape[s]))
	}
	return 2*pr.activations(batch, isParam) + paramCopies*bytesPerValue*params
}

// activations is the bytes of every non-parameter value at rows rows.
func (pr *program) activations(rows int, isParam map[int]bool) float64 {
	var n float64
	for s, sh := range pr.shape {
		if isParam[s] {
			continue
		}
		k := 1.0
		for _, d := range sh {
			if d == Batch {
				k *= float64(rows)
			} else {
				k *= float64(d)
			}
		}
		n += k
	}
	return bytesPerValue * n
}

// memory is the peak of training on rows rows: the data, one step at the
// batch size (with DP-SGD also a step of one row), and the forward pass over
// the validation rows (every value of it at once).
func (pr *program) memory(p *Plan, rows int) float64 {
	isParam := make(map[int]bool, len(pr.paramSlot))
	for _, s := range pr.paramSlot {
		isParam[s] = true
	}
	bs := min(p.Train.BatchSize, max(rows, 1))
	m := pr.stepMemory(bs)
	if p.Privacy != nil {
		m += pr.stepMemory(1)
	}
	val := math.Ceil(float64(rows) * p.Train.ValidationFraction)
	m += pr.activations(int(val), isParam)
	m += dataCopies * bytesPerValue * float64(rows) * float64(pr.inputs+1)
	return m
}

// saturate converts a byte count to int64, saturating.
func saturate(b float64) int64 {
	if b >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(math.Ceil(b))
}

// TrainMemory returns an upper bound, in bytes, of the memory training p on
// rows rows needs at its peak (see Report.StepMemory for a step alone).
func TrainMemory(p *Plan, rows int) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	pr, err := compile(p)
	if err != nil {
		return 0, err
	}
	return saturate(pr.memory(p, rows)), nil
}

// FormatBytes renders a byte count for people: 1.6 GB, 512 MB, 900 kB.
func FormatBytes(b int64) string {
	const unit = 1000
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	v, i := float64(b), 0
	for v >= unit && i < 6 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.3g %cB", v, "kMGTPE"[i-1])
}
