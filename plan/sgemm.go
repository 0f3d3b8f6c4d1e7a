package plan

// A register-blocked single-precision matrix product for the native
// engine. A micro-kernel computes one mr x nr tile of C: 6 rows of op(A),
// each element broadcast, times 16 columns of op(B), over the depth. It
// reads op(A) in place through two strides (row-major, transposed or
// packed alike), and op(B) in place when B is not transposed; a transposed
// B, and the last row or column panel when m or n is not a multiple of the
// tile, are packed first. The kernel can finish a tile with C += bias and
// a ReLU while it is still in registers. On amd64 with AVX2 and FMA the
// kernel is assembly (sgemm_amd64.s, 12 ymm accumulators); elsewhere, or
// with the purego build tag, it is kernelGo (TestKernelsAgree checks the
// two agree). Large products are split between the caller and a helper
// goroutine; sgemm returns when both halves are done.

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
	serial bool // never split (the engine runs in parallel at a coarser grain)
}

// tileJob is a share of one depth block [p0, p0+kk) of a product: tiles
// [from, to), numbered column panel by column panel.
type tileJob struct {
	from, to, mp, m, n, kk int
	// op(A)[i, p0+p] is a[i*rsA + p*csA] (A itself is never packed, save
	// the last row panel when m is not a multiple of mr: edgeA).
	a        []float32
	rsA, csA int
	edgeA    []float32
	// op(B)[p0+p, j] is b[p*ldb + j] (B is packed only when transposed,
	// save the last column panel when n is not a multiple of nr: edgeB).
	b       []float32
	ldb     int
	packedB bool // b holds every column panel, packed (nr*kk each)
	edgeB   []float32
	c       []float32
	ldc     int
	add     bool
	// The epilogue, applied to each tile of the last block:
	// C[i, j] += bias[j] (when bias is not nil), then C = max(C, 0) (relu).
	bias []float32
	relu bool
}

func (g *gemm32) helper(jobs <-chan *tileJob, done chan<- struct{}) {
	for j := range jobs {
		j.run()
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
	g.sgemmEpi(tA, tB, m, n, k, a, lda, b, ldb, c, ldc, add, nil, false)
}

// sgemmEpi is sgemm followed by C[i, j] += bias[j] (bias not nil, of n
// values) and C = max(C, 0) (relu), applied tile by tile in registers.
func (g *gemm32) sgemmEpi(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, add bool, bias []float32, relu bool) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || n < 4 {
		if k == 0 {
			if !add {
				for i := 0; i < m; i++ {
					clear(c[i*ldc : i*ldc+n])
				}
			}
		} else {
			sgemmNarrow(tA, tB, m, n, k, a, lda, b, ldb, c, ldc, add)
		}
		if bias != nil || relu {
			for i := 0; i < m; i++ {
				epilogue(c[i*ldc:i*ldc+n], bias, relu)
			}
		}
		return
	}
	mp, np := (m+mr-1)/mr, (n+nr-1)/nr
	kb := min(k, kc)
	if need := mr * kb; cap(g.pa) < need {
		g.pa = make([]float32, need)
	}
	if need := np * nr * kb; cap(g.pb) < need {
		g.pb = make([]float32, need)
	}
	rsA, csA := lda, 1
	if tA {
		rsA, csA = 1, lda
	}
	for p0 := 0; p0 < k; p0 += kc {
		kk := min(kc, k-p0)
		var bb, edgeB []float32
		switch {
		case tB:
			bb = g.pb[:np*nr*kk]
			packB(tB, n, kk, b, ldb, p0, bb)
		case n%nr != 0:
			bb = b[p0*ldb:]
			edgeB = g.pb[:nr*kk]
			packBPanel(n-(np-1)*nr, kk, b[p0*ldb+(np-1)*nr:], ldb, edgeB)
		default:
			bb = b[p0*ldb:]
		}
		var edgeA []float32
		if m%mr != 0 {
			edgeA = g.pa[:mr*kk]
			packAPanel(tA, (mp-1)*mr, m-(mp-1)*mr, kk, a, lda, p0, edgeA)
		}
		tiles := mp * np
		job := tileJob{from: 0, to: tiles, mp: mp, m: m, n: n, kk: kk,
			a: a[p0*csA:], rsA: rsA, csA: csA, edgeA: edgeA, b: bb, ldb: ldb, packedB: tB, edgeB: edgeB,
			c: c, ldc: ldc, add: add || p0 > 0}
		if p0+kk == k {
			job.bias, job.relu = bias, relu
		}
		if m*n*kk < sgemmParallelMin || tiles < 2 || g.serial {
			job.run()
			continue
		}
		if g.jobs == nil {
			g.jobs, g.done = make(chan *tileJob), make(chan struct{})
			go g.helper(g.jobs, g.done)
		}
		g.job = job
		g.job.from = tiles / 2
		g.jobs <- &g.job
		job.to = tiles / 2
		job.run()
		<-g.done
		g.job = tileJob{}
	}
}

