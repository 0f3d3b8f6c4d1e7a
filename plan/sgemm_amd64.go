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

// kernelAVX2 is kernelGo in AVX2/FMA assembly; add is 0 or 1.
//
//go:noescape
func kernelAVX2(kk int, ap, bp, c *float32, ldc int, add int)

// kernel is the micro-kernel: C[mr x nr] (+)= A-panel B-panel.
func kernel(kk int, ap, bp, c []float32, ldc int, add bool) {
	if !hasAVX2FMA {
		kernelGo(kk, ap, bp, c, ldc, add)
		return
	}
	// Bounds the assembly relies on.
	_, _ = ap[mr*kk-1], bp[nr*kk-1]
	_ = c[(mr-1)*ldc+nr-1]
	f := 0
	if add {
		f = 1
	}
	kernelAVX2(kk, &ap[0], &bp[0], &c[0], ldc, f)
}
