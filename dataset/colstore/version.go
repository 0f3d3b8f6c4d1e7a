package colstore

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/fedgrid/fedgrid/dataset"
)

// ReadMeta reads a version directory's description.
func ReadMeta(dir string) (*Meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if err != nil {
		return nil, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("colstore: %s: %w", filepath.Join(dir, MetaFile), err)
	}
	if m.Format > Format {
		return nil, fmt.Errorf("colstore: %s has format %d; this build reads up to %d", dir, m.Format, Format)
	}
	return &m, nil
}

// Version is an opened dataset version: a dataset.Source that reads its
// data file one record batch at a time (each batch read with ReadAt into
// memory of its own, released after the callback), so a scan holds at most
// one batch whatever the size of the version. A Version is safe for
// concurrent scans; Close it when no scan is running.
type Version struct {
	dir  string
	meta *Meta
	cols []dataset.Column
	f    *os.File
	r    *ipc.FileReader
}

var _ dataset.Source = (*Version)(nil)

// Open opens the version in dir.
func Open(dir string) (*Version, error) {
	m, err := ReadMeta(dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, DataFile))
	if err != nil {
		return nil, err
	}
	r, err := ipc.NewFileReader(f, ipc.WithAllocator(memory.NewGoAllocator()))
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("colstore: open %s: %w", dir, err)
	}
	v := &Version{dir: dir, meta: m, cols: m.DatasetColumns(), f: f, r: r}
	if err := v.check(); err != nil {
		_ = v.Close()
		return nil, err
	}
	return v, nil
}

// check compares the data file's schema and batches with meta.json.
func (v *Version) check() error {
	s := v.r.Schema()
	if v.r.NumRecords() != len(v.meta.ChunkStarts) {
		return fmt.Errorf("colstore: %s: %d record batches, meta.json lists %d", v.dir, v.r.NumRecords(), len(v.meta.ChunkStarts))
	}
	for _, c := range v.meta.Columns {
		want := arrow.DataType(arrow.BinaryTypes.String)
		if c.Type == dataset.TypeNumber {
			want = arrow.PrimitiveTypes.Float64
		}
		if c.Field < 0 || c.Field >= s.NumFields() || !arrow.TypeEqual(s.Field(c.Field).Type, want) {
			return fmt.Errorf("colstore: %s: column %q does not match the data file", v.dir, c.Name)
		}
		if c.RawField >= 0 && (c.RawField >= s.NumFields() || !arrow.TypeEqual(s.Field(c.RawField).Type, arrow.BinaryTypes.String)) {
			return fmt.Errorf("colstore: %s: text of column %q does not match the data file", v.dir, c.Name)
		}
	}
	return nil
}

// Dir returns the version's directory.
func (v *Version) Dir() string { return v.dir }

// Meta returns the version's description (statistics included); callers
// must not change it.
func (v *Version) Meta() *Meta { return v.meta }

// Columns implements dataset.Source.
func (v *Version) Columns() []dataset.Column { return append([]dataset.Column(nil), v.cols...) }

// NumRows implements dataset.Source.
func (v *Version) NumRows() int { return int(v.meta.Rows) }

// ColumnRange returns the minimum and maximum of number column c over
// every row, from the statistics stored at ingest (the same float64
// values Scan gives): ok is false for a category column, a version
// without rows, or extremes that are not finite.
func (v *Version) ColumnRange(c int) (lo, hi float64, ok bool) {
	if c < 0 || c >= len(v.meta.Columns) || v.meta.Rows == 0 {
		return 0, 0, false
	}
	col := v.meta.Columns[c]
	if col.Type != dataset.TypeNumber {
		return 0, 0, false
	}
	lo, hi = col.Stats.Min, col.Stats.Max
	if math.IsInf(lo, 0) || math.IsInf(hi, 0) || math.IsNaN(lo) || math.IsNaN(hi) || lo > hi {
		return 0, 0, false
	}
	return lo, hi, true
}

// Close closes the data file.
func (v *Version) Close() error {
	err := v.r.Close()
	if cerr := v.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// chunk reads record batch i; the caller releases it.
func (v *Version) chunk(i int) (arrow.RecordBatch, error) {
	rec, err := v.r.RecordBatchAt(i)
	if err != nil {
		return nil, fmt.Errorf("colstore: %s: read batch %d: %w", v.dir, i, err)
	}
	return rec, nil
}

// chunkOf returns the record batch that holds row.
func (v *Version) chunkOf(row int64) int {
	return sort.Search(len(v.meta.ChunkStarts), func(i int) bool { return v.meta.ChunkStarts[i] > row }) - 1
}

func (v *Version) chunkEnd(i int) int64 {
	if i+1 < len(v.meta.ChunkStarts) {
		return v.meta.ChunkStarts[i+1]
	}
	return v.meta.Rows
}

// Scan implements dataset.Source. A batch never spans two record batches of
// the file, so it may hold fewer than batchRows rows. Number columns come
// as float64 (Raw[c] is nil unless the column keeps text that
// dataset.FormatNumber would not reproduce); the slices point into the
// record batch, valid only during fn.
func (v *Version) Scan(ctx context.Context, from, to, batchRows int, fn func(*dataset.Batch) error) error {
	n := v.NumRows()
	if from < 0 || to > n || from > to {
		return fmt.Errorf("scan rows [%d, %d) of a table of %d rows", from, to, n)
	}
	if batchRows < 1 {
		return fmt.Errorf("scan batch of %d rows: must be at least 1", batchRows)
	}
	if from == to {
		return nil
	}
	b := v.newBatch()
	for ci := v.chunkOf(int64(from)); ci < len(v.meta.ChunkStarts) && v.meta.ChunkStarts[ci] < int64(to); ci++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := v.chunk(ci)
		if err != nil {
			return err
		}
		cv := v.view(rec)
		base := v.meta.ChunkStarts[ci]
		lo := max(int64(from), base)
		hi := min(int64(to), v.chunkEnd(ci))
		for start := lo; start < hi; start += int64(batchRows) {
			end := min(start+int64(batchRows), hi)
			cv.fill(b, int(start-base), int(end-base))
			b.Start, b.Len = int(start), int(end-start)
			if err := fn(b); err != nil {
				rec.Release()
				return err
			}
			if err := ctx.Err(); err != nil {
				rec.Release()
				return err
			}
		}
		rec.Release()
	}
	return nil
}

