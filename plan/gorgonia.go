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
	data    [][]float64 // the parameters, shared with the trainer
	drops   []gDropout
	norms   []gBatchNorm
}

// gDropout is a dropout op's mask, an input filled before each step.
type gDropout struct {
	st   step
	node *G.Node
	t    *tensor.Dense
}

// gBatchNorm reads a batch_norm op's batch statistics, to update the
// running ones after each step.
type gBatchNorm struct {
	st        step
	mean, vr  G.Value
	meanNode  *G.Node
	vrNode    *G.Node
	batchRows int
}

// newGorgonia returns the gorgonia engine for batches of up to b rows; a
// program with batch_norm, whose statistics padding rows would change,
// gets a graph for each batch size (gorgoniaSized).
func newGorgonia(pr *program, params [][]float64, b int) (gradEngine, error) {
	e, err := newGorgoniaEngine(pr, params, b)
	if err != nil || !pr.hasBatchNorm {
		return e, err
	}
	return &gorgoniaSized{pr: pr, params: params, byRows: map[int]*gorgoniaEngine{b: e}}, nil
}

// gorgoniaSized keeps a graph per batch size (a training run has two: the
// batch size and the last batch's).
type gorgoniaSized struct {
	pr     *program
	params [][]float64
	byRows map[int]*gorgoniaEngine
}

func (s *gorgoniaSized) step(x, y []float64, rows int, grads [][]float64) (float64, error) {
	e, ok := s.byRows[rows]
	if !ok {
		var err error
		if e, err = newGorgoniaEngine(s.pr, s.params, rows); err != nil {
			return 0, err
		}
		if len(s.byRows) >= 4 {
			for k, old := range s.byRows {
				old.close()
				delete(s.byRows, k)
				break
			}
		}
		s.byRows[rows] = e
	}
	return e.step(x, y, rows, grads)
}

func (s *gorgoniaSized) close() {
	for _, e := range s.byRows {
		e.close()
	}
}

func newGorgoniaEngine(pr *program, params [][]float64, b int) (eng *gorgoniaEngine, err error) {
	// gorgonia panics on some misuse; turn any panic into an error.
	defer func() {
		if r := recover(); r != nil {
			eng, err = nil, fmt.Errorf("gorgonia: building the graph: %v", r)
		}
	}()
	e := &gorgoniaEngine{pr: pr, b: b, g: G.NewGraph(), data: params}
	g := e.g
	nodes := make([]*G.Node, len(pr.shape))
	e.x = G.NewMatrix(g, tensor.Float64, G.WithShape(b, pr.inputs), G.WithName("x"))
	nodes[pr.x] = e.x
	stat := make([]bool, len(params))
	for _, i := range pr.stats {
		stat[i] = true // running statistics: not in the training graph
	}
	e.params = make([]*G.Node, len(params))
	var trainable []*G.Node
	for i, s := range pr.paramSlot {
		if stat[i] {
			continue
		}
		shape := pr.shape[s]
		val := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(params[i]))
		var n *G.Node
		if len(shape) == 1 {
			n = G.NewVector(g, tensor.Float64, G.WithShape(shape...), G.WithName(pr.paramNames[i]), G.WithValue(val))
		} else {
			n = G.NewMatrix(g, tensor.Float64, G.WithShape(shape...), G.WithName(pr.paramNames[i]), G.WithValue(val))
		}
		nodes[s] = n
		e.params[i] = n
		trainable = append(trainable, n)
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
		case "dropout":
			sh := concrete(pr.shape[st.a], b)
			d := gDropout{st: st, t: tensor.New(tensor.WithShape(sh...), tensor.WithBacking(make([]float64, size(sh))))}
			d.node = G.NewTensor(g, tensor.Float64, len(sh), G.WithShape(sh...), G.WithName(fmt.Sprintf("dropout%d", st.idx)))
			e.drops = append(e.drops, d)
			out, err = G.HadamardProd(a, d.node)
		case "layer_norm":
			out, _, _, err = gNorm(a, b, pr.shape[st.a][1], st.eps, 1)
		case "batch_norm":
			bn := gBatchNorm{st: st, batchRows: b}
			out, bn.meanNode, bn.vrNode, err = gNorm(a, b, pr.shape[st.a][1], st.eps, 0)
			e.norms = append(e.norms, bn)
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
	for i := range e.norms {
		G.Read(e.norms[i].meanNode, &e.norms[i].mean)
		G.Read(e.norms[i].vrNode, &e.norms[i].vr)
	}
	if _, err := G.Grad(e.loss, trainable...); err != nil {
		return nil, fmt.Errorf("gorgonia: gradient: %w", err)
	}
	e.vm = G.NewTapeMachine(g, G.BindDualValues(trainable...))
	e.xT = tensor.New(tensor.WithShape(b, pr.inputs), tensor.WithBacking(make([]float64, b*pr.inputs)))
	e.wT = tensor.New(tensor.WithShape(b, 1), tensor.WithBacking(make([]float64, b)))
	e.wyT = tensor.New(tensor.WithShape(e.wy.Shape()...), tensor.WithBacking(make([]float64, e.wy.Shape().TotalSize())))
	return e, nil
}

