package plan

// A packed, register-blocked single-precision matrix product for the
// native engine. Operands are packed into panels (mr rows of op(A), nr
// columns of op(B), k-major), so transposed operands cost nothing beyond
// the packing, and a micro-kernel computes one mr x nr tile of C from a pair
// of panels. On amd64 with AVX2 and FMA the micro-kernel is assembly
// (sgemm_amd64.s, 12 ymm accumulators); elsewhere, or with the purego build
// tag, it is kernelGo. Large products are split between the caller and a
// helper goroutine; sgemm returns when both halves are done.

const (
	mr = 6   // rows of a tile
	nr = 16  // columns of a tile (two ymm registers)
	kc = 256 // depth of one packed block
)

// sgemmParallelMin is the multiply-add count from which a product is split
// over two goroutines.
const sgemmParallelMin = 1 << 19

// gemm32 holds the packing buffers of one engine and, once a product was
// large enough to split, a helper goroutine that close stops. It is not
// safe for concurrent use.
type gemm32 struct {
	pa, pb []float32
	jobs   chan *tileJob // to the helper; nil until it runs
	done   chan struct{}
	job    tileJob
}

// tileJob is the helper's share of a product: tiles [from, to).
type tileJob struct {
	from, to, mp, m, n, kk int
	pa, pb, c              []float32
	ldc                    int
	add                    bool
}

func (g *gemm32) helper(jobs <-chan *tileJob, done chan<- struct{}) {
	for j := range jobs {
		tilesRange(j.from, j.to, j.mp, j.m, j.n, j.kk, j.pa, j.pb, j.c, j.ldc, j.add)
		done <- struct{}{}
	}
}

// close stops the helper goroutine, if any.
func (g *gemm32) close() {
	if g.jobs != nil {
		close(g.jobs)
		g.jobs, g.done = nil, nil
	}
}

// sgemm computes C = op(A) op(B) (add false) or C += op(A) op(B) (add true)
// for row-major A, B, C with row strides lda, ldb, ldc; op(A) is m x k and
// op(B) is k x n. tA means A is stored k x m; tB means B is stored n x k.
func (g *gemm32) sgemm(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, add bool) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		if !add {
			for i := 0; i < m; i++ {
				clear(c[i*ldc : i*ldc+n])
			}
		}
		return
	}
	if n < 4 {
		sgemmNarrow(tA, tB, m, n, k, a, lda, b, ldb, c, ldc, add)
		return
	}
	mp, np := (m+mr-1)/mr, (n+nr-1)/nr
	kb := min(k, kc)
	if need := mp * mr * kb; cap(g.pa) < need {
		g.pa = make([]float32, need)
	}
	if need := np * nr * kb; cap(g.pb) < need {
		g.pb = make([]float32, need)
	}
	for p0 := 0; p0 < k; p0 += kc {
		kk := min(kc, k-p0)
		pa, pb := g.pa[:mp*mr*kk], g.pb[:np*nr*kk]
		packA(tA, m, kk, a, lda, p0, pa)
		packB(tB, n, kk, b, ldb, p0, pb)
		acc := add || p0 > 0
		tiles := mp * np
		if m*n*kk >= sgemmParallelMin && tiles >= 2 {
			if g.jobs == nil {
				g.jobs, g.done = make(chan *tileJob), make(chan struct{})
				go g.helper(g.jobs, g.done)
			}
			half := tiles / 2
			g.job = tileJob{half, tiles, mp, m, n, kk, pa, pb, c, ldc, acc}
			g.jobs <- &g.job
			tilesRange(0, half, mp, m, n, kk, pa, pb, c, ldc, acc)
			<-g.done
			g.job = tileJob{}
		} else {
			tilesRange(0, tiles, mp, m, n, kk, pa, pb, c, ldc, acc)
		}
	}
}

// tilesRange computes tiles [from, to) of C, column panel by column panel
// (so a packed B panel stays in L1 across the row panels).
func tilesRange(from, to, mp, m, n, kk int, pa, pb, c []float32, ldc int, add bool) {
	var tmp [mr * nr]float32
	for t := from; t < to; t++ {
		jp, ip := t/mp, t%mp
		i0, j0 := ip*mr, jp*nr
		ap := pa[ip*mr*kk : (ip+1)*mr*kk]
		bp := pb[jp*nr*kk : (jp+1)*nr*kk]
		if i0+mr <= m && j0+nr <= n {
			kernel(kk, ap, bp, c[i0*ldc+j0:], ldc, add)
			continue
		}
		// An edge tile: compute into tmp, then copy the valid part.
		kernel(kk, ap, bp, tmp[:], nr, false)
		for i := 0; i < min(mr, m-i0); i++ {
			row := c[(i0+i)*ldc+j0 : (i0+i)*ldc+min(n, j0+nr)]
			src := tmp[i*nr : i*nr+len(row)]
			if add {
				for j, v := range src {
					row[j] += v
				}
			} else {
				copy(row, src)
			}
		}
	}
}

