//go:build !amd64 || purego

package plan

const hasAVX2FMA = false

// kernel is the micro-kernel: C[mr x nr] (+)= A-panel B-panel.
func kernel(kk int, ap, bp, c []float32, ldc int, add bool) {
	kernelGo(kk, ap, bp, c, ldc, add)
}