// gNorm normalises a [b,k] along axis 1 (each row: layer_norm) or 0 (each
// column: batch_norm): (a - mean) / sqrt(biased variance + eps). It also
// returns the mean and variance nodes.
func gNorm(a *G.Node, b, k int, eps float64, axis int) (out, mean, vr *G.Node, err error) {
	shape, pat := []int{b, 1}, []byte{1}
	if axis == 0 {
		shape, pat = []int{1, k}, []byte{0}
	}
	if mean, err = G.Mean(a, axis); err != nil {
		return nil, nil, nil, err
	}
	mr, err := G.Reshape(mean, shape)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := G.BroadcastSub(a, mr, nil, pat)
	if err != nil {
		return nil, nil, nil, err
	}
	sq, err := G.Square(c)
	if err != nil {
		return nil, nil, nil, err
	}
	if vr, err = G.Mean(sq, axis); err != nil {
		return nil, nil, nil, err
	}
	ve, err := G.Add(vr, G.NewConstant(eps))
	if err != nil {
		return nil, nil, nil, err
	}
	// 1/Sqrt, not G.InverseSqrt: its derivative is wrong in gorgonia
	// v0.9.18 (TestEnginesAgree finds it).
	sd, err := G.Sqrt(ve)
	if err != nil {
		return nil, nil, nil, err
	}
	is, err := G.Inverse(sd)
	if err != nil {
		return nil, nil, nil, err
	}
	ir, err := G.Reshape(is, shape)
	if err != nil {
		return nil, nil, nil, err
	}
	out, err = G.BroadcastHadamardProd(c, ir, nil, pat)
	return out, mean, vr, err
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
	for _, dr := range e.drops {
		m := dr.t.Data().([]float64)
		for i := range m {
			m[i] = dropFactor(e.pr.seed, dr.st.idx, i, dr.st.rate)
		}
		if err := G.Let(dr.node, dr.t); err != nil {
			return 0, err
		}
	}
	defer e.vm.Reset()
	if err := e.vm.RunAll(); err != nil {
		return 0, fmt.Errorf("gorgonia: %w", err)
	}
	for _, bn := range e.norms {
		if bn.batchRows != rows {
			return 0, fmt.Errorf("gorgonia: batch_norm graph of %d rows given %d", bn.batchRows, rows)
		}
		st := bn.st
		updateRunning(e.data[st.stat[0]], e.data[st.stat[1]], bn.mean.Data().([]float64), bn.vr.Data().([]float64), rows, st.mom)
	}
	for i, n := range e.params {
		if n == nil {
			clear(grads[i])
			continue
		}
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
