package plan

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/wait"
)

func randF32(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// TestSgemm checks every transpose combination, edge tiles, depths beyond
// one packed block, accumulation and the two-goroutine split against a
// float64 triple loop.
func TestSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var g gemm32
	defer g.close()
	for _, sz := range [][3]int{{1, 1, 1}, {6, 16, 1}, {7, 17, 3}, {5, 1, 20}, {1, 33, 9}, {13, 40, 300}, {256, 256, 256}, {64, 70, 520}} {
		m, n, k := sz[0], sz[1], sz[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				for _, add := range []bool{false, true} {
					a, b := randF32(rng, m*k), randF32(rng, k*n)
					lda, ldb := k, n
					if tA {
						lda = m
					}
					if tB {
						ldb = k
					}
					ldc := n + 3 // a strided C: the padding must stay untouched
					c := randF32(rng, m*ldc)
					c0 := append([]float32(nil), c...)
					var bias []float32
					relu := (m+n+k)%2 == 0
					if add {
						bias = randF32(rng, n)
					}
					g.sgemmEpi(tA, tB, m, n, k, a, lda, b, ldb, c, ldc, add, bias, relu)
					for i := 0; i < m; i++ {
						for j := 0; j < ldc; j++ {
							if j >= n {
								if c[i*ldc+j] != c0[i*ldc+j] {
									t.Fatalf("%v tA=%v tB=%v: C[%d,%d] outside the product changed", sz, tA, tB, i, j)
								}
								continue
							}
							var want, scale float64
							if add {
								want = float64(c0[i*ldc+j])
							}
							for p := 0; p < k; p++ {
								var av, bv float32
								if tA {
									av = a[p*lda+i]
								} else {
									av = a[i*lda+p]
								}
								if tB {
									bv = b[j*ldb+p]
								} else {
									bv = b[p*ldb+j]
								}
								want += float64(av) * float64(bv)
								scale += math.Abs(float64(av) * float64(bv))
							}
							if bias != nil {
								want += float64(bias[j])
							}
							if relu {
								want = max(want, 0)
							}
							if got := float64(c[i*ldc+j]); math.Abs(got-want) > 1e-5*(1+scale) {
								t.Fatalf("%v tA=%v tB=%v add=%v relu=%v: C[%d,%d] = %v, want %v", sz, tA, tB, add, relu, i, j, got, want)
							}
						}
					}
				}
			}
		}
	}
}

// TestKernelsAgree checks the assembly micro-kernel against the Go one,
// for packed, row-major and transposed A and every epilogue.
func TestKernelsAgree(t *testing.T) {
	if !hasAVX2FMA {
		t.Skip("no AVX2/FMA: the Go kernel is the only one")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, kk := range []int{1, 2, 3, 7, 64, 256} {
		for _, st := range [][2]int{{1, mr}, {kk + 3, 1}, {1, 9}} {
			for flags := 0; flags < 8; flags++ {
				a, bp, bias := randF32(rng, (mr-1)*st[0]+(kk-1)*st[1]+1), randF32(rng, nr*kk), randF32(rng, nr)
				ldc := nr + 5
				c1 := randF32(rng, mr*ldc)
				c2 := append([]float32(nil), c1...)
				kernel(kk, a, st[0], st[1], bp, nr, c1, ldc, bias, flags)
				kernelGo(kk, a, st[0], st[1], bp, nr, c2, ldc, bias, flags)
				for i := range c1 {
					if d := math.Abs(float64(c1[i] - c2[i])); d > 1e-5*(1+math.Abs(float64(c2[i]))*math.Sqrt(float64(kk))) {
						t.Fatalf("kk=%d strides %v flags %d: c[%d] assembly %v, Go %v", kk, st, flags, i, c1[i], c2[i])
					}
				}
			}
		}
	}
}

func TestSgemmAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var g gemm32
	defer g.close()
	a, b, c := randF32(rng, 256*256), randF32(rng, 256*256), make([]float32, 256*256)
	g.sgemm(false, false, 256, 256, 256, a, 256, b, 256, c, 256, false)
	if n := testing.AllocsPerRun(20, func() { g.sgemm(true, false, 256, 256, 256, a, 256, b, 256, c, 256, true) }); n != 0 {
		t.Errorf("sgemm allocates %v times per call", n)
	}
}

