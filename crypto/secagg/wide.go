package secagg

import (
	"fmt"
	"math"
	"math/big"
)

// Wide is fixed point over WideWords words, for sums whose magnitude is not
// known in advance (row counts, sums and sums of squares of raw feature
// values, loss sums, histogram counts): a real x becomes the integer
// V = round(x * 2^WideFrac), written as WideWords-1 unsigned limbs of
// wideLimb bits and a signed top limb. Summed word by word mod 2^32 over up
// to MaxWideParties parties, no limb wraps: the low limbs' sums stay below
// 2^32 (parties * 2^24) and the top limb is bounded so that its sum stays
// within int32. Decoding carries the limbs back into one number, so the sum
// of the encodings is the sum of the rounded values exactly: the decoding
// error is at most parties * 2^-(WideFrac+1) (Error), plus the float64
// rounding of the result.
type Wide struct {
	parties int
	top     int64 // largest magnitude of one party's top limb
}

// Wide fixed-point layout.
const (
	WideWords = 4
	WideFrac  = 24
	wideLimb  = 24
	// MaxWideParties bounds the parties of a wide sum (the low limbs' sums stay below 2^32).
	MaxWideParties = 256
)

// NewWide returns the wide encoding of a sum over parties parties.
func NewWide(parties int) (Wide, error) {
	if parties < 1 || parties > MaxWideParties {
		return Wide{}, fmt.Errorf("secagg: a wide sum takes 1 to %d parties, not %d", MaxWideParties, parties)
	}
	return Wide{parties: parties, top: (math.MaxInt32 - 1) / int64(parties)}, nil
}

// Bound is the largest magnitude one party may contribute per value
// (about 4.7e21 with 100 parties).
func (w Wide) Bound() float64 {
	return math.Ldexp(float64(w.top), (WideWords-1)*wideLimb-WideFrac)
}

// Error is the largest decoding error of a sum (rounding to 2^-WideFrac per party).
func (w Wide) Error() float64 { return math.Ldexp(float64(w.parties), -WideFrac-1) }

// Length is the number of words of n values.
func (Wide) Length(n int) int { return n * WideWords }

var wideMask = big.NewInt(1<<wideLimb - 1)

// Encode writes x into dst (WideWords words per value) and returns how
// many values were clipped to [-Bound, Bound] (a NaN is encoded as 0 and
// counted as clipped).
func (w Wide) Encode(dst []uint32, x []float64) int {
	if len(dst) != w.Length(len(x)) {
		panic(fmt.Sprintf("secagg: wide encode of %d values into %d words", len(x), len(dst)))
	}
	clipped := 0
	bound := w.Bound()
	var v, limb big.Int
	var f big.Float
	for i, x := range x {
		switch {
		case math.IsNaN(x):
			x = 0
			clipped++
		case x > bound:
			x = bound
			clipped++
		case x < -bound:
			x = -bound
			clipped++
		}
		s := math.Ldexp(x, WideFrac)
		if math.Abs(s) < 1<<52 {
			s = math.Round(s) // above 2^52 a float64 is an integer already
		}
		f.SetFloat64(s)
		f.Int(&v)
		out := dst[i*WideWords : (i+1)*WideWords]
		for k := 0; k < WideWords-1; k++ {
			limb.And(&v, wideMask) // two's complement: the limb is in [0, 2^24)
			out[k] = uint32(limb.Uint64())
			v.Rsh(&v, wideLimb) // arithmetic shift
		}
		top := max(-w.top, min(w.top, v.Int64()))
		out[WideWords-1] = uint32(int32(top))
	}
	return clipped
}

// Decode reads a sum of encodings (WideWords words per value) into dst.
func (w Wide) Decode(dst []float64, sum []uint32) error {
	if len(sum) != w.Length(len(dst)) {
		return fmt.Errorf("secagg: wide sum of %d words for %d values", len(sum), len(dst))
	}
	var v, limb big.Int
	for i := range dst {
		var f big.Float
		in := sum[i*WideWords : (i+1)*WideWords]
		v.SetInt64(int64(int32(in[WideWords-1])))
		for k := WideWords - 2; k >= 0; k-- {
			v.Lsh(&v, wideLimb)
			v.Add(&v, limb.SetUint64(uint64(in[k])))
		}
		f.SetInt(&v)
		f.SetMantExp(&f, -WideFrac)
		dst[i], _ = f.Float64()
	}
	return nil
}