// ScanRows calls fn with batches of at most batchRows rows holding the
// given rows, in the given order (repeats allowed): batch.Start counts
// positions in rows, not rows of the version. The batch's slices are its
// own (copied from the record batches), valid during fn. Each batch reads
// the record batches its rows fall in once, in file order, whatever the
// order of its rows: a shuffled list read in batches as large as the list
// reads the file once.
func (v *Version) ScanRows(ctx context.Context, rows []int, batchRows int, fn func(*dataset.Batch) error) error {
	if batchRows < 1 {
		return fmt.Errorf("scan batch of %d rows: must be at least 1", batchRows)
	}
	n := v.NumRows()
	for _, r := range rows {
		if r < 0 || r >= n {
			return fmt.Errorf("scan row %d of a table of %d rows", r, n)
		}
	}
	size := min(batchRows, len(rows))
	out := &dataset.Batch{Num: make([][]float64, len(v.cols)), Raw: make([][]string, len(v.cols))}
	for c, col := range v.meta.Columns {
		if col.Type == dataset.TypeNumber {
			out.Num[c] = make([]float64, size)
		}
		if col.Type != dataset.TypeNumber || col.RawField >= 0 {
			out.Raw[c] = make([]string, size)
		}
	}
	order := make([]int, size) // positions of the batch, by row
	for start := 0; start < len(rows); start += batchRows {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch := rows[start:min(start+batchRows, len(rows))]
		order = order[:len(batch)]
		for i := range order {
			order[i] = i
		}
		sorted := sort.SliceIsSorted(batch, func(i, j int) bool { return batch[i] < batch[j] })
		if !sorted {
			sort.Slice(order, func(i, j int) bool { return batch[order[i]] < batch[order[j]] })
		}
		if err := v.gather(batch, order, out); err != nil {
			return err
		}
		out.Start, out.Len = start, len(batch)
		for c := range out.Num {
			if out.Num[c] != nil {
				out.Num[c] = out.Num[c][:len(batch)]
			}
			if out.Raw[c] != nil {
				out.Raw[c] = out.Raw[c][:len(batch)]
			}
		}
		if err := fn(out); err != nil {
			return err
		}
	}
	return nil
}

// gather copies batch[order[k]] for k in order (rows ascending) into
// position order[k] of out, reading each record batch once.
func (v *Version) gather(batch, order []int, out *dataset.Batch) error {
	cur := -1
	var rec arrow.RecordBatch
	var view chunkView
	defer func() {
		if rec != nil {
			rec.Release()
		}
	}()
	for _, pos := range order {
		r := batch[pos]
		if ci := v.chunkOf(int64(r)); ci != cur {
			if rec != nil {
				rec.Release()
				rec = nil
			}
			var err error
			if rec, err = v.chunk(ci); err != nil {
				return err
			}
			cur, view = ci, v.view(rec)
		}
		i := r - int(v.meta.ChunkStarts[cur])
		for c := range v.cols {
			if out.Num[c] != nil {
				out.Num[c][pos] = view.num[c][i]
			}
			if out.Raw[c] != nil {
				// Cloned: the record batch is released before fn runs.
				out.Raw[c][pos] = cloneString(view.raw[c].Value(i))
			}
		}
	}
	return nil
}

func cloneString(s string) string { return string([]byte(s)) }

// chunkView holds one record batch's columns in the order of v.cols.
type chunkView struct {
	num [][]float64     // nil for categories
	raw []*array.String // nil for number columns without text
	tmp [][]string
}

func (v *Version) view(rec arrow.RecordBatch) chunkView {
	cv := chunkView{num: make([][]float64, len(v.cols)), raw: make([]*array.String, len(v.cols)), tmp: make([][]string, len(v.cols))}
	for c, col := range v.meta.Columns {
		if col.Type == dataset.TypeNumber {
			cv.num[c] = rec.Column(col.Field).(*array.Float64).Float64Values()
			if col.RawField >= 0 {
				cv.raw[c] = rec.Column(col.RawField).(*array.String)
			}
		} else {
			cv.raw[c] = rec.Column(col.Field).(*array.String)
		}
	}
	return cv
}

func (v *Version) newBatch() *dataset.Batch {
	return &dataset.Batch{Num: make([][]float64, len(v.cols)), Raw: make([][]string, len(v.cols))}
}

// fill points b at rows [lo, hi) of the chunk.
func (cv *chunkView) fill(b *dataset.Batch, lo, hi int) {
	for c := range cv.num {
		if cv.num[c] != nil {
			b.Num[c] = cv.num[c][lo:hi:hi]
		} else {
			b.Num[c] = nil
		}
		if cv.raw[c] != nil {
			t := cv.tmp[c][:0]
			for i := lo; i < hi; i++ {
				t = append(t, cv.raw[c].Value(i))
			}
			cv.tmp[c] = t
			b.Raw[c] = t
		} else {
			b.Raw[c] = nil
		}
	}
}