// epilogue adds bias (when not nil) to row and applies the ReLU.
func epilogue(row, bias []float32, relu bool) {
	switch {
	case bias != nil && relu:
		bias = bias[:len(row)]
		for j, v := range row {
			row[j] = max(v+bias[j], 0)
		}
	case bias != nil:
		bias = bias[:len(row)]
		for j, v := range row {
			row[j] = v + bias[j]
		}
	case relu:
		for j, v := range row {
			row[j] = max(v, 0)
		}
	}
}

// Kernel flags.
const (
	kAdd  = 1 // C += the product (else C = the product)
	kBias = 2 // then C += bias
	kRelu = 4 // then C = max(C, 0)
)

// run computes tiles [from, to) of C, column panel by column panel (so a
// packed B panel stays in L1 across the row panels).
func (j *tileJob) run() {
	var tmp [mr * nr]float32
	m, n, kk, mp, c, ldc := j.m, j.n, j.kk, j.mp, j.c, j.ldc
	flags := 0
	if j.add {
		flags |= kAdd
	}
	if j.bias != nil {
		flags |= kBias
	}
	if j.relu {
		flags |= kRelu
	}
	for t := j.from; t < j.to; t++ {
		jp, ip := t/mp, t%mp
		i0, j0 := ip*mr, jp*nr
		rows, cols := min(mr, m-i0), min(nr, n-j0)
		var bp []float32
		ldb := j.ldb
		switch {
		case j.packedB:
			bp, ldb = j.b[jp*nr*kk:(jp+1)*nr*kk], nr
		case cols < nr:
			bp, ldb = j.edgeB, nr
		default:
			bp = j.b[j0:]
		}
		var bias []float32
		if j.bias != nil {
			bias = j.bias[j0 : j0+cols]
		}
		if rows == mr && cols == nr {
			kernel(kk, j.a[i0*j.rsA:], j.rsA, j.csA, bp, ldb, c[i0*ldc+j0:], ldc, bias, flags)
			continue
		}
		// An edge tile: compute into tmp, then finish the valid part.
		if rows == mr {
			kernel(kk, j.a[i0*j.rsA:], j.rsA, j.csA, bp, ldb, tmp[:], nr, nil, 0)
		} else {
			kernel(kk, j.edgeA, 1, mr, bp, ldb, tmp[:], nr, nil, 0)
		}
		for i := 0; i < rows; i++ {
			row := c[(i0+i)*ldc+j0 : (i0+i)*ldc+j0+cols]
			src := tmp[i*nr : i*nr+cols]
			if j.add {
				for j, v := range src {
					row[j] += v
				}
			} else {
				copy(row, src)
			}
			epilogue(row, bias, j.relu)
		}
	}
}

// packAPanel writes rows [i0, i0+rows) of op(A)[:, p0:p0+kk] (rows <= mr)
// as one panel: for each p, mr values, zero past rows.
func packAPanel(tA bool, i0, rows, kk int, a []float32, lda, p0 int, dst []float32) {
	clear(dst)
	for i := 0; i < rows; i++ {
		for p := 0; p < kk; p++ {
			if tA {
				dst[p*mr+i] = a[(p0+p)*lda+i0+i]
			} else {
				dst[p*mr+i] = a[(i0+i)*lda+p0+p]
			}
		}
	}
}

