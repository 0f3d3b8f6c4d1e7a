package plan

import (
	"context"
	"fmt"

	"github.com/fedgrid/fedgrid/dataset"
)

// inputReader turns a dataset.Batch into rows of the model's raw input x
// (one_hot columns expanded, before scaling) and labels y.
type inputReader struct {
	width int
	feats []featureCol
	label int // column index of the label
}

// featureCol is where one plan feature comes from and goes to.
type featureCol struct {
	col int            // column index in the source
	at  int            // first x column it fills
	hot map[string]int // one_hot: category -> offset; nil for a number
}

func newInputReader(p *Plan, pr *program, cols []dataset.Column) (*inputReader, error) {
	idx := make(map[string]int, len(cols))
	for i, c := range cols {
		idx[c.Name] = i
	}
	hot := map[string][]string{}
	for _, pp := range p.Preprocess {
		if pp.Op == "one_hot" {
			hot[pp.Column] = pp.Categories
		}
	}
	r := &inputReader{width: pr.inputs}
	j := 0
	for _, f := range p.Features {
		c, ok := idx[f]
		if !ok {
			return nil, fmt.Errorf("feature %q: column %q does not exist", f, f)
		}
		fc := featureCol{col: c, at: j}
		if cats, ok := hot[f]; ok {
			fc.hot = make(map[string]int, len(cats))
			for k, v := range cats {
				fc.hot[v] = k
			}
			j += len(cats)
		} else {
			if cols[c].Type != dataset.TypeNumber {
				return nil, fmt.Errorf("feature %q: column %q is not numeric (it holds text)", f, f)
			}
			j++
		}
		r.feats = append(r.feats, fc)
	}
	if j != pr.inputs {
		return nil, fmt.Errorf("internal: built %d input columns, want %d", j, pr.inputs)
	}
	c, ok := idx[p.Label]
	if !ok {
		return nil, fmt.Errorf("label: column %q does not exist", p.Label)
	}
	if cols[c].Type != dataset.TypeNumber {
		return nil, fmt.Errorf("label: column %q is not numeric (it holds text)", p.Label)
	}
	r.label = c
	return r, nil
}

// read fills x (b.Len rows of width values, zeroed first) and y from b.
// A one_hot cell is its text (dataset.Batch.Cell: for a source that keeps
// only the number of a numeric cell, its canonical spelling).
func (r *inputReader) read(b *dataset.Batch, x, y []float64) error {
	w := r.width
	clear(x[:b.Len*w])
	for _, f := range r.feats {
		if f.hot != nil {
			for i := 0; i < b.Len; i++ {
				if k, ok := f.hot[b.Cell(f.col, i)]; ok {
					x[i*w+f.at+k] = 1
				}
			}
			continue
		}
		num := b.Num[f.col]
		if len(num) < b.Len {
			return fmt.Errorf("feature column %d: batch has %d numbers for %d rows", f.col, len(num), b.Len)
		}
		for i := 0; i < b.Len; i++ {
			x[i*w+f.at] = num[i]
		}
	}
	lab := b.Num[r.label]
	if len(lab) < b.Len {
		return fmt.Errorf("label column: batch has %d numbers for %d rows", len(lab), b.Len)
	}
	copy(y[:b.Len], lab[:b.Len])
	return nil
}

// loadBatchRows is how many rows one Scan callback of a full read holds.
const loadBatchRows = 4096

// loadInputs reads every row of src into x (rows x width, before scaling)
// and y.
func loadInputs(ctx context.Context, src dataset.Source, rd *inputReader) (x, y []float64, err error) {
	n := src.NumRows()
	x = make([]float64, n*rd.width)
	y = make([]float64, n)
	got := 0
	err = src.Scan(ctx, 0, n, loadBatchRows, func(b *dataset.Batch) error {
		if b.Start != got || got+b.Len > n {
			return fmt.Errorf("source gave rows [%d, %d), expected them from %d", b.Start, b.Start+b.Len, got)
		}
		if err := rd.read(b, x[got*rd.width:], y[got:]); err != nil {
			return err
		}
		got += b.Len
		return nil
	})
	if err == nil && got != n {
		err = fmt.Errorf("source gave %d rows, it says it has %d", got, n)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read data: %w", err)
	}
	return x, y, nil
}
