package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// TestDiscreteLaplace: the noise has the distribution's mean and variance
// (2a/(1-a)^2 with a = exp(-eps)).
func TestDiscreteLaplace(t *testing.T) {
	r := newRand()
	for _, eps := range []float64{0.1, 0.5, 2} {
		const n = 200_000
		var sum, sq float64
		for range n {
			z := discreteLaplace(r, eps)
			if z != math.Trunc(z) {
				t.Fatalf("non-integer noise %v", z)
			}
			sum += z
			sq += z * z
		}
		a := math.Exp(-eps)
		want := 2 * a / ((1 - a) * (1 - a))
		mean, variance := sum/n, sq/n-(sum/n)*(sum/n)
		if math.Abs(mean) > 5*math.Sqrt(want/n) || math.Abs(variance/want-1) > 0.05 {
			t.Fatalf("eps %v: mean %v variance %v, want 0 and %v", eps, mean, variance, want)
		}
	}
}

func table(t *testing.T, header string, rows int, row func(i int) string) *dataset.Table {
	t.Helper()
	var b strings.Builder
	b.WriteString(header + "\n")
	for i := range rows {
		b.WriteString(row(i) + "\n")
	}
	tbl, err := dataset.ReadCSV(bytes.NewReader([]byte(b.String())), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// TestPrivateMarginals: noise is there, rare values never show, common
// ones do, and pure-noise bins far from the data do not appear.
func TestPrivateMarginals(t *testing.T) {
	tbl := table(t, "id,colour,height", 3000, func(i int) string {
		return fmt.Sprintf("u%d,%s,%d", i, []string{"red", "blue", "green"}[i%3], 150+i%50)
	})
	exact := marginalsOf(t, tbl, false)
	noisy, spurious, leaked := 0, 0, 0
	for trial := range 50 {
		m := marginalsOf(t, tbl, true)
		if !m.DP || m.Epsilon != PreviewEpsilon {
			t.Fatalf("not marked DP: %+v", m)
		}
		id, colour, height := m.Columns[0], m.Columns[1], m.Columns[2]
		// A value held by one row passes the threshold with probability
		// under delta per column (that is the guarantee, not zero): over
		// 50 x 3000 unique identifiers about 0.03 releases are expected.
		// More than 3 (probability ~1e-8) is a bug.
		if leaked += len(id.Values); leaked > 3 {
			t.Fatalf("trial %d: %d unique identifiers released so far: %v", trial, leaked, id.Values)
		}
		if strings.Join(colour.Values, ",") != "blue,green,red" {
			t.Fatalf("trial %d: common values lost: %v", trial, colour.Values)
		}
		if colour.Counts[0] != 1000 {
			noisy++
		}
		if !height.Integer {
			t.Fatalf("trial %d: whole numbers not recognised", trial)
		}
		clean := true
		for i, n := range height.Counts {
			if n > 0 && (height.Edges[i+1] <= 100 || height.Edges[i] >= 200) {
				t.Logf("trial %d: bin [%v, %v) of %v rows, where there is no data", trial, height.Edges[i], height.Edges[i+1], n)
				clean = false
			}
		}
		if !clean {
			// Designed to happen once in a thousand summaries; more is a bug.
			if spurious++; spurious > 1 {
				t.Fatalf("%d of %d summaries show empty ranges", spurious, trial+1)
			}
			continue
		}
		for range 20 {
			v := height.draw(newRand())
			if h, err := parseNumber(v); err != nil || h < 100 || h > 200 {
				t.Fatalf("trial %d: drew height %q", trial, v)
			}
		}
	}
	// Discrete Laplace at this column's epsilon (1/3) is exactly 0 with
	// probability 0.165: about 41.7 of 50 counts differ (sd 2.6). Under 30
	// (4.5 sd) means the noise is missing.
	if noisy < 30 {
		t.Fatalf("only %d of 50 private summaries differ from the exact count", noisy)
	}
	if exact.DP || exact.Columns[1].Counts[0] != 1000 {
		t.Fatalf("public summary: %+v", exact.Columns[1])
	}
}

func parseNumber(s string) (float64, error) {
	var v float64
	_, err := fmt.Sscan(s, &v)
	return v, err
}

func TestBinOf(t *testing.T) {
	edges := []float64{0, 1, 2, 5}
	for v, want := range map[float64]int{-3: 0, 0: 0, 0.5: 0, 1: 1, 1.5: 1, 2: 2, 4.9: 2, 5: 2, 9: 2} {
		if got := binOf(edges, v); got != want {
			t.Errorf("binOf(%v) = %d, want %d", v, got, want)
		}
	}
}

func marginalsOf(t *testing.T, src dataset.Source, private bool) *marginals {
	t.Helper()
	m, err := computeMarginals(context.Background(), src, private, newRand())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The summary of a stored version (a scan of its columns, across record
// batches) is the summary of the same data parsed whole: exact for public
// data, and the same noise from the same generator for private data.
func TestMarginalsOfStoredVersionMatchTable(t *testing.T) {
	tbl := table(t, "id,colour,height,score,code", 70_000, func(i int) string {
		return fmt.Sprintf("u%d,%s,%d,%.3f,%s", i%900, []string{"red", "blue", "green"}[i%3], 150+i%50, float64(i%1000)/7, []string{"1.0", " 2", "3e1"}[i%3])
	})
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	csv, err := tbl.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	d := &store.Dataset{Name: "m"}
	if err := st.PutDataset(d, csv); err != nil {
		t.Fatal(err)
	}
	_, v, err := st.OpenDataset(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for _, private := range []bool{false, true} {
		seeded := func() *rand.Rand { return rand.New(rand.NewChaCha8([32]byte{7})) }
		want, err := computeMarginals(context.Background(), tbl, private, seeded())
		if err != nil {
			t.Fatal(err)
		}
		got, err := computeMarginals(context.Background(), v, private, seeded())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(want)
			t.Fatalf("private %v: stored version gives\n%s\nthe table\n%s", private, gb, wb)
		}
		if !private && (want.Columns[4].Decimals != 1 || want.Columns[2].Counts[0] == 0) {
			t.Fatalf("public summary %+v", want.Columns)
		}
	}
}
