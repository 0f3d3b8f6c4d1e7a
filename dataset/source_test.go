package dataset

import (
	"context"
	"strings"
	"testing"
)

func TestFormatNumberReadsBack(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 42: "42", -7: "-7", 0.25: "0.25", 1e20: "1e+20", 1e15: "1e+15", 999999999999999: "999999999999999", 1.0 / 3: "0.3333333333333333"} {
		if got := FormatNumber(v); got != want {
			t.Errorf("FormatNumber(%v) = %q, want %q", v, got, want)
		}
	}
	if got := FormatNumber(negZero()); got != "-0" {
		t.Errorf("FormatNumber(-0) = %q", got)
	}
}

func negZero() float64 {
	z := 0.0
	return -z
}

// Collect of a table's Source gives the table back; a limit refuses it.
func TestCollectReadsASourceWhole(t *testing.T) {
	tbl, err := ReadCSV(strings.NewReader("a,b\n1,x\n 2,y\n3,z\n"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Collect(context.Background(), tbl, 0)
	if err != nil {
		t.Fatal(err)
	}
	gb, _ := got.Bytes()
	wb, _ := tbl.Bytes()
	if string(gb) != string(wb) || got.Columns()[0].Type != TypeNumber {
		t.Fatalf("collected %q, want %q", gb, wb)
	}
	if a, _ := got.Numeric("a"); a[1] != 2 {
		t.Fatalf("numbers %v", a)
	}
	if _, err := Collect(context.Background(), tbl, 10); err == nil {
		t.Fatal("a table over the limit was collected")
	}
}
