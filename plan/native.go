package plan

import (
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// floatT is the precision a native engine computes in.
type floatT interface{ ~float32 | ~float64 }

// nativeEngine computes a batch's mean loss and the gradients of the plan's
// supported ops with hand-written forward and backward passes. Every value
// and gradient of a step is a T: float32 for EngineNative (PyTorch's
// precision; the products run in the packed AVX2/FMA kernel of sgemm.go),
// float64 for EngineNative64. The parameters and the optimizer stay float64
// in the trainer; a float32 engine rounds them once per step, and widens the
// gradients it returns. Losses are summed in float64. Every buffer is
// allocated once for the largest batch; a step allocates nothing. The
// gorgonia engine is the reference both are tested against.
type nativeEngine[T floatT] struct {
	pr       *program
	maxRows  int
	params   [][]float64 // shared with the trainer
	pv       [][]T       // the parameters as T (aliases params when T is float64)
	alias    bool        // pv aliases params
	val      [][]T       // per slot, capacity maxRows rows
	grad     [][]T       // per slot gradient (nil when not needed)
	written  []bool      // per slot: grad holds this step's gradient (else it is stale)
	needGrad []bool
	isParam  []int  // param index of a slot, or -1
	units    []unit // the steps, dense layers fused
	g32      gemm32
	shapes   map[int][][2]int // per row count: each slot's concrete [rows, cols]
	// Per unit, what the training-mode ops keep for the backward pass:
	// dropout's factors, layer_norm's and batch_norm's 1/std; batch_norm's
	// batch mean and biased variance.
	aux   [][]T
	batch [][2][]float64
}

// unit is one step of the program, or a dense layer: a matmul whose
// product only feeds "add" of a bias vector, optionally followed by a relu
// that alone reads the sum. A dense layer runs as one product with a bias
// and ReLU epilogue; its backward pass masks the incoming gradient and sums
// the bias gradient in one sweep. The intermediate values are not stored.
type unit struct {
	st    step // the op; for a dense layer its matmul
	dense bool
	bias  int  // dense: the bias slot, or -1
	relu  bool // dense: a ReLU ends the layer
	out   int  // the unit's output slot
}

// newNativeEngine returns the float32 engine (f32) or the float64 one; a
// float32 engine whose batches are large enough to be worth it splits them
// over two goroutines (splitEngine).
func newNativeEngine(pr *program, params [][]float64, maxRows int, f32 bool) gradEngine {
	if !f32 {
		return newNative[float64](pr, params, maxRows)
	}
	// Not conditional on GOMAXPROCS, so that a model trains to the same
	// float32 roundings whatever the number of cores (with one, the halves
	// run one after the other).
	// Not for dropout (its mask is drawn by row) nor batch_norm (its
	// statistics are the whole batch's).
	if maxRows >= 2*splitMinRows && macsPerRow(pr)*maxRows >= splitMinMACs && !pr.hasDropout && !pr.hasBatchNorm {
		return newSplitEngine(pr, params, maxRows)
	}
	return newNative[float32](pr, params, maxRows)
}

// The batch-splitting thresholds: a step is split when a full batch is
// worth at least splitMinMACs multiply-adds (~60 us of products, against a
// goroutine wake-up of some 10 us) and each half has splitMinRows rows.
const (
	splitMinMACs = 1 << 21
	splitMinRows = 32
)

// macsPerRow counts the forward products' multiply-adds per batch row,
// times three (forward, and the two products of the backward pass).
func macsPerRow(pr *program) int {
	n := 0
	for _, st := range pr.steps {
		if st.op == "matmul" {
			sa, sb := concrete(pr.shape[st.a], 1), concrete(pr.shape[st.b], 1)
			n += sa[len(sa)-1] * sb[len(sb)-1]
		}
	}
	return 3 * n
}

// splitEngine runs the first half of each batch on the caller's goroutine
// and the second half on a helper goroutine it owns (started with the
// engine, stopped by close), each on a float32 engine of its own, then adds
// the two gradients. One handoff per step: a product-level split (gemm32's)
// pays a goroutine wake-up per product. The sum of two halves differs from
// the one-engine result only in float32 rounding.
type splitEngine struct {
	a, b *nativeEngine[float32]
	gb   [][]float64 // the second half's gradients
	jobs chan splitJob
	done chan float64 // the second half's loss
	half int          // rows each engine holds
}

type splitJob struct {
	x, y  []float64
	n     int
	scale float64
}

func newSplitEngine(pr *program, params [][]float64, maxRows int) *splitEngine {
	half := (maxRows + 1) / 2
	e := &splitEngine{a: newNative[float32](pr, params, half), b: newNative[float32](pr, params, half),
		gb: zerosLike(params), jobs: make(chan splitJob), done: make(chan float64), half: half}
	e.a.g32.serial, e.b.g32.serial = true, true
	go e.helper()
	return e
}

func (e *splitEngine) helper() {
	for j := range e.jobs {
		e.done <- e.b.part(j.x, j.y, j.n, j.scale, e.gb)
	}
}

func (e *splitEngine) step(x, y []float64, n int, grads [][]float64) (float64, error) {
	if n < 2*splitMinRows && n <= e.half { // a small last batch: one engine
		return e.a.part(x, y, n, 1/float64(n), grads), nil
	}
	d := e.a.pr.inputs
	n1 := (n + 1) / 2
	scale := 1 / float64(n)
	e.jobs <- splitJob{x[n1*d : n*d], y[n1:n], n - n1, scale}
	loss := e.a.part(x[:n1*d], y[:n1], n1, scale, grads)
	loss += <-e.done
	for i, g := range grads {
		axpy64(g, e.gb[i])
	}
	return loss, nil
}

// axpy64 adds src to dst.
func axpy64(dst, src []float64) {
	src = src[:len(dst)]
	for j, v := range src {
		dst[j] += v
	}
}

func (e *splitEngine) close() {
	if e.jobs != nil {
		close(e.jobs)
		e.jobs = nil
	}
	e.a.close()
	e.b.close()
}

func newNative[T floatT](pr *program, params [][]float64, maxRows int) *nativeEngine[T] {
	e := &nativeEngine[T]{pr: pr, maxRows: maxRows, params: params, shapes: map[int][][2]int{}}
	ns := len(pr.shape)
	e.val = make([][]T, ns)
	e.grad = make([][]T, ns)
	e.written = make([]bool, ns)
	e.needGrad = make([]bool, ns)
	e.isParam = make([]int, ns)
	e.pv = make([][]T, len(params))
	for i := range e.isParam {
		e.isParam[i] = -1
	}
	for i, s := range pr.paramSlot {
		e.isParam[s] = i
		e.needGrad[s] = true
		if v, ok := any(params[i]).([]T); ok {
			e.pv[i], e.alias = v, true
		} else {
			e.pv[i] = make([]T, len(params[i]))
		}
		e.val[s] = e.pv[i]
		e.grad[s] = make([]T, len(params[i]))
	}
	for _, st := range pr.steps {
		if e.needGrad[st.a] || (st.b >= 0 && e.needGrad[st.b]) {
			e.needGrad[st.out] = true
		}
	}
	e.units = fuse(pr)
	e.aux = make([][]T, len(e.units))
	e.batch = make([][2][]float64, len(e.units))
	for i, u := range e.units {
		sa := concrete(pr.shape[u.st.a], maxRows)
		switch u.st.op {
		case "dropout":
			e.aux[i] = make([]T, size(sa))
		case "layer_norm":
			e.aux[i] = make([]T, sa[0])
		case "batch_norm":
			e.aux[i] = make([]T, sa[1])
			e.batch[i] = [2][]float64{make([]float64, sa[1]), make([]float64, sa[1])}
		}
	}
	keep := make([]bool, ns) // slots whose values a unit stores
	keep[pr.x] = true
	for _, u := range e.units {
		keep[u.out] = true
		if u.dense && e.needGrad[u.out] {
			e.needGrad[u.st.out] = true // the pre-activation gradient's buffer
		}
	}
	for s := range pr.shape {
		if e.isParam[s] >= 0 {
			continue
		}
		n := size(concrete(pr.shape[s], maxRows))
		if keep[s] {
			e.val[s] = make([]T, n)
		}
		if e.needGrad[s] {
			e.grad[s] = make([]T, n)
		}
	}
	return e
}

// fuse groups the program's steps into units, finding the dense layers.
func fuse(pr *program) []unit {
	uses := make([]int, len(pr.shape))
	for _, st := range pr.steps {
		uses[st.a]++
		if st.b >= 0 {
			uses[st.b]++
		}
	}
	uses[pr.lossIn]++
	uses[pr.pred]++
	// only tells whether slot s is the sole input of step i (and used once)
	only := func(s, i int) bool { return uses[s] == 1 && i < len(pr.steps) }
	var units []unit
	for i := 0; i < len(pr.steps); i++ {
		st := pr.steps[i]
		u := unit{st: st, bias: -1, out: st.out}
		if st.op == "matmul" && only(st.out, i+1) && pr.steps[i+1].op == "add" {
			add := pr.steps[i+1]
			cols := pr.shape[st.out][len(pr.shape[st.out])-1]
			other := add.b
			if add.b == st.out {
				other = add.a
			}
			if (add.a == st.out) != (add.b == st.out) && len(pr.shape[other]) == 1 && pr.shape[other][0] == cols && cols != Batch {
				u.dense, u.bias, u.out = true, other, add.out
				i++
				if only(add.out, i+1) && pr.steps[i+1].op == "relu" {
					u.relu, u.out = true, pr.steps[i+1].out
					i++
				}
			}
		}
		units = append(units, u)
	}
	return units
}

func (e *nativeEngine[T]) close() { e.g32.close() }

// dims returns every slot's [rows, cols] for n rows (a vector [m] is
// [1, m]), computed once per row count.
func (e *nativeEngine[T]) dims(n int) [][2]int {
	if d, ok := e.shapes[n]; ok {
		return d
	}
	d := make([][2]int, len(e.pr.shape))
	for s, sh := range e.pr.shape {
		c := concrete(sh, n)
		if len(c) == 1 {
			d[s] = [2]int{1, c[0]}
		} else {
			d[s] = [2]int{c[0], c[1]}
		}
	}
	if len(e.shapes) < 4 {
		e.shapes[n] = d
	}
	return d
}

// gemm computes C = op(A) op(B) (add false) or C += op(A) op(B), with A, B,
// C row-major [ar,ac], [br,bc], [cr,cc] before transposition.
func (e *nativeEngine[T]) gemm(tA, tB bool, a []T, ar, ac int, b []T, br, bc int, add bool, c []T, cr, cc int) {
	k := ac
	if tA {
		k = ar
	}
	switch a := any(a).(type) {
	case []float32:
		e.g32.sgemm(tA, tB, cr, cc, k, a, ac, any(b).([]float32), bc, any(c).([]float32), cc, add)
	case []float64:
		gemmSimple(tA, tB, cr, cc, k, a, ac, any(b).([]float64), bc, any(c).([]float64), cc, add)
	}
}

// gemmEpi computes C = max(A B + bias, 0) (bias may be nil; max only with
// relu), A, B, C row-major [ar,ac], [br,bc], [cr,cc].
func (e *nativeEngine[T]) gemmEpi(a []T, ar, ac int, b []T, br, bc int, c []T, cr, cc int, bias []T, relu bool) {
	switch a := any(a).(type) {
	case []float32:
		e.g32.sgemmEpi(false, false, cr, cc, ac, a, ac, any(b).([]float32), bc, any(c).([]float32), cc, false, any(bias).([]float32), relu)
	case []float64:
		cf := any(c).([]float64)
		gemmSimple(false, false, cr, cc, ac, a, ac, any(b).([]float64), bc, cf, cc, false)
		bf := any(bias).([]float64)
		for i := 0; i < cr; i++ {
			row := cf[i*cc : (i+1)*cc]
			if bf != nil {
				for j := range row {
					row[j] += bf[j]
				}
			}
			if relu {
				for j, v := range row {
					row[j] = max(v, 0)
				}
			}
		}
	}
}

// gemmSimple is the float64 product of the reference-precision engine, in
// the same layout conventions as gemm32.sgemm: plain loops for small
// products (no allocation), gonum's blas64 for large ones (faster; it may
// allocate when it splits the work over goroutines).
func gemmSimple(tA, tB bool, m, n, k int, a []float64, lda int, b []float64, ldb int, c []float64, ldc int, add bool) {
	if m*n*k < 1<<18 || m == 0 || n == 0 || k == 0 {
		gemmLoops(tA, tB, m, n, k, a, lda, b, ldb, c, ldc, add)
		return
	}
	ta, tb := blas.NoTrans, blas.NoTrans
	ar, ac, br, bc := m, k, k, n
	if tA {
		ta, ar, ac = blas.Trans, k, m
	}
	if tB {
		tb, br, bc = blas.Trans, n, k
	}
	beta := 0.0
	if add {
		beta = 1
	}
	blas64.Gemm(ta, tb, 1, blas64.General{Rows: ar, Cols: ac, Stride: lda, Data: a[:(ar-1)*lda+ac]},
		blas64.General{Rows: br, Cols: bc, Stride: ldb, Data: b[:(br-1)*ldb+bc]}, beta,
		blas64.General{Rows: m, Cols: n, Stride: ldc, Data: c[:(m-1)*ldc+n]})
}

// gemmLoops is gemmSimple in plain loops.
func gemmLoops(tA, tB bool, m, n, k int, a []float64, lda int, b []float64, ldb int, c []float64, ldc int, add bool) {
	at := func(i, p int) float64 {
		if tA {
			return a[p*lda+i]
		}
		return a[i*lda+p]
	}
	for i := 0; i < m; i++ {
		crow := c[i*ldc : i*ldc+n]
		if !add {
			clear(crow)
		}
		if !tB {
			for p := 0; p < k; p++ {
				av := at(i, p)
				for j, bv := range b[p*ldb : p*ldb+n] {
					crow[j] += av * bv
				}
			}
			continue
		}
		for j := range crow {
			var s float64
			for p, bv := range b[j*ldb : j*ldb+k] {
				s += at(i, p) * bv
			}
			crow[j] += s
		}
	}
}

// forward runs the ops on n rows of x (n <= maxRows).
func (e *nativeEngine[T]) forward(x []float64, n int) {
	pr := e.pr
	d := e.dims(n)
	if !e.alias {
		for i, p := range e.params {
			convert(e.pv[i], p)
		}
	}
	convert(e.val[pr.x][:n*pr.inputs], x[:n*pr.inputs])
	for ui, u := range e.units {
		st := u.st
		sa, so := d[st.a], d[st.out]
		out := e.val[u.out][:so[0]*so[1]]
		a := e.val[st.a][:sa[0]*sa[1]]
		if u.dense {
			sb := d[st.b]
			var bias []T
			if u.bias >= 0 {
				bias = e.val[u.bias][:so[1]]
			}
			e.gemmEpi(a, sa[0], sa[1], e.val[st.b], sb[0], sb[1], out, so[0], so[1], bias, u.relu)
			continue
		}
		switch st.op {
		case "matmul":
			sb := d[st.b]
			e.gemm(false, false, a, sa[0], sa[1], e.val[st.b], sb[0], sb[1], false, out, so[0], so[1])
		case "add", "sub", "mul":
			sb := d[st.b]
			fastElementwise2(st.op, out, a, e.val[st.b][:sb[0]*sb[1]])
		case "relu":
			for i, v := range a {
				out[i] = max(v, 0)
			}
		case "sigmoid":
			for i, v := range a {
				out[i] = T(sigmoid(float64(v)))
			}
		case "tanh":
			for i, v := range a {
				out[i] = T(math.Tanh(float64(v)))
			}
		case "dropout":
			m := e.aux[ui][:len(a)]
			for i, v := range a {
				f := T(dropFactor(pr.seed, st.idx, i, st.rate))
				m[i], out[i] = f, v*f
			}
		case "layer_norm":
			layerNorm(a, out, sa[0], sa[1], st.eps, e.aux[ui])
		case "batch_norm":
			b := e.batch[ui]
			batchStats(a, sa[0], sa[1], b[0], b[1])
			batchNorm(a, out, sa[0], sa[1], b[0], b[1], st.eps, e.aux[ui])
			updateRunning(e.params[st.stat[0]], e.params[st.stat[1]], b[0], b[1], sa[0], st.mom)
		case "softmax", "log_softmax":
			k := sa[1]
			for r := 0; r < sa[0]; r++ {
				z, o := a[r*k:(r+1)*k], out[r*k:(r+1)*k]
				lse := logSumExpT(z)
				for j, v := range z {
					if st.op == "softmax" {
						o[j] = T(math.Exp(float64(v) - lse))
					} else {
						o[j] = T(float64(v) - lse)
					}
				}
			}
		}
	}
}

func logSumExpT[T floatT](z []T) float64 {
	m := math.Inf(-1)
	for _, v := range z {
		m = max(m, float64(v))
	}
	if math.IsInf(m, 0) {
		return m
	}
	var s float64
	for _, v := range z {
		s += math.Exp(float64(v) - m)
	}
	return m + math.Log(s)
}

// step computes the mean loss over n rows and the gradient of every
// parameter (into grads, in pr.paramNames order).
func (e *nativeEngine[T]) step(x, y []float64, n int, grads [][]float64) (float64, error) {
	return e.part(x, y, n, 1/float64(n), grads), nil
}

// part computes, for n rows, the sum of the row losses times scale and its
// gradient (into grads).
func (e *nativeEngine[T]) part(x, y []float64, n int, scale float64, grads [][]float64) float64 {
	e.forward(x, n)
	loss := e.backward(y, n, scale)
	for i, s := range e.pr.paramSlot {
		if !e.written[s] {
			clear(grads[i])
			continue
		}
		if g, ok := any(e.grad[s]).([]float32); ok {
			widen(grads[i], g)
			continue
		}
		g := grads[i]
		for j, v := range e.grad[s] {
			g[j] = float64(v)
		}
	}
	return loss
}

// gradOf returns slot s's gradient buffer for this step and whether it
// already holds a contribution (add) or must be overwritten.
func (e *nativeEngine[T]) gradOf(s int, size int) (g []T, add bool) {
	add = e.written[s]
	e.written[s] = true
	return e.grad[s][:size], add
}

// backward seeds the loss gradient (scaled by scale per row) and
// propagates it; it returns the sum of row losses times scale.
func (e *nativeEngine[T]) backward(y []float64, n int, scale float64) float64 {
	pr := e.pr
	d := e.dims(n)
	clear(e.written)
	var loss float64
	in := e.val[pr.lossIn]
	k := pr.outputs
	g, _ := e.gradOf(pr.lossIn, n*k)
	for r := 0; r < n; r++ {
		switch pr.lossOp {
		case "bce", "bce_logits":
			z := float64(in[r])
			loss += softplus(z) - y[r]*z
			g[r] = T((sigmoid(z) - y[r]) * scale)
		case "cross_entropy":
			row, gr := in[r*k:(r+1)*k], g[r*k:(r+1)*k]
			c := int(y[r])
			if pr.lossFrom == "logprobs" {
				loss -= float64(row[c])
				clear(gr)
				gr[c] = T(-scale)
				continue
			}
			lse := logSumExpT(row)
			loss += lse - float64(row[c])
			for j, v := range row {
				gr[j] = T(math.Exp(float64(v)-lse) * scale)
			}
			gr[c] -= T(scale)
		case "mse":
			d := float64(in[r]) - y[r]
			loss += d * d
			g[r] = T(2 * d * scale)
		}
	}
	for i := len(e.units) - 1; i >= 0; i-- {
		u := e.units[i]
		st := u.st
		if !e.needGrad[u.out] || !e.written[u.out] {
			continue // no gradient reaches this op
		}
		so, sa := d[st.out], d[st.a]
		gout := e.grad[u.out][:so[0]*so[1]]
		out := e.val[u.out][:so[0]*so[1]]
		if u.dense {
			// d loss / d (A W), and the bias gradient, in one sweep
			var gb []T
			if u.bias >= 0 && e.needGrad[u.bias] {
				var add bool
				if gb, add = e.gradOf(u.bias, so[1]); !add {
					clear(gb)
				}
			}
			gz := gout
			if u.relu {
				gz = e.grad[st.out][:len(gout)]
			}
			maskSum(out, gout, gz, gb, u.relu)
			gout = gz
		}
		a := e.val[st.a][:sa[0]*sa[1]]
		needA := e.needGrad[st.a]
		switch st.op {
		case "dropout", "layer_norm", "batch_norm":
			if !needA {
				break
			}
			ga, add := e.gradOf(st.a, len(a))
			if !add {
				clear(ga)
			}
			switch st.op {
			case "dropout":
				for j, f := range e.aux[i][:len(a)] {
					ga[j] += gout[j] * f
				}
			default:
				normBack(out, gout, ga, sa[0], sa[1], e.aux[i], st.op == "layer_norm")
			}
		case "matmul":
			sb := d[st.b]
			b := e.val[st.b][:sb[0]*sb[1]]
			if needA { // dA += dOut * B^T
				ga, add := e.gradOf(st.a, sa[0]*sa[1])
				e.gemm(false, true, gout, so[0], so[1], b, sb[0], sb[1], add, ga, sa[0], sa[1])
			}
			if e.needGrad[st.b] { // dB += A^T * dOut
				gb, add := e.gradOf(st.b, sb[0]*sb[1])
				e.gemm(true, false, a, sa[0], sa[1], gout, so[0], so[1], add, gb, sb[0], sb[1])
			}
		case "add", "sub", "mul":
			sb := d[st.b]
			b := e.val[st.b][:sb[0]*sb[1]]
			var ga, gb []T
			if needA {
				var add bool
				if ga, add = e.gradOf(st.a, len(a)); !add {
					clear(ga)
				}
			}
			if e.needGrad[st.b] {
				var add bool
				if gb, add = e.gradOf(st.b, len(b)); !add {
					clear(gb)
				}
			}
			backElementwise2(st.op, gout, a, b, ga, gb)
		case "relu":
			if needA {
				ga, add := e.gradOf(st.a, len(a))
				reluBack(out, gout, ga, add)
			}
		case "sigmoid", "tanh":
			if needA {
				ga, add := e.gradOf(st.a, len(a))
				if !add {
					clear(ga)
				}
				if st.op == "sigmoid" {
					for j, v := range out {
						ga[j] += gout[j] * v * (1 - v)
					}
				} else {
					for j, v := range out {
						ga[j] += gout[j] * (1 - v*v)
					}
				}
			}
		case "softmax", "log_softmax":
			if !needA {
				break
			}
			ga, add := e.gradOf(st.a, len(a))
			if !add {
				clear(ga)
			}
			kk := sa[1]
			for r := 0; r < sa[0]; r++ {
				o, gr, gar := out[r*kk:(r+1)*kk], gout[r*kk:(r+1)*kk], ga[r*kk:(r+1)*kk]
				var s float64
				if st.op == "softmax" {
					for j := range o {
						s += float64(gr[j]) * float64(o[j])
					}
					for j := range o {
						gar[j] += T(float64(o[j]) * (float64(gr[j]) - s))
					}
				} else {
					for j := range o {
						s += float64(gr[j])
					}
					for j := range o {
						gar[j] += T(float64(gr[j]) - math.Exp(float64(o[j]))*s)
					}
				}
			}
		}
	}
	return loss * scale
}

// fastElementwise2 is elementwise2 with the operand sizes deciding the
// broadcast (equal sizes; one side of size 1; one side a row of the other).
func fastElementwise2[T floatT](op string, out, a, b []T) {
	la, lb := len(a), len(b)
	switch {
	case la == lb:
		switch op {
		case "add":
			for i := range out {
				out[i] = a[i] + b[i]
			}
		case "sub":
			for i := range out {
				out[i] = a[i] - b[i]
			}
		default:
			for i := range out {
				out[i] = a[i] * b[i]
			}
		}
	case lb <= la: // b is a row (or one number) repeated over a
		for r := 0; r < la; r += lb {
			o, ar := out[r:r+lb], a[r:r+lb]
			switch op {
			case "add":
				for j, v := range b {
					o[j] = ar[j] + v
				}
			case "sub":
				for j, v := range b {
					o[j] = ar[j] - v
				}
			default:
				for j, v := range b {
					o[j] = ar[j] * v
				}
			}
		}
	default: // a repeated over b
		for r := 0; r < lb; r += la {
			o, br := out[r:r+la], b[r:r+la]
			switch op {
			case "add":
				for j, v := range a {
					o[j] = v + br[j]
				}
			case "sub":
				for j, v := range a {
					o[j] = v - br[j]
				}
			default:
				for j, v := range a {
					o[j] = v * br[j]
				}
			}
		}
	}
}

// backElementwise2 accumulates the gradients of add/sub/mul under the
// broadcast rule: the broadcast side sums over the repeated positions.
func backElementwise2[T floatT](op string, gout, a, b, ga, gb []T) {
	if ga != nil {
		backSide(op == "mul", false, gout, ga, b)
	}
	if gb != nil {
		backSide(op == "mul", op == "sub", gout, gb, a)
	}
}

// backSide adds g times d out/d self to gs: the other operand for mul, 1
// for add, -1 (neg) for sub's right side. gs and other have len(g) values
// or repeat every len(gs), len(other) values; one of them has len(g).
func backSide[T floatT](mul, neg bool, g, gs, other []T) {
	ls, lo, n := len(gs), len(other), len(g)
	switch {
	case !mul && ls == 1:
		var s T
		for _, v := range g {
			s += v
		}
		if neg {
			s = -s
		}
		gs[0] += s
	case !mul:
		for r := 0; r < n; r += ls {
			gg := g[r : r+ls]
			if neg {
				for j, v := range gg {
					gs[j] -= v
				}
			} else {
				for j, v := range gg {
					gs[j] += v
				}
			}
		}
	case ls == n: // self full, other full or repeating
		for r := 0; r < n; r += lo {
			gg, dd := g[r:r+lo], gs[r:r+lo]
			for j, ov := range other {
				dd[j] += gg[j] * ov
			}
		}
	default: // self repeating, other full
		for r := 0; r < n; r += ls {
			gg, oo := g[r:r+ls], other[r:r+ls]
			for j, v := range gg {
				gs[j] += v * oo[j]
			}
		}
	}
}

// reluBack sets (or, with add, adds) gout where the ReLU's output is
// positive, zero elsewhere. The output is max(v, 0), never negative nor -0,
// so "positive" is "sign-extended bits > 0": a mask, without the branch
// that mispredicts on half the units.
func reluBack[T floatT](out, gout, ga []T, add bool) {
	switch o := any(out).(type) {
	case []float32:
		g, d := any(gout).([]float32), any(ga).([]float32)
		if !add {
			reluMask(o, g, d)
			return
		}
		g, d = g[:len(o)], d[:len(o)]
		for j, v := range o {
			mask := uint32(-int32(math.Float32bits(v)) >> 31)
			gj := math.Float32frombits(math.Float32bits(g[j]) & mask)
			if add {
				d[j] += gj
			} else {
				d[j] = gj
			}
		}
	case []float64:
		g, d := any(gout).([]float64), any(ga).([]float64)
		g, d = g[:len(o)], d[:len(o)]
		for j, v := range o {
			mask := uint64(-int64(math.Float64bits(v)) >> 63)
			gj := math.Float64frombits(math.Float64bits(g[j]) & mask)
			if add {
				d[j] += gj
			} else {
				d[j] = gj
			}
		}
	}
}

// maskSum sets gz to gout where the ReLU's output out is positive and to
// zero elsewhere (gz = gout without relu; gz may be gout), and adds the
// column sums of gz to gb (when not nil, len(gb) columns).
func maskSum[T floatT](out, gout, gz, gb []T, relu bool) {
	if relu {
		reluBack(out, gout, gz, false)
	}
	if gb == nil {
		return
	}
	m := len(gb)
	if g32, ok := any(gz).([]float32); ok {
		b32 := any(gb).([]float32)
		for r := 0; r < len(g32); r += m {
			axpy(1, g32[r:r+m], b32)
		}
		return
	}
	for r := 0; r < len(gz); r += m {
		row := gz[r : r+m]
		for j, v := range row {
			gb[j] += v
		}
	}
}

// convert sets dst[i] = T(src[i]).
func convert[T floatT](dst []T, src []float64) {
	if d, ok := any(dst).([]float32); ok {
		narrow(d, src)
		return
	}
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = T(v)
	}
}
