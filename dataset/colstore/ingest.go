package colstore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/fedgrid/fedgrid/dataset"
)

// Options bound and shape an ingest. A zero field takes its default.
type Options struct {
	MaxBytes    int64 // source bytes; default: no limit
	MaxRows     int64 // data rows; default: no limit
	MaxColumns  int   // default dataset.DefaultMaxColumns
	DistinctCap int   // distinct values counted per column; default DefaultDistinctCap
	// ChunkRows is the most rows of a record batch; default: about a
	// million cells per batch (1024 to 65536 rows).
	ChunkRows int
	// ChunkBytes ends a record batch early when its text passes it;
	// default 64 MiB.
	ChunkBytes int
}

// Defaults of Options.
const (
	DefaultDistinctCap = 1000
	DefaultChunkBytes  = 64 << 20
)

func (o Options) withDefaults(cols int) Options {
	if o.MaxColumns <= 0 {
		o.MaxColumns = dataset.DefaultMaxColumns
	}
	if o.DistinctCap <= 0 {
		o.DistinctCap = DefaultDistinctCap
	}
	if o.ChunkRows <= 0 && cols > 0 {
		o.ChunkRows = min(65536, max(1024, (1<<20)/cols))
	}
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
	return o
}

// InputError is a document that was refused: malformed CSV or Parquet, or
// over a limit. Its message names the mistake (with the line and column
// for CSV, as dataset.ReadCSV words it) and is safe to show the uploader.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func bad(format string, args ...any) error { return &InputError{Err: fmt.Errorf(format, args...)} }

// parquetMagic starts (and ends) every Parquet file.
var parquetMagic = []byte("PAR1")

// tempPrefix starts the name of a version directory being written.
const tempPrefix = ".tmp-"

// Ingest reads a CSV document (header row first) or a Parquet file (told
// apart by Parquet's "PAR1" magic) from r and stores it as a version
// directory in parent, named by the hex SHA-256 of the bytes read, whose
// path it returns. It is IngestTemp then Commit.
func Ingest(ctx context.Context, r io.Reader, parent string, opt Options) (*Meta, string, error) {
	p, err := IngestTemp(ctx, r, parent, opt)
	if err != nil {
		return nil, "", err
	}
	dir, _, err := p.Commit()
	if err != nil {
		p.Discard()
		return nil, "", err
	}
	return p.Meta, dir, nil
}

// Pending is an ingested version not yet under its final name.
type Pending struct {
	Meta   *Meta
	tmp    string
	parent string
}

// IngestTemp ingests r into a temporary directory of parent (see Ingest):
// nothing is visible under a version's name until Commit, and Discard
// removes it. A crash leaves only a temporary directory, which CleanTemp
// removes.
//
// Memory stays bounded: the document is read twice, once to hash it and
// type its columns, once to write them; when r is not an io.ReaderAt and
// io.Seeker (a file or a bytes.Reader, read again from its offset at the
// call) it is spooled to a file in the temporary directory during the
// first read. A column is "number" iff every cell parses as a finite
// number, exactly as dataset.ReadCSV types it. A refused document is an
// *InputError.
func IngestTemp(ctx context.Context, r io.Reader, parent string, opt Options) (*Pending, error) {
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, err
	}
	tmp := filepath.Join(parent, tempPrefix+randomName())
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, err
	}
	m, err := ingest(ctx, r, tmp, opt)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	if err := syncDir(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	return &Pending{Meta: m, tmp: tmp, parent: parent}, nil
}

// Commit renames the version to its final name, parent/SHA256, and
// returns that path. When a version with that hash is there already it is
// kept (existed is true; p.Meta becomes its description) and the new copy
// removed.
func (p *Pending) Commit() (dir string, existed bool, err error) {
	dir = filepath.Join(p.parent, p.Meta.SHA256)
	if m, err := ReadMeta(dir); err == nil {
		_ = os.RemoveAll(p.tmp)
		p.Meta = m
		return dir, true, nil
	}
	_ = os.RemoveAll(dir) // a directory without a readable meta.json is no version
	if err := os.Rename(p.tmp, dir); err != nil {
		return "", false, err
	}
	p.tmp = ""
	return dir, false, syncDir(p.parent)
}

// Discard removes an uncommitted version.
func (p *Pending) Discard() {
	if p.tmp != "" {
		_ = os.RemoveAll(p.tmp)
	}
}

