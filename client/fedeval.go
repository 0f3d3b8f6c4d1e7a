package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fedgrid/fedgrid/crypto/secagg"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// Federated evaluation: a model scored on the rows of several gateways, of
// which the client learns only secure sums (plan.EvalSums: rows, loss sum,
// rows right, per-class score histograms), never one gateway's figures. It
// runs as a federation of one round (wire.FedJoinRequest.Eval): each
// gateway checks the join like a federation's (permission, the model's
// plan against its schema, its officer's approval on review-gated data).

// EvalOptions configure a federated evaluation.
type EvalOptions struct {
	// ID names the evaluation (empty: a random one).
	ID           string
	Model        *plan.Model
	Participants []wire.FedParticipant
	// MinGateways is the fewest gateways whose rows must be in the figures (0: all).
	MinGateways int
}

// EvalResult is a federated evaluation's outcome.
type EvalResult struct {
	Federation string `json:"federation"`
	plan.FedEvaluation
	// Gateways whose rows are in the figures; Dropped failed on the way;
	// Refused did not take part, and why.
	Gateways []string          `json:"gateways"`
	Dropped  []string          `json:"dropped,omitempty"`
	Refused  map[string]string `json:"refused,omitempty"`
	// Jobs: each gateway's job following its part (gateway -> job ID).
	Jobs map[string]string `json:"jobs"`
}

// FedEvaluate scores o.Model on the participants' datasets. run.Waiting is
// called while compliance officers have not decided; ctx bounds the wait.
func (c *Client) FedEvaluate(ctx context.Context, o EvalOptions, run FedRunOptions) (*EvalResult, error) {
	if o.Model == nil {
		return nil, errors.New("no model to evaluate")
	}
	mp, err := plan.ModelPlan(o.Model)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	nv, err := plan.EvalValues(mp)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	planJSON, err := json.Marshal(mp)
	if err != nil {
		return nil, err
	}
	weights, err := json.Marshal(o.Model.Params)
	if err != nil {
		return nil, err
	}
	s, err := NewFederation(FedOptions{ID: o.ID, Plan: planJSON, Participants: o.Participants, Rounds: 1, MinGateways: o.MinGateways,
		MaxRows: 1, Clip: 1, Eval: true})
	if err != nil {
		return nil, err
	}
	if run.UpdateTimeout <= 0 {
		run.UpdateTimeout = 30 * time.Minute
	}
	if run.Poll <= 0 {
		run.Poll = 250 * time.Millisecond
	}
	none := func() error { return nil }
	res := &EvalResult{Federation: s.Options.ID, Jobs: s.Jobs}
	if err := c.fedJoin(ctx, s); err != nil {
		res.Refused = s.Refused
		return res, c.fedStop(ctx, s, err, none)
	}
	res.Refused = s.Refused
	if err := c.fedAwaitApprovals(ctx, s, run); err != nil {
		return res, c.fedStop(context.WithoutCancel(ctx), s, err, none)
	}
	parties := slices.Clone(s.Active)
	wide, err := secagg.NewWide(max(1, len(parties)))
	if err != nil {
		return res, c.fedStop(ctx, s, err, none)
	}
	train := func(string) *wire.FedTrainRequest { return &wire.FedTrainRequest{Weights: weights} }
	sum, u3, _, dropped, err := c.secureSum(ctx, s, 1, parties, wide.Length(nv), train, nil, run)
	if err != nil {
		return res, c.fedStop(context.WithoutCancel(ctx), s, err, none)
	}
	sums := make([]float64, nv)
	if err := wide.Decode(sums, sum); err != nil {
		return res, c.fedStop(ctx, s, err, none)
	}
	ev, err := plan.EvalFromSums(mp, sums)
	if err != nil {
		return res, c.fedStop(ctx, s, err, none)
	}
	res.FedEvaluation, res.Gateways, res.Dropped = *ev, u3, s.dropOut(dropped)
	// Each gateway's part ends (its job succeeds; nothing else leaves).
	eachGateway(s.Active, func(gw string) error {
		_, err := c.fedFinish(ctx, gw, &wire.FedFinishRequest{Federation: s.Options.ID, Rounds: 1})
		return err
	})
	return res, nil
}
