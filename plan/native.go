package plan

import (
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// nativeEngine computes a batch's mean loss and the gradients of the plan's
// supported ops with hand-written forward and backward passes over gonum's
// BLAS (its Dgemm uses every core on large products). Every buffer is
// allocated once for the largest batch; a step allocates nothing. The
// gorgonia engine is the reference it is tested against.
type nativeEngine struct {
	pr       *program
	maxRows  int
	params   [][]float64 // shared with the trainer
	val      [][]float64 // per slot, capacity maxRows rows
	grad     [][]float64 // per slot gradient (nil when not needed)
	needGrad []bool
	isParam  []int // param index of a slot, or -1
	// f32 runs the matrix products in float32 (gonum's float32 kernels are
	// about 3x faster than its float64 ones); values, gradients and the
	// optimizer stay float64. Off, every number is float64.
	f32        bool
	sa, sb, sc []float32
	shapes     map[int][][2]int // per row count: each slot's concrete [rows, cols]
}

func newNativeEngine(pr *program, params [][]float64, maxRows int, f32 bool) *nativeEngine {
	e := &nativeEngine{pr: pr, maxRows: maxRows, params: params, f32: f32, shapes: map[int][][2]int{}}
	ns := len(pr.shape)
	e.val = make([][]float64, ns)
	e.grad = make([][]float64, ns)
	e.needGrad = make([]bool, ns)
	e.isParam = make([]int, ns)
	for i := range e.isParam {
		e.isParam[i] = -1
	}
	for i, s := range pr.paramSlot {
		e.isParam[s] = i
		e.needGrad[s] = true
		e.val[s] = params[i]
		e.grad[s] = make([]float64, len(params[i]))
	}
	for _, st := range pr.steps {
		if e.needGrad[st.a] || (st.b >= 0 && e.needGrad[st.b]) {
			e.needGrad[st.out] = true
		}
	}
	for s := range pr.shape {
		if e.isParam[s] >= 0 {
			continue
		}
		n := size(concrete(pr.shape[s], maxRows))
		if s != pr.x {
			e.val[s] = make([]float64, n)
		}
		if e.needGrad[s] {
			e.grad[s] = make([]float64, n)
		}
	}
	if f32 {
		biggest := 0
		for s := range pr.shape {
			biggest = max(biggest, size(concrete(pr.shape[s], maxRows)))
		}
		e.sa, e.sb, e.sc = make([]float32, biggest), make([]float32, biggest), make([]float32, biggest)
	}
	return e
}

// dims returns every slot's [rows, cols] for n rows (a vector [m] is
// [1, m]), computed once per row count.
func (e *nativeEngine) dims(n int) [][2]int {
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

// gemm computes C = op(A) op(B) + beta C with A, B, C row-major
// [ar,ac], [br,bc], [cr,cc] (before transposition).
func (e *nativeEngine) gemm(tA, tB bool, a []float64, ar, ac int, b []float64, br, bc int, beta float64, c []float64, cr, cc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if tA {
		ta = blas.Trans
	}
	if tB {
		tb = blas.Trans
	}
	if !e.f32 {
		blas64.Gemm(ta, tb, 1, general(a, ar, ac), general(b, br, bc), beta, general(c, cr, cc))
		return
	}
	fa, fb, fc := e.sa[:ar*ac], e.sb[:br*bc], e.sc[:cr*cc]
	for i, v := range a[:ar*ac] {
		fa[i] = float32(v)
	}
	for i, v := range b[:br*bc] {
		fb[i] = float32(v)
	}
	blas32.Gemm(ta, tb, 1, blas32.General{Rows: ar, Cols: ac, Stride: ac, Data: fa},
		blas32.General{Rows: br, Cols: bc, Stride: bc, Data: fb}, 0,
		blas32.General{Rows: cr, Cols: cc, Stride: cc, Data: fc})
	c = c[:cr*cc]
	if beta == 0 {
		for i, v := range fc {
			c[i] = float64(v)
		}
		return
	}
	for i, v := range fc {
		c[i] = beta*c[i] + float64(v)
	}
}

func general(d []float64, r, c int) blas64.General {
	return blas64.General{Rows: r, Cols: c, Stride: c, Data: d[:r*c]}
}

// forward runs the ops on n rows of x (n <= maxRows).
func (e *nativeEngine) forward(x []float64, n int) {
	pr := e.pr
	d := e.dims(n)
	e.val[pr.x] = x[:n*pr.inputs]
	for _, st := range pr.steps {
		sa, so := d[st.a], d[st.out]
		out := e.val[st.out][:so[0]*so[1]]
		a := e.val[st.a][:sa[0]*sa[1]]
		switch st.op {
		case "matmul":
			sb := d[st.b]
			e.gemm(false, false, a, sa[0], sa[1], e.val[st.b], sb[0], sb[1], 0, out, so[0], so[1])
		case "add", "sub", "mul":
			sb := d[st.b]
			fastElementwise2(st.op, out, a, e.val[st.b][:sb[0]*sb[1]])
		case "relu":
			for i, v := range a {
				out[i] = max(v, 0)
			}
		case "sigmoid":
			for i, v := range a {
				out[i] = sigmoid(v)
			}
		case "tanh":
			for i, v := range a {
				out[i] = math.Tanh(v)
			}
		case "softmax", "log_softmax":
			k := sa[1]
			for r := 0; r < sa[0]; r++ {
				z, o := a[r*k:(r+1)*k], out[r*k:(r+1)*k]
				lse := logSumExp(z)
				for j, v := range z {
					if st.op == "softmax" {
						o[j] = math.Exp(v - lse)
					} else {
						o[j] = v - lse
					}
				}
			}
		}
	}
}

// step computes the mean loss over n rows and the gradient of every
// parameter (into grads, in pr.paramNames order).
func (e *nativeEngine) step(x, y []float64, n int, grads [][]float64) (float64, error) {
	e.forward(x, n)
	loss := e.backward(y, n, 1/float64(n))
	for i, s := range e.pr.paramSlot {
		copy(grads[i], e.grad[s])
	}
	return loss, nil
}

// backward seeds the loss gradient (scaled by scale per row) and
// propagates it; it returns the sum of row losses times scale.
func (e *nativeEngine) backward(y []float64, n int, scale float64) float64 {
	pr := e.pr
	d := e.dims(n)
	for s, g := range e.grad {
		if g != nil {
			clear(g[:d[s][0]*d[s][1]])
		}
	}
	var loss float64
	in := e.val[pr.lossIn]
	g := e.grad[pr.lossIn]
	k := pr.outputs
	for r := 0; r < n; r++ {
		switch pr.lossOp {
		case "bce", "bce_logits":
			z := in[r]
			loss += softplus(z) - y[r]*z
			g[r] = (sigmoid(z) - y[r]) * scale
		case "cross_entropy":
			row, gr := in[r*k:(r+1)*k], g[r*k:(r+1)*k]
			c := int(y[r])
			if pr.lossFrom == "logprobs" {
				loss -= row[c]
				gr[c] = -scale
				continue
			}
			lse := logSumExp(row)
			loss += lse - row[c]
			for j, v := range row {
				gr[j] = math.Exp(v-lse) * scale
			}
			gr[c] -= scale
		case "mse":
			d := in[r] - y[r]
			loss += d * d
			g[r] = 2 * d * scale
		}
	}
	for i := len(pr.steps) - 1; i >= 0; i-- {
		st := pr.steps[i]
		if !e.needGrad[st.out] {
			continue
		}
		so, sa := d[st.out], d[st.a]
		gout := e.grad[st.out][:so[0]*so[1]]
		out := e.val[st.out][:so[0]*so[1]]
		a := e.val[st.a][:sa[0]*sa[1]]
		var ga []float64
		if e.needGrad[st.a] {
			ga = e.grad[st.a][:sa[0]*sa[1]]
		}
		switch st.op {
		case "matmul":
			sb := d[st.b]
			b := e.val[st.b][:sb[0]*sb[1]]
			if ga != nil { // dA += dOut * B^T
				e.gemm(false, true, gout, so[0], so[1], b, sb[0], sb[1], 1, ga, sa[0], sa[1])
			}
			if e.needGrad[st.b] { // dB += A^T * dOut
				e.gemm(true, false, a, sa[0], sa[1], gout, so[0], so[1], 1, e.grad[st.b][:sb[0]*sb[1]], sb[0], sb[1])
			}
		case "add", "sub", "mul":
			sb := d[st.b]
			b := e.val[st.b][:sb[0]*sb[1]]
			var gb []float64
			if e.needGrad[st.b] {
				gb = e.grad[st.b][:sb[0]*sb[1]]
			}
			backElementwise2(st.op, gout, a, b, ga, gb)
		case "relu":
			if ga != nil {
				for j, v := range out {
					if v > 0 {
						ga[j] += gout[j]
					}
				}
			}
		case "sigmoid":
			if ga != nil {
				for j, v := range out {
					ga[j] += gout[j] * v * (1 - v)
				}
			}
		case "tanh":
			if ga != nil {
				for j, v := range out {
					ga[j] += gout[j] * (1 - v*v)
				}
			}
		case "softmax", "log_softmax":
			if ga == nil {
				break
			}
			kk := sa[1]
			for r := 0; r < sa[0]; r++ {
				o, gr, gar := out[r*kk:(r+1)*kk], gout[r*kk:(r+1)*kk], ga[r*kk:(r+1)*kk]
				var s float64
				if st.op == "softmax" {
					for j := range o {
						s += gr[j] * o[j]
					}
					for j := range o {
						gar[j] += o[j] * (gr[j] - s)
					}
				} else {
					for j := range o {
						s += gr[j]
					}
					for j := range o {
						gar[j] += gr[j] - math.Exp(o[j])*s
					}
				}
			}
		}
	}
	return loss * scale
}

// fastElementwise2 is elementwise2 with the operand sizes deciding the
// broadcast (equal sizes; one side of size 1; one side a row of the other).
func fastElementwise2(op string, out, a, b []float64) {
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
func backElementwise2(op string, gout, a, b, ga, gb []float64) {
	la, lb := len(a), len(b)
	for i, g := range gout {
		ia, ib := i%la, i%lb
		if ga != nil {
			switch op {
			case "add", "sub":
				ga[ia] += g
			case "mul":
				ga[ia] += g * b[ib]
			}
		}
		if gb != nil {
			switch op {
			case "add":
				gb[ib] += g
			case "sub":
				gb[ib] -= g
			case "mul":
				gb[ib] += g * a[ia]
			}
		}
	}
}
