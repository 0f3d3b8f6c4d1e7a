package secagg

import (
	"errors"
	"fmt"
	"math"
)

// Quantizer maps reals to two's-complement fixed point in Z/2^32 so that a
// sum over up to Parties parties, each value clipped to [-Bound, Bound],
// never wraps: Parties * Bound * Scale < 2^31. Decoding the sum of the words
// gives the sum of the clipped values to within Parties/(2*Scale).
type Quantizer struct {
	// Scale is the number of integer units per 1.0 (a power of two).
	Scale float64
	// Bound is the largest magnitude one party may contribute per value.
	Bound float64
}

// NewQuantizer returns the finest power-of-two scale for values bounded by
// bound summed over parties parties.
func NewQuantizer(bound float64, parties int) (Quantizer, error) {
	if !(bound > 0) || math.IsInf(bound, 0) {
		return Quantizer{}, fmt.Errorf("secagg: quantisation bound %v must be positive and finite", bound)
	}
	if parties < 1 {
		return Quantizer{}, errors.New("secagg: quantisation needs at least one party")
	}
	exp := math.Floor(math.Log2((math.MaxInt32 - float64(parties)) / (float64(parties) * bound)))
	scale := math.Ldexp(1, int(exp))
	if !(scale > 0) || math.IsInf(scale, 0) {
		return Quantizer{}, fmt.Errorf("secagg: bound %v over %d parties does not fit in 32 bits", bound, parties)
	}
	return Quantizer{Scale: scale, Bound: bound}, nil
}

// Encode writes x clipped to [-Bound, Bound] and rounded to the nearest unit
// into dst (same length) and returns how many values were clipped. A NaN is
// encoded as 0 and counted as clipped.
func (q Quantizer) Encode(dst []uint32, x []float64) int {
	clipped := 0
	for i, v := range x {
		switch {
		case math.IsNaN(v):
			v = 0
			clipped++
		case v > q.Bound:
			v = q.Bound
			clipped++
		case v < -q.Bound:
			v = -q.Bound
			clipped++
		}
		dst[i] = uint32(int32(math.Round(v * q.Scale)))
	}
	return clipped
}

// Decode reads words (a sum of encodings) back into reals in dst.
func (q Quantizer) Decode(dst []float64, w []uint32) {
	for i, v := range w {
		dst[i] = float64(int32(v)) / q.Scale
	}
}

// Error is the largest decoding error of a sum over parties parties.
func (q Quantizer) Error(parties int) float64 { return float64(parties) / (2 * q.Scale) }
