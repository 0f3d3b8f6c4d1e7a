package dataset

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
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

// AppendNumber appends the canonical text of a number: an integer of
// magnitude under 1e15 in plain digits ("42", "-7"), anything else in the
// shortest form that reads back to the same float64 ("0.25", "1e+20").
// Sources that keep numbers as float64 store a cell's raw text only when it
// differs from this.
func AppendNumber(b []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 && !(v == 0 && math.Signbit(v)) {
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// FormatNumber is AppendNumber to a string.
func FormatNumber(v float64) string { return string(AppendNumber(nil, v)) }

// Cell returns the text of row i (counted from the batch's start) of
// column c: the raw text when the batch carries it, else the canonical
// text of the number (FormatNumber).
func (b *Batch) Cell(c, i int) string {
	if b.Raw[c] != nil {
		return b.Raw[c][i]
	}
	return FormatNumber(b.Num[c][i])
}

// Collect reads a whole Source into a Table in memory, refusing one whose
// estimated size (as Table.MemSize counts it) would pass maxBytes (0: no
// limit). It is for the consumers that still need every row at once; a
// scan needs only a batch.
func Collect(ctx context.Context, src Source, maxBytes int64) (*Table, error) {
	cols := src.Columns()
	n := src.NumRows()
	t := &Table{cols: cols, idx: make(map[string]int, len(cols)),
		raw: make([][]string, len(cols)), num: make([][]float64, len(cols))}
	for i, c := range cols {
		t.idx[c.Name] = i
		t.raw[i] = make([]string, 0, n)
		if c.Type == TypeNumber {
			t.num[i] = make([]float64, 0, n)
		}
	}
	var size int64
	err := src.Scan(ctx, 0, n, 8192, func(b *Batch) error {
		for c := range cols {
			for i := 0; i < b.Len; i++ {
				s := b.Cell(c, i)
				if b.Raw[c] != nil {
					s = strings.Clone(s) // a batch's text may live in the source's buffers
				}
				t.raw[c] = append(t.raw[c], s)
				size += int64(len(s)) + 16
			}
			if t.num[c] != nil {
				t.num[c] = append(t.num[c], b.Num[c][:b.Len]...)
				size += 8 * int64(b.Len)
			}
		}
		if maxBytes > 0 && size > maxBytes {
			return fmt.Errorf("dataset needs more than %d bytes in memory", maxBytes)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// WriteSourceCSV writes a Source as CSV: the header, then every row's
// cells (Batch.Cell), read batch by batch.
func WriteSourceCSV(ctx context.Context, src Source, w io.Writer) error {
	cols := src.Columns()
	cw := csv.NewWriter(w)
	rec := make([]string, len(cols))
	for c, col := range cols {
		rec[c] = col.Name
	}
	if err := cw.Write(rec); err != nil {
		return err
	}
	err := src.Scan(ctx, 0, src.NumRows(), 4096, func(b *Batch) error {
		for i := 0; i < b.Len; i++ {
			for c := range cols {
				rec[c] = b.Cell(c, i)
			}
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}
