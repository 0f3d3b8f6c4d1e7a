package plan

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
)

// WeightsSHA256 is the hex SHA-256 of a set of parameters, independent of
// how they were encoded on the way: for each parameter in ParamOrder, its
// name's length (uint32) and bytes, its number of dimensions (uint32), each
// dimension (uint64), then its values as IEEE 754 float64 bits, all
// little-endian. Federation receipts bind the weights a round started from
// and produced by it (package crypto/receipt).
func WeightsSHA256(params map[string]Tensor) string {
	h := sha256.New()
	var b [8]byte
	u32 := func(v uint32) { binary.LittleEndian.PutUint32(b[:4], v); h.Write(b[:4]) }
	u64 := func(v uint64) { binary.LittleEndian.PutUint64(b[:], v); h.Write(b[:]) }
	for _, name := range ParamOrder(params) {
		t := params[name]
		u32(uint32(len(name)))
		h.Write([]byte(name))
		u32(uint32(len(t.Shape)))
		for _, d := range t.Shape {
			u64(uint64(d))
		}
		for _, v := range t.Data {
			u64(math.Float64bits(v))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