// packBPanel writes cols (< nr) columns of B (row stride ldb, kk rows) as
// one panel, zero past cols.
func packBPanel(cols, kk int, b []float32, ldb int, dst []float32) {
	for p := 0; p < kk; p++ {
		d := dst[p*nr : p*nr+nr]
		copy(d, b[p*ldb:p*ldb+cols])
		clear(d[cols:])
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
		j := 0
		for ; j+4 <= cols; j += 4 { // op(B)[p, j] = B[j, p], four columns a pass
			s0 := b[(j0+j)*ldb+p0 : (j0+j)*ldb+p0+kk]
			s1 := b[(j0+j+1)*ldb+p0 : (j0+j+1)*ldb+p0+kk]
			s2 := b[(j0+j+2)*ldb+p0 : (j0+j+2)*ldb+p0+kk]
			s3 := b[(j0+j+3)*ldb+p0 : (j0+j+3)*ldb+p0+kk]
			for p := range s0 {
				d := dst[p*nr+j : p*nr+j+4 : p*nr+j+4]
				d[0], d[1], d[2], d[3] = s0[p], s1[p], s2[p], s3[p]
			}
		}
		for ; j < cols; j++ {
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

// kernelGo is the portable micro-kernel: C[mr x nr] (op)= A B with
// A[i, p] = a[i*rsA + p*csA], B[p, :] = bp[p*ldb : p*ldb+nr], then the
// epilogue of flags (kAdd, kBias, kRelu); C has row stride ldc.
func kernelGo(kk int, a []float32, rsA, csA int, bp []float32, ldb int, c []float32, ldc int, bias []float32, flags int) {
	var acc [mr * nr]float32
	for p := 0; p < kk; p++ {
		b := bp[p*ldb : p*ldb+nr : p*ldb+nr]
		for i := 0; i < mr; i++ {
			av := a[i*rsA+p*csA]
			row := acc[i*nr : i*nr+nr : i*nr+nr]
			for j, bv := range b {
				row[j] += av * bv
			}
		}
	}
	for i := 0; i < mr; i++ {
		row := c[i*ldc : i*ldc+nr]
		r := acc[i*nr : i*nr+nr]
		if flags&kAdd != 0 {
			for j := range r {
				r[j] += row[j]
			}
		}
		if flags&kBias != 0 {
			for j := range r {
				r[j] += bias[j]
			}
		}
		if flags&kRelu != 0 {
			for j, v := range r {
				r[j] = max(v, 0)
			}
		}
		copy(row, r)
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
				if col != nil {
					s := dot(row, col[:k])
					if add {
						c[i*ldc+j] += s
					} else {
						c[i*ldc+j] = s
					}
					continue
				}
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
				axpy(bat(p), a[p*lda:p*lda+m], cc)
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

// dotGo is the sum of x[i] y[i], in eight interleaved partial sums (the
// order of dotAVX2).
func dotGo(x, y []float32) float32 {
	var acc [8]float32
	y = y[:len(x)]
	i := 0
	for ; i+8 <= len(x); i += 8 {
		for l := range acc {
			acc[l] += x[i+l] * y[i+l]
		}
	}
	var s float32
	for _, v := range acc {
		s += v
	}
	for ; i < len(x); i++ {
		s += x[i] * y[i]
	}
	return s
}

// axpyGo adds alpha x to y.
func axpyGo(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += alpha * v
	}
}

// reluMaskGo sets dst to g where out > 0, to zero elsewhere.
func reluMaskGo(out, g, dst []float32) {
	g, dst = g[:len(out)], dst[:len(out)]
	for i, v := range out {
		if v > 0 {
			dst[i] = g[i]
		} else {
			dst[i] = 0
		}
	}
}

func narrowGo(dst []float32, src []float64) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = float32(v)
	}
}

func widenGo(dst []float64, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = float64(v)
	}
}
