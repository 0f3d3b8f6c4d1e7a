package plan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/fedgrid/fedgrid/dataset"
)

// Progress is reported once per epoch.
type Progress struct {
	Epoch              int     `json:"epoch"` // 1-based
	Epochs             int     `json:"epochs"`
	Loss               float64 `json:"loss"` // mean training loss of the epoch's batches
	ValidationLoss     float64 `json:"validation_loss"`
	ValidationAccuracy float64 `json:"validation_accuracy"`
	ValidationAUC      float64 `json:"validation_auc"`
}

// TrainOptions tune a Train call.
type TrainOptions struct {
	// Progress, when set, is called once per epoch, from Train's goroutine.
	Progress func(Progress)
	// Init, when set, gives starting values for parameters (for example a
	// hosted model's); parameters it lacks are initialized from the plan.
	Init map[string]Tensor
	// Engine computes the gradients: EngineNative (the default),
	// EngineNative64, or EngineGorgonia (the reference the native engines
	// are tested against).
	Engine Engine
	// MaxMemory, when > 0, is the memory (bytes, as TrainMemory counts)
	// the run may use: a run whose data does not fit streams it from the
	// source through a bounded buffer instead (TrainSource).
	MaxMemory int64
	// BufferRows, when > 0, makes TrainSource stream with a shuffle buffer
	// of this many rows whatever the memory; 0 sizes the buffer from
	// MaxMemory (at most DefaultStreamBuffer bytes).
	BufferRows int
	// ScratchDir, when set, lets a streamed run keep the rows it has read
	// and preprocessed in a temporary file in this directory (removed when
	// the run ends), so that every epoch after the first reads them from
	// there with one read per block instead of reading and preprocessing
	// the source again. The file holds the very values the run would
	// compute again, so the model is the same with or without it. It is
	// not made when it would be more than ScratchMax bytes (when > 0):
	// the rows times (inputs + 1) times 8. A run whose scratch file cannot
	// be created or written reads the source every epoch.
	ScratchDir string
	ScratchMax int64
}

// Engine names a gradient engine.
type Engine string

// Engines.
const (
	EngineNative   Engine = "native"   // float32 matrix products, float64 elsewhere
	EngineNative64 Engine = "native64" // all float64
	EngineGorgonia Engine = "gorgonia" // gorgonia autodiff, float64: the reference
)

// ParseEngine checks an engine name given by a person: "native" or
// "gorgonia" ("native64" too, the all-float64 native engine). "" is native.
func ParseEngine(s string) (Engine, error) {
	switch e := Engine(s); e {
	case "":
		return EngineNative, nil
	case EngineNative, EngineNative64, EngineGorgonia:
		return e, nil
	}
	return "", fmt.Errorf("unknown engine %q: use native or gorgonia", s)
}

// gradEngine computes the mean loss over rows (<= its batch size) and the
// gradient of every parameter.
type gradEngine interface {
	step(x, y []float64, rows int, grads [][]float64) (float64, error)
	close()
}

func newEngine(kind Engine, pr *program, params [][]float64, bs int) (gradEngine, error) {
	switch kind {
	case "", EngineNative:
		return newNativeEngine(pr, params, bs, true), nil
	case EngineNative64:
		return newNativeEngine(pr, params, bs, false), nil
	case EngineGorgonia:
		return newGorgonia(pr, params, bs)
	}
	return nil, fmt.Errorf("train: unknown engine %q", kind)
}

// Train trains the plan on t: a validation split of train.validation_fraction
// (seeded by train.seed), preprocessing fitted on the training rows,
// mini-batches of train.batch_size in a seeded shuffle (the last batch of an
// epoch may be smaller and counts with its true size), gradients from
// the engine (see TrainOptions.Engine), and the plan's optimizer. It is
// deterministic for a given plan and table, and stops with ctx's error
// between steps once ctx is done.
//
// With privacy.dp_sgd it runs DP-SGD instead (see dpState): Poisson
// sampling, per-example clipping, Gaussian noise from a cryptographic
// generator (so a private run is not reproducible from the seed, by
// design), no validation split and no training loss in the metrics;
// Model.Privacy carries the epsilon of Plan.Epsilon.
func Train(ctx context.Context, p *Plan, t *dataset.Table, opt TrainOptions) (*Model, error) {
	if t == nil {
		return nil, errors.New("train: no data")
	}
	return TrainSource(ctx, p, t, opt)
}

