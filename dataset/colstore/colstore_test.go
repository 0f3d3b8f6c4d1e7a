package colstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/fedgrid/fedgrid/dataset"
)

func ingestString(t *testing.T, doc string, opt Options) (*Meta, *Version) {
	t.Helper()
	parent := t.TempDir()
	m, dir, err := Ingest(context.Background(), strings.NewReader(doc), parent, opt)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return m, v
}

// sameTable fails unless got holds exactly want's columns and cells.
func sameTable(t *testing.T, got dataset.Source, want *dataset.Table) {
	t.Helper()
	if !slices.Equal(got.Columns(), want.Columns()) {
		t.Fatalf("columns %v, want %v", got.Columns(), want.Columns())
	}
	tbl, err := dataset.Collect(context.Background(), got, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tbl.NumRows() != want.NumRows() {
		t.Fatalf("%d rows, want %d", tbl.NumRows(), want.NumRows())
	}
	for _, c := range want.Columns() {
		gr, _ := tbl.Category(c.Name)
		wr, _ := want.Category(c.Name)
		if !slices.Equal(gr, wr) {
			t.Fatalf("column %s text %q, want %q", c.Name, gr, wr)
		}
		if c.Type == dataset.TypeNumber {
			gn, _ := tbl.Numeric(c.Name)
			wn, _ := want.Numeric(c.Name)
			if !slices.Equal(gn, wn) {
				t.Fatalf("column %s numbers %v, want %v", c.Name, gn, wn)
			}
		}
	}
}

// A CSV stored in columns reads back as dataset.ReadCSV reads it: the same
// column types (a column is a number iff every cell is a finite number,
// however late the first other cell comes) and every cell's exact text,
// across record batches.
func TestCSVRoundTripMatchesReadCSV(t *testing.T) {
	var b strings.Builder
	b.WriteString("\ufeffid, age ,city,score,late,label,odd\n")
	for i := range 50 {
		late := fmt.Sprint(i)
		if i == 49 {
			late = "n/a" // the last row turns a number column into a category
		}
		odd := []string{" 31", "1.0", "1e3", "-0", "0.1", "+5", "007"}[i%7]
		fmt.Fprintf(&b, "%d,%d.5,\"Town, %c\",%g,%s,%d,%s\n", i, 20+i, 'A'+i%5, float64(i)/3, late, i%2, odd)
	}
	b.WriteString("50,70.5,\"multi\nline\",0.125,3,1,NaN\n")
	doc := b.String()
	want, err := dataset.ReadCSV(strings.NewReader(doc), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m, v := ingestString(t, doc, Options{ChunkRows: 7})
	sameTable(t, v, want)
	if len(m.ChunkStarts) != 8 || m.Rows != 51 {
		t.Fatalf("%d rows in batches %v", m.Rows, m.ChunkStarts)
	}
	sum := sha256.Sum256([]byte(doc))
	if m.SHA256 != hex.EncodeToString(sum[:]) || m.Size != int64(len(doc)) || m.Source != SourceCSV {
		t.Fatalf("meta %s %d %s", m.SHA256, m.Size, m.Source)
	}
	// Number columns spelled as FormatNumber spells them keep no text.
	for _, name := range []string{"id", "age", "score", "label"} {
		if c, _ := m.Column(name); c.Type != dataset.TypeNumber || c.RawField >= 0 {
			t.Errorf("column %+v", c)
		}
	}
	if c, _ := m.Column("late"); c.Type != dataset.TypeCategory {
		t.Fatalf("late column typed %s", c.Type)
	}
	if c, _ := m.Column("odd"); c.Type != dataset.TypeCategory { // NaN is not finite
		t.Fatalf("odd column typed %s", c.Type)
	}
}

func TestNumbersKeepTheirText(t *testing.T) {
	doc := "a,b\n 31,1\n1.0,2\n1e3,3\n-0,4\n007,5\n"
	want, err := dataset.ReadCSV(strings.NewReader(doc), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	m, v := ingestString(t, doc, Options{ChunkRows: 2})
	sameTable(t, v, want)
	a, _ := m.Column("a")
	b, _ := m.Column("b")
	if a.Type != dataset.TypeNumber || a.RawField < 0 || b.RawField >= 0 {
		t.Fatalf("a %+v b %+v: a keeps its text, b needs none", a, b)
	}
	// A scan gives the text of a but only the numbers of b.
	err = v.Scan(context.Background(), 0, 5, 10, func(bt *dataset.Batch) error {
		if bt.Raw[0] == nil || bt.Raw[1] != nil || (bt.Start == 0 && (bt.Cell(0, 0) != " 31" || bt.Cell(1, 1) != "2")) {
			return fmt.Errorf("batch %+v", bt)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStatistics(t *testing.T) {
	var b strings.Builder
	b.WriteString("x,y,c,id\n")
	for i := range 20 {
		fmt.Fprintf(&b, "%d,%.2f,%s,u%d\n", i-5, float64(i)/4, []string{"red", "green", "blue"}[i%3], i)
	}
	m, _ := ingestString(t, b.String(), Options{DistinctCap: 5, ChunkRows: 6})
	x, _ := m.Column("x")
	s := x.Stats
	if s.Count != 20 || s.Min != -5 || s.Max != 14 || s.Sum != 90 || !s.Integral || s.Decimals != 0 {
		t.Fatalf("x stats %+v", s)
	}
	var sq float64
	for i := range 20 {
		sq += float64((i - 5) * (i - 5))
	}
	if float64(s.SumSq) != sq {
		t.Fatalf("x sum of squares %v, want %v", s.SumSq, sq)
	}
	y, _ := m.Column("y")
	if y.Stats.Integral || y.Stats.Decimals != 2 || y.Stats.Max != 4.75 {
		t.Fatalf("y stats %+v", y.Stats)
	}
	c, _ := m.Column("c")
	wantC := []ValueCount{{"blue", 6}, {"green", 7}, {"red", 7}}
	if !slices.Equal(c.Stats.Distinct, wantC) || c.Stats.DistinctOver || c.Stats.Count != 20 {
		t.Fatalf("c stats %+v", c.Stats)
	}
	id, _ := m.Column("id")
	if id.Stats.Distinct != nil || !id.Stats.DistinctOver {
		t.Fatalf("id stats %+v: 20 distinct values pass the cap of 5", id.Stats)
	}
	// Statistics survive meta.json, infinite sums too.
	big := "v\n1e200\n1e200\n"
	m2, v2 := ingestString(t, big, Options{})
	back, err := ReadMeta(v2.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsInf(float64(back.Columns[0].Stats.SumSq), 1) || back.Columns[0].Stats.Sum != m2.Columns[0].Stats.Sum {
		t.Fatalf("reread stats %+v", back.Columns[0].Stats)
	}
}

// Every malformed document is refused with dataset.ReadCSV's message, as
// an *InputError, and leaves nothing in the parent directory.
func TestBadCSVSameErrorsAsReadCSV(t *testing.T) {
	cases := []struct {
		name, doc string
		lim       dataset.Limits
	}{
		{"empty", "", dataset.Limits{}},
		{"empty header name", "a,,c\n1,2,3\n", dataset.Limits{}},
		{"duplicate header", "a,b,a\n1,2,3\n", dataset.Limits{}},
		{"short row", "a,b\n1,2\n3\n", dataset.Limits{}},
		{"long row", "a,b\n1,2\n3,4,5\n", dataset.Limits{}},
		{"bare quote", "a,b\n1,x\"y\n", dataset.Limits{}},
		{"unterminated quote", "a,b\n1,\"xy\n", dataset.Limits{}},
		{"bad utf-8 cell", "a,b\n1,\xff\xfe\n", dataset.Limits{}},
		{"bad utf-8 header", "a,\xff\n1,2\n", dataset.Limits{}},
		{"header only", "a,b\n", dataset.Limits{}},
		{"too many bytes", "a,b\n1,2\n3,4\n", dataset.Limits{MaxBytes: 9}},
		{"too many rows", "a,b\n1,2\n3,4\n5,6\n", dataset.Limits{MaxRows: 2}},
		{"too many columns", "a,b,c\n1,2,3\n", dataset.Limits{MaxColumns: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, want := dataset.ReadCSV(strings.NewReader(tc.doc), tc.lim)
			if want == nil {
				t.Fatal("ReadCSV accepts it")
			}
			parent := t.TempDir()
			_, _, err := Ingest(context.Background(), strings.NewReader(tc.doc), parent,
				Options{MaxBytes: tc.lim.MaxBytes, MaxRows: int64(tc.lim.MaxRows), MaxColumns: tc.lim.MaxColumns})
			var in *InputError
			if !errors.As(err, &in) || err.Error() != want.Error() {
				t.Fatalf("error %v (%T), want %q", err, err, want)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Fatalf("left %v", ents)
			}
		})
	}
	// Exactly at the byte limit is accepted.
	doc := "a,b\n1,2\n"
	if _, _, err := Ingest(context.Background(), strings.NewReader(doc), t.TempDir(), Options{MaxBytes: int64(len(doc))}); err != nil {
		t.Fatal(err)
	}
}

func TestScanRangesAndRowLists(t *testing.T) {
	var b strings.Builder
	b.WriteString("n,s\n")
	for i := range 100 {
		fmt.Fprintf(&b, "%d,s%d\n", i, i)
	}
	_, v := ingestString(t, b.String(), Options{ChunkRows: 16})
	ctx := context.Background()
	for _, r := range [][3]int{{0, 100, 7}, {15, 17, 1}, {16, 48, 16}, {5, 95, 100}, {99, 100, 3}, {40, 40, 5}} {
		next := r[0]
		err := v.Scan(ctx, r[0], r[1], r[2], func(bt *dataset.Batch) error {
			if bt.Start != next || bt.Len < 1 || bt.Len > r[2] {
				return fmt.Errorf("batch at %d of %d rows, want start %d", bt.Start, bt.Len, next)
			}
			for i := range bt.Len {
				if bt.Num[0][i] != float64(next) || bt.Raw[1][i] != fmt.Sprintf("s%d", next) {
					return fmt.Errorf("row %d reads %v %q", next, bt.Num[0][i], bt.Raw[1][i])
				}
				next++
			}
			return nil
		})
		if err != nil || next != r[1] {
			t.Fatalf("scan %v: %v, ended at %d", r, err, next)
		}
	}
	if err := v.Scan(ctx, 0, 101, 10, func(*dataset.Batch) error { return nil }); err == nil {
		t.Fatal("scan past the end accepted")
	}
	stop := errors.New("stop")
	if err := v.Scan(ctx, 0, 100, 10, func(*dataset.Batch) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("callback error: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := v.Scan(cctx, 0, 100, 10, func(*dataset.Batch) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled scan: %v", err)
	}

	rows := []int{99, 3, 3, 50, 17, 16, 0, 64}
	var got []float64
	var text []string
	err := v.ScanRows(ctx, rows, 3, func(bt *dataset.Batch) error {
		if bt.Start != len(got) || bt.Len > 3 {
			return fmt.Errorf("batch at %d of %d", bt.Start, bt.Len)
		}
		got = append(got, bt.Num[0][:bt.Len]...)
		text = append(text, bt.Raw[1][:bt.Len]...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rows {
		if got[i] != float64(r) || text[i] != fmt.Sprintf("s%d", r) {
			t.Fatalf("row list %v read %v %v", rows, got, text)
		}
	}
	if err := v.ScanRows(ctx, []int{100}, 3, func(*dataset.Batch) error { return nil }); err == nil {
		t.Fatal("row past the end accepted")
	}
}

type pqRow struct {
	ID    int64   `parquet:"id"`
	Score float64 `parquet:"score"`
	Name  string  `parquet:"name"`
	Small float32 `parquet:"small"`
	Flag  bool    `parquet:"flag"`
	Maybe *int32  `parquet:"maybe,optional"`
	Count uint32  `parquet:"count"`
}

// A Parquet file is told from CSV by its magic and makes the same columns
// and cells as its CSV export.
func TestParquetMatchesItsCSVExport(t *testing.T) {
	var rows []pqRow
	var csv strings.Builder
	csv.WriteString("id,score,name,small,flag,maybe,count\n")
	for i := range 40 {
		var maybe *int32
		ms := ""
		if i%9 != 4 {
			m := int32(i * 3)
			maybe, ms = &m, fmt.Sprint(m)
		}
		r := pqRow{ID: int64(i), Score: float64(i) * 1.25, Name: fmt.Sprintf("n,%d", i%4), Small: 0.5 * float32(i), Flag: i%2 == 0, Maybe: maybe, Count: uint32(4e9) + uint32(i)}
		rows = append(rows, r)
		fmt.Fprintf(&csv, "%d,%s,\"%s\",%s,%t,%s,%d\n", r.ID, dataset.FormatNumber(r.Score), r.Name, dataset.FormatNumber(float64(r.Small)), r.Flag, ms, r.Count)
	}
	var pq bytes.Buffer
	if err := parquet.Write(&pq, rows, parquet.MaxRowsPerRowGroup(16)); err != nil {
		t.Fatal(err)
	}
	want, err := dataset.ReadCSV(strings.NewReader(csv.String()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	m, dir, err := Ingest(context.Background(), bytes.NewReader(pq.Bytes()), parent, Options{ChunkRows: 10})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	sameTable(t, v, want)
	sum := sha256.Sum256(pq.Bytes())
	if m.Source != SourceParquet || m.SHA256 != hex.EncodeToString(sum[:]) || m.Size != int64(pq.Len()) || filepath.Base(dir) != m.SHA256 {
		t.Fatalf("meta %+v in %s", m, dir)
	}
	if c, _ := m.Column("maybe"); c.Type != dataset.TypeCategory { // nulls are empty cells
		t.Fatalf("maybe typed %s", c.Type)
	}

	// A truncated file is refused as bad input.
	_, _, err = Ingest(context.Background(), bytes.NewReader(pq.Bytes()[:pq.Len()/2]), t.TempDir(), Options{})
	var in *InputError
	if !errors.As(err, &in) || !strings.HasPrefix(err.Error(), "parquet: ") {
		t.Fatalf("truncated parquet: %v", err)
	}
}

// Storing the same bytes again keeps the version that is there; a crash's
// leftovers are cleaned; a cancelled ingest leaves nothing.
func TestSameBytesTempFilesAndCancel(t *testing.T) {
	parent := t.TempDir()
	ctx := context.Background()
	doc := "a,b\n1,x\n2,y\n"
	m1, dir1, err := Ingest(ctx, strings.NewReader(doc), parent, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m2, dir2, err := Ingest(ctx, strings.NewReader(doc), parent, Options{})
	if err != nil || dir1 != dir2 || m1.SHA256 != m2.SHA256 {
		t.Fatalf("second ingest %v %s %s", err, dir1, dir2)
	}
	if err := os.Mkdir(filepath.Join(parent, tempPrefix+"crashed"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := CleanTemp(parent); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 1 || ents[0].Name() != m1.SHA256 {
		t.Fatalf("after cleaning: %v", ents)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var big strings.Builder
	big.WriteString("a\n")
	for i := range 10000 {
		fmt.Fprintln(&big, i)
	}
	if _, _, err := Ingest(cctx, strings.NewReader(big.String()), parent, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ingest: %v", err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Fatalf("cancelled ingest left %v", ents)
	}
}

// A document is read a second time from the reader itself when it is an
// io.ReaderAt and io.Seeker (from its offset at the call), else from a
// spool: both give the same version, CSV and Parquet alike.
func TestSecondReadFromReaderOrSpool(t *testing.T) {
	var b strings.Builder
	b.WriteString("a,b,c\n")
	for i := range 3000 {
		fmt.Fprintf(&b, "%d,%s,%g\n", i, []string{"x", `"y, z"`}[i%2], float64(i)/8)
	}
	doc := b.String()
	var pq bytes.Buffer
	rows := make([]pqRow, 300)
	for i := range rows {
		rows[i] = pqRow{ID: int64(i), Name: fmt.Sprint(i % 3)}
	}
	if err := parquet.Write(&pq, rows); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{doc, pq.String()} {
		ctx := context.Background()
		plain := struct{ io.Reader }{strings.NewReader(src)} // neither ReaderAt nor Seeker: spooled
		m1, d1, err := Ingest(ctx, plain, t.TempDir(), Options{ChunkRows: 700})
		if err != nil {
			t.Fatal(err)
		}
		at := strings.NewReader("prefix" + src)
		if _, err := at.Seek(int64(len("prefix")), io.SeekStart); err != nil {
			t.Fatal(err)
		}
		m2, d2, err := Ingest(ctx, at, t.TempDir(), Options{ChunkRows: 700})
		if err != nil {
			t.Fatal(err)
		}
		if m1.SHA256 != m2.SHA256 || m1.Rows != m2.Rows || !slices.Equal(m1.ChunkStarts, m2.ChunkStarts) {
			t.Fatalf("spooled %+v, read again %+v", m1, m2)
		}
		for _, f := range []string{DataFile, MetaFile} {
			b1, _ := os.ReadFile(filepath.Join(d1, f))
			b2, _ := os.ReadFile(filepath.Join(d2, f))
			if len(b1) == 0 || !bytes.Equal(b1, b2) {
				t.Fatalf("%s differs (%d and %d bytes)", f, len(b1), len(b2))
			}
		}
		if ents, _ := os.ReadDir(d1); len(ents) != 2 {
			t.Fatalf("version files %v: the spool stays", ents)
		}
	}
}

// parseNumber gives exactly what strconv.ParseFloat of the trimmed text
// gives (bit for bit, -0 included), and refuses what it refuses or what is
// not finite.
func TestParseNumberIsParseFloat(t *testing.T) {
	cases := []string{"0", "-0", "007", ".5", "5.", ".", "-", "-.5", "1.2.3", "1e3", " 31", "31 ", "+5", "NaN", "Inf", "-inf",
		"0x1p3", "1_000", "", "123456789012345", "1234567890123456", "0.000000000000001", "9007199254740993",
		"0.1", "0.3", "-12.3456780", "99999999999999.9", "1.7976931348623157e308", "1e400", "2.2250738585072014e-308"}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200_000 {
		n := rng.IntN(17) + 1
		b := make([]byte, 0, n+2)
		if rng.IntN(3) == 0 {
			b = append(b, '-')
		}
		dot := rng.IntN(n + 1)
		for i := range n {
			if i == dot {
				b = append(b, '.')
			}
			b = append(b, byte('0'+rng.IntN(10)))
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		got, ok := parseNumber(s)
		want, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		wantOK := err == nil && !math.IsNaN(want) && !math.IsInf(want, 0)
		if ok != wantOK || (ok && math.Float64bits(got) != math.Float64bits(want)) {
			t.Fatalf("parseNumber(%q) = %v, %v; ParseFloat gives %v, %v", s, got, ok, want, err)
		}
	}
}

// ColumnRange gives a number column's extremes over every row from the
// stored statistics, exactly the smallest and largest value a scan gives
// (over several record batches, negative zero and exponents included);
// nothing for a category column.
func TestColumnRangeIsTheScannedExtremes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var b strings.Builder
	b.WriteString("x,y,c\n")
	for i := range 3000 {
		fmt.Fprintf(&b, "%s,%d,k%d\n", strconv.FormatFloat(rng.NormFloat64()*1e-7, 'e', -1, 64), i-1500, i%3)
	}
	b.WriteString("-0,7,k0\n")
	_, v := ingestString(t, b.String(), Options{ChunkRows: 500})
	lo, hi := []float64{math.Inf(1), math.Inf(1)}, []float64{math.Inf(-1), math.Inf(-1)}
	err := v.Scan(context.Background(), 0, v.NumRows(), 4096, func(bt *dataset.Batch) error {
		for c := range 2 {
			for _, x := range bt.Num[c][:bt.Len] {
				lo[c], hi[c] = min(lo[c], x), max(hi[c], x)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for c := range 2 {
		l, h, ok := v.ColumnRange(c)
		if !ok || l != lo[c] || h != hi[c] {
			t.Fatalf("column %d: range [%v, %v] %v, scanned [%v, %v]", c, l, h, ok, lo[c], hi[c])
		}
	}
	if _, _, ok := v.ColumnRange(2); ok {
		t.Fatal("a category column has a range")
	}
	if _, _, ok := v.ColumnRange(3); ok {
		t.Fatal("a column that does not exist has a range")
	}
}
