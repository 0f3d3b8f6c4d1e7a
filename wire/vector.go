package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Large numeric vectors of the federation protocols (weights, updates)
// travel as bytes, not as JSON arrays of numbers: little-endian IEEE 754
// float64 (PackFloats) or little-endian uint32 words (PackWords). In a JSON
// message such a field is one base64 string, which encodes and decodes
// many times faster than a number array (and stays exact).

// PackFloats returns v as little-endian float64s.
func PackFloats(v []float64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return b
}

// UnpackFloats reads little-endian float64s; want is the number expected.
func UnpackFloats(b []byte, want int) ([]float64, error) {
	if len(b) != 8*want {
		return nil, fmt.Errorf("vector of %d bytes, want %d float64s (%d bytes)", len(b), want, 8*want)
	}
	v := make([]float64, want)
	for i := range v {
		v[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return v, nil
}

// PackWords returns v as little-endian uint32s.
func PackWords(v []uint32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	return b
}

// UnpackWords reads little-endian uint32s; want is the number expected.
func UnpackWords(b []byte, want int) ([]uint32, error) {
	if len(b) != 4*want {
		return nil, fmt.Errorf("vector of %d bytes, want %d words (%d bytes)", len(b), want, 4*want)
	}
	v := make([]uint32, want)
	for i := range v {
		v[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return v, nil
}