func BenchmarkSgemm(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, sz := range [][3]int{{256, 256, 256}, {256, 64, 20}, {20, 256, 256}} {
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}} {
			m, n, k := sz[0], sz[1], sz[2]
			b.Run(fmt.Sprintf("%dx%dx%d/tA=%v,tB=%v", m, n, k, tr[0], tr[1]), func(b *testing.B) {
				var g gemm32
				defer g.close()
				a, bb, c := randF32(rng, m*k), randF32(rng, k*n), make([]float32, m*n)
				lda, ldb := k, n
				if tr[0] {
					lda = m
				}
				if tr[1] {
					ldb = k
				}
				b.SetBytes(0)
				for b.Loop() {
					g.sgemm(tr[0], tr[1], m, n, k, a, lda, bb, ldb, c, n, false)
				}
				b.ReportMetric(float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
			})
		}
	}
}

// TestVectorKernels checks dot, axpy and reluMask against plain loops,
// on lengths with and without a tail past the multiple of eight.
func TestVectorKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 7, 8, 9, 16, 31, 256} {
		x, y := randF32(rng, n), randF32(rng, n)
		var want float64
		for i := range x {
			want += float64(x[i]) * float64(y[i])
		}
		if got := dot(x, y); math.Abs(float64(got)-want) > 1e-5*(1+math.Abs(want)) {
			t.Errorf("n=%d: dot %v, want %v", n, got, want)
		}
		y2 := append([]float32(nil), y...)
		axpy(0.5, x, y2)
		for i := range y2 {
			if w := y[i] + 0.5*x[i]; math.Abs(float64(y2[i]-w)) > 1e-6*(1+math.Abs(float64(w))) {
				t.Fatalf("n=%d: axpy [%d] %v, want %v", n, i, y2[i], w)
			}
		}
		out := randF32(rng, n)
		if n > 2 {
			out[0], out[1], out[2] = 0, float32(math.NaN()), float32(math.Inf(1))
		}
		dst := randF32(rng, n)
		reluMask(out, x, dst)
		for i, v := range out {
			w := float32(0)
			if v > 0 {
				w = x[i]
			}
			if dst[i] != w {
				t.Fatalf("n=%d: reluMask [%d] (out %v) %v, want %v", n, i, v, dst[i], w)
			}
		}
	}
}

// TestConversions: the AVX conversions round as Go's.
func TestConversions(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{0, 3, 8, 21, 64} {
		src := make([]float64, n)
		for i := range src {
			src[i] = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(20)-10))
		}
		if n > 2 {
			src[0], src[1] = math.Inf(-1), 1+0x1p-24 // a tie of the rounding
		}
		d32 := make([]float32, n)
		narrow(d32, src)
		back := make([]float64, n)
		widen(back, d32)
		for i, v := range src {
			if d32[i] != float32(v) || back[i] != float64(float32(v)) {
				t.Fatalf("n=%d [%d]: %v -> %v -> %v, want %v", n, i, v, d32[i], back[i], float32(v))
			}
		}
	}
}

// TestHelperStops: close ends the helper goroutine.
func TestHelperStops(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	a, b, c := randF32(rng, 128*128), randF32(rng, 128*128), make([]float32, 128*128)
	before := runtime.NumGoroutine()
	var g gemm32
	g.sgemm(false, false, 128, 128, 128, a, 128, b, 128, c, 128, false)
	if g.jobs == nil {
		t.Fatal("a 128^3 product was not split")
	}
	g.close()
	wait.For(t, 5*time.Second, "the helper goroutine to end after close", func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines, %d before", n, before)
		}
		return nil
	})
}
