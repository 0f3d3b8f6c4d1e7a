package plan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/fedgrid/fedgrid/dataset"
)

// Batch is the batch dimension (the number of rows, N) in a shape.
const Batch = -1

// Tasks.
const (
	TaskBinary     = "binary"
	TaskMulticlass = "multiclass"
	TaskRegression = "regression"
)

// Report is the result of Check: every value's inferred shape, the parameter
// count, and what the model predicts.
type Report struct {
	Shapes     map[string][]int `json:"shapes"` // last shape of each name; -1 is the batch N
	ParamCount int              `json:"param_count"`
	Inputs     int              `json:"inputs"`      // width of x after preprocessing
	InputNames []string         `json:"input_names"` // what each x column is
	Outputs    int              `json:"outputs"`     // width of the prediction
	Task       string           `json:"task"`        // binary, multiclass or regression
	Params     []ParamReport    `json:"params"`
	Steps      []StepReport     `json:"steps"`
	// StepMemory bounds, in bytes, what one training step at the batch
	// size holds: every op's value and gradient, and the parameters with
	// their gradients and optimizer state. TrainMemory adds the data.
	StepMemory int64 `json:"step_memory_bytes"`
}

// ParamReport is one parameter in a Report.
type ParamReport struct {
	Name  string `json:"name"`
	Shape []int  `json:"shape"`
	Count int    `json:"count"`
}

// StepReport is one forward op (or the loss, Index -1) in a Report.
type StepReport struct {
	Index int      `json:"index"`
	Op    string   `json:"op"`
	In    []string `json:"in"`
	Out   string   `json:"out,omitempty"`
	Shape []int    `json:"shape,omitempty"`
}

// FormatShape renders a shape with N for the batch dimension: [N,16].
func FormatShape(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		if d == Batch {
			parts[i] = "N"
		} else {
			parts[i] = strconv.Itoa(d)
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// String renders the report as a table for `fedgrid plan check`.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "inputs: x is %s (%s)\n", FormatShape([]int{Batch, r.Inputs}), summarizeNames(r.InputNames))
	fmt.Fprintf(&b, "task: %s, %d output(s)\n", r.Task, r.Outputs)
	fmt.Fprintf(&b, "memory: %s per training step (values and gradients at the batch size)\n\n", FormatBytes(r.StepMemory))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "param\tshape\tcount")
	for _, p := range r.Params {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", p.Name, FormatShape(p.Shape), p.Count)
	}
	fmt.Fprintf(tw, "total\t\t%d\n", r.ParamCount)
	tw.Flush()
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "step\top\tin\tout\tshape")
	for _, s := range r.Steps {
		idx := "loss"
		if s.Index >= 0 {
			idx = fmt.Sprintf("forward[%d]", s.Index)
		}
		shape := ""
		if s.Shape != nil {
			shape = FormatShape(s.Shape)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", idx, s.Op, strings.Join(s.In, ", "), s.Out, shape)
	}
	tw.Flush()
	return b.String()
}

func summarizeNames(n []string) string {
	if len(n) <= 8 {
		return strings.Join(n, ", ")
	}
	return strings.Join(n[:6], ", ") + fmt.Sprintf(", ... %d more", len(n)-6)
}

// Check validates the plan against a data set's columns and infers the shape
// of every value. Features must exist and be numeric (or one-hot encoded),
// the label must exist and be numeric. cols may be nil: then only the plan
// itself is checked, with one input per feature (more for one_hot).
func Check(p *Plan, cols []dataset.Column) (*Report, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Model != "" {
		return nil, fmt.Errorf("plan names hosted model %q; resolve it against the model first", p.Model)
	}
	if cols != nil {
		if err := checkColumns(p, cols); err != nil {
			return nil, err
		}
	}
	prog, err := compile(p)
	if err != nil {
		return nil, err
	}
	r := prog.report(p)
	r.StepMemory = saturate(prog.stepMemory(p.Train.BatchSize))
	return r, nil
}

