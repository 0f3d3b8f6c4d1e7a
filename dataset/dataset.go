// Package dataset reads, describes, splits and writes the tabular data that
// fedgrid trains on: CSV with a header row, bounded in size, with each column
// typed as "number" or "category".
//
// A Table keeps every cell's raw text, so categorical columns (and numeric
// columns used as categories) keep their exact spelling, and WriteCSV writes
// back what was read.
package dataset

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Column types.
const (
	TypeNumber   = "number"
	TypeCategory = "category"
)

// Column describes one column of a table.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"` // "number" or "category"
}

// Limits bound what ReadCSV accepts. A zero field takes its default.
type Limits struct {
	MaxBytes   int64 // default 64 MiB
	MaxRows    int   // data rows, header excluded; default 1,000,000
	MaxColumns int   // default 1000
}

// Defaults for a zero Limits field.
const (
	DefaultMaxBytes   = 64 << 20
	DefaultMaxRows    = 1_000_000
	DefaultMaxColumns = 1000
)

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxRows <= 0 {
		l.MaxRows = DefaultMaxRows
	}
	if l.MaxColumns <= 0 {
		l.MaxColumns = DefaultMaxColumns
	}
	return l
}

// Table is an immutable, column-major table of raw cell text plus the parsed
// values of its numeric columns.
type Table struct {
	cols []Column
	raw  [][]string  // raw[c][r]
	num  [][]float64 // num[c][r]; nil for category columns
	idx  map[string]int
}

// ReadCSV reads a CSV document whose first row is the header. Every column
// whose cells all parse as finite numbers is typed "number"; any other column
// is "category". It refuses, with the line and column named: an empty input,
// empty or duplicate header names, rows with a different number of fields
// than the header, malformed quoting, and input over the limits.
func ReadCSV(r io.Reader, lim Limits) (*Table, error) {
	lim = lim.withDefaults()
	lr := NewLimitedReader(r, lim.MaxBytes)
	cr := csv.NewReader(lr)
	cr.FieldsPerRecord = -1 // checked here, with a better message
	cr.ReuseRecord = false

	header, err := cr.Read()
	if err != nil {
		if lr.Over() {
			return nil, fmt.Errorf("csv: input is larger than the limit of %d bytes", lim.MaxBytes)
		}
		if errors.Is(err, io.EOF) {
			return nil, errors.New("csv: input is empty; a header row is required")
		}
		return nil, csvError(err)
	}
	if len(header) > lim.MaxColumns {
		return nil, fmt.Errorf("csv: line 1: header has %d columns, more than the limit of %d", len(header), lim.MaxColumns)
	}
	header[0] = strings.TrimPrefix(header[0], "\ufeff")
	t := &Table{idx: make(map[string]int, len(header))}
	for i, h := range header {
		name := strings.TrimSpace(h)
		if name == "" {
			return nil, fmt.Errorf("csv: line 1, column %d: header name is empty", i+1)
		}
		if !utf8.ValidString(name) {
			return nil, fmt.Errorf("csv: line 1, column %d: header name is not valid UTF-8", i+1)
		}
		if j, dup := t.idx[name]; dup {
			return nil, fmt.Errorf("csv: line 1, column %d: header name %q repeats column %d", i+1, name, j+1)
		}
		t.idx[name] = i
		t.cols = append(t.cols, Column{Name: name})
	}
	t.raw = make([][]string, len(header))
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if lr.Over() {
				return nil, fmt.Errorf("csv: input is larger than the limit of %d bytes", lim.MaxBytes)
			}
			return nil, csvError(err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) != len(header) {
			return nil, fmt.Errorf("csv: line %d: row has %d fields, the header has %d", line, len(rec), len(header))
		}
		if len(t.raw[0]) >= lim.MaxRows {
			return nil, fmt.Errorf("csv: line %d: more than the limit of %d data rows", line, lim.MaxRows)
		}
		for c, v := range rec {
			if !utf8.ValidString(v) {
				return nil, fmt.Errorf("csv: line %d, column %q: value is not valid UTF-8", line, t.cols[c].Name)
			}
			t.raw[c] = append(t.raw[c], v)
		}
	}
	if lr.Over() {
		return nil, fmt.Errorf("csv: input is larger than the limit of %d bytes", lim.MaxBytes)
	}
	if len(t.raw[0]) == 0 {
		return nil, errors.New("csv: the header is not followed by any data row")
	}
	t.num = make([][]float64, len(t.cols))
	for c := range t.cols {
		t.num[c], t.cols[c].Type = parseColumn(t.raw[c])
	}
	return t, nil
}

// parseColumn returns the numeric values and "number" when every cell is a
// finite number, else nil and "category".
func parseColumn(raw []string) ([]float64, string) {
	out := make([]float64, len(raw))
	for i, s := range raw {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, TypeCategory
		}
		out[i] = v
	}
	return out, TypeNumber
}

func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("csv: line %d, character %d: %v", pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("csv: %w", err)
}

// LimitedReader reads at most a given number of bytes of its input and
// records whether the input had more (Over): unlike io.LimitReader it tells
// "exactly at the limit" from "over it".
type LimitedReader struct {
	r         io.Reader
	left      int64
	unlimited bool
	over      bool
}

