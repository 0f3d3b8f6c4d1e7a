package plan

import (
	"errors"
	"fmt"
	"math"
)

// The Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism
// (I. Mironov, K. Talwar, L. Zhang, "Rényi Differential Privacy of the
// Sampled Gaussian Mechanism", 2019, arXiv:1908.10530), with the RDP to
// (epsilon, delta) conversion of Balle et al. 2020 ("Hypothesis testing
// interpretations and Rényi differential privacy", Theorem 21), as used by
// TF Privacy / dp_accounting and Opacus.

// DefaultOrders are the Rényi orders searched for the best epsilon (those of
// Opacus: 1.1 to 10.9 by 0.1, then 12 to 63).
var DefaultOrders = func() []float64 {
	var o []float64
	for x := 1; x < 100; x++ {
		o = append(o, 1+float64(x)/10)
	}
	for a := 12; a < 64; a++ {
		o = append(o, float64(a))
	}
	return o
}()

// Epsilon returns the epsilon at which `steps` rounds of the Gaussian
// mechanism with noise multiplier noiseMultiplier (noise standard deviation
// over L2 sensitivity), each on a Poisson sample of rate samplingRate, are
// (epsilon, delta)-differentially private (add/remove-one neighbours).
func Epsilon(samplingRate, noiseMultiplier float64, steps int, delta float64) (float64, error) {
	if err := checkMechanism(samplingRate, noiseMultiplier, steps); err != nil {
		return 0, err
	}
	if !(delta > 0 && delta < 1) {
		return 0, fmt.Errorf("accountant: delta is %v, must be > 0 and < 1", delta)
	}
	rdp := make([]float64, len(DefaultOrders))
	for i, a := range DefaultOrders {
		r, err := RDP(samplingRate, noiseMultiplier, steps, a)
		if err != nil {
			return 0, err
		}
		rdp[i] = r
	}
	eps, _, err := EpsilonFromRDP(DefaultOrders, rdp, delta)
	return eps, err
}

func checkMechanism(q, sigma float64, steps int) error {
	if !(q >= 0 && q <= 1) {
		return fmt.Errorf("accountant: sampling rate is %v, must be 0 to 1", q)
	}
	if !(sigma > 0) || math.IsInf(sigma, 0) {
		return fmt.Errorf("accountant: noise multiplier is %v, must be > 0", sigma)
	}
	if steps < 0 {
		return fmt.Errorf("accountant: steps is %d, must be >= 0", steps)
	}
	return nil
}

// RDP returns the Rényi divergence of order `order` (> 1) accumulated by
// `steps` rounds of the sampled Gaussian mechanism.
func RDP(samplingRate, noiseMultiplier float64, steps int, order float64) (float64, error) {
	if err := checkMechanism(samplingRate, noiseMultiplier, steps); err != nil {
		return 0, err
	}
	if !(order > 1) {
		return 0, fmt.Errorf("accountant: order is %v, must be > 1", order)
	}
	q, s := samplingRate, noiseMultiplier
	switch {
	case q == 0 || steps == 0:
		return 0, nil
	case math.IsInf(order, 1):
		return math.Inf(1), nil
	case q == 1:
		return float64(steps) * order / (2 * s * s), nil
	}
	var logA float64
	if order == math.Trunc(order) && order < 1e6 {
		logA = logAInt(q, s, int(order))
	} else {
		logA = logAFrac(q, s, order)
	}
	return float64(steps) * logA / (order - 1), nil
}

// logAInt is log E[(mu(z)/mu0(z))^alpha] for integer alpha, by the binomial
// expansion (Mironov et al. 2019, section 3.3).
func logAInt(q, s float64, alpha int) float64 {
	logA := math.Inf(-1)
	lq, l1q := math.Log(q), math.Log1p(-q)
	for i := 0; i <= alpha; i++ {
		lc := lbinom(float64(alpha), float64(i))
		t := lc + float64(i)*lq + float64(alpha-i)*l1q + float64(i*i-i)/(2*s*s)
		logA = logAdd(logA, t)
	}
	return logA
}