func checkColumns(p *Plan, cols []dataset.Column) error {
	byName := make(map[string]dataset.Column, len(cols))
	for _, c := range cols {
		byName[c.Name] = c
	}
	hot := map[string]bool{}
	for _, pp := range p.Preprocess {
		if pp.Op == "one_hot" {
			hot[pp.Column] = true
		}
	}
	for i, f := range p.Features {
		c, ok := byName[f]
		if !ok {
			return fmt.Errorf("features[%d]: column %q is not in the data set (columns: %s)", i, f, columnList(cols))
		}
		if !hot[f] && c.Type != dataset.TypeNumber {
			return fmt.Errorf("features[%d]: column %q is a %s column; one-hot encode it (preprocess one_hot) or drop it", i, f, c.Type)
		}
	}
	c, ok := byName[p.Label]
	if !ok {
		return fmt.Errorf("label: column %q is not in the data set (columns: %s)", p.Label, columnList(cols))
	}
	if c.Type != dataset.TypeNumber {
		return fmt.Errorf("label: column %q is a %s column; the label must be numeric", p.Label, c.Type)
	}
	return nil
}

func columnList(cols []dataset.Column) string {
	n := make([]string, len(cols))
	for i, c := range cols {
		n[i] = c.Name
	}
	return summarizeNames(n)
}

// program is a compiled plan: values in numbered slots (static single
// assignment), steps over slots.
type program struct {
	inputs     int
	inputNames []string
	slotName   []string
	shape      [][]int // per slot; Batch for N
	paramNames []string
	paramSlot  []int // slot of paramNames[i]
	x          int   // slot of x
	steps      []step
	pred       int    // slot of the prediction
	lossOp     string // bce, bce_logits, cross_entropy, mse
	lossIn     int    // slot the loss is computed from (logits when available)
	lossFrom   string // "logits", "probs", "logprobs", "values"
	outputs    int
	task       string
	// stats are the param indices of batch_norm running statistics:
	// state the training forward pass updates, never trained.
	stats        []int
	hasBatchNorm bool
	hasDropout   bool
	// seed is the dropout seed of the current training step, set by the
	// trainer before each step: the one field of a program that changes.
	seed uint64
}

type step struct {
	idx  int // index in plan.Forward
	op   string
	a, b int // input slots; b = -1 for unary ops; batch_norm: the running mean
	c    int // batch_norm: the running variance's slot; else -1
	out  int
	rate float64 // dropout
	eps  float64 // layer_norm, batch_norm
	mom  float64 // batch_norm
	stat [2]int  // batch_norm: param indices of the running mean and variance
}

func (pr *program) newSlot(name string, shape []int) int {
	pr.slotName = append(pr.slotName, name)
	pr.shape = append(pr.shape, shape)
	return len(pr.shape) - 1
}

// inputLayout returns the names of x's columns after one_hot.
func inputLayout(p *Plan) []string {
	hot := map[string][]string{}
	for _, pp := range p.Preprocess {
		if pp.Op == "one_hot" {
			hot[pp.Column] = pp.Categories
		}
	}
	var names []string
	for _, f := range p.Features {
		if cats, ok := hot[f]; ok {
			for _, c := range cats {
				names = append(names, f+"="+c)
			}
			continue
		}
		names = append(names, f)
	}
	return names
}

