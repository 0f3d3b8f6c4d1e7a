package dataset

import (
	"bytes"
	"context"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func readFile(t testing.TB, name string) *Table {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := ReadCSV(f, Limits{})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return tab
}

func TestReadReferenceFiles(t *testing.T) {
	for _, c := range []struct {
		file        string
		rows, cols  int
		label       string
		first, last string
	}{
		{"pima_diabetes.csv", 768, 9, "diabetes", "pregnant", "diabetes"},
		{"wdbc_breast_cancer.csv", 569, 31, "malignant", "mean_radius", "malignant"},
	} {
		tab := readFile(t, c.file)
		if tab.NumRows() != c.rows {
			t.Errorf("%s: %d rows, want %d", c.file, tab.NumRows(), c.rows)
		}
		cols := tab.Columns()
		if len(cols) != c.cols || cols[0].Name != c.first || cols[len(cols)-1].Name != c.last {
			t.Errorf("%s: columns %v", c.file, cols)
		}
		for _, col := range cols {
			if col.Type != TypeNumber {
				t.Errorf("%s: column %q typed %q, want number", c.file, col.Name, col.Type)
			}
		}
		y, err := tab.Numeric(c.label)
		if err != nil {
			t.Fatal(err)
		}
		pos := 0
		for _, v := range y {
			if v != 0 && v != 1 {
				t.Fatalf("%s: label value %v", c.file, v)
			}
			pos += int(v)
		}
		if pos == 0 || pos == len(y) {
			t.Errorf("%s: label has one class only", c.file)
		}
	}
	tab := readFile(t, "pima_diabetes.csv")
	g, _ := tab.Numeric("glucose")
	if g[0] != 148 || g[1] != 85 {
		t.Errorf("glucose[0:2] = %v", g[:2])
	}
}

func TestTypesAndCategory(t *testing.T) {
	in := "age,sex,score\n30,F,1.5\n41,M,2\n 7 ,F,-3e2\n"
	tab, err := ReadCSV(strings.NewReader(in), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Column{{"age", "number"}, {"sex", "category"}, {"score", "number"}}
	if !reflect.DeepEqual(tab.Columns(), want) {
		t.Fatalf("columns %v, want %v", tab.Columns(), want)
	}
	if _, err := tab.Numeric("sex"); err == nil || !strings.Contains(err.Error(), `"sex" is not numeric`) {
		t.Errorf("Numeric(sex) err = %v", err)
	}
	if _, err := tab.Numeric("nope"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Numeric(nope) err = %v", err)
	}
	s, err := tab.Category("sex")
	if err != nil || !reflect.DeepEqual(s, []string{"F", "M", "F"}) {
		t.Errorf("Category(sex) = %v, %v", s, err)
	}
	a, _ := tab.Numeric("age")
	if !reflect.DeepEqual(a, []float64{30, 41, 7}) {
		t.Errorf("age = %v", a)
	}
	sc, _ := tab.Numeric("score")
	if !reflect.DeepEqual(sc, []float64{1.5, 2, -300}) {
		t.Errorf("score = %v", sc)
	}
	// A copy: changing it does not change the table.
	a[0] = 99
	if b, _ := tab.Numeric("age"); b[0] != 30 {
		t.Error("Numeric returned the table's own slice")
	}
	// NaN and Inf are not numbers.
	tab, err = ReadCSV(strings.NewReader("a,b\nNaN,1\n2,Inf\n"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if c := tab.Columns(); c[0].Type != TypeCategory || c[1].Type != TypeCategory {
		t.Errorf("NaN/Inf columns typed %v", c)
	}
}

func TestReadErrors(t *testing.T) {
	for _, c := range []struct {
		name, in string
		lim      Limits
		want     string
	}{
		{"empty", "", Limits{}, "input is empty"},
		{"header only", "a,b\n", Limits{}, "not followed by any data row"},
		{"empty name", "a,,c\n1,2,3\n", Limits{}, `line 1, column 2: header name is empty`},
		{"blank name", "a, ,c\n1,2,3\n", Limits{}, `line 1, column 2: header name is empty`},
		{"duplicate", "a,b,a\n1,2,3\n", Limits{}, `line 1, column 3: header name "a" repeats column 1`},
		{"ragged short", "a,b,c\n1,2,3\n4,5\n", Limits{}, "line 3: row has 2 fields, the header has 3"},
		{"ragged long", "a,b\n1,2\n1,2\n1,2,3\n", Limits{}, "line 4: row has 3 fields, the header has 2"},
		{"bad quote", "a,b\n1,\"2\n", Limits{}, "line 2"},
		{"bare quote", "a,b\n1,x\"y\n", Limits{}, "line 2, character 4"},
		{"too many bytes", "a,b\n1,2\n3,4\n", Limits{MaxBytes: 8}, "larger than the limit of 8 bytes"},
		{"too many rows", "a\n1\n2\n3\n", Limits{MaxRows: 2}, "line 4: more than the limit of 2 data rows"},
		{"too many cols", "a,b,c\n1,2,3\n", Limits{MaxColumns: 2}, "header has 3 columns, more than the limit of 2"},
		{"bad utf8", "a,b\n1,\xff\n", Limits{}, `line 2, column "b": value is not valid UTF-8`},
	} {
		_, err := ReadCSV(strings.NewReader(c.in), c.lim)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want it to contain %q", c.name, err, c.want)
		}
	}
	// Exactly at the byte limit is fine.
	in := "a,b\n1,2\n"
	if _, err := ReadCSV(strings.NewReader(in), Limits{MaxBytes: int64(len(in))}); err != nil {
		t.Errorf("input of exactly MaxBytes refused: %v", err)
	}
	// A BOM is not part of the first name.
	tab, err := ReadCSV(strings.NewReader("\ufeffa,b\n1,2\n"), Limits{})
	if err != nil || tab.Columns()[0].Name != "a" {
		t.Errorf("BOM: %v %v", tab, err)
	}
}

func TestSplitDeterministicAndDisjoint(t *testing.T) {
	tab := readFile(t, "pima_diabetes.csv")
	tr1, ho1 := tab.Split(0.2, 42)
	tr2, ho2 := tab.Split(0.2, 42)
	if tr1.NumRows()+ho1.NumRows() != 768 || ho1.NumRows() != 154 {
		t.Fatalf("sizes %d+%d", tr1.NumRows(), ho1.NumRows())
	}
	b1, _ := ho1.Bytes()
	b2, _ := ho2.Bytes()
	if !bytes.Equal(b1, b2) {
		t.Error("same seed gave different holdouts")
	}
	t1, _ := tr1.Bytes()
	t2, _ := tr2.Bytes()
	if !bytes.Equal(t1, t2) {
		t.Error("same seed gave different train sets")
	}
	_, ho3 := tab.Split(0.2, 43)
	b3, _ := ho3.Bytes()
	if bytes.Equal(b1, b3) {
		t.Error("different seeds gave the same holdout")
	}
	tri, hoi := SplitIndices(768, 0.2, 42)
	seen := make(map[int]bool)
	for _, i := range append(append([]int{}, tri...), hoi...) {
		if seen[i] {
			t.Fatalf("row %d on both sides", i)
		}
		seen[i] = true
	}
	if len(seen) != 768 {
		t.Fatalf("%d rows covered", len(seen))
	}
	// Edge cases.
	for _, c := range []struct {
		n      int
		f      float64
		wantHo int
	}{{10, 0, 0}, {10, 1, 10}, {10, -1, 0}, {10, 2, 10}, {2, 0.01, 1}, {2, 0.99, 1}, {1, 0.5, 1}, {0, 0.5, 0}} {
		_, ho := SplitIndices(c.n, c.f, 1)
		if len(ho) != c.wantHo {
			t.Errorf("SplitIndices(%d, %v): holdout %d, want %d", c.n, c.f, len(ho), c.wantHo)
		}
	}
}

func TestSelectAndWriteRoundTrip(t *testing.T) {
	in := "name,x\n\"a, b\",1\nc,2.50\n\"q\"\"uote\",3\n"
	tab, err := ReadCSV(strings.NewReader(in), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	sel := tab.Select([]int{2, 0, 0})
	if sel.NumRows() != 3 {
		t.Fatal(sel.NumRows())
	}
	names, _ := sel.Category("name")
	if !reflect.DeepEqual(names, []string{`q"uote`, "a, b", "a, b"}) {
		t.Errorf("names %q", names)
	}
	xs, _ := sel.Numeric("x")
	if !reflect.DeepEqual(xs, []float64{3, 1, 1}) {
		t.Errorf("x %v", xs)
	}
	var b bytes.Buffer
	if err := tab.WriteCSV(&b); err != nil {
		t.Fatal(err)
	}
	if b.String() != in {
		t.Errorf("round trip:\n%s\nwant\n%s", b.String(), in)
	}
	// The raw text of numbers is kept ("2.50", not "2.5").
	back, err := ReadCSV(&b, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Columns(), tab.Columns()) {
		t.Error("types changed in round trip")
	}
	// The reference file (CRLF line ends) round-trips modulo the line ends.
	ref := readFile(t, "wdbc_breast_cancer.csv")
	raw, _ := os.ReadFile("testdata/wdbc_breast_cancer.csv")
	out, _ := ref.Bytes()
	if !bytes.Equal(out, bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))) {
		t.Error("wdbc round trip differs")
	}
}

func FuzzReadCSV(f *testing.F) {
	f.Add([]byte("a,b\n1,2\n"))
	f.Add([]byte("a,b,c\n1,x,3\n4,y,6\n"))
	f.Add([]byte("\"a\",\"b\"\n\"1,2\",3\n"))
	f.Add([]byte("a\n\n1\n"))
	f.Add([]byte("a,a\n1,2\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		tab, err := ReadCSV(bytes.NewReader(in), Limits{MaxBytes: 1 << 16, MaxRows: 1000, MaxColumns: 100})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if tab.NumRows() < 1 || len(tab.Columns()) < 1 {
			t.Fatalf("accepted a table of %d rows, %d columns", tab.NumRows(), len(tab.Columns()))
		}
		for _, c := range tab.Columns() {
			if c.Name == "" || (c.Type != TypeNumber && c.Type != TypeCategory) {
				t.Fatalf("bad column %+v", c)
			}
			if _, err := tab.Category(c.Name); err != nil {
				t.Fatal(err)
			}
			if _, err := tab.Numeric(c.Name); (err == nil) != (c.Type == TypeNumber) {
				t.Fatalf("Numeric(%q) err=%v for type %s", c.Name, err, c.Type)
			}
		}
		// Writing and reading back is stable from the second generation on.
		b1, err := tab.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		tab2, err := ReadCSV(bytes.NewReader(b1), Limits{MaxBytes: 1 << 20, MaxRows: 1000, MaxColumns: 100})
		if err != nil {
			// Only a one-column table whose cell is empty writes a blank line.
			if len(tab.Columns()) == 1 {
				return
			}
			t.Fatalf("re-read of written table: %v\n%q", err, b1)
		}
		b2, _ := tab2.Bytes()
		tab3, err := ReadCSV(bytes.NewReader(b2), Limits{MaxBytes: 1 << 20, MaxRows: 1000, MaxColumns: 100})
		if err != nil {
			t.Fatal(err)
		}
		b3, _ := tab3.Bytes()
		if !bytes.Equal(b2, b3) {
			t.Fatalf("unstable round trip:\n%q\n%q", b2, b3)
		}
		tr, ho := tab.Split(0.3, 1)
		if tr.NumRows()+ho.NumRows() != tab.NumRows() {
			t.Fatal("split lost rows")
		}
	})
}

func TestMemSize(t *testing.T) {
	tb, err := ReadCSV(strings.NewReader("a,b\n1,x\n22,yy\n"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	// Cells: 4 headers of 16 B, text 1+22+x+yy = 6 B, column a parsed: 2 x 8 B.
	if got := tb.MemSize(); got != 4*16+6+16 {
		t.Errorf("MemSize = %d", got)
	}
}

func TestTableScanCoversRangeInBatches(t *testing.T) {
	tbl, err := ReadCSV(strings.NewReader("a,b\n1,x\n2,y\n3,z\n4,w\n5,v\n"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var starts []int
	var got []float64
	var cats []string
	err = tbl.Scan(context.Background(), 1, 5, 2, func(b *Batch) error {
		starts = append(starts, b.Start)
		if b.Num[1] != nil {
			t.Errorf("category column b has numbers")
		}
		got = append(got, b.Num[0][:b.Len]...)
		cats = append(cats, b.Raw[1][:b.Len]...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(starts, []int{1, 3}) || !slices.Equal(got, []float64{2, 3, 4, 5}) || !slices.Equal(cats, []string{"y", "z", "w", "v"}) {
		t.Fatalf("starts %v values %v cats %v", starts, got, cats)
	}
	if err := tbl.Scan(context.Background(), 0, 6, 2, func(*Batch) error { return nil }); err == nil {
		t.Fatal("scan past the end was accepted")
	}
}