// TrainSource is Train over any dataset.Source. When the whole run fits in
// opt.MaxMemory (or no limit is given) it reads every row into memory and
// trains exactly as Train does on a table; otherwise, and whenever
// opt.BufferRows is set, it streams: see trainStream. DP-SGD samples any
// training row at every step, so a private run always reads every row.
func TrainSource(ctx context.Context, p *Plan, src dataset.Source, opt TrainOptions) (*Model, error) {
	if src == nil {
		return nil, errors.New("train: no data")
	}
	if _, err := Check(p, src.Columns()); err != nil {
		return nil, err
	}
	n := src.NumRows()
	if err := p.CheckWork(n); err != nil {
		return nil, err
	}
	pr, err := compile(p)
	if err != nil {
		return nil, err
	}
	rd, err := newInputReader(p, pr, src.Columns())
	if err != nil {
		return nil, err
	}
	if need := saturate(pr.memory(p, n)); opt.BufferRows > 0 || (opt.MaxMemory > 0 && need > opt.MaxMemory) {
		if p.Privacy != nil {
			return nil, fmt.Errorf("train: DP-SGD samples any training row at every step, so it reads every row into memory: that needs about %s, more than the %s allowed", FormatBytes(need), FormatBytes(opt.MaxMemory))
		}
		return trainStream(ctx, p, pr, src, rd, opt)
	}
	trainRows, valRows := dataset.SplitIndices(n, p.Train.ValidationFraction, p.Train.Seed)
	if len(trainRows) == 0 {
		return nil, errors.New("train: no training rows left after the validation split")
	}
	x, y, err := loadInputs(ctx, src, rd)
	if err != nil {
		return nil, err
	}
	// skip marks, for DP-SGD, the rows whose gradient counts as zero: a
	// private run must not fail because of a value in the data.
	var skip []bool
	if p.Privacy != nil {
		skip = make([]bool, n)
	}
	if err := checkLabels(p, pr, y, skip); err != nil {
		return nil, err
	}
	states := fitPreprocess(p, x, pr.inputs, trainRows)
	for i, v := range x {
		if finite(v) {
			continue
		}
		if skip != nil {
			skip[i/pr.inputs] = true
			continue
		}
		return nil, notFiniteError(pr, i%pr.inputs)
	}
	for r, s := range skip {
		if s {
			clear(x[r*pr.inputs : (r+1)*pr.inputs])
		}
	}

	mf := &memFeeder{x: x, y: y, d: pr.inputs, order: slices.Clone(trainRows),
		rng: rand.New(rand.NewPCG(uint64(p.Train.Seed), 0x73687566666c65))} // "shuffle"
	if len(valRows) > 0 {
		mf.valX, mf.valY = gather(x, y, valRows, pr.inputs, nil, nil)
	}
	var dp func(params [][]float64, eng Engine) (*dpState, error)
	if p.Privacy != nil {
		dp = func(params [][]float64, eng Engine) (*dpState, error) {
			s, err := newDPState(p, pr, params, trainRows, skip, eng)
			if err == nil {
				s.x, s.y = x, y
			}
			return s, err
		}
	}
	m := &Model{Format: ModelFormat, Preprocess: states}
	m.Metrics.TrainRows, m.Metrics.ValidationRows = len(trainRows), len(valRows)
	return train(ctx, p, pr, opt, mf, m, dp)
}

// feeder gives the trainer its data: the mini-batches of each epoch and
// the validation rows.
type feeder interface {
	// batches calls step with every mini-batch of one epoch, of at most
	// bs rows; it returns the rows it fed.
	batches(ctx context.Context, bs int, step func(xb, yb []float64, rows int) error) (int, error)
	// validate returns every validation row's loss and score under params,
	// and the rows' labels (all empty without validation rows).
	validate(ctx context.Context, pr *program, params [][]float64) (loss, score, y []float64, err error)
}

// memFeeder feeds rows held in memory: each epoch is a seeded shuffle of
// every training row, cut into batches.
type memFeeder struct {
	x, y       []float64
	d          int
	order      []int
	rng        *rand.Rand
	xb, yb     []float64
	valX, valY []float64
}

