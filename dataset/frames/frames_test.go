package frames

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
)

func testTable(t testing.TB, rows int) *dataset.Table {
	t.Helper()
	var b strings.Builder
	b.WriteString("x,name,y\n")
	for i := range rows {
		fmt.Fprintf(&b, "%d.5,\"n%d, \"\"q\"\"\",%d\n", i, i%7, i%2)
	}
	tab, err := dataset.ReadCSV(strings.NewReader(b.String()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// encode writes src as a stream (frames of at most maxFrame bytes).
func encode(t testing.TB, src dataset.Source, maxFrame int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Columns: src.Columns(), Rows: src.NumRows()}, maxFrame)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Scan(context.Background(), 0, src.NumRows(), 700, w.Write); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// collect reads every row of src, column by column, as text.
func collect(t testing.TB, src dataset.Source, from, to, batch int) [][]string {
	t.Helper()
	out := make([][]string, len(src.Columns()))
	next := from
	err := src.Scan(context.Background(), from, to, batch, func(b *dataset.Batch) error {
		if b.Start != next || b.Len > batch {
			return fmt.Errorf("batch at %d of %d rows, want it at %d with at most %d", b.Start, b.Len, next, batch)
		}
		next += b.Len
		for c := range out {
			for i := range b.Len {
				if b.Num[c] != nil {
					out[c] = append(out[c], fmt.Sprint(b.Num[c][i]))
				} else {
					out[c] = append(out[c], b.Raw[c][i])
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if next != to {
		t.Fatalf("scan ended at %d, want %d", next, to)
	}
	return out
}

func writeFile(t testing.TB, stream []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shard")
	if err := os.WriteFile(path, append([]byte(Magic), stream...), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A table written as a stream reads back the same, through a Reader and
// as a cache file scanned over any range.
func TestRoundTrip(t *testing.T) {
	tab := testTable(t, 5000)
	stream := encode(t, tab, 0)
	r, err := NewReader(bytes.NewReader(stream), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Header().Columns, tab.Columns()) || r.Header().Rows != 5000 {
		t.Fatalf("header %+v", r.Header())
	}
	rows := 0
	for {
		b, frame, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if b.Start != rows || len(frame) == 0 {
			t.Fatalf("batch at %d, want %d", b.Start, rows)
		}
		rows += b.Len
	}
	if rows != 5000 {
		t.Fatalf("%d rows", rows)
	}
	f, err := Open(writeFile(t, stream), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.ChunkRows() != DefaultChunkRows { // whatever the batches written (700 rows)
		t.Errorf("chunk rows %d, want %d", f.ChunkRows(), DefaultChunkRows)
	}
	for _, c := range [][3]int{{0, 5000, 333}, {1000, 1024, 5}, {1023, 3100, 4096}, {4999, 5000, 1}, {7, 7, 1}} {
		if got, want := collect(t, f, c[0], c[1], c[2]), collect(t, tab, c[0], c[1], c[2]); !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("rows [%d, %d) differ", c[0], c[1])
		}
	}
}

// Small frames: a limit that holds a few rows splits the batches.
func TestFrameLimitSplitsBatches(t *testing.T) {
	tab := testTable(t, 100)
	stream := encode(t, tab, 200)
	f, err := Open(writeFile(t, stream), Limits{MaxFrame: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.frames) < 10 {
		t.Fatalf("%d frames of at most 200 bytes for 100 rows", len(f.frames))
	}
	if !slices.EqualFunc(collect(t, f, 0, 100, 9), collect(t, tab, 0, 100, 9), slices.Equal) {
		t.Fatal("rows differ")
	}
	if _, err := Open(writeFile(t, stream), Limits{MaxFrame: 20}); !errors.Is(err, ErrMalformed) {
		t.Errorf("frames over the reader's limit: %v", err)
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Columns: tab.Columns(), Rows: 1}, 150)
	if err != nil {
		t.Fatal(err)
	}
	long := &dataset.Batch{Len: 1, Num: [][]float64{{1}, nil, {0}}, Raw: [][]string{nil, {strings.Repeat("a", 200)}, nil}}
	if err := w.Write(long); err == nil || !strings.Contains(err.Error(), "over the frame limit") {
		t.Errorf("a row over the frame limit: %v", err)
	}
}

// Damage anywhere is found: a flipped byte, a cut, a missing end frame,
// rows that do not add up; an error frame reads as the sender's failure.
func TestDamagedStreams(t *testing.T) {
	tab := testTable(t, 3000)
	stream := encode(t, tab, 0)
	readAll := func(b []byte) error {
		r, err := NewReader(bytes.NewReader(b), Limits{})
		if err != nil {
			return err
		}
		for {
			_, _, err := r.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	if err := readAll(stream); err != nil {
		t.Fatal(err)
	}
	for _, at := range []int{3, 100, len(stream) / 2, len(stream) - 3} {
		bad := slices.Clone(stream)
		bad[at] ^= 0x40
		if err := readAll(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("byte %d flipped: %v", at, err)
		}
		f, err := Open(writeFile(t, bad), Limits{})
		if err == nil {
			_ = f.Scan(context.Background(), 0, 3000, 3000, func(*dataset.Batch) error { return nil })
			err = f.Scan(context.Background(), 0, 3000, 3000, func(*dataset.Batch) error { return nil })
			f.Close()
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("cache file with byte %d flipped: %v", at, err)
		}
	}
	for _, cut := range []int{0, 10, len(stream) / 3, len(stream) - 1} {
		if err := readAll(stream[:cut]); !errors.Is(err, ErrMalformed) {
			t.Errorf("stream cut at %d: %v", cut, err)
		}
		if _, err := Open(writeFile(t, stream[:cut]), Limits{}); !errors.Is(err, ErrMalformed) {
			t.Errorf("file cut at %d: %v", cut, err)
		}
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Columns: tab.Columns(), Rows: 3000}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Scan(context.Background(), 0, 100, 100, w.Write); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Error("Close with fewer rows than the header's")
	}
	if err := w.Fail("disk gone"); err != nil {
		t.Fatal(err)
	}
	var remote *Remote
	if err := readAll(buf.Bytes()); !errors.As(err, &remote) || remote.Message != "disk gone" {
		t.Errorf("error frame: %v", err)
	}
}

func FuzzReader(f *testing.F) {
	f.Add(encode(f, testTable(f, 20), 0))
	f.Add(encode(f, testTable(f, 3), 200))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b), Limits{MaxFrame: 1 << 16})
		if err != nil {
			return
		}
		for i := 0; i < 1000; i++ {
			if _, _, err := r.Next(); err != nil {
				return
			}
		}
	})
}
