package plan

import (
	crand "crypto/rand"
	"fmt"
	"math"
	"math/rand/v2"
)

// dpState runs DP-SGD (Abadi et al. 2016) so that it matches the
// accountant (Epsilon, DPSteps): every step takes a Poisson sample of the
// training rows, each row independently with probability
// q = batch_size/rows; each sampled row's gradient is clipped to L2 norm
// max_grad_norm; Gaussian noise of standard deviation
// noise_multiplier*max_grad_norm is added to every coordinate of the sum;
// the result is divided by the expected batch size q*rows. An epoch is
// ceil(rows/batch_size) steps. Sampling and noise come from a ChaCha8
// generator keyed by crypto/rand: a data scientist who knew them could
// remove the noise.
type dpState struct {
	eng           gradEngine // per-example gradients (batch of one)
	pr            *program
	rows          []int
	skip          []bool // rows whose gradient counts as zero (may be nil)
	q, sigma, c   float64
	expected      float64
	stepsPerEpoch int
	rng           *rand.Rand
	one           [][]float64 // one row's gradient
	x, y          []float64   // every row's inputs and label
}

func newDPState(p *Plan, pr *program, params [][]float64, rows []int, skip []bool, kind Engine) (*dpState, error) {
	q, steps, err := p.DPSteps(len(rows))
	if err != nil {
		return nil, err
	}
	if kind == "" || kind == EngineNative {
		kind = EngineNative64 // per-example gradients are tiny products: float64 costs nothing
	}
	eng, err := newEngine(kind, pr, params, 1)
	if err != nil {
		return nil, err
	}
	var key [32]byte
	if _, err := crand.Read(key[:]); err != nil {
		eng.close()
		return nil, fmt.Errorf("dp-sgd: seeding the noise generator: %w", err)
	}
	d := p.Privacy.DPSGD
	return &dpState{
		eng: eng, pr: pr, rows: rows, skip: skip, q: q, sigma: d.NoiseMultiplier, c: d.MaxGradNorm,
		expected: q * float64(len(rows)), stepsPerEpoch: steps / p.Train.Epochs,
		rng: rand.New(rand.NewChaCha8(key)), one: zerosLike(params),
	}, nil
}

func zerosLike(p [][]float64) [][]float64 {
	out := make([][]float64, len(p))
	for i := range p {
		out[i] = make([]float64, len(p[i]))
	}
	return out
}

// step writes one noisy, clipped, averaged gradient into grads.
func (s *dpState) step(x, y []float64, d int, grads [][]float64) error {
	for _, g := range grads {
		clear(g)
	}
	for _, r := range s.rows {
		if s.rng.Float64() >= s.q {
			continue
		}
		if s.skip != nil && s.skip[r] {
			continue // sampled, with a zero gradient
		}
		if s.pr.hasDropout {
			s.pr.seed = s.rng.Uint64() // each example its own dropout mask
		}
		if _, err := s.eng.step(x[r*d:(r+1)*d], y[r:r+1], 1, s.one); err != nil {
			return err
		}
		scale := clipScale(s.one, s.c)
		if scale == 0 {
			continue
		}
		for i, g := range s.one {
			for j, v := range g {
				grads[i][j] += scale * v
			}
		}
	}
	sd := s.sigma * s.c
	for _, g := range grads {
		for j := range g {
			g[j] = (g[j] + sd*s.rng.NormFloat64()) / s.expected
		}
	}
	return nil
}

// clipScale returns the factor that clips the gradient g to L2 norm at most
// c: 1 if it is within, c/norm if not, and 0 if any component is NaN or
// infinite, so that such a gradient counts as zero and the sum's
// sensitivity stays c whatever the data holds. The norm is computed scaled by
// the largest component, so finite gradients too large to square still clip.
func clipScale(g [][]float64, c float64) float64 {
	var top float64
	for _, gi := range g {
		for _, v := range gi {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return 0
			}
			top = max(top, math.Abs(v))
		}
	}
	if top == 0 {
		return 1
	}
	var s float64
	for _, gi := range g {
		for _, v := range gi {
			s += (v / top) * (v / top)
		}
	}
	if n := top * math.Sqrt(s); n > c {
		return c / n
	}
	return 1
}
