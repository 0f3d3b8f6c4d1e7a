package plan

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// gorgoniaEngine computes a batch's mean loss and gradients with gorgonia's
// reverse-mode autodiff. The graph has a fixed batch size B; a smaller batch
// is padded with rows of weight zero, so its gradient is exactly the mean
// over its real rows. The graph and tape machine are built once.
type gorgoniaEngine struct {
	pr      *program
	b       int
	g       *G.ExprGraph
	vm      G.VM
	x, w    *G.Node // x [B,D]; w [B,1] row weights (1/rows or 0)
	wy      *G.Node // bce: w*y [B,1]; cross_entropy: w*onehot(y) [B,K]; mse: y [B,1]
	params  []*G.Node
	loss    *G.Node
	lossVal G.Value
	xT      *tensor.Dense
	wT      *tensor.Dense
	wyT     *tensor.Dense
}

func newGorgoniaEngine(pr *program, params [][]float64, b int) (eng *gorgoniaEngine, err error) {
	// gorgonia panics on some misuse; turn any panic into an error.
	defer func() {
		if r := recover(); r != nil {
			eng, err = nil, fmt.Errorf("gorgonia: building the graph: %v", r)
		}
	}()
	e := &gorgoniaEngine{pr: pr, b: b, g: G.NewGraph()}
	g := e.g
	nodes := make([]*G.Node, len(pr.shape))
	e.x = G.NewMatrix(g, tensor.Float64, G.WithShape(b, pr.inputs), G.WithName("x"))
	nodes[pr.x] = e.x
	for i, s := range pr.paramSlot {
		shape := pr.shape[s]
		val := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(params[i]))
		var n *G.Node
		if len(shape) == 1 {
			n = G.NewVector(g, tensor.Float64, G.WithShape(shape...), G.WithName(pr.paramNames[i]), G.WithValue(val))
		} else {
			n = G.NewMatrix(g, tensor.Float64, G.WithShape(shape...), G.WithName(pr.paramNames[i]), G.WithValue(val))
		}
		nodes[s] = n
		e.params = append(e.params, n)
	}
	for _, st := range pr.steps {
		a := nodes[st.a]
		var out *G.Node
		switch st.op {
		case "matmul":
			out, err = G.Mul(a, nodes[st.b])
		case "add", "sub", "mul":
			out, err = gBroadcast(st.op, a, nodes[st.b], concrete(pr.shape[st.a], b), concrete(pr.shape[st.b], b))
		case "relu":
			out, err = G.Rectify(a)
		case "sigmoid":
			out, err = G.Sigmoid(a)
		case "tanh":
			out, err = G.Tanh(a)
		case "softmax":
			out, err = G.SoftMax(a, 1)
		case "log_softmax":
			out, err = gLogSoftmax(a, b)
		default:
			err = fmt.Errorf("op %q", st.op)
		}
		if err != nil {
			return nil, fmt.Errorf("gorgonia: forward[%d] %s: %w", st.idx, st.op, err)
		}
		nodes[st.out] = out
	}
	e.w = G.NewMatrix(g, tensor.Float64, G.WithShape(b, 1), G.WithName("w"))
	in := nodes[pr.lossIn]
	switch pr.lossOp {
	case "bce", "bce_logits":
		// mean of softplus(z) - y*z, the stable form of binary cross-entropy.
		e.wy = G.NewMatrix(g, tensor.Float64, G.WithShape(b, 1), G.WithName("wy"))
		sp := G.Must(G.Softplus(in))
		l1 := G.Must(G.Sum(G.Must(G.HadamardProd(e.w, sp))))
		l2 := G.Must(G.Sum(G.Must(G.HadamardProd(e.wy, in))))
		e.loss, err = G.Sub(l1, l2)
	case "cross_entropy":
		e.wy = G.NewMatrix(g, tensor.Float64, G.WithShape(b, pr.outputs), G.WithName("wy"))
		lp := in
		if pr.lossFrom == "logits" {
			lp, err = gLogSoftmax(in, b)
			if err != nil {
				return nil, fmt.Errorf("gorgonia: loss: %w", err)
			}
		}
		e.loss, err = G.Neg(G.Must(G.Sum(G.Must(G.HadamardProd(e.wy, lp)))))
	case "mse":
		e.wy = G.NewMatrix(g, tensor.Float64, G.WithShape(b, 1), G.WithName("wy"))
		d := G.Must(G.Sub(in, e.wy))
		e.loss, err = G.Sum(G.Must(G.HadamardProd(e.w, G.Must(G.Square(d)))))
	}
	if err != nil {
		return nil, fmt.Errorf("gorgonia: loss: %w", err)
	}
	G.Read(e.loss, &e.lossVal)
	if _, err := G.Grad(e.loss, e.params...); err != nil {
		return nil, fmt.Errorf("gorgonia: gradient: %w", err)
	}
	e.vm = G.NewTapeMachine(g, G.BindDualValues(e.params...))
	e.xT = tensor.New(tensor.WithShape(b, pr.inputs), tensor.WithBacking(make([]float64, b*pr.inputs)))
	e.wT = tensor.New(tensor.WithShape(b, 1), tensor.WithBacking(make([]float64, b)))
	e.wyT = tensor.New(tensor.WithShape(e.wy.Shape()...), tensor.WithBacking(make([]float64, e.wy.Shape().TotalSize())))
	return e, nil
}