// CleanTemp removes what interrupted ingests left in parent.
func CleanTemp(parent string) error {
	ents, err := os.ReadDir(parent)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			if err := os.RemoveAll(filepath.Join(parent, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func randomName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ingest writes the version's files into dir.
func ingest(ctx context.Context, r io.Reader, dir string, opt Options) (*Meta, error) {
	// The second read comes from r itself when it can be read again (a
	// file, a bytes.Reader: from its current offset), else from a spool
	// file written during the first read.
	var (
		again io.ReaderAt
		base  int64
		sw    io.Writer = io.Discard
		bw    *bufio.Writer
	)
	if f, ok := r.(readAtSeeker); ok {
		if pos, err := f.Seek(0, io.SeekCurrent); err == nil {
			again, base = f, pos
		}
	}
	if again == nil {
		spoolPath := filepath.Join(dir, "source")
		spool, err := os.Create(spoolPath)
		if err != nil {
			return nil, err
		}
		defer func() {
			_ = spool.Close()
			_ = os.Remove(spoolPath)
		}()
		bw = bufio.NewWriterSize(spool, 1<<20)
		again, sw = spool, bw
	}
	flushSpool := func() error {
		if bw == nil {
			return nil
		}
		return bw.Flush()
	}
	br := bufio.NewReaderSize(r, 1<<20)
	magic, _ := br.Peek(len(parquetMagic))
	h := sha256.New()
	lr := dataset.NewLimitedReader(br, opt.MaxBytes)
	tee := &teeReader{r: lr, w: sw, h: h}

	var open func() (rowReader, error)
	m := &Meta{Format: Format}
	if bytes.Equal(magic, parquetMagic) {
		m.Source = SourceParquet
		if _, err := io.Copy(io.Discard, tee); err != nil {
			if lr.Over() {
				return nil, bad("parquet: input is larger than the limit of %d bytes", opt.MaxBytes)
			}
			return nil, err
		}
		if tee.werr != nil {
			return nil, tee.werr
		}
		if err := flushSpool(); err != nil {
			return nil, err
		}
		open = func() (rowReader, error) { return openParquet(io.NewSectionReader(again, base, tee.n), tee.n) }
	} else {
		m.Source = SourceCSV
		open = func() (rowReader, error) {
			return newCSVRows(bufio.NewReaderSize(io.NewSectionReader(again, base, tee.n), 1<<20), nil, 0), nil
		}
	}

	// Pass 1: check every row and type every column.
	var (
		rr  rowReader
		err error
	)
	if m.Source == SourceCSV {
		rr = newCSVRows(tee, lr, opt.MaxBytes)
	} else if rr, err = open(); err != nil {
		return nil, err
	}
	header, err := rr.header()
	if err != nil {
		return nil, err
	}
	opt = opt.withDefaults(len(header))
	if len(header) > opt.MaxColumns {
		return nil, bad("%s: line 1: header has %d columns, more than the limit of %d", m.Source, len(header), opt.MaxColumns)
	}
	cols, err := checkHeader(header)
	if err != nil {
		return nil, err
	}
	isNum := make([]bool, len(cols))
	canon := make([]bool, len(cols))
	for c := range cols {
		isNum[c], canon[c] = true, true
	}
	var buf []byte
	for {
		rec, line, err := rr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(rec) != len(cols) {
			return nil, bad("csv: line %d: row has %d fields, the header has %d", line, len(rec), len(cols))
		}
		if opt.MaxRows > 0 && m.Rows >= opt.MaxRows {
			return nil, bad("%s: line %d: more than the limit of %d data rows", m.Source, line, opt.MaxRows)
		}
		for c, s := range rec {
			if !validUTF8(s) {
				return nil, bad("%s: line %d, column %q: value is not valid UTF-8", m.Source, line, cols[c])
			}
		}
		m.Rows++
		if m.Rows%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		for c, s := range rec {
			if !isNum[c] {
				continue
			}
			v, ok := parseNumber(s)
			if !ok {
				isNum[c] = false
				continue
			}
			if canon[c] {
				buf = dataset.AppendNumber(buf[:0], v)
				canon[c] = string(buf) == s
			}
		}
	}
	if m.Source == SourceCSV {
		if tee.werr != nil {
			return nil, tee.werr
		}
		if err := flushSpool(); err != nil {
			return nil, err
		}
	}
	if m.Rows == 0 {
		return nil, bad("%s: the header is not followed by any data row", m.Source)
	}
	m.SHA256, m.Size = hex.EncodeToString(h.Sum(nil)), tee.n
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Pass 2: write the typed columns and their statistics.
	m.Columns = make([]ColumnMeta, len(cols))
	var fields []arrow.Field
	for c, name := range cols {
		cm := ColumnMeta{Column: dataset.Column{Name: name, Type: dataset.TypeCategory}, Field: c, RawField: -1}
		typ := arrow.DataType(arrow.BinaryTypes.String)
		if isNum[c] {
			cm.Type, typ = dataset.TypeNumber, arrow.PrimitiveTypes.Float64
			cm.Stats.Integral = true
		}
		m.Columns[c] = cm
		fields = append(fields, arrow.Field{Name: name, Type: typ})
	}
	for c := range cols {
		if isNum[c] && !canon[c] {
			m.Columns[c].RawField = len(fields)
			fields = append(fields, arrow.Field{Name: cols[c], Type: arrow.BinaryTypes.String})
		}
	}
	if rr, err = open(); err != nil {
		return nil, err
	}
	if _, err := rr.header(); err != nil {
		return nil, err
	}
	if err := writeColumns(ctx, rr, dir, m, arrow.NewSchema(fields, nil), opt); err != nil {
		return nil, err
	}
	if err := writeMeta(dir, m); err != nil {
		return nil, err
	}
	return m, nil
}

// parseNumber is dataset.ReadCSV's test of a number cell: the value of
// strings.TrimSpace(s) by strconv.ParseFloat when that is a finite number.
// Plain decimals of at most 15 digits ("-12.5", "007", ".25") take a
// shortcut with the same result: their digits make an integer below 2^53
// and the divisor a power of ten up to 1e15, both exact in a float64, so
// one correctly rounded division gives what ParseFloat gives.
func parseNumber(s string) (float64, bool) {
	i, neg := 0, false
	if len(s) > 0 && s[0] == '-' {
		i, neg = 1, true
	}
	var m uint64
	digits, fracDigits, dot := 0, 0, false
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			m = m*10 + uint64(c-'0')
			digits++
			if dot {
				fracDigits++
			}
		case c == '.' && !dot:
			dot = true
		default:
			return parseNumberSlow(s)
		}
	}
	if digits == 0 || digits > 15 {
		return parseNumberSlow(s)
	}
	v := float64(m)
	if fracDigits > 0 {
		v /= pow10[fracDigits]
	}
	if neg {
		v = -v
	}
	return v, true
}

var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}

