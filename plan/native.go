package plan

import (
	"math"

	"gonum.org/v1/gonum/blas"
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
	scratch  []float64
}

func newNativeEngine(pr *program, params [][]float64, maxRows int) *nativeEngine {
	e := &nativeEngine{pr: pr, maxRows: maxRows, params: params}
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
	maxCols := 1
	for _, s := range pr.shape {
		maxCols = max(maxCols, s[len(s)-1])
	}
	e.scratch = make([]float64, maxCols)
	return e
}

func general(d []float64, r, c int) blas64.General {
	return blas64.General{Rows: r, Cols: c, Stride: c, Data: d[:r*c]}
}

// forward runs the ops on n rows of x (n <= maxRows).
func (e *nativeEngine) forward(x []float64, n int) {
	pr := e.pr
	e.val[pr.x] = x[:n*pr.inputs]
	for _, st := range pr.steps {
		sa := concrete(pr.shape[st.a], n)
		so := concrete(pr.shape[st.out], n)
		out := e.val[st.out][:size(so)]
		a := e.val[st.a][:size(sa)]
		switch st.op {
		case "matmul":
			sb := concrete(pr.shape[st.b], n)
			blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, general(a, sa[0], sa[1]),
				general(e.val[st.b], sb[0], sb[1]), 0, general(out, so[0], so[1]))
		case "add", "sub", "mul":
			sb := concrete(pr.shape[st.b], n)
			elementwise2(st.op, out, a, e.val[st.b][:size(sb)], sa, sb)
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
	for s, g := range e.grad {
		if g != nil {
			clear(g[:min(len(g), size(concrete(pr.shape[s], n)))])
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
		so := concrete(pr.shape[st.out], n)
		sa := concrete(pr.shape[st.a], n)
		gout := e.grad[st.out][:size(so)]
		out := e.val[st.out][:size(so)]
		a := e.val[st.a][:size(sa)]
		var ga []float64
		if e.needGrad[st.a] {
			ga = e.grad[st.a][:size(sa)]
		}
		switch st.op {
		case "matmul":
			sb := concrete(pr.shape[st.b], n)
			b := e.val[st.b][:size(sb)]
			if ga != nil { // dA += dOut * B^T
				blas64.Gemm(blas.NoTrans, blas.Trans, 1, general(gout, so[0], so[1]),
					general(b, sb[0], sb[1]), 1, general(ga, sa[0], sa[1]))
			}
			if e.needGrad[st.b] { // dB += A^T * dOut
				blas64.Gemm(blas.Trans, blas.NoTrans, 1, general(a, sa[0], sa[1]),
					general(gout, so[0], so[1]), 1, general(e.grad[st.b][:size(sb)], sb[0], sb[1]))
			}
		case "add", "sub", "mul":
			sb := concrete(pr.shape[st.b], n)
			b := e.val[st.b][:size(sb)]
			var gb []float64
			if e.needGrad[st.b] {
				gb = e.grad[st.b][:size(sb)]
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
