// Package plan is fedgrid's training-plan language: the format
// "fedgrid.plan/v1" (a declarative list of tensor operations plus training
// settings, see CONTRACT.md), its validation and shape inference, training,
// the model format "fedgrid.model/v1", prediction and evaluation.
//
// A plan never executes code: it names operations from a fixed list, and its
// cost is bounded by the limits below before any work starts.
package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/fedgrid/fedgrid/internal/strictjson"
)

// Formats.
const (
	Format      = "fedgrid.plan/v1"
	ModelFormat = "fedgrid.model/v1"
)

// Limits enforced by Parse/Validate/Check (and CheckWork for the data size).
const (
	MaxPlanBytes      = 1 << 20     // encoded plan
	MaxModelBytes     = 256 << 20   // encoded model
	MaxParams         = 10_000_000  // total trainable numbers
	MaxDim            = 1_000_000   // any one parameter dimension
	MaxOps            = 256         // forward operations
	MaxFeatures       = 1000        // features, and input width after one_hot
	MaxCategories     = 1000        // per one_hot column
	MaxEpochs         = 10_000      // train.epochs
	MaxBatchSize      = 65_536      // train.batch_size
	MaxWork           = 100_000_000 // epochs x training rows
	MaxWidthTimesWork = 2e12        // epochs x rows x params: bounds total compute
)

// Plan is a training plan, exactly the JSON of CONTRACT.md.
type Plan struct {
	Format     string              `json:"format"`
	Name       string              `json:"name,omitempty"`
	Features   []string            `json:"features,omitempty"`
	Label      string              `json:"label,omitempty"`
	Preprocess []PreprocessOp      `json:"preprocess,omitempty"`
	Params     map[string]ParamDef `json:"params,omitempty"`
	Forward    []Op                `json:"forward,omitempty"`
	Loss       *Loss               `json:"loss,omitempty"`
	Optimizer  *Optimizer          `json:"optimizer,omitempty"`
	Train      TrainSettings       `json:"train"`
	Privacy    *PrivacyPlan        `json:"privacy,omitempty"`
	// Weights, when given, are starting values for some or all of the
	// params (for example an nn.Module's initial weights, or the global
	// model of a federated round); the others are drawn from their init.
	Weights map[string]Tensor `json:"weights,omitempty"`
	// Model names a model hosted on the gateway; the plan then carries only
	// training settings (see Resolve).
	Model string `json:"model,omitempty"`
}

// PreprocessOp is one preprocessing step.
//   - "standardize": (v-mean)/std per numeric feature, mean and std from the
//     training rows. Columns limits it to some features (default: every
//     feature that is not one-hot encoded).
//   - "min_max": (v-min)/(max-min), likewise.
//   - "one_hot": Column (a feature) becomes len(Categories) inputs, 1 where the
//     cell's text equals the category, else 0 (an unknown value is all zeros).
//
// standardize and min_max may declare their statistics (Mean and Std, or
// Min and Max, one per covered feature in features order) instead of
// fitting them on the data; a plan with privacy must, since fitted
// statistics would be released outside the privacy guarantee.
type PreprocessOp struct {
	Op         string    `json:"op"`
	Columns    []string  `json:"columns,omitempty"`
	Column     string    `json:"column,omitempty"`
	Categories []string  `json:"categories,omitempty"`
	Mean       []float64 `json:"mean,omitempty"`
	Std        []float64 `json:"std,omitempty"`
	Min        []float64 `json:"min,omitempty"`
	Max        []float64 `json:"max,omitempty"`
}

// coveredFeatures lists the features a standardize/min_max op scales.
func (p *Plan) coveredFeatures(pp PreprocessOp) []string {
	if len(pp.Columns) > 0 {
		var out []string
		for _, f := range p.Features {
			if slices.Contains(pp.Columns, f) {
				out = append(out, f)
			}
		}
		return out
	}
	hot := map[string]bool{}
	for _, q := range p.Preprocess {
		if q.Op == "one_hot" {
			hot[q.Column] = true
		}
	}
	var out []string
	for _, f := range p.Features {
		if !hot[f] {
			out = append(out, f)
		}
	}
	return out
}