// gLogSoftmax is z - log(sum(exp(z), row)), composed from primitives:
// gorgonia v0.9.18's LogSoftMax hashes like SoftMax, so the graph merges
// the two when both are applied to one node (and its LogSumExp is wrong).
func gLogSoftmax(z *G.Node, b int) (*G.Node, error) {
	e, err := G.Exp(z)
	if err != nil {
		return nil, err
	}
	s, err := G.Sum(e, 1)
	if err != nil {
		return nil, err
	}
	l, err := G.Log(s)
	if err != nil {
		return nil, err
	}
	l, err = G.Reshape(l, []int{b, 1})
	if err != nil {
		return nil, err
	}
	return G.BroadcastSub(z, l, nil, []byte{1})
}

// gBroadcast builds add/sub/mul with the plan's broadcast rule.
func gBroadcast(op string, a, b *G.Node, sa, sb []int) (*G.Node, error) {
	plain := map[string]func(a, b *G.Node) (*G.Node, error){"add": G.Add, "sub": G.Sub, "mul": G.HadamardProd}[op]
	bcast := map[string]func(a, b *G.Node, l, r []byte) (*G.Node, error){
		"add": G.BroadcastAdd, "sub": G.BroadcastSub, "mul": G.BroadcastHadamardProd}[op]
	if len(sa) == len(sb) && size(sa) == size(sb) {
		return plain(a, b)
	}
	// The smaller side becomes a [1,m] or [1,1] matrix (or stays a [1]
	// vector against a vector) broadcast along the size-1 axes.
	widen := func(small *G.Node, ss, big []int) (*G.Node, []byte, error) {
		switch {
		case len(big) == 1:
			return small, []byte{0}, nil
		case ss[0] == 1:
			r, err := G.Reshape(small, []int{1, 1})
			return r, []byte{0, 1}, err
		default:
			r, err := G.Reshape(small, []int{1, big[1]})
			return r, []byte{0}, err
		}
	}
	if len(sb) == 1 && (sb[0] == 1 || len(sa) == 2) {
		bb, pat, err := widen(b, sb, sa)
		if err != nil {
			return nil, err
		}
		return bcast(a, bb, nil, pat)
	}
	aa, pat, err := widen(a, sa, sb)
	if err != nil {
		return nil, err
	}
	return bcast(aa, b, pat, nil)
}

// step computes the mean loss over rows (<= B) of x/y and writes the
// gradient of every parameter into grads.
func (e *gorgoniaEngine) step(x, y []float64, rows int, grads [][]float64) (loss float64, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("gorgonia: %v", r)
		}
	}()
	d := e.pr.inputs
	xb := e.xT.Data().([]float64)
	copy(xb, x[:rows*d])
	clear(xb[rows*d:])
	wb := e.wT.Data().([]float64)
	wyb := e.wyT.Data().([]float64)
	clear(wb)
	clear(wyb)
	inv := 1 / float64(rows)
	for r := 0; r < rows; r++ {
		wb[r] = inv
		switch e.pr.lossOp {
		case "bce", "bce_logits":
			wyb[r] = inv * y[r]
		case "cross_entropy":
			wyb[r*e.pr.outputs+int(y[r])] = inv
		case "mse":
			wyb[r] = y[r]
		}
	}
	if err := G.Let(e.x, e.xT); err != nil {
		return 0, err
	}
	if err := G.Let(e.w, e.wT); err != nil {
		return 0, err
	}
	if err := G.Let(e.wy, e.wyT); err != nil {
		return 0, err
	}
	defer e.vm.Reset()
	if err := e.vm.RunAll(); err != nil {
		return 0, fmt.Errorf("gorgonia: %w", err)
	}
	for i, n := range e.params {
		gv, err := n.Grad()
		if err != nil {
			return 0, fmt.Errorf("gorgonia: gradient of %s: %w", e.pr.paramNames[i], err)
		}
		gd := gv.Data().([]float64)
		copy(grads[i], gd)
		clear(gd) // gorgonia accumulates into bound gradients; solvers zero them, so do we
	}
	return e.lossVal.Data().(float64), nil
}

func (e *gorgoniaEngine) close() {
	if e.vm != nil {
		e.vm.Close()
	}
}
