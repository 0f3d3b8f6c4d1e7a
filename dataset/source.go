package dataset

import (
	"context"
	"fmt"
)

// Batch is a run of consecutive rows of a Source, column by column, in the
// order of the source's Columns. A numeric column's values are in Num[c] (and
// its raw text may be absent: Raw[c] is nil); a category column's cells are
// in Raw[c] and Num[c] is nil. A batch is only valid inside the callback that
// receives it: a Source may reuse its slices for the next batch.
type Batch struct {
	Start int // index of the batch's first row in the source
	Len   int
	Num   [][]float64
	Raw   [][]string
}

// Source is a table that can be read batch by batch, so that a consumer
// never needs all of it in memory: a parsed *Table, or a dataset version on
// disk.
type Source interface {
	Columns() []Column
	NumRows() int
	// Scan calls fn with consecutive batches of at most batchRows rows that
	// together cover rows [from, to), in order. It stops at fn's first
	// error, which it returns, and when ctx ends.
	Scan(ctx context.Context, from, to, batchRows int, fn func(*Batch) error) error
}

var _ Source = (*Table)(nil)

// Scan implements Source over the table's memory: batches are views of its
// columns, not copies.
func (t *Table) Scan(ctx context.Context, from, to, batchRows int, fn func(*Batch) error) error {
	n := t.NumRows()
	if from < 0 || to > n || from > to {
		return fmt.Errorf("scan rows [%d, %d) of a table of %d rows", from, to, n)
	}
	if batchRows < 1 {
		return fmt.Errorf("scan batch of %d rows: must be at least 1", batchRows)
	}
	b := &Batch{Num: make([][]float64, len(t.cols)), Raw: make([][]string, len(t.cols))}
	for start := from; start < to; start += batchRows {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := min(start+batchRows, to)
		b.Start, b.Len = start, end-start
		for c := range t.cols {
			b.Raw[c] = t.raw[c][start:end:end]
			if t.num[c] != nil {
				b.Num[c] = t.num[c][start:end:end]
			} else {
				b.Num[c] = nil
			}
		}
		if err := fn(b); err != nil {
			return err
		}
	}
	return nil
}