// ParamDef declares a trainable parameter.
type ParamDef struct {
	Shape []int   `json:"shape"`
	Init  string  `json:"init,omitempty"` // glorot (default), he, zeros, ones, normal
	Std   float64 `json:"std,omitempty"`  // for init "normal"; default 0.01
}

// Op is one forward operation: Out = Op(In...). P is dropout's rate, Eps
// the variance floor of layer_norm and batch_norm, Momentum batch_norm's
// running-statistics momentum; other ops take none of them.
type Op struct {
	Op       string   `json:"op"`
	In       []string `json:"in"`
	Out      string   `json:"out"`
	P        *float64 `json:"p,omitempty"`
	Eps      *float64 `json:"eps,omitempty"`
	Momentum *float64 `json:"momentum,omitempty"`
}

// Defaults of the op settings (PyTorch's).
const (
	DefaultDropout  = 0.5
	DefaultEps      = 1e-5
	DefaultMomentum = 0.1
)

func (o Op) rate() float64 {
	if o.P == nil {
		return DefaultDropout
	}
	return *o.P
}

func (o Op) eps() float64 {
	if o.Eps == nil {
		return DefaultEps
	}
	return *o.Eps
}

func (o Op) momentum() float64 {
	if o.Momentum == nil {
		return DefaultMomentum
	}
	return *o.Momentum
}

// Loss names the loss and its inputs: the prediction and "y".
type Loss struct {
	Op string   `json:"op"`
	In []string `json:"in"`
}

// Optimizer settings. Adam and SGD follow PyTorch's update rules.
type Optimizer struct {
	Name         string  `json:"name"`
	LearningRate float64 `json:"learning_rate"`
	Momentum     float64 `json:"momentum,omitempty"` // sgd
	Beta1        float64 `json:"beta1,omitempty"`    // adam, default 0.9
	Beta2        float64 `json:"beta2,omitempty"`    // adam, default 0.999
	Epsilon      float64 `json:"epsilon,omitempty"`  // adam, default 1e-8
	WeightDecay  float64 `json:"weight_decay,omitempty"`
}

// TrainSettings are the training loop's settings.
type TrainSettings struct {
	Epochs             int            `json:"epochs"`
	BatchSize          int            `json:"batch_size"`
	Seed               int64          `json:"seed"`
	ValidationFraction float64        `json:"validation_fraction,omitempty"`
	EarlyStopping      *EarlyStopping `json:"early_stopping,omitempty"`
	// Workers > 1 asks for data-parallel training: the gateway shards the
	// data over that many nodes and averages their weights (FedAvg, weighted
	// by rows) after each of Rounds rounds of Epochs local epochs.
	Workers int `json:"workers,omitempty"`
	Rounds  int `json:"rounds,omitempty"`
	// ProximalMu > 0 adds FedProx's proximal term mu/2 ||w - w_0||^2 to the
	// loss, w_0 being the weights training starts from (a federated round's
	// global weights): local training stays near the global model.
	ProximalMu float64 `json:"proximal_mu,omitempty"`
}

// MaxProximalMu bounds train.proximal_mu.
const MaxProximalMu = 1e4

// Limits of data-parallel training.
const (
	MaxWorkers = 64
	MaxRounds  = 1000
)

// EarlyStopping stops training when the validation loss has not improved by
// more than MinDelta for Patience epochs; the best epoch's parameters are kept.
type EarlyStopping struct {
	Patience int     `json:"patience"`
	MinDelta float64 `json:"min_delta,omitempty"`
}

// PrivacyPlan asks for differentially private training.
type PrivacyPlan struct {
	DPSGD *DPSGD  `json:"dp_sgd,omitempty"`
	Delta float64 `json:"delta,omitempty"`
}

// DPSGD are the DP-SGD settings: per-example gradients clipped to
// MaxGradNorm, Gaussian noise of standard deviation NoiseMultiplier*MaxGradNorm.
type DPSGD struct {
	NoiseMultiplier float64 `json:"noise_multiplier"`
	MaxGradNorm     float64 `json:"max_grad_norm"`
}

