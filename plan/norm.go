package plan

import "math"

// The training-mode ops: dropout, layer_norm and batch_norm, shared by the
// reference forward pass (forward.go) and the native engines. The gorgonia
// engine builds the same arithmetic from its primitives.

// dropFactor is dropout's factor for element i of the op at forward index
// idx in the training step seeded by seed: 0 with probability rate, else
// 1/(1-rate) (inverted dropout, as PyTorch: inference is the identity).
// It is a hash, so every engine draws the same mask for the same step.
func dropFactor(seed uint64, idx, i int, rate float64) float64 {
	z := seed ^ (uint64(idx)+1)*0x9e3779b97f4a7c15 ^ uint64(i)*0xbf58476d1ce4e5b9
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	if float64(z>>11)/(1<<53) < rate {
		return 0
	}
	return 1 / (1 - rate)
}

// layerNorm sets out to each row of a (rows x k) minus its mean, divided
// by sqrt(its biased variance + eps), and istd (when not nil, one per
// row) to 1/sqrt(variance + eps).
func layerNorm[T floatT](a, out []T, rows, k int, eps float64, istd []T) {
	for r := 0; r < rows; r++ {
		z, o := a[r*k:(r+1)*k], out[r*k:(r+1)*k]
		var m float64
		for _, v := range z {
			m += float64(v)
		}
		m /= float64(k)
		var s float64
		for _, v := range z {
			d := float64(v) - m
			s += d * d
		}
		is := 1 / math.Sqrt(s/float64(k)+eps)
		for j, v := range z {
			o[j] = T((float64(v) - m) * is)
		}
		if istd != nil {
			istd[r] = T(is)
		}
	}
}

// batchStats sets mean and bvar (k each) to the column means and biased
// variances of a (rows x k).
func batchStats[T floatT](a []T, rows, k int, mean, bvar []float64) {
	clear(mean)
	clear(bvar)
	for r := 0; r < rows; r++ {
		for j, v := range a[r*k : (r+1)*k] {
			mean[j] += float64(v)
		}
	}
	for j := range mean {
		mean[j] /= float64(rows)
	}
	for r := 0; r < rows; r++ {
		for j, v := range a[r*k : (r+1)*k] {
			d := float64(v) - mean[j]
			bvar[j] += d * d
		}
	}
	for j := range bvar {
		bvar[j] /= float64(rows)
	}
}

// batchNorm sets out to (a - mean) / sqrt(vr + eps) column by column, and
// istd (when not nil, one per column) to 1/sqrt(vr + eps).
func batchNorm[T floatT](a, out []T, rows, k int, mean, vr []float64, eps float64, istd []T) {
	for j := 0; j < k; j++ {
		is := 1 / math.Sqrt(vr[j]+eps)
		m := mean[j]
		for r := 0; r < rows; r++ {
			out[r*k+j] = T((float64(a[r*k+j]) - m) * is)
		}
		if istd != nil {
			istd[j] = T(is)
		}
	}
}

// updateRunning moves batch_norm's running statistics towards a batch's,
// as PyTorch does: running = (1-momentum) running + momentum batch, with
// the unbiased variance (n/(n-1) times the biased one, n >= 2).
func updateRunning(rm, rv, mean, bvar []float64, n int, mom float64) {
	unb := float64(n) / float64(n-1)
	for j := range rm {
		rm[j] = (1-mom)*rm[j] + mom*mean[j]
		rv[j] = (1-mom)*rv[j] + mom*bvar[j]*unb
	}
}

// normBack adds to ga the gradient of a normalisation y = (a - mean(a)) *
// istd over groups of m values, given y (xhat) and dL/dy (g):
// da = istd/m (m g - sum(g) - y sum(g y)) within each group. Groups are
// rows when byRow (layer_norm; istd per row), else columns (batch_norm;
// istd per column) of a rows x k matrix.
func normBack[T floatT](y, g, ga []T, rows, k int, istd []T, byRow bool) {
	if byRow {
		for r := 0; r < rows; r++ {
			yy, gg, dd := y[r*k:(r+1)*k], g[r*k:(r+1)*k], ga[r*k:(r+1)*k]
			var sg, sgy float64
			for j, v := range gg {
				sg += float64(v)
				sgy += float64(v) * float64(yy[j])
			}
			f := float64(istd[r]) / float64(k)
			for j, v := range gg {
				dd[j] += T(f * (float64(k)*float64(v) - sg - float64(yy[j])*sgy))
			}
		}
		return
	}
	for j := 0; j < k; j++ {
		var sg, sgy float64
		for r := 0; r < rows; r++ {
			v := float64(g[r*k+j])
			sg += v
			sgy += v * float64(y[r*k+j])
		}
		f := float64(istd[j]) / float64(rows)
		for r := 0; r < rows; r++ {
			i := r*k + j
			ga[i] += T(f * (float64(rows)*float64(g[i]) - sg - float64(y[i])*sgy))
		}
	}
}