func (f *memFeeder) batches(ctx context.Context, bs int, step func(xb, yb []float64, rows int) error) (int, error) {
	f.rng.Shuffle(len(f.order), func(i, j int) { f.order[i], f.order[j] = f.order[j], f.order[i] })
	for start := 0; start < len(f.order); start += bs {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		rows := f.order[start:min(start+bs, len(f.order))]
		f.xb, f.yb = gather(f.x, f.y, rows, f.d, f.xb, f.yb)
		if err := step(f.xb, f.yb, len(rows)); err != nil {
			return 0, err
		}
	}
	return len(f.order), nil
}

func (f *memFeeder) validate(_ context.Context, pr *program, params [][]float64) (loss, score, y []float64, err error) {
	n := len(f.valY)
	if n == 0 {
		return nil, nil, nil, nil
	}
	vals := pr.forward(params, f.valX, n)
	loss, score = pr.rowLosses(vals, f.valY, n)
	return loss, score, f.valY, nil
}

// train runs the epochs of p over what feed gives: the engine's gradients,
// the plan's optimizer, validation and early stopping after each epoch. m
// comes with its preprocessing and row counts; dp, when set, makes the
// DP-SGD state (whose steps replace the feed's batches).
func train(ctx context.Context, p *Plan, pr *program, opt TrainOptions, feed feeder, m *Model, dp func([][]float64, Engine) (*dpState, error)) (*Model, error) {
	params, err := initParams(p, pr, opt.Init)
	if err != nil {
		return nil, err
	}
	bs := min(p.Train.BatchSize, m.Metrics.TrainRows)
	eng, err := newEngine(opt.Engine, pr, params, bs)
	if err != nil {
		return nil, err
	}
	defer eng.close()

	grads := make([][]float64, len(params))
	for i := range params {
		grads[i] = make([]float64, len(params[i]))
	}
	prox := newProximal(p.Train.ProximalMu, params)
	o := newOptimizer(p.Optimizer, params)
	for _, i := range pr.stats { // batch_norm running statistics are state, not trained
		o.frozen[i] = true
	}
	drop := rand.New(rand.NewPCG(uint64(p.Train.Seed), 0x64726f70)) // "drop": dropout seeds

	d := pr.inputs
	var best [][]float64
	bestLoss, bestEpoch, stale := math.Inf(1), 0, 0
	var dps *dpState
	if dp != nil {
		if dps, err = dp(params, opt.Engine); err != nil {
			return nil, err
		}
		defer dps.eng.close()
	}
	var sum float64
	step := func(xb, yb []float64, rows int) error {
		if pr.hasBatchNorm && rows < 2 {
			return nil // batch statistics need two rows; a last batch of one is left out
		}
		pr.seed = drop.Uint64()
		l, err := eng.step(xb, yb, rows, grads)
		if err != nil {
			return err
		}
		if !finite(l) {
			// Neither the epoch nor the value: both say something about the data.
			return errors.New("train: the training loss became infinite or not a number; lower the learning rate or standardize the features")
		}
		sum += l * float64(rows)
		prox.add(params, grads)
		o.step(params, grads)
		m.Metrics.Steps++
		return nil
	}
	validate := func() (loss, acc, auc float64, err error) {
		vl, vs, vy, err := feed.validate(ctx, pr, params)
		if err != nil {
			return 0, 0, 0, err
		}
		loss, acc, auc = pr.summarize(vl, vs, vy)
		return loss, acc, auc, nil
	}
	for epoch := 1; epoch <= p.Train.Epochs; epoch++ {
		sum = 0
		fed := 0
		if dps != nil {
			for s := 0; s < dps.stepsPerEpoch; s++ {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				if err := dps.step(dps.x, dps.y, d, grads); err != nil {
					return nil, err
				}
				prox.add(params, grads) // data-independent: after clipping and noise
				o.step(params, grads)
				m.Metrics.Steps++
			}
			// no data-dependent loss leaves a private run
		} else if fed, err = feed.batches(ctx, bs, step); err != nil {
			return nil, err
		}
		pg := Progress{Epoch: epoch, Epochs: p.Train.Epochs}
		if dps == nil {
			pg.Loss = sum / float64(fed)
			m.Metrics.TrainLoss = append(m.Metrics.TrainLoss, pg.Loss)
		}
		m.Metrics.Epochs = epoch
		if m.Metrics.ValidationRows > 0 {
			if pg.ValidationLoss, pg.ValidationAccuracy, pg.ValidationAUC, err = validate(); err != nil {
				return nil, err
			}
			if !finite(pg.ValidationLoss) {
				return nil, errors.New("train: the validation loss became infinite or not a number; lower the learning rate")
			}
			m.Metrics.ValidationLossHistory = append(m.Metrics.ValidationLossHistory, pg.ValidationLoss)
			if pr.task != TaskRegression {
				m.Metrics.ValidationAccuracyHistory = append(m.Metrics.ValidationAccuracyHistory, pg.ValidationAccuracy)
			}
			if pr.task == TaskBinary {
				m.Metrics.ValidationAUCHistory = append(m.Metrics.ValidationAUCHistory, pg.ValidationAUC)
			}
			m.Metrics.ValidationLoss, m.Metrics.ValidationAccuracy, m.Metrics.ValidationAUC = pg.ValidationLoss, pg.ValidationAccuracy, pg.ValidationAUC
		}
		if opt.Progress != nil {
			opt.Progress(pg)
		}
		if es := p.Train.EarlyStopping; es != nil {
			if pg.ValidationLoss < bestLoss-es.MinDelta {
				bestLoss, bestEpoch, stale = pg.ValidationLoss, epoch, 0
				best = cloneParams(params, best)
				m.Metrics.BestEpoch = epoch
			} else if stale++; stale >= es.Patience {
				break
			}
		}
	}
	if best != nil && bestEpoch != m.Metrics.Epochs {
		params = best
		if m.Metrics.ValidationLoss, m.Metrics.ValidationAccuracy, m.Metrics.ValidationAUC, err = validate(); err != nil {
			return nil, err
		}
	}
	if pr.task == TaskRegression {
		m.Metrics.ValidationAccuracy = 0
	}
	plan, err := clonePlan(p)
	if err != nil {
		return nil, err
	}
	m.Plan = plan
	if dps != nil {
		eps, err := p.Epsilon(m.Metrics.TrainRows)
		if err != nil {
			return nil, err
		}
		m.Privacy = &Privacy{Epsilon: eps, Delta: p.Privacy.Delta}
	}
	m.Params = make(map[string]Tensor, len(params))
	for i, name := range pr.paramNames {
		m.Params[name] = Tensor{Shape: slices.Clone(p.Params[name].Shape), Data: slices.Clone(params[i])}
	}
	return m, nil
}