func compile(p *Plan) (*program, error) {
	pr := &program{}
	pr.inputNames = inputLayout(p)
	pr.inputs = len(pr.inputNames)
	if pr.inputs > MaxFeatures {
		return nil, fmt.Errorf("x would have %d columns after one_hot, more than the limit of %d", pr.inputs, MaxFeatures)
	}
	cur := map[string]int{}
	pr.x = pr.newSlot("x", []int{Batch, pr.inputs})
	cur["x"] = pr.x
	pr.paramNames = sortedParamNames(p.Params)
	for _, n := range pr.paramNames {
		s := pr.newSlot(n, slices.Clone(p.Params[n].Shape))
		pr.paramSlot = append(pr.paramSlot, s)
		cur[n] = s
	}
	producer := map[int]step{}
	for i, op := range p.Forward {
		where := fmt.Sprintf("forward[%d] %s", i, op.Op)
		st := step{idx: i, op: op.Op, a: cur[op.In[0]], b: -1, c: -1}
		sa := pr.shape[st.a]
		var out []int
		describe := func(k int) string {
			return fmt.Sprintf("%s is %s", op.In[k], FormatShape(pr.shape[cur[op.In[k]]]))
		}
		switch op.Op {
		case "matmul":
			st.b = cur[op.In[1]]
			sb := pr.shape[st.b]
			if len(sa) != 2 || len(sb) != 2 {
				return nil, fmt.Errorf("%s: both inputs must be matrices (2 dimensions): %s, %s", where, describe(0), describe(1))
			}
			if sa[1] == Batch || sb[0] == Batch || sb[1] == Batch {
				return nil, fmt.Errorf("%s: cannot multiply over the batch dimension N: %s, %s", where, describe(0), describe(1))
			}
			if sa[1] != sb[0] {
				return nil, fmt.Errorf("%s: inner dimensions differ: %s, %s", where, describe(0), describe(1))
			}
			out = []int{sa[0], sb[1]}
		case "add", "sub", "mul":
			st.b = cur[op.In[1]]
			sb := pr.shape[st.b]
			var ok bool
			out, ok = broadcastShape(sa, sb)
			if !ok {
				return nil, fmt.Errorf("%s: shapes do not match: %s, %s (allowed: equal shapes, or a vector [m] or [1] against a matrix [r,m])", where, describe(0), describe(1))
			}
		case "relu", "sigmoid", "tanh":
			out = slices.Clone(sa)
		case "dropout":
			st.rate = op.rate()
			out = slices.Clone(sa)
		case "layer_norm", "batch_norm":
			if len(sa) != 2 || sa[0] != Batch {
				return nil, fmt.Errorf("%s: input must be a batch of rows [N,features]: %s", where, describe(0))
			}
			st.eps = op.eps()
			out = slices.Clone(sa)
			if op.Op == "layer_norm" {
				break
			}
			st.mom = op.momentum()
			st.b, st.c = cur[op.In[1]], cur[op.In[2]]
			for k, s := range []int{st.b, st.c} {
				if sh := pr.shape[s]; len(sh) != 1 || sh[0] != sa[1] {
					return nil, fmt.Errorf("%s: running statistics must be vectors [%d], one per feature: %s", where, sa[1], describe(k+1))
				}
				st.stat[k] = slices.Index(pr.paramSlot, s)
			}
			pr.stats = append(pr.stats, st.stat[0], st.stat[1])
			pr.hasBatchNorm = true
		case "softmax", "log_softmax":
			if len(sa) != 2 {
				return nil, fmt.Errorf("%s: input must be a matrix [N,classes]: %s", where, describe(0))
			}
			out = slices.Clone(sa)
		}
		if op.Op == "dropout" {
			pr.hasDropout = true
		}
		st.out = pr.newSlot(op.Out, out)
		cur[op.Out] = st.out
		producer[st.out] = st
		pr.steps = append(pr.steps, st)
	}
	// The loss.
	pr.lossOp = p.Loss.Op
	pr.pred = cur[p.Loss.In[0]]
	ps := pr.shape[pr.pred]
	where := fmt.Sprintf("loss %s", pr.lossOp)
	if len(ps) != 2 || ps[0] != Batch {
		return nil, fmt.Errorf("%s: prediction %s is %s; it must be [N,outputs], one row per data row", where, p.Loss.In[0], FormatShape(ps))
	}
	if slices.Contains(ps[1:], Batch) {
		return nil, fmt.Errorf("%s: prediction %s is %s", where, p.Loss.In[0], FormatShape(ps))
	}
	pr.outputs = ps[1]
	prod, produced := producer[pr.pred]
	pr.lossIn, pr.lossFrom = pr.pred, "values"
	switch pr.lossOp {
	case "bce":
		if ps[1] != 1 {
			return nil, fmt.Errorf("%s: prediction %s is %s; binary cross-entropy needs [N,1]", where, p.Loss.In[0], FormatShape(ps))
		}
		if !produced || prod.op != "sigmoid" {
			return nil, fmt.Errorf("%s: prediction %s must be the output of a sigmoid op (use bce_logits on raw scores)", where, p.Loss.In[0])
		}
		pr.lossIn, pr.lossFrom = prod.a, "logits"
		pr.task = TaskBinary
	case "bce_logits":
		if ps[1] != 1 {
			return nil, fmt.Errorf("%s: prediction %s is %s; binary cross-entropy needs [N,1]", where, p.Loss.In[0], FormatShape(ps))
		}
		if produced && (prod.op == "sigmoid" || prod.op == "softmax") {
			return nil, fmt.Errorf("%s: prediction %s is the output of %s, but bce_logits takes raw scores (use bce after sigmoid)", where, p.Loss.In[0], prod.op)
		}
		pr.lossFrom = "logits"
		pr.task = TaskBinary
	case "cross_entropy":
		if ps[1] < 2 {
			return nil, fmt.Errorf("%s: prediction %s is %s; cross_entropy needs [N,classes] with 2 or more classes", where, p.Loss.In[0], FormatShape(ps))
		}
		pr.lossFrom = "logits"
		if produced {
			switch prod.op {
			case "softmax":
				pr.lossIn, pr.lossFrom = prod.a, "logits"
			case "log_softmax":
				pr.lossFrom = "logprobs"
			case "sigmoid":
				return nil, fmt.Errorf("%s: prediction %s is the output of sigmoid; cross_entropy takes scores, softmax or log_softmax", where, p.Loss.In[0])
			}
		}
		pr.task = TaskMulticlass
	case "mse":
		if ps[1] != 1 {
			return nil, fmt.Errorf("%s: prediction %s is %s; mse against the one label column needs [N,1]", where, p.Loss.In[0], FormatShape(ps))
		}
		pr.task = TaskRegression
	default:
		return nil, fmt.Errorf("%s: unknown loss", where)
	}
	return pr, nil
}

