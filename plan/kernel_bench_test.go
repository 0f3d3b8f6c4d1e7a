package plan

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkKernel times the micro-kernel alone on L1-resident panels: the
// machine's ceiling for sgemm.
func BenchmarkKernel(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const kk = 256
	a, bp, c := randF32(rng, mr*kk), randF32(rng, nr*kk), make([]float32, mr*nr)
	for b.Loop() {
		kernel(kk, a, 1, mr, bp, nr, c, nr, nil, kAdd)
	}
	b.ReportMetric(float64(mr*nr*kk)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
}
