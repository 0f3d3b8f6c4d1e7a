package wire

import (
	"math"
	"slices"
	"testing"
)

func TestVectorRoundTrip(t *testing.T) {
	f := []float64{0, -1.5, math.Pi, math.SmallestNonzeroFloat64, -math.MaxFloat64, math.Inf(1)}
	got, err := UnpackFloats(PackFloats(f), len(f))
	if err != nil || !slices.Equal(got, f) {
		t.Fatalf("floats %v %v, want %v", got, err, f)
	}
	w := []uint32{0, 1, math.MaxUint32, 1 << 31}
	gotW, err := UnpackWords(PackWords(w), len(w))
	if err != nil || !slices.Equal(gotW, w) {
		t.Fatalf("words %v %v, want %v", gotW, err, w)
	}
	if _, err := UnpackFloats(PackFloats(f)[1:], len(f)); err == nil {
		t.Error("a truncated float vector was read")
	}
	if _, err := UnpackWords(PackWords(w), len(w)+1); err == nil {
		t.Error("a word vector of the wrong length was read")
	}
}