func parseNumberSlow(s string) (float64, bool) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v, true
}

// checkHeader cleans and checks header names as dataset.ReadCSV does.
func checkHeader(header []string) ([]string, error) {
	out := make([]string, len(header))
	seen := make(map[string]int, len(header))
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff")
		}
		name := strings.TrimSpace(h)
		if name == "" {
			return nil, bad("csv: line 1, column %d: header name is empty", i+1)
		}
		if !validUTF8(name) {
			return nil, bad("csv: line 1, column %d: header name is not valid UTF-8", i+1)
		}
		if j, dup := seen[name]; dup {
			return nil, bad("csv: line 1, column %d: header name %q repeats column %d", i+1, name, j+1)
		}
		seen[name] = i
		out[i] = strings.Clone(name)
	}
	return out, nil
}

// writeColumns reads every row of rr into record batches of dir's data file.
func writeColumns(ctx context.Context, rr rowReader, dir string, m *Meta, schema *arrow.Schema, opt Options) error {
	f, err := os.Create(filepath.Join(dir, DataFile))
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	bw := bufio.NewWriterSize(f, 1<<20)
	mem := memory.NewGoAllocator()
	w, err := ipc.NewFileWriter(bw, ipc.WithSchema(schema), ipc.WithAllocator(mem))
	if err != nil {
		return err
	}
	rb := array.NewRecordBuilder(mem, schema)
	defer rb.Release()
	stats := make([]*statsBuilder, len(m.Columns))
	for c := range m.Columns {
		stats[c] = newStatsBuilder(opt.DistinctCap)
	}
	var rows, chunkBytes int
	var start int64
	// Numbers are gathered per column and appended to the builders in bulk.
	nums := make([][]float64, len(m.Columns))
	for c := range m.Columns {
		if m.Columns[c].Type == dataset.TypeNumber {
			nums[c] = make([]float64, 0, opt.ChunkRows)
		}
	}
	flush := func() error {
		if rows == 0 {
			return nil
		}
		for c := range nums {
			if nums[c] != nil {
				rb.Field(c).(*array.Float64Builder).AppendValues(nums[c], nil)
				nums[c] = nums[c][:0]
			}
		}
		rec := rb.NewRecordBatch()
		defer rec.Release()
		if err := w.Write(rec); err != nil {
			return err
		}
		m.ChunkStarts = append(m.ChunkStarts, start)
		start += int64(rows)
		rows, chunkBytes = 0, 0
		return ctx.Err()
	}
	var n int64
	for {
		rec, line, err := rr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if len(rec) != len(m.Columns) {
			return bad("csv: line %d: row has %d fields, the header has %d", line, len(rec), len(m.Columns))
		}
		for c, s := range rec {
			cm := &m.Columns[c]
			st := stats[c]
			if cm.Type == dataset.TypeNumber {
				v, ok := parseNumber(s)
				if !ok {
					return fmt.Errorf("colstore: line %d, column %q changed between the two reads of the document", line, cm.Name)
				}
				nums[c] = append(nums[c], v)
				st.number(v, s)
				if cm.RawField >= 0 {
					rb.Field(cm.RawField).(*array.StringBuilder).Append(s)
					chunkBytes += len(s)
				}
			} else {
				rb.Field(c).(*array.StringBuilder).Append(s)
				chunkBytes += len(s)
			}
			st.text(s)
		}
		rows++
		n++
		if rows >= opt.ChunkRows || chunkBytes >= opt.ChunkBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if n != m.Rows {
		return fmt.Errorf("colstore: the second read of the document has %d rows, the first %d", n, m.Rows)
	}
	if err := flush(); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	for c := range m.Columns {
		m.Columns[c].Stats = stats[c].finish(m.Columns[c].Type == dataset.TypeNumber)
	}
	return f.Close()
}

func writeMeta(dir string, m *Meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, MetaFile))
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// statsBuilder accumulates a column's statistics.
type statsBuilder struct {
	s        ColumnStats
	cap      int
	distinct map[string]int64 // nil once over cap
}