// logAFrac is the same for fractional alpha: the series of Mironov et al.
// 2019 (section 3.3), split at z0, with every term counted by its absolute
// value. That bounds A from above (the exact series alternates in sign past
// i > alpha), so epsilon is never underestimated; it is what Google's
// dp_accounting computes (Opacus keeps the signs, up to ~3% lower at order
// 1.5, identical at integer orders).
func logAFrac(q, s, alpha float64) float64 {
	a0, a1 := math.Inf(-1), math.Inf(-1)
	z0 := s*s*math.Log(1/q-1) + 0.5
	lq, l1q := math.Log(q), math.Log1p(-q)
	last0, last1 := math.Inf(-1), math.Inf(-1)
	for i := 0; i < 10000; i++ {
		fi, j := float64(i), alpha-float64(i)
		lc := lbinom(alpha, fi)
		t0 := lc + fi*lq + j*l1q
		t1 := lc + j*lq + fi*l1q
		e0 := math.Log(0.5) + logErfc((fi-z0)/(math.Sqrt2*s))
		e1 := math.Log(0.5) + logErfc((z0-j)/(math.Sqrt2*s))
		s0 := t0 + (fi*fi-fi)/(2*s*s) + e0
		s1 := t1 + (j*j-j)/(2*s*s) + e1
		a0, a1 = logAdd(a0, s0), logAdd(a1, s1)
		if s0 < last0 && s1 < last1 && max(s0, s1) < logAdd(a0, a1)-30 {
			break
		}
		last0, last1 = s0, s1
	}
	return logAdd(a0, a1)
}

// lbinom is log|binom(n, k)| for real n (log-gamma magnitudes).
func lbinom(n, k float64) float64 {
	a, _ := math.Lgamma(n + 1)
	b, _ := math.Lgamma(k + 1)
	c, _ := math.Lgamma(n - k + 1)
	return a - b - c
}

func logAdd(a, b float64) float64 {
	if math.IsInf(a, -1) {
		return b
	}
	if math.IsInf(b, -1) {
		return a
	}
	m := max(a, b)
	return m + math.Log1p(math.Exp(min(a, b)-m))
}

// logErfc is log(erfc(x)), with an asymptotic expansion where erfc
// underflows.
func logErfc(x float64) float64 {
	if x < 20 {
		return math.Log(math.Erfc(x))
	}
	x2 := x * x
	return -x2 - math.Log(x) - 0.5*math.Log(math.Pi) +
		math.Log1p(-1/(2*x2)+3/(4*x2*x2)-15/(8*x2*x2*x2))
}

// EpsilonFromRDP converts RDP values at the given orders to the smallest
// epsilon at delta, and the order that achieves it (Balle et al. 2020).
func EpsilonFromRDP(orders, rdp []float64, delta float64) (eps, order float64, err error) {
	if len(orders) != len(rdp) || len(orders) == 0 {
		return 0, 0, errors.New("accountant: orders and rdp must be non-empty and of equal length")
	}
	if !(delta > 0 && delta < 1) {
		return 0, 0, fmt.Errorf("accountant: delta is %v, must be > 0 and < 1", delta)
	}
	eps, order = math.Inf(1), math.NaN()
	for i, a := range orders {
		r := rdp[i]
		if !(a >= 1) || r < 0 || math.IsNaN(r) {
			return 0, 0, fmt.Errorf("accountant: order %v with rdp %v", a, r)
		}
		var e float64
		switch {
		case delta*delta+math.Expm1(-r) > 0: // delta <= sqrt(1-exp(-KL)) already
			e = 0
		case a > 1.01:
			e = r + math.Log1p(-1/a) - math.Log(delta*a)/(a-1)
		default:
			e = math.Inf(1)
		}
		if e < eps {
			eps, order = e, a
		}
	}
	return max(eps, 0), order, nil
}

// DPSteps returns the sampling rate and the number of steps of DP-SGD for a
// plan trained on rows rows: each step takes a Poisson sample with rate
// batch_size/rows, and an epoch is ceil(rows/batch_size) steps.
func (p *Plan) DPSteps(rows int) (samplingRate float64, steps int, err error) {
	if rows < 1 {
		return 0, 0, fmt.Errorf("rows is %d, must be >= 1", rows)
	}
	bs := min(p.Train.BatchSize, rows)
	perEpoch := (rows + bs - 1) / bs
	return float64(bs) / float64(rows), p.Train.Epochs * perEpoch, nil
}

// Epsilon returns the epsilon the plan's DP-SGD spends on a data set of rows
// rows at the plan's delta. The gateway computes it; it is never taken from
// a client or a node.
func (p *Plan) Epsilon(rows int) (float64, error) {
	if p.Privacy == nil || p.Privacy.DPSGD == nil {
		return 0, errors.New("plan has no privacy.dp_sgd: its training is not differentially private")
	}
	q, steps, err := p.DPSteps(rows)
	if err != nil {
		return 0, err
	}
	return Epsilon(q, p.Privacy.DPSGD.NoiseMultiplier, steps, p.Privacy.Delta)
}