// broadcastShape applies the add/sub/mul rule: equal shapes; a vector [m]
// against a matrix [r,m] (either side); a vector [1] against anything.
func broadcastShape(a, b []int) ([]int, bool) {
	switch {
	case slices.Equal(a, b):
		return slices.Clone(a), true
	case len(b) == 1 && b[0] == 1:
		return slices.Clone(a), true
	case len(a) == 1 && a[0] == 1:
		return slices.Clone(b), true
	case len(a) == 2 && len(b) == 1 && b[0] == a[1] && b[0] != Batch:
		return slices.Clone(a), true
	case len(b) == 2 && len(a) == 1 && a[0] == b[1] && a[0] != Batch:
		return slices.Clone(b), true
	}
	return nil, false
}

func (pr *program) report(p *Plan) *Report {
	r := &Report{Shapes: map[string][]int{}, Inputs: pr.inputs, InputNames: pr.inputNames,
		Outputs: pr.outputs, Task: pr.task}
	for i, n := range pr.slotName {
		r.Shapes[n] = pr.shape[i]
	}
	for i, n := range pr.paramNames {
		s := pr.shape[pr.paramSlot[i]]
		c := 1
		for _, d := range s {
			c *= d
		}
		r.Params = append(r.Params, ParamReport{Name: n, Shape: s, Count: c})
		r.ParamCount += c
	}
	for _, st := range pr.steps {
		r.Steps = append(r.Steps, StepReport{Index: st.idx, Op: st.op, In: p.Forward[st.idx].In,
			Out: p.Forward[st.idx].Out, Shape: pr.shape[st.out]})
	}
	r.Steps = append(r.Steps, StepReport{Index: -1, Op: p.Loss.Op, In: p.Loss.In})
	return r
}
