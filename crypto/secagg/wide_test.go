package secagg

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Wide sums: the sum of the parties' encodings, word by word mod 2^32,
// decodes to the sum of their values within Error, whatever the values'
// sign and magnitude (counts, sums of squares of raw values).
func TestWideSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, parties := range []int{1, 3, 100, MaxWideParties} {
		w, err := NewWide(parties)
		if err != nil {
			t.Fatal(err)
		}
		const n = 200
		want := make([]float64, n)
		sum := make([]uint32, w.Length(n))
		for p := 0; p < parties; p++ {
			x := make([]float64, n)
			for i := range x {
				switch i % 4 {
				case 0:
					x[i] = float64(rng.IntN(1000)) // a count
				case 1:
					x[i] = (rng.Float64() - 0.5) * 1e3
				case 2:
					x[i] = -rng.Float64() * 1e12
				default:
					x[i] = rng.Float64() * 1e-6
				}
				want[i] += x[i]
			}
			words := make([]uint32, w.Length(n))
			if c := w.Encode(words, x); c != 0 {
				t.Fatalf("%d values clipped", c)
			}
			for i, v := range words {
				sum[i] += v
			}
		}
		got := make([]float64, n)
		if err := w.Decode(got, sum); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			// Error bound plus float64 rounding of values near 1e12 * parties.
			tol := w.Error() + math.Abs(want[i])*1e-15*float64(parties)
			if math.Abs(got[i]-want[i]) > tol {
				t.Fatalf("%d parties, value %d: sum %v, want %v (tolerance %v)", parties, i, got[i], want[i], tol)
			}
			if i%4 == 0 && got[i] != want[i] {
				t.Fatalf("%d parties: count sum %v, want exactly %v", parties, got[i], want[i])
			}
		}
	}
}

func TestWideClipsAndRefuses(t *testing.T) {
	if _, err := NewWide(MaxWideParties + 1); err == nil {
		t.Fatal("a wide sum over too many parties was accepted")
	}
	w, _ := NewWide(3)
	x := []float64{math.NaN(), math.Inf(1), -math.Inf(1), 2 * w.Bound(), 1}
	words := make([]uint32, w.Length(len(x)))
	if c := w.Encode(words, x); c != 4 {
		t.Fatalf("%d clipped, want 4", c)
	}
	got := make([]float64, len(x))
	if err := w.Decode(got, words); err != nil {
		t.Fatal(err)
	}
	if got[0] != 0 || got[1] != w.Bound() || got[2] != -w.Bound() || got[3] != w.Bound() || got[4] != 1 {
		t.Fatalf("decoded %v, bound %v", got, w.Bound())
	}
	if err := w.Decode(got, words[1:]); err == nil {
		t.Fatal("a sum of the wrong length decoded")
	}
}