func clonePlan(p *Plan) (*Plan, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var q Plan
	if err := json.Unmarshal(b, &q); err != nil {
		return nil, err
	}
	return &q, nil
}

func cloneParams(src, dst [][]float64) [][]float64 {
	if dst == nil {
		dst = make([][]float64, len(src))
	}
	for i := range src {
		dst[i] = append(dst[i][:0], src[i]...)
	}
	return dst
}

// notFiniteError names the input column, never a row or value: the
// requester may not see the data.
func notFiniteError(pr *program, col int) error {
	return fmt.Errorf("train: input column %q is not finite after preprocessing in some rows", pr.inputNames[col])
}

// gather copies the listed rows of x and y into xb, yb (grown as needed).
func gather(x, y []float64, rows []int, d int, xb, yb []float64) ([]float64, []float64) {
	if cap(xb) < len(rows)*d {
		xb = make([]float64, len(rows)*d)
	}
	if cap(yb) < len(rows) {
		yb = make([]float64, len(rows))
	}
	xb, yb = xb[:len(rows)*d], yb[:len(rows)]
	for i, r := range rows {
		copy(xb[i*d:(i+1)*d], x[r*d:(r+1)*d])
		yb[i] = y[r]
	}
	return xb, yb
}

// initParams draws every parameter, in name order, from a generator seeded
// by train.seed, then takes those the plan's weights have, then those init
// has (the others keep the values a run without them gives them).
func initParams(p *Plan, pr *program, init map[string]Tensor) ([][]float64, error) {
	rng := rand.New(rand.NewPCG(uint64(p.Train.Seed), 0x696e6974)) // "init"
	out := make([][]float64, len(pr.paramNames))
	for i, name := range pr.paramNames {
		def := p.Params[name]
		v := make([]float64, size(def.Shape))
		out[i] = v
		if t, ok := init[name]; ok {
			if !slices.Equal(t.Shape, def.Shape) || len(t.Data) != len(v) {
				return nil, fmt.Errorf("init: %q has shape %v, the plan says %v", name, t.Shape, def.Shape)
			}
			// Drawn below all the same, and overwritten after the loop, so
			// that the parameters init lacks get the values they would get
			// without init.
		}
		fanIn, fanOut := def.Shape[0], def.Shape[0]
		if len(def.Shape) == 2 {
			fanOut = def.Shape[1]
		}
		kind := def.Init
		if kind == "" {
			kind = "glorot"
			if len(def.Shape) == 1 {
				kind = "zeros"
			}
		}
		switch kind {
		case "zeros":
		case "ones":
			for j := range v {
				v[j] = 1
			}
		case "glorot":
			lim := math.Sqrt(6 / float64(fanIn+fanOut))
			for j := range v {
				v[j] = (2*rng.Float64() - 1) * lim
			}
		case "he":
			sd := math.Sqrt(2 / float64(fanIn))
			for j := range v {
				v[j] = rng.NormFloat64() * sd
			}
		case "normal":
			sd := def.Std
			if sd == 0 {
				sd = 0.01
			}
			for j := range v {
				v[j] = rng.NormFloat64() * sd
			}
		}
	}
	for i, name := range pr.paramNames {
		if t, ok := p.Weights[name]; ok { // validated by Validate
			copy(out[i], t.Data)
		}
		if t, ok := init[name]; ok {
			copy(out[i], t.Data)
		}
	}
	return out, nil
}

