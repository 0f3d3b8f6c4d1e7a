//go:build !amd64 || purego

package plan

const hasAVX2FMA = false

// kernel is the micro-kernel (see kernelGo).
func kernel(kk int, a []float32, rsA, csA int, bp []float32, ldb int, c []float32, ldc int, bias []float32, flags int) {
	kernelGo(kk, a, rsA, csA, bp, ldb, c, ldc, bias, flags)
}

func dot(x, y []float32) float32         { return dotGo(x, y) }
func axpy(alpha float32, x, y []float32) { axpyGo(alpha, x, y) }
func reluMask(out, g, dst []float32)     { reluMaskGo(out, g, dst) }

func narrow(dst []float32, src []float64) { narrowGo(dst, src) }
func widen(dst []float64, src []float32)  { widenGo(dst, src) }
