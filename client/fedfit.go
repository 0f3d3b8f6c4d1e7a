package client

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/fedgrid/fedgrid/crypto/secagg"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// Federated preprocessing: round 0 fits the standardize and min_max
// statistics the plan leaves undeclared from all the gateways' rows
// (plan.FitSpec). The coordinator learns the total row count, sums and sums
// of squares through secure aggregation, and each gateway's minima and
// maxima of the columns to min_max, which it releases under its rules.

// plan is the federation's plan: with the fitted statistics once round 0 ran.
func (s *FedState) plan() json.RawMessage {
	if s.Fitted != nil {
		return s.Fitted
	}
	return s.Options.Plan
}

// fedFitRound runs round 0 if the plan needs it, and sets s.Fitted and s.Fit.
func (c *Client) fedFitRound(ctx context.Context, s *FedState, run FedRunOptions) error {
	pl, err := plan.Parse(s.Options.Plan)
	if err != nil {
		return err
	}
	spec, err := plan.FitNeeds(pl)
	if err != nil || spec.Empty() {
		return err
	}
	start := time.Now()
	parties := slices.Clone(s.Active)
	wide, err := secagg.NewWide(max(1, len(parties)))
	if err != nil {
		return err
	}
	train := func(string) *wire.FedTrainRequest { return &wire.FedTrainRequest{} }
	sum, u3, updates, dropped, err := c.secureSum(ctx, s, wire.FitRound, parties, wide.Length(spec.SumValues()), train, nil, run)
	if err != nil {
		return err
	}
	sums := make([]float64, spec.SumValues())
	if err := wide.Decode(sums, sum); err != nil {
		return err
	}
	// The extremes of the gateways whose sums are in the total.
	lo, hi := []float64{}, []float64{}
	for i, gw := range u3 {
		if len(spec.Extremes) == 0 {
			break
		}
		e := updates[gw].Extremes
		if e == nil || len(e.Min) != len(spec.Extremes) || len(e.Max) != len(spec.Extremes) {
			return fmt.Errorf("gateway %s did not send the %d minima and maxima of round 0", gw, len(spec.Extremes))
		}
		if i == 0 {
			lo, hi = slices.Clone(e.Min), slices.Clone(e.Max)
			continue
		}
		for k := range lo {
			lo[k], hi[k] = min(lo[k], e.Min[k]), max(hi[k], e.Max[k])
		}
	}
	fitted, err := plan.FitPlan(pl, spec, sums, lo, hi, wide.Error())
	if err != nil {
		return fmt.Errorf("round 0: %w", err)
	}
	b, err := json.Marshal(fitted)
	if err != nil {
		return err
	}
	s.Fitted = b
	gone := s.dropOut(dropped)
	s.Fit = &FedRound{Round: wire.FitRound, Participants: u3, Dropped: gone, Rows: sums[0], Seconds: time.Since(start).Seconds()}
	if run.Progress != nil {
		run.Progress(*s.Fit)
	}
	return nil
}