// NewLimitedReader reads at most max bytes of r; max <= 0 reads all of r.
func NewLimitedReader(r io.Reader, max int64) *LimitedReader {
	return &LimitedReader{r: r, left: max, unlimited: max <= 0}
}

// Over reports whether the input had more than the limit.
func (l *LimitedReader) Over() bool { return l.over }

func (l *LimitedReader) Read(p []byte) (int, error) {
	if l.unlimited {
		return l.r.Read(p)
	}
	if l.left <= 0 {
		// Probe for one more byte to tell "exactly at the limit" from "over".
		var b [1]byte
		n, err := l.r.Read(b[:])
		if n > 0 {
			l.over = true
			return 0, errors.New("input over the size limit")
		}
		if err == nil {
			err = io.EOF
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// Columns returns the columns in file order.
func (t *Table) Columns() []Column { return slices.Clone(t.cols) }

// NumRows returns the number of data rows.
func (t *Table) NumRows() int {
	if len(t.raw) == 0 {
		return 0
	}
	return len(t.raw[0])
}

// Column returns the named column's description and whether it exists.
func (t *Table) Column(name string) (Column, bool) {
	i, ok := t.idx[name]
	if !ok {
		return Column{}, false
	}
	return t.cols[i], true
}

// Numeric returns a copy of a numeric column's values.
func (t *Table) Numeric(col string) ([]float64, error) {
	i, ok := t.idx[col]
	if !ok {
		return nil, fmt.Errorf("column %q does not exist", col)
	}
	if t.num[i] == nil {
		// No value or row: the message may reach someone who may not see the data.
		return nil, fmt.Errorf("column %q is not numeric (it holds text)", col)
	}
	return slices.Clone(t.num[i]), nil
}

// Category returns a copy of a column's raw cell text; it works for numeric
// columns too.
func (t *Table) Category(col string) ([]string, error) {
	i, ok := t.idx[col]
	if !ok {
		return nil, fmt.Errorf("column %q does not exist", col)
	}
	return slices.Clone(t.raw[i]), nil
}

// Select returns a table of the given rows, in the given order (repeats
// allowed). Column types are kept as they are. Every index must be in
// [0, NumRows()), as for a slice index.
func (t *Table) Select(rows []int) *Table {
	out := &Table{cols: slices.Clone(t.cols), idx: t.idx,
		raw: make([][]string, len(t.cols)), num: make([][]float64, len(t.cols))}
	for c := range t.cols {
		out.raw[c] = make([]string, len(rows))
		for i, r := range rows {
			out.raw[c][i] = t.raw[c][r]
		}
		if t.num[c] != nil {
			out.num[c] = make([]float64, len(rows))
			for i, r := range rows {
				out.num[c][i] = t.num[c][r]
			}
		}
	}
	return out
}

// Split shuffles the row indices with a generator seeded by seed and puts
// round(holdoutFraction*NumRows()) of them in holdout, the rest in train; both
// keep the original row order. The same table, fraction and seed always give
// the same split. A fraction strictly between 0 and 1 leaves at least one row
// on each side when the table has two rows or more; fractions outside [0,1]
// (or NaN) are clamped (NaN counts as 0).
func (t *Table) Split(holdoutFraction float64, seed int64) (train, holdout *Table) {
	tr, ho := SplitIndices(t.NumRows(), holdoutFraction, seed)
	return t.Select(tr), t.Select(ho)
}

// SplitIndices is the index form of Split: the sorted row indices of each side.
func SplitIndices(n int, holdoutFraction float64, seed int64) (train, holdout []int) {
	f := holdoutFraction
	if math.IsNaN(f) || f < 0 {
		f = 0
	}
	if f > 1 {
		f = 1
	}
	k := int(math.Round(f * float64(n)))
	if f > 0 && f < 1 && n >= 2 {
		k = max(1, min(k, n-1))
	}
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6665646772696473)) // "fedgrids"
	rng.Shuffle(n, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
	holdout = slices.Clone(perm[:k])
	train = slices.Clone(perm[k:])
	slices.Sort(holdout)
	slices.Sort(train)
	return train, holdout
}

// WriteCSV writes the header and every row's raw cell text.
func (t *Table) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	rec := make([]string, len(t.cols))
	for c, col := range t.cols {
		rec[c] = col.Name
	}
	if err := cw.Write(rec); err != nil {
		return err
	}
	for r := 0; r < t.NumRows(); r++ {
		for c := range t.cols {
			rec[c] = t.raw[c][r]
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// Bytes returns the table as CSV.
func (t *Table) Bytes() ([]byte, error) {
	var b bytes.Buffer
	if err := t.WriteCSV(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// MemSize estimates the bytes the table holds in memory: every cell's text
// and string header, and 8 bytes per parsed number.
func (t *Table) MemSize() int64 {
	var n int64
	for c, col := range t.raw {
		n += int64(len(col)) * 16
		for _, s := range col {
			n += int64(len(s))
		}
		n += int64(len(t.num[c])) * 8
	}
	return n
}