// optimizer applies PyTorch's SGD (with momentum) and Adam update rules.
type optimizer struct {
	cfg    Optimizer
	t      int
	m, v   [][]float64
	frozen []bool // per param: not updated (batch_norm running statistics)
}

func newOptimizer(cfg *Optimizer, params [][]float64) *optimizer {
	o := &optimizer{cfg: *cfg}
	if o.cfg.Name == "adam" {
		if o.cfg.Beta1 == 0 {
			o.cfg.Beta1 = 0.9
		}
		if o.cfg.Beta2 == 0 {
			o.cfg.Beta2 = 0.999
		}
		if o.cfg.Epsilon == 0 {
			o.cfg.Epsilon = 1e-8
		}
	}
	o.frozen = make([]bool, len(params))
	o.m = make([][]float64, len(params))
	o.v = make([][]float64, len(params))
	for i, p := range params {
		o.m[i] = make([]float64, len(p))
		if o.cfg.Name == "adam" {
			o.v[i] = make([]float64, len(p))
		}
	}
	return o
}

func (o *optimizer) step(params, grads [][]float64) {
	o.t++
	c := &o.cfg
	lr, wd := c.LearningRate, c.WeightDecay
	switch c.Name {
	case "sgd":
		mu := c.Momentum
		for i, p := range params {
			if o.frozen[i] {
				continue
			}
			g, buf := grads[i], o.m[i]
			if mu == 0 { // plain SGD: the same arithmetic without the momentum branch
				g = g[:len(p)]
				for j, pj := range p {
					p[j] = pj - lr*(g[j]+wd*pj)
				}
				continue
			}
			for j := range p {
				gj := g[j] + wd*p[j]
				if mu != 0 {
					if o.t == 1 {
						buf[j] = gj
					} else {
						buf[j] = mu*buf[j] + gj
					}
					gj = buf[j]
				}
				p[j] -= lr * gj
			}
		}
	case "adam":
		b1, b2, eps := c.Beta1, c.Beta2, c.Epsilon
		bc1 := 1 - math.Pow(b1, float64(o.t))
		bc2 := 1 - math.Pow(b2, float64(o.t))
		sbc2 := math.Sqrt(bc2)
		for i, p := range params {
			if o.frozen[i] {
				continue
			}
			g, m, v := grads[i], o.m[i], o.v[i]
			for j := range p {
				gj := g[j] + wd*p[j]
				m[j] = b1*m[j] + (1-b1)*gj
				v[j] = b2*v[j] + (1-b2)*gj*gj
				p[j] -= lr * (m[j] / bc1) / (math.Sqrt(v[j])/sbc2 + eps)
			}
		}
	}
}

// proximal is FedProx's term mu/2 ||w - w_0||^2, added to the gradients
// whatever the engine computed them: its gradient is mu (w - w_0).
type proximal struct {
	mu     float64
	anchor [][]float64
}

func newProximal(mu float64, params [][]float64) *proximal {
	if mu <= 0 {
		return nil
	}
	return &proximal{mu: mu, anchor: cloneParams(params, nil)}
}

func (p *proximal) add(params, grads [][]float64) {
	if p == nil {
		return
	}
	for i, w := range params {
		a, g := p.anchor[i], grads[i]
		for k := range w {
			g[k] += p.mu * (w[k] - a[k])
		}
	}
}
