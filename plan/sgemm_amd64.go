//go:build amd64 && !purego

package plan

// hasAVX2FMA reports whether the CPU and the OS support AVX2 and FMA (the
// OS must save the ymm registers: XCR0 bits 1 and 2).
var hasAVX2FMA = func() bool {
	_, _, c1, _ := cpuid(1, 0)
	const fma, osxsave, avx = 1 << 12, 1 << 27, 1 << 28
	if c1&fma == 0 || c1&osxsave == 0 || c1&avx == 0 {
		return false
	}
	if lo, _ := xgetbv(); lo&6 != 6 {
		return false
	}
	_, b7, _, _ := cpuid(7, 0)
	return b7&(1<<5) != 0
}()

func cpuid(eax, ecx uint32) (a, b, c, d uint32)
func xgetbv() (lo, hi uint32)

// kernelAVX2 is kernelGo in AVX2/FMA assembly.
//
//go:noescape
func kernelAVX2(kk int, a *float32, rsA, csA int, b *float32, ldb int, c *float32, ldc int, bias *float32, flags int)

//go:noescape
func reluMaskAVX2(out, grad, dst *float32, n int)

//go:noescape
func axpyAVX2(alpha float32, x, y *float32, n int)

//go:noescape
func dotAVX2(x, y *float32, n int) float32

// kernel is the micro-kernel (see kernelGo).
func kernel(kk int, a []float32, rsA, csA int, bp []float32, ldb int, c []float32, ldc int, bias []float32, flags int) {
	if !hasAVX2FMA {
		kernelGo(kk, a, rsA, csA, bp, ldb, c, ldc, bias, flags)
		return
	}
	// The bounds the assembly relies on.
	_, _ = a[(mr-1)*rsA+(kk-1)*csA], bp[(kk-1)*ldb+nr-1]
	_ = c[(mr-1)*ldc+nr-1]
	bptr := &bp[0] // any valid pointer when there is no bias
	if flags&kBias != 0 {
		_ = bias[nr-1]
		bptr = &bias[0]
	}
	kernelAVX2(kk, &a[0], rsA, csA, &bp[0], ldb, &c[0], ldc, bptr, flags)
}

// dot is the sum of x[i] y[i] (len(y) >= len(x)).
func dot(x, y []float32) float32 {
	n := len(x) &^ 7
	if !hasAVX2FMA || n == 0 {
		return dotGo(x, y)
	}
	y = y[:len(x)]
	s := dotAVX2(&x[0], &y[0], n)
	for i := n; i < len(x); i++ {
		s += x[i] * y[i]
	}
	return s
}

// axpy adds alpha x to y (len(y) >= len(x)).
func axpy(alpha float32, x, y []float32) {
	n := len(x) &^ 7
	if !hasAVX2FMA || n == 0 {
		axpyGo(alpha, x, y)
		return
	}
	y = y[:len(x)]
	axpyAVX2(alpha, &x[0], &y[0], n)
	axpyGo(alpha, x[n:], y[n:])
}

// reluMask sets dst to g where out > 0, to zero elsewhere.
func reluMask(out, g, dst []float32) {
	n := len(out) &^ 7
	if !hasAVX2FMA || n == 0 {
		reluMaskGo(out, g, dst)
		return
	}
	g, dst = g[:len(out)], dst[:len(out)]
	reluMaskAVX2(&out[0], &g[0], &dst[0], n)
	reluMaskGo(out[n:], g[n:], dst[n:])
}

//go:noescape
func narrowAVX(dst *float32, src *float64, n int)

//go:noescape
func widenAVX(dst *float64, src *float32, n int)

// narrow sets dst[i] = float32(src[i]) (len(dst) >= len(src)).
func narrow(dst []float32, src []float64) {
	n := len(src) &^ 7
	if hasAVX2FMA && n > 0 {
		dst = dst[:len(src)]
		narrowAVX(&dst[0], &src[0], n)
	}
	narrowGo(dst[n:], src[n:])
}

// widen sets dst[i] = float64(src[i]) (len(dst) >= len(src)).
func widen(dst []float64, src []float32) {
	n := len(src) &^ 7
	if hasAVX2FMA && n > 0 {
		dst = dst[:len(src)]
		widenAVX(&dst[0], &src[0], n)
	}
	widenGo(dst[n:], src[n:])
}