// packA writes op(A)[:, p0:p0+kk] as row panels: panel ip holds, for each
// p, the mr values op(A)[ip*mr+i, p0+p] (zero past m).
func packA(tA bool, m, kk int, a []float32, lda, p0 int, pa []float32) {
	for ip := 0; ip*mr < m; ip++ {
		i0 := ip * mr
		rows := min(mr, m-i0)
		dst := pa[ip*mr*kk : (ip+1)*mr*kk]
		if tA { // op(A)[i, p] = A[p, i]
			for p := 0; p < kk; p++ {
				src := a[(p0+p)*lda+i0 : (p0+p)*lda+i0+rows]
				d := dst[p*mr : p*mr+mr]
				copy(d, src)
				clear(d[rows:])
			}
			continue
		}
		if rows == mr { // six rows at once: contiguous writes
			r0 := a[i0*lda+p0 : i0*lda+p0+kk]
			r1 := a[(i0+1)*lda+p0 : (i0+1)*lda+p0+kk]
			r2 := a[(i0+2)*lda+p0 : (i0+2)*lda+p0+kk]
			r3 := a[(i0+3)*lda+p0 : (i0+3)*lda+p0+kk]
			r4 := a[(i0+4)*lda+p0 : (i0+4)*lda+p0+kk]
			r5 := a[(i0+5)*lda+p0 : (i0+5)*lda+p0+kk]
			for p := range r0 {
				d := dst[p*mr : p*mr+mr : p*mr+mr]
				d[0], d[1], d[2], d[3], d[4], d[5] = r0[p], r1[p], r2[p], r3[p], r4[p], r5[p]
			}
			continue
		}
		for i := 0; i < rows; i++ {
			src := a[(i0+i)*lda+p0 : (i0+i)*lda+p0+kk]
			for p, v := range src {
				dst[p*mr+i] = v
			}
		}
		for i := rows; i < mr; i++ {
			for p := 0; p < kk; p++ {
				dst[p*mr+i] = 0
			}
		}
	}
}

// packB writes op(B)[p0:p0+kk, :] as column panels: panel jp holds, for
// each p, the nr values op(B)[p0+p, jp*nr+j] (zero past n).
func packB(tB bool, n, kk int, b []float32, ldb, p0 int, pb []float32) {
	for jp := 0; jp*nr < n; jp++ {
		j0 := jp * nr
		cols := min(nr, n-j0)
		dst := pb[jp*nr*kk : (jp+1)*nr*kk]
		if !tB { // op(B)[p, j] = B[p, j]
			for p := 0; p < kk; p++ {
				src := b[(p0+p)*ldb+j0 : (p0+p)*ldb+j0+cols]
				d := dst[p*nr : p*nr+nr]
				copy(d, src)
				clear(d[cols:])
			}
			continue
		}
		for j := 0; j < cols; j++ { // op(B)[p, j] = B[j, p]
			src := b[(j0+j)*ldb+p0 : (j0+j)*ldb+p0+kk]
			for p, v := range src {
				dst[p*nr+j] = v
			}
		}
		for j := cols; j < nr; j++ {
			for p := 0; p < kk; p++ {
				dst[p*nr+j] = 0
			}
		}
	}
}

// kernelGo is the portable micro-kernel: C[mr x nr] (+)= A-panel B-panel,
// C with row stride ldc.
func kernelGo(kk int, ap, bp, c []float32, ldc int, add bool) {
	var acc [mr * nr]float32
	for p := 0; p < kk; p++ {
		a := ap[p*mr : p*mr+mr : p*mr+mr]
		b := bp[p*nr : p*nr+nr : p*nr+nr]
		for i, av := range a {
			row := acc[i*nr : i*nr+nr : i*nr+nr]
			for j, bv := range b {
				row[j] += av * bv
			}
		}
	}
	for i := 0; i < mr; i++ {
		row := c[i*ldc : i*ldc+nr]
		if add {
			for j := range row {
				row[j] += acc[i*nr+j]
			}
		} else {
			copy(row, acc[i*nr:i*nr+nr])
		}
	}
}

// sgemmNarrow is the product for n < 4 columns (a layer's single output),
// where a 16-wide tile would mostly compute padding: column by column, dot
// products (A row-major) or scaled row sums (A transposed), with four
// accumulators.
func sgemmNarrow(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, add bool) {
	for j := 0; j < n; j++ {
		bat := func(p int) float32 {
			if tB {
				return b[j*ldb+p]
			}
			return b[p*ldb+j]
		}
		if !tA {
			var col []float32 // op(B)[:, j], contiguous when possible
			if tB {
				col = b[j*ldb : j*ldb+k]
			} else if ldb == 1 {
				col = b[j : j+k]
			}
			for i := 0; i < m; i++ {
				row := a[i*lda : i*lda+k]
				var s0, s1, s2, s3 float32
				p := 0
				if col != nil {
					col := col[:len(row)]
					for ; p+4 <= len(row); p += 4 {
						s0 += row[p] * col[p]
						s1 += row[p+1] * col[p+1]
						s2 += row[p+2] * col[p+2]
						s3 += row[p+3] * col[p+3]
					}
				}
				for ; p < k; p++ {
					s0 += row[p] * bat(p)
				}
				s := (s0 + s1) + (s2 + s3)
				if add {
					c[i*ldc+j] += s
				} else {
					c[i*ldc+j] = s
				}
			}
			continue
		}
		// op(A)[i, p] = A[p, i]: C[:, j] += sum over p of B[p, j] A[p, :].
		if !add {
			for i := 0; i < m; i++ {
				c[i*ldc+j] = 0
			}
		}
		if ldc == 1 && n == 1 {
			cc := c[:m]
			for p := 0; p < k; p++ {
				bv := bat(p)
				row := a[p*lda : p*lda+m]
				for i, v := range row {
					cc[i] += bv * v
				}
			}
			continue
		}
		for p := 0; p < k; p++ {
			bv := bat(p)
			row := a[p*lda : p*lda+m]
			for i, v := range row {
				c[i*ldc+j] += bv * v
			}
		}
	}
}
