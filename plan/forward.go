package plan

import (
	"math"
	"sort"
)

// This file is the reference semantics of a plan's forward pass in plain
// float64 Go: what Predict computes, and what anyone can recompute from a
// model's plan.forward, params and preprocess.

// concrete replaces the batch dimension by n.
func concrete(s []int, n int) []int {
	out := make([]int, len(s))
	for i, d := range s {
		if d == Batch {
			d = n
		}
		out[i] = d
	}
	return out
}

func size(s []int) int {
	k := 1
	for _, d := range s {
		k *= d
	}
	return k
}

// forward evaluates the program on n rows of x in inference mode (dropout
// is the identity; batch_norm uses its running statistics). params are in
// pr.paramNames order. It returns every slot's value.
func (pr *program) forward(params [][]float64, x []float64, n int) [][]float64 {
	return pr.run(params, x, n, false)
}

// run is forward, in training mode when train is set: dropout draws its
// mask from pr.seed, batch_norm normalises with the batch's statistics
// (the running statistics are left as they are).
func (pr *program) run(params [][]float64, x []float64, n int, train bool) [][]float64 {
	vals := make([][]float64, len(pr.shape))
	vals[pr.x] = x
	for i, s := range pr.paramSlot {
		vals[s] = params[i]
	}
	for _, st := range pr.steps {
		out := make([]float64, size(concrete(pr.shape[st.out], n)))
		a := vals[st.a]
		sa := concrete(pr.shape[st.a], n)
		switch st.op {
		case "matmul":
			sb := concrete(pr.shape[st.b], n)
			matmul(out, a, vals[st.b], sa[0], sa[1], sb[1])
		case "add", "sub", "mul":
			sb := concrete(pr.shape[st.b], n)
			b := vals[st.b]
			elementwise2(st.op, out, a, b, sa, sb)
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
		case "dropout":
			copy(out, a)
			if train && st.rate > 0 {
				for i := range out {
					out[i] *= dropFactor(pr.seed, st.idx, i, st.rate)
				}
			}
		case "layer_norm":
			layerNorm(a, out, sa[0], sa[1], st.eps, nil)
		case "batch_norm":
			mean, vr := vals[st.b], vals[st.c]
			if train {
				mean, vr = make([]float64, sa[1]), make([]float64, sa[1])
				batchStats(a, sa[0], sa[1], mean, vr)
			}
			batchNorm(a, out, sa[0], sa[1], mean, vr, st.eps, nil)
		case "softmax", "log_softmax":
			rows, k := sa[0], sa[1]
			for r := 0; r < rows; r++ {
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
		vals[st.out] = out
	}
	return vals
}

// elementwise2 is add/sub/mul with the broadcast rule of broadcastShape.
func elementwise2(op string, out, a, b []float64, sa, sb []int) {
	f := func(u, v float64) float64 {
		switch op {
		case "add":
			return u + v
		case "sub":
			return u - v
		}
		return u * v
	}
	switch {
	case len(a) == len(b) && len(sa) == len(sb):
		for i := range out {
			out[i] = f(a[i], b[i])
		}
	case len(sb) == 1 && sb[0] == 1:
		for i := range out {
			out[i] = f(a[i], b[0])
		}
	case len(sa) == 1 && sa[0] == 1:
		for i := range out {
			out[i] = f(a[0], b[i])
		}
	case len(sb) == 1: // a [r,m], b [m]
		m := sb[0]
		for i := range out {
			out[i] = f(a[i], b[i%m])
		}
	default: // a [m], b [r,m]
		m := sa[0]
		for i := range out {
			out[i] = f(a[i%m], b[i])
		}
	}
}

// matmul: out[r,m] = a[r,k] * b[k,m].
func matmul(out, a, b []float64, r, k, m int) {
	for i := range out {
		out[i] = 0
	}
	for i := 0; i < r; i++ {
		o := out[i*m : (i+1)*m]
		for p := 0; p < k; p++ {
			av := a[i*k+p]
			if av == 0 {
				continue
			}
			br := b[p*m : (p+1)*m]
			for j, bv := range br {
				o[j] += av * bv
			}
		}
	}
}

func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

// softplus is log(1+exp(z)), stable for any z.
func softplus(z float64) float64 {
	return max(z, 0) + math.Log1p(math.Exp(-math.Abs(z)))
}

func logSumExp(z []float64) float64 {
	m := math.Inf(-1)
	for _, v := range z {
		m = max(m, v)
	}
	if math.IsInf(m, 0) {
		return m
	}
	var s float64
	for _, v := range z {
		s += math.Exp(v - m)
	}
	return m + math.Log(s)
}

// rowLosses returns each row's loss and score from the forward values:
// binary: score is P(y=1); multiclass: the predicted class; regression: the
// prediction.
func (pr *program) rowLosses(vals [][]float64, y []float64, n int) (loss, score []float64) {
	loss = make([]float64, n)
	score = make([]float64, n)
	in := vals[pr.lossIn]
	k := pr.outputs
	for r := 0; r < n; r++ {
		switch pr.lossOp {
		case "bce", "bce_logits":
			z := in[r]
			loss[r] = softplus(z) - y[r]*z
			score[r] = sigmoid(z)
		case "cross_entropy":
			row := in[r*k : (r+1)*k]
			c := int(y[r])
			if pr.lossFrom == "logprobs" {
				loss[r] = -row[c]
			} else {
				loss[r] = logSumExp(row) - row[c]
			}
			best := 0
			for j, v := range row {
				if v > row[best] {
					best = j
				}
			}
			score[r] = float64(best)
		case "mse":
			d := in[r] - y[r]
			loss[r] = d * d
			score[r] = in[r]
		}
	}
	return loss, score
}

// summarize returns mean loss, accuracy and (binary only) AUC.
func (pr *program) summarize(loss, score, y []float64) (meanLoss, acc, auc float64) {
	n := len(loss)
	if n == 0 {
		return 0, 0, 0
	}
	var s float64
	for _, l := range loss {
		s += l
	}
	meanLoss = s / float64(n)
	switch pr.task {
	case TaskBinary:
		hit := 0
		for i := range score {
			if (score[i] > 0.5) == (y[i] == 1) {
				hit++
			}
		}
		acc = float64(hit) / float64(n)
		auc = rocAUC(score, y)
	case TaskMulticlass:
		hit := 0
		for i := range score {
			if score[i] == y[i] {
				hit++
			}
		}
		acc = float64(hit) / float64(n)
	}
	return meanLoss, acc, auc
}

// rocAUC is the area under the ROC curve (ties count half), or 0 when one
// class is absent.
func rocAUC(score, y []float64) float64 {
	idx := make([]int, len(score))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return score[idx[a]] < score[idx[b]] })
	var pos, neg float64
	for _, v := range y {
		if v == 1 {
			pos++
		} else {
			neg++
		}
	}
	if pos == 0 || neg == 0 {
		return 0
	}
	// Sum of positive ranks with average ranks for ties (Mann-Whitney U).
	var rankSum float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && score[idx[j]] == score[idx[i]] {
			j++
		}
		avg := float64(i+j+1) / 2 // ranks i+1..j
		for k := i; k < j; k++ {
			if y[idx[k]] == 1 {
				rankSum += avg
			}
		}
		i = j
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}