// Known operation names.
var (
	ForwardOps    = []string{"add", "batch_norm", "dropout", "layer_norm", "log_softmax", "matmul", "mul", "relu", "sigmoid", "softmax", "sub", "tanh"}
	LossOps       = []string{"bce", "bce_logits", "cross_entropy", "mse"}
	Optimizers    = []string{"adam", "sgd"}
	PreprocessOps = []string{"min_max", "one_hot", "standardize"}
	Inits         = []string{"glorot", "he", "normal", "ones", "zeros"}
)

var opArity = map[string]int{
	"matmul": 2, "add": 2, "sub": 2, "mul": 2,
	"relu": 1, "sigmoid": 1, "tanh": 1, "softmax": 1, "log_softmax": 1,
	"dropout": 1, "layer_norm": 1, "batch_norm": 3,
}

// Compiled on first use, not at start: a bounded repetition compiles to
// hundreds of allocations that every fedgrid process (a node too) would
// pay in its initialisers (issue 18).
var identRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`) })

// Parse decodes a plan strictly (unknown fields are refused, naming the
// field; one JSON value only; at most MaxPlanBytes) and validates it.
func Parse(b []byte) (*Plan, error) {
	if len(b) > MaxPlanBytes {
		return nil, fmt.Errorf("plan is %d bytes, more than the limit of %d", len(b), MaxPlanBytes)
	}
	var p Plan
	if err := decodeStrict(b, &p, "plan"); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

func decodeStrict(b []byte, v any, what string) error {
	if err := strictjson.Decode(b, v); err != nil {
		return fmt.Errorf("%s is not valid: %v", what, err)
	}
	return nil
}

// Validate checks the plan's structure: the format, known operations, names
// defined before use, parameter shapes, and the limits. It does not need the
// data; Check adds shape inference.
func (p *Plan) Validate() error {
	if p == nil {
		return errors.New("plan is missing")
	}
	if p.Format != Format {
		return fmt.Errorf("format is %q, want %q", p.Format, Format)
	}
	if len(p.Name) > 200 {
		return errors.New("name is longer than 200 characters")
	}
	if err := p.validateTrain(); err != nil {
		return err
	}
	if err := p.validatePrivacy(); err != nil {
		return err
	}
	if p.Model != "" {
		if len(p.Model) > 200 {
			return errors.New("model: id is longer than 200 characters")
		}
		if len(p.Params) > 0 || len(p.Forward) > 0 || p.Loss != nil || len(p.Preprocess) > 0 || len(p.Features) > 0 || p.Label != "" || p.Weights != nil {
			return fmt.Errorf("model: a plan naming hosted model %q carries only training settings (train, optimizer, privacy), not features, label, preprocess, params, weights, forward or loss", p.Model)
		}
		if p.Optimizer != nil {
			if err := p.Optimizer.validate(); err != nil {
				return err
			}
		}
		return nil
	}
	if err := p.validateData(); err != nil {
		return err
	}
	if err := p.validateParams(); err != nil {
		return err
	}
	if err := p.validateForward(); err != nil {
		return err
	}
	if err := p.validateWeights(); err != nil {
		return err
	}
	if p.Optimizer == nil {
		return errors.New("optimizer is missing")
	}
	return p.Optimizer.validate()
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func (p *Plan) validateTrain() error {
	t := p.Train
	if t.Epochs < 1 || t.Epochs > MaxEpochs {
		return fmt.Errorf("train.epochs is %d, must be 1 to %d", t.Epochs, MaxEpochs)
	}
	if t.BatchSize < 1 || t.BatchSize > MaxBatchSize {
		return fmt.Errorf("train.batch_size is %d, must be 1 to %d", t.BatchSize, MaxBatchSize)
	}
	if !finite(t.ValidationFraction) || t.ValidationFraction < 0 || t.ValidationFraction > 0.9 {
		return fmt.Errorf("train.validation_fraction is %v, must be 0 to 0.9", t.ValidationFraction)
	}
	if t.Workers < 0 || t.Workers > MaxWorkers {
		return fmt.Errorf("train.workers is %d, must be 0 to %d", t.Workers, MaxWorkers)
	}
	if !finite(t.ProximalMu) || t.ProximalMu < 0 || t.ProximalMu > MaxProximalMu {
		return fmt.Errorf("train.proximal_mu is %v, must be 0 to %g", t.ProximalMu, float64(MaxProximalMu))
	}
	if t.Rounds < 0 || t.Rounds > MaxRounds {
		return fmt.Errorf("train.rounds is %d, must be 0 to %d", t.Rounds, MaxRounds)
	}
	if t.Rounds > 0 && t.Workers < 2 {
		return errors.New("train.rounds needs train.workers of 2 or more (rounds are for data-parallel training)")
	}
	if t.Workers > 1 && p.Privacy != nil {
		return errors.New("train.workers with privacy.dp_sgd is not supported yet: train DP-SGD on one node")
	}
	if t.Workers > 1 && t.EarlyStopping != nil {
		return errors.New("train.early_stopping is not supported with train.workers > 1")
	}
	if es := t.EarlyStopping; es != nil {
		if es.Patience < 1 || es.Patience > MaxEpochs {
			return fmt.Errorf("train.early_stopping.patience is %d, must be 1 to %d", es.Patience, MaxEpochs)
		}
		if !finite(es.MinDelta) || es.MinDelta < 0 {
			return fmt.Errorf("train.early_stopping.min_delta is %v, must be >= 0", es.MinDelta)
		}
		if t.ValidationFraction == 0 {
			return errors.New("train.early_stopping needs a validation split: set train.validation_fraction")
		}
	}
	return nil
}

func (p *Plan) validatePrivacy() error {
	pr := p.Privacy
	if pr == nil {
		return nil
	}
	if pr.DPSGD == nil {
		return errors.New("privacy: dp_sgd is missing")
	}
	d := pr.DPSGD
	if !finite(d.NoiseMultiplier) || d.NoiseMultiplier <= 0 || d.NoiseMultiplier > 100 {
		return fmt.Errorf("privacy.dp_sgd.noise_multiplier is %v, must be > 0 and <= 100", d.NoiseMultiplier)
	}
	if !finite(d.MaxGradNorm) || d.MaxGradNorm <= 0 || d.MaxGradNorm > 1e6 {
		return fmt.Errorf("privacy.dp_sgd.max_grad_norm is %v, must be > 0", d.MaxGradNorm)
	}
	if !finite(pr.Delta) || pr.Delta <= 0 || pr.Delta >= 1 {
		return fmt.Errorf("privacy.delta is %v, must be > 0 and < 1 (e.g. 1e-5)", pr.Delta)
	}
	if p.hasOp("batch_norm") {
		return errors.New("privacy: batch_norm mixes the rows of a batch, so DP-SGD's per-example clipping cannot bound one row's influence; use layer_norm")
	}
	if p.Train.EarlyStopping != nil {
		return errors.New("privacy: early stopping on a validation split is not supported with dp_sgd (it would spend privacy outside the accountant)")
	}
	if p.Train.ValidationFraction != 0 {
		return errors.New("privacy: train.validation_fraction must be 0 with dp_sgd (validation metrics on private rows would be released outside the privacy guarantee); evaluate on data you hold")
	}
	for i, pp := range p.Preprocess {
		if (pp.Op == "standardize" && pp.Mean == nil) || (pp.Op == "min_max" && pp.Min == nil) {
			return fmt.Errorf("preprocess[%d] %s: with dp_sgd the statistics must be declared in the plan (%s), not fitted on the private rows", i, pp.Op,
				map[string]string{"standardize": "mean and std", "min_max": "min and max"}[pp.Op])
		}
	}
	return nil
}

func (p *Plan) validateData() error {
	if len(p.Features) == 0 {
		return errors.New("features is empty")
	}
	if len(p.Features) > MaxFeatures {
		return fmt.Errorf("features has %d names, more than the limit of %d", len(p.Features), MaxFeatures)
	}
	seen := make(map[string]bool)
	for i, f := range p.Features {
		if strings.TrimSpace(f) == "" {
			return fmt.Errorf("features[%d] is empty", i)
		}
		if seen[f] {
			return fmt.Errorf("features[%d]: %q is listed twice", i, f)
		}
		seen[f] = true
	}
	if p.Label == "" {
		return errors.New("label is missing")
	}
	if seen[p.Label] {
		return fmt.Errorf("label %q is also a feature", p.Label)
	}
	hot := make(map[string]bool)
	scaled := map[string]bool{}
	for i, pp := range p.Preprocess {
		where := fmt.Sprintf("preprocess[%d] %s", i, pp.Op)
		switch pp.Op {
		case "standardize", "min_max":
			if pp.Column != "" || len(pp.Categories) > 0 {
				return fmt.Errorf("%s: takes only \"columns\" and its statistics", where)
			}
			if err := p.validateDeclared(where, pp, seen); err != nil {
				return err
			}
			if scaled[pp.Op] {
				return fmt.Errorf("%s: listed twice", where)
			}
			scaled[pp.Op] = true
			cs := map[string]bool{}
			for _, c := range pp.Columns {
				if !seen[c] {
					return fmt.Errorf("%s: column %q is not a feature", where, c)
				}
				if cs[c] {
					return fmt.Errorf("%s: column %q is listed twice", where, c)
				}
				cs[c] = true
			}
		case "one_hot":
			if pp.Mean != nil || pp.Std != nil || pp.Min != nil || pp.Max != nil {
				return fmt.Errorf("%s: takes \"column\" and \"categories\" only", where)
			}
			if len(pp.Columns) > 0 {
				return fmt.Errorf("%s: takes \"column\" (one) and \"categories\"", where)
			}
			if !seen[pp.Column] {
				return fmt.Errorf("%s: column %q is not a feature", where, pp.Column)
			}
			if hot[pp.Column] {
				return fmt.Errorf("%s: column %q is one-hot encoded twice", where, pp.Column)
			}
			hot[pp.Column] = true
			if len(pp.Categories) == 0 {
				return fmt.Errorf("%s: categories is empty; list the values of %q", where, pp.Column)
			}
			if len(pp.Categories) > MaxCategories {
				return fmt.Errorf("%s: %d categories, more than the limit of %d", where, len(pp.Categories), MaxCategories)
			}
			cs := map[string]bool{}
			for _, c := range pp.Categories {
				if cs[c] {
					return fmt.Errorf("%s: category %q is listed twice", where, c)
				}
				cs[c] = true
			}
		default:
			return fmt.Errorf("preprocess[%d]: unknown op %q (known: %s)", i, pp.Op, strings.Join(PreprocessOps, ", "))
		}
	}
	for i, pp := range p.Preprocess {
		if pp.Op == "standardize" || pp.Op == "min_max" {
			for _, c := range pp.Columns {
				if hot[c] {
					return fmt.Errorf("preprocess[%d] %s: column %q is one-hot encoded", i, pp.Op, c)
				}
			}
		}
	}
	return nil
}

// validateDeclared checks declared preprocessing statistics.
func (p *Plan) validateDeclared(where string, pp PreprocessOp, features map[string]bool) error {
	a, b, an, bn := pp.Mean, pp.Std, "mean", "std"
	other := pp.Min != nil || pp.Max != nil
	if pp.Op == "min_max" {
		a, b, an, bn = pp.Min, pp.Max, "min", "max"
		other = pp.Mean != nil || pp.Std != nil
	}
	if other {
		return fmt.Errorf("%s: declares the statistics of another op", where)
	}
	if a == nil && b == nil {
		return nil
	}
	for _, c := range pp.Columns {
		if !features[c] {
			return nil // reported by the caller
		}
	}
	n := len(p.coveredFeatures(pp))
	if len(a) != n || len(b) != n {
		return fmt.Errorf("%s: %s and %s need one value per scaled feature (%d), have %d and %d", where, an, bn, n, len(a), len(b))
	}
	for i := range a {
		if !finite(a[i]) || !finite(b[i]) {
			return fmt.Errorf("%s: %s[%d] or %s[%d] is not a finite number", where, an, i, bn, i)
		}
		if pp.Op == "standardize" && !(b[i] > 0) {
			return fmt.Errorf("%s: std[%d] is %v, must be > 0", where, i, b[i])
		}
		if pp.Op == "min_max" && !(b[i] > a[i]) {
			return fmt.Errorf("%s: max[%d] is %v, must be > min[%d] = %v", where, i, b[i], i, a[i])
		}
	}
	return nil
}

func sortedParamNames(m map[string]ParamDef) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (p *Plan) validateParams() error {
	if len(p.Params) == 0 {
		return errors.New("params is empty; a plan needs at least one trainable parameter")
	}
	total := 0
	for _, name := range sortedParamNames(p.Params) {
		d := p.Params[name]
		if !identRE().MatchString(name) {
			return fmt.Errorf("params: name %q is not an identifier (letters, digits, _; at most 64)", name)
		}
		if name == "x" || name == "y" {
			return fmt.Errorf("params: %q is reserved for the data", name)
		}
		if len(d.Shape) < 1 || len(d.Shape) > 2 {
			return fmt.Errorf("params.%s: shape %v must have 1 or 2 dimensions", name, d.Shape)
		}
		n := 1
		for _, s := range d.Shape {
			if s < 1 || s > MaxDim {
				return fmt.Errorf("params.%s: shape %v: every dimension must be 1 to %d", name, d.Shape, MaxDim)
			}
			n *= s
		}
		if n > MaxParams {
			return fmt.Errorf("params.%s: %d numbers, more than the limit of %d", name, n, MaxParams)
		}
		total += n
		if total > MaxParams {
			return fmt.Errorf("params: more than the limit of %d numbers in total", MaxParams)
		}
		init := d.Init
		if init == "" {
			init = "glorot"
		}
		if !slices.Contains(Inits, init) {
			return fmt.Errorf("params.%s: unknown init %q (known: %s)", name, d.Init, strings.Join(Inits, ", "))
		}
		if !finite(d.Std) || d.Std < 0 || d.Std > 100 {
			return fmt.Errorf("params.%s: std is %v, must be 0 to 100", name, d.Std)
		}
		if d.Std != 0 && init != "normal" {
			return fmt.Errorf("params.%s: std is only for init \"normal\"", name)
		}
	}
	return nil
}

func (p *Plan) validateForward() error {
	if len(p.Forward) == 0 {
		return errors.New("forward is empty")
	}
	if len(p.Forward) > MaxOps {
		return fmt.Errorf("forward has %d ops, more than the limit of %d", len(p.Forward), MaxOps)
	}
	defined := map[string]bool{"x": true}
	for n := range p.Params {
		defined[n] = true
	}
	stats := map[string]bool{} // params holding batch_norm running statistics
	for _, op := range p.Forward {
		if op.Op == "batch_norm" && len(op.In) == 3 {
			for _, in := range op.In[1:] {
				if _, ok := p.Params[in]; ok {
					stats[in] = true
				}
			}
		}
	}
	statUse := map[string]int{}
	for i, op := range p.Forward {
		ar, ok := opArity[op.Op]
		if !ok {
			return fmt.Errorf("forward[%d]: unknown op %q (known: %s)", i, op.Op, strings.Join(ForwardOps, ", "))
		}
		where := fmt.Sprintf("forward[%d] %s", i, op.Op)
		if len(op.In) != ar {
			return fmt.Errorf("%s: takes %d input(s), has %d", where, ar, len(op.In))
		}
		for k, in := range op.In {
			if in == "y" {
				return fmt.Errorf("%s: the label y may only be used by the loss", where)
			}
			if !defined[in] {
				return fmt.Errorf("%s: input %q is not defined before this op (inputs are x, the params, and earlier outputs)", where, in)
			}
			isStat := op.Op == "batch_norm" && k > 0
			if _, isParam := p.Params[in]; isStat && !isParam {
				return fmt.Errorf("%s: input %q must be a parameter (batch_norm takes [input, running_mean, running_var], the last two declared in params)", where, in)
			}
			if stats[in] && !isStat {
				return fmt.Errorf("%s: %q holds batch_norm running statistics; it cannot be an input of another op", where, in)
			}
			if isStat {
				if statUse[in]++; statUse[in] > 1 {
					return fmt.Errorf("%s: running statistics %q are used twice; give each batch_norm its own", where, in)
				}
			}
		}
		if err := op.validateSettings(where); err != nil {
			return err
		}
		if !identRE().MatchString(op.Out) {
			return fmt.Errorf("%s: output name %q is not an identifier (letters, digits, _; at most 64)", where, op.Out)
		}
		if op.Out == "x" || op.Out == "y" {
			return fmt.Errorf("%s: output %q would overwrite the data", where, op.Out)
		}
		if _, isParam := p.Params[op.Out]; isParam {
			return fmt.Errorf("%s: output %q would overwrite a parameter", where, op.Out)
		}
		defined[op.Out] = true
	}
	if p.hasOp("batch_norm") && p.Train.BatchSize < 2 {
		return errors.New("train.batch_size is 1, but batch_norm needs batches of 2 rows or more")
	}
	if p.Loss == nil {
		return errors.New("loss is missing")
	}
	if !slices.Contains(LossOps, p.Loss.Op) {
		return fmt.Errorf("loss: unknown op %q (known: %s)", p.Loss.Op, strings.Join(LossOps, ", "))
	}
	if len(p.Loss.In) != 2 || p.Loss.In[1] != "y" {
		return fmt.Errorf("loss %s: in must be [prediction, \"y\"], is %q", p.Loss.Op, p.Loss.In)
	}
	pred := p.Loss.In[0]
	if !defined[pred] || pred == "x" {
		return fmt.Errorf("loss %s: prediction %q is not an output of forward", p.Loss.Op, pred)
	}
	if _, isParam := p.Params[pred]; isParam {
		return fmt.Errorf("loss %s: prediction %q is a parameter, not an output of forward", p.Loss.Op, pred)
	}
	used := map[string]bool{}
	for _, op := range p.Forward {
		for _, in := range op.In {
			used[in] = true
		}
	}
	for _, n := range sortedParamNames(p.Params) {
		if !used[n] {
			return fmt.Errorf("params.%s is never used by forward", n)
		}
	}
	return nil
}

// validateSettings checks p, eps and momentum: each only on its ops.
func (o Op) validateSettings(where string) error {
	if o.P != nil {
		if o.Op != "dropout" {
			return fmt.Errorf("%s: p is for dropout only", where)
		}
		if v := *o.P; !finite(v) || v < 0 || v >= 1 {
			return fmt.Errorf("%s: p is %v, must be 0 <= p < 1", where, v)
		}
	}
	if o.Eps != nil {
		if o.Op != "layer_norm" && o.Op != "batch_norm" {
			return fmt.Errorf("%s: eps is for layer_norm and batch_norm only", where)
		}
		if v := *o.Eps; !finite(v) || v <= 0 || v > 1 {
			return fmt.Errorf("%s: eps is %v, must be > 0 and <= 1", where, v)
		}
	}
	if o.Momentum != nil {
		if o.Op != "batch_norm" {
			return fmt.Errorf("%s: momentum is for batch_norm only", where)
		}
		if v := *o.Momentum; !finite(v) || v < 0 || v > 1 {
			return fmt.Errorf("%s: momentum is %v, must be 0 to 1", where, v)
		}
	}
	return nil
}

// validateWeights checks the starting weights against the params.
func (p *Plan) validateWeights() error {
	variances := map[string]bool{}
	for _, o := range p.Forward {
		if o.Op == "batch_norm" && len(o.In) == 3 {
			variances[o.In[2]] = true
		}
	}
	names := make([]string, 0, len(p.Weights))
	for n := range p.Weights {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t := p.Weights[n]
		d, ok := p.Params[n]
		if !ok {
			return fmt.Errorf("weights.%s: not a parameter of the plan", n)
		}
		if !slices.Equal(t.Shape, d.Shape) {
			return fmt.Errorf("weights.%s: shape %v, the plan's params say %v", n, t.Shape, d.Shape)
		}
		if len(t.Data) != size(d.Shape) {
			return fmt.Errorf("weights.%s: %d numbers, shape %v needs %d", n, len(t.Data), d.Shape, size(d.Shape))
		}
		for i, v := range t.Data {
			if !finite(v) {
				return fmt.Errorf("weights.%s[%d] is not a finite number", n, i)
			}
			if v < 0 && variances[n] {
				return fmt.Errorf("weights.%s[%d] is %v, but a running variance cannot be negative", n, i, v)
			}
		}
	}
	return nil
}

// hasOp reports whether forward uses the op.
func (p *Plan) hasOp(name string) bool {
	for _, o := range p.Forward {
		if o.Op == name {
			return true
		}
	}
	return false
}

func (o *Optimizer) validate() error {
	if !slices.Contains(Optimizers, o.Name) {
		return fmt.Errorf("optimizer: unknown name %q (known: %s)", o.Name, strings.Join(Optimizers, ", "))
	}
	if !finite(o.LearningRate) || o.LearningRate <= 0 || o.LearningRate > 100 {
		return fmt.Errorf("optimizer.learning_rate is %v, must be > 0 and <= 100", o.LearningRate)
	}
	if !finite(o.Momentum) || o.Momentum < 0 || o.Momentum >= 1 {
		return fmt.Errorf("optimizer.momentum is %v, must be 0 <= momentum < 1", o.Momentum)
	}
	if o.Momentum != 0 && o.Name != "sgd" {
		return errors.New("optimizer.momentum is for sgd only")
	}
	for _, b := range []struct {
		n string
		v float64
	}{{"beta1", o.Beta1}, {"beta2", o.Beta2}} {
		if !finite(b.v) || b.v < 0 || b.v >= 1 {
			return fmt.Errorf("optimizer.%s is %v, must be 0 <= %s < 1", b.n, b.v, b.n)
		}
		if b.v != 0 && o.Name != "adam" {
			return fmt.Errorf("optimizer.%s is for adam only", b.n)
		}
	}
	if !finite(o.Epsilon) || o.Epsilon < 0 || o.Epsilon > 1 {
		return fmt.Errorf("optimizer.epsilon is %v, must be 0 to 1", o.Epsilon)
	}
	if !finite(o.WeightDecay) || o.WeightDecay < 0 || o.WeightDecay > 1 {
		return fmt.Errorf("optimizer.weight_decay is %v, must be 0 to 1", o.WeightDecay)
	}
	return nil
}

// CheckWork refuses a plan whose training would exceed the work limits on a
// data set of the given number of rows: epochs x rows <= MaxWork, and
// epochs x rows x params <= MaxWidthTimesWork.
func (p *Plan) CheckWork(rows int) error {
	if rows < 0 {
		return fmt.Errorf("rows is %d", rows)
	}
	work := float64(p.Train.Epochs) * float64(rows)
	if work > MaxWork {
		return fmt.Errorf("train: %d epochs x %d rows = %.0f, more than the limit of %d", p.Train.Epochs, rows, work, MaxWork)
	}
	n := 0
	for _, d := range p.Params {
		k := 1
		for _, s := range d.Shape {
			k *= s
		}
		n += k
	}
	if w := work * float64(n); w > MaxWidthTimesWork {
		return fmt.Errorf("train: %d epochs x %d rows x %d parameters = %.3g, more than the limit of %.3g", p.Train.Epochs, rows, n, w, MaxWidthTimesWork)
	}
	return nil
}

// Resolve turns a plan that names a hosted model into a full plan: the hosted
// model's plan with this plan's training settings (train, and optimizer and
// privacy when given). The caller trains it with TrainOptions.Init set to the
// hosted model's parameters to continue from them. A plan without a model is
// returned as is.
func Resolve(p *Plan, hosted *Model) (*Plan, error) {
	if p.Model == "" {
		return p, nil
	}
	if hosted == nil || hosted.Plan == nil {
		return nil, fmt.Errorf("hosted model %q is missing", p.Model)
	}
	b, err := json.Marshal(hosted.Plan)
	if err != nil {
		return nil, err
	}
	var q Plan
	if err := json.Unmarshal(b, &q); err != nil {
		return nil, err
	}
	q.Model = ""
	if p.Name != "" {
		q.Name = p.Name
	}
	q.Train = p.Train
	if p.Optimizer != nil {
		o := *p.Optimizer
		q.Optimizer = &o
	}
	q.Privacy = nil
	if p.Privacy != nil {
		pr := *p.Privacy
		if pr.DPSGD != nil {
			d := *pr.DPSGD
			pr.DPSGD = &d
		}
		q.Privacy = &pr
	}
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("hosted model %q with these settings: %w", p.Model, err)
	}
	return &q, nil
}
