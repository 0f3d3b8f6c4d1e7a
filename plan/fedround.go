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

// Values is a gateway's update as reals, before quantisation: its rows
// (capped at MaxRows), rows times its training loss (at most MaxFedLoss),
// then rows times the change of each parameter (clipped to Clip), in
// ParamOrder. Summed over the gateways, it is what DecodeValues reads.
// The secure update (Encode) quantises these values; a federation with
// plain updates sends them as they are.
func (c *UpdateCodec) Values(rows int, loss float64, local, global map[string]Tensor) ([]float64, error) {
	if len(local) != len(global) {
		return nil, errors.New("update: the local model's parameters differ from the global ones")
	}
	n := float64(min(max(rows, 0), c.maxRows))
	if math.IsNaN(loss) {
		loss = 0 // as the quantiser encodes a NaN
	}
	out := make([]float64, 2, c.Length(global))
	out[0], out[1] = n, n*max(-MaxFedLoss, min(loss, MaxFedLoss))
	for _, name := range ParamOrder(global) {
		g, l := global[name], local[name]
		if len(l.Data) != len(g.Data) {
			return nil, fmt.Errorf("update: parameter %q has %d values, the global model %d", name, len(l.Data), len(g.Data))
		}
		for i := range g.Data {
			d := l.Data[i] - g.Data[i]
			if math.IsNaN(d) {
				d = 0
			}
			out = append(out, n*max(-c.clip, min(c.clip, d)))
		}
	}
	return out, nil
}

// Encode packs a gateway's update (Values) into words for secure
// aggregation. It returns the vector and how many values were clipped by
// the quantiser.
func (c *UpdateCodec) Encode(rows int, loss float64, local, global map[string]Tensor) ([]uint32, int, error) {
	vals, err := c.Values(rows, loss, local, global)
	if err != nil {
		return nil, 0, err
	}
	out := make([]uint32, len(vals))
	clipped := c.rows.Encode(out[:1], vals[:1])
	clipped += c.loss.Encode(out[1:2], vals[1:2])
	clipped += c.delta.Encode(out[2:], vals[2:])
	return out, clipped, nil
}

// Decode unpacks a sum of updates: the total rows, the row-weighted mean
// loss and the row-weighted mean change of each parameter (shaped like global).
func (c *UpdateCodec) Decode(sum []uint32, global map[string]Tensor) (rows float64, loss float64, delta map[string]Tensor, err error) {
	if len(sum) != c.Length(global) {
		return 0, 0, nil, fmt.Errorf("update sum has %d words, want %d", len(sum), c.Length(global))
	}
	vals := make([]float64, len(sum))
	c.rows.Decode(vals[:1], sum[:1])
	c.loss.Decode(vals[1:2], sum[1:2])
	c.delta.Decode(vals[2:], sum[2:])
	vals[0] = math.Round(vals[0])
	return c.DecodeValues(vals, global)
}

// CheckValues checks one gateway's plain update (Values) as the
// coordinator receives it: the length of the plan's, every value finite
// and within what Values can produce.
func (c *UpdateCodec) CheckValues(vals []float64, global map[string]Tensor) error {
	if len(vals) != c.Length(global) {
		return fmt.Errorf("update of %d values, want %d", len(vals), c.Length(global))
	}
	n := vals[0]
	if !(n >= 0 && n <= float64(c.maxRows)) || n != math.Trunc(n) {
		return fmt.Errorf("update row count %v is not a whole number from 0 to %d", n, c.maxRows)
	}
	if !(math.Abs(vals[1]) <= n*MaxFedLoss) {
		return errors.New("update loss is out of range")
	}
	for _, v := range vals[2:] {
		if !(math.Abs(v) <= n*c.clip) {
			return errors.New("update has a change that is not finite or over the clip bound")
		}
	}
	return nil
}

// DecodeValues reads a sum of updates as reals (summed Values): the total
// rows, the row-weighted mean loss and the row-weighted mean change of each
// parameter (shaped like global).
func (c *UpdateCodec) DecodeValues(sum []float64, global map[string]Tensor) (rows float64, loss float64, delta map[string]Tensor, err error) {
	if len(sum) != c.Length(global) {
		return 0, 0, nil, fmt.Errorf("update sum has %d values, want %d", len(sum), c.Length(global))
	}
	rows = sum[0]
	if rows < 1 {
		return 0, 0, nil, errors.New("update sum has no rows")
	}
	delta = make(map[string]Tensor, len(global))
	off := 2
	for _, name := range ParamOrder(global) {
		g := global[name]
		d := make([]float64, len(g.Data))
		for i := range d {
			d[i] = sum[off+i] / rows
		}
		off += len(d)
		delta[name] = Tensor{Shape: slices.Clone(g.Shape), Data: d}
	}
	return rows, sum[1] / rows, delta, nil
}

// Flatten returns the values of params in ParamOrder, each row-major: the
// layout of a weights vector on the wire.
func Flatten(params map[string]Tensor) []float64 {
	out := make([]float64, 0, ParamCount(params))
	for _, name := range ParamOrder(params) {
		out = append(out, params[name].Data...)
	}
	return out
}

// Unflatten shapes v (Flatten's layout) as the parameters of like. The
// tensors share v's storage; v must not be changed afterwards.
func Unflatten(v []float64, like map[string]Tensor) (map[string]Tensor, error) {
	if n := ParamCount(like); len(v) != n {
		return nil, fmt.Errorf("weights vector of %d values, the plan has %d", len(v), n)
	}
	out := make(map[string]Tensor, len(like))
	off := 0
	for _, name := range ParamOrder(like) {
		n := len(like[name].Data)
		out[name] = Tensor{Shape: slices.Clone(like[name].Shape), Data: v[off : off+n : off+n]}
		off += n
	}
	return out, nil
}
