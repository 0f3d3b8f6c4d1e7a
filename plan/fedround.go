package plan

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedgrid/fedgrid/crypto/secagg"
)

// Federated training across gateways: helpers the coordinator (a data
// scientist's client) and the gateways share.

// InitialParams returns the parameters a plan starts from (drawn from
// train.seed, as Train draws them), so that the coordinator's round 1 starts
// every gateway from the same weights.
func InitialParams(p *Plan) (map[string]Tensor, error) {
	pr, err := compile(p)
	if err != nil {
		return nil, err
	}
	vals, err := initParams(p, pr, nil)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Tensor, len(vals))
	for i, name := range pr.paramNames {
		out[name] = Tensor{Shape: slices.Clone(p.Params[name].Shape), Data: vals[i]}
	}
	return out, nil
}

// DeclaredStates returns the preprocessing states of a plan whose
// standardize and min_max ops all declare their statistics: a model built
// from federated weights applies them without any gateway's rows. A plan
// that would fit statistics on the data is refused: fitted on one
// gateway's rows they would describe that gateway alone.
func DeclaredStates(p *Plan) ([]PreprocessState, error) {
	for _, pp := range p.Preprocess {
		switch {
		case pp.Op == "standardize" && pp.Mean == nil, pp.Op == "min_max" && pp.Min == nil:
			return nil, fmt.Errorf("preprocess %s has no declared statistics: across gateways they cannot be fitted on one gateway's rows; declare them in the plan (mean/std or min/max)", pp.Op)
		}
	}
	pr, err := compile(p)
	if err != nil {
		return nil, err
	}
	return fitPreprocess(p, nil, pr.inputs, nil), nil
}

// ParamOrder is the order in which parameters are flattened into an update.
func ParamOrder(params map[string]Tensor) []string {
	names := make([]string, 0, len(params))
	for n := range params {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ParamCount is the number of scalars in params.
func ParamCount(params map[string]Tensor) int {
	n := 0
	for _, t := range params {
		n += len(t.Data)
	}
	return n
}

// MaxFedLoss bounds the training loss one gateway reports in a round.
const MaxFedLoss = 1000

// UpdateCodec packs one gateway's round update into words mod 2^32 for
// secure aggregation, and unpacks their sum. The vector is
// [rows, rows*loss, rows*(w_local - w_global)...] with parameters in
// ParamOrder, each part in fixed point whose scale keeps the sum over
// Parties gateways from wrapping: rows at most MaxRows, loss at most
// MaxFedLoss, a parameter's change at most Clip.
type UpdateCodec struct {
	rows, loss, delta secagg.Quantizer
	maxRows           int
	clip              float64
}

// NewUpdateCodec returns the codec of a round with parties gateways.
func NewUpdateCodec(maxRows int, clip float64, parties int) (*UpdateCodec, error) {
	if maxRows < 1 {
		return nil, errors.New("max rows must be positive")
	}
	if !(clip > 0) || math.IsInf(clip, 0) {
		return nil, errors.New("clip must be positive and finite")
	}
	r, err := secagg.NewQuantizer(float64(maxRows), parties)
	if err != nil {
		return nil, err
	}
	l, err := secagg.NewQuantizer(float64(maxRows)*MaxFedLoss, parties)
	if err != nil {
		return nil, err
	}
	d, err := secagg.NewQuantizer(float64(maxRows)*clip, parties)
	if err != nil {
		return nil, err
	}
	return &UpdateCodec{rows: r, loss: l, delta: d, maxRows: maxRows, clip: clip}, nil
}

// Length is the vector length for params.
func (c *UpdateCodec) Length(params map[string]Tensor) int { return 2 + ParamCount(params) }

// Encode packs a gateway's update: its rows (capped at MaxRows), its mean
// training loss and its local weights against the round's global weights.
// It returns the vector and how many values were clipped.
func (c *UpdateCodec) Encode(rows int, loss float64, local, global map[string]Tensor) ([]uint32, int, error) {
	if len(local) != len(global) {
		return nil, 0, errors.New("update: the local model's parameters differ from the global ones")
	}
	n := float64(min(max(rows, 0), c.maxRows))
	out := make([]uint32, c.Length(global))
	clipped := c.rows.Encode(out[:1], []float64{n})
	clipped += c.loss.Encode(out[1:2], []float64{n * min(loss, MaxFedLoss)})
	vals := make([]float64, 0, len(out)-2)
	for _, name := range ParamOrder(global) {
		g, l := global[name], local[name]
		if len(l.Data) != len(g.Data) {
			return nil, 0, fmt.Errorf("update: parameter %q has %d values, the global model %d", name, len(l.Data), len(g.Data))
		}
		for i := range g.Data {
			d := l.Data[i] - g.Data[i]
			d = max(-c.clip, min(c.clip, d))
			vals = append(vals, n*d)
		}
	}
	clipped += c.delta.Encode(out[2:], vals)
	return out, clipped, nil
}

// Decode unpacks a sum of updates: the total rows, the row-weighted mean
// loss and the row-weighted mean change of each parameter (shaped like global).
func (c *UpdateCodec) Decode(sum []uint32, global map[string]Tensor) (rows float64, loss float64, delta map[string]Tensor, err error) {
	if len(sum) != c.Length(global) {
		return 0, 0, nil, fmt.Errorf("update sum has %d words, want %d", len(sum), c.Length(global))
	}
	head := make([]float64, 2)
	c.rows.Decode(head[:1], sum[:1])
	c.loss.Decode(head[1:], sum[1:2])
	rows = math.Round(head[0])
	if rows < 1 {
		return 0, 0, nil, errors.New("update sum has no rows")
	}
	vals := make([]float64, len(sum)-2)
	c.delta.Decode(vals, sum[2:])
	delta = make(map[string]Tensor, len(global))
	off := 0
	for _, name := range ParamOrder(global) {
		g := global[name]
		d := make([]float64, len(g.Data))
		for i := range d {
			d[i] = vals[off+i] / rows
		}
		off += len(d)
		delta[name] = Tensor{Shape: slices.Clone(g.Shape), Data: d}
	}
	return rows, head[1] / rows, delta, nil
}