func newStatsBuilder(capacity int) *statsBuilder {
	return &statsBuilder{cap: capacity, distinct: map[string]int64{},
		s: ColumnStats{Min: math.Inf(1), Max: math.Inf(-1), Integral: true}}
}

func (b *statsBuilder) number(v float64, text string) {
	s := &b.s
	s.Min, s.Max = min(s.Min, v), max(s.Max, v)
	s.Sum += Float(v)
	s.SumSq += Float(v * v)
	if v != math.Trunc(v) {
		s.Integral = false
	}
	if d := decimals(text); d > s.Decimals {
		s.Decimals = d
	}
}

// decimals counts the digits after the decimal point of a number's text,
// before any exponent, at most MaxDecimals.
func decimals(text string) int {
	dot := strings.IndexByte(text, '.')
	if dot < 0 {
		return 0
	}
	n := 0
	for _, ch := range []byte(text[dot+1:]) {
		if ch < '0' || ch > '9' {
			break
		}
		n++
	}
	return min(n, MaxDecimals)
}

func (b *statsBuilder) text(v string) {
	b.s.Count++
	if b.distinct == nil {
		return
	}
	if n, ok := b.distinct[v]; ok {
		b.distinct[v] = n + 1
		return
	}
	if len(b.distinct) >= b.cap {
		b.distinct = nil
		b.s.DistinctOver = true
		return
	}
	b.distinct[strings.Clone(v)] = 1
}

func (b *statsBuilder) finish(number bool) ColumnStats {
	s := b.s
	if !number {
		s.Min, s.Max, s.Integral = 0, 0, false
	}
	for v, n := range b.distinct {
		s.Distinct = append(s.Distinct, ValueCount{Value: v, Count: n})
	}
	slices.SortFunc(s.Distinct, func(a, b ValueCount) int { return strings.Compare(a.Value, b.Value) })
	return s
}

// readAtSeeker is a document that can be read a second time.
type readAtSeeker interface {
	io.ReaderAt
	io.Seeker
}

// teeReader hashes and spools what it reads; a spool write error is kept
// for the caller and ends the read.
type teeReader struct {
	r    io.Reader
	w    io.Writer
	h    io.Writer
	n    int64
	werr error
}

func (t *teeReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.n += int64(n)
		_, _ = t.h.Write(p[:n])
		if _, werr := t.w.Write(p[:n]); werr != nil {
			t.werr = werr
			return n, werr
		}
	}
	return n, err
}
