package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/fedgrid/fedgrid/crypto/secagg"
	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// Federated preprocessing (plan.FitSpec): a federation whose plan leaves
// standardize or min_max statistics to fit runs a round 0 before training.
// This gateway adds its row count and the sums and sums of squares of the
// columns to standardize to the round's secure sum (the coordinator learns
// only the totals), and releases its minima and maxima of the columns to
// min_max: in the clear, as they cannot be summed, under this gateway's
// rules: round 0 opens, like any round, only after its compliance officer
// approved the federation on review-gated data, and the request says what
// leaves (fedFitDetail). From round 1 on the coordinator sends the plan with
// the fitted statistics; the gateway takes those statistics, and nothing
// else, into its copy of the plan, which its nodes train with and the
// released model carries.

// fedFitSpec is what round 0 collects for the federation's plan.
func fedFitSpec(pl *plan.Plan) (plan.FitSpec, error) {
	spec, err := plan.FitNeeds(pl)
	if err != nil {
		return spec, p2p.Errorf(p2p.CodeBadRequest, "plan: %v", err)
	}
	return spec, nil
}

// fedFitLength is the masked vector's length of round 0 with parties gateways.
func fedFitLength(spec plan.FitSpec, parties int) (int, error) {
	w, err := secagg.NewWide(parties)
	if err != nil {
		return 0, p2p.Errorf(p2p.CodeBadRequest, "%v", err)
	}
	return w.Length(spec.SumValues()), nil
}

// fedFitStart computes this gateway's part of round 0 on its rows: the
// rows of the dataset version the federation job was created on, read in
// one streamed pass (plan.LocalFit), never whole.
func (g *Gateway) fedFitStart(ctx context.Context, j *store.Job, pl *plan.Plan, r *fedRound, shares []wire.FedShare) error {
	spec, err := fedFitSpec(pl)
	if err != nil {
		return err
	}
	if spec.Empty() {
		return p2p.Errorf(p2p.CodeBadRequest, "the federation's plan declares all its statistics: there is no round 0")
	}
	sums, lo, hi, err := g.localFit(ctx, j, pl, spec)
	if err != nil {
		return err
	}
	return g.fedKeepSums(r, sums, &wire.FedExtremes{Min: lo, Max: hi}, shares, "round 0 at this gateway: %d statistics are too large for secure aggregation; declare them in the plan")
}

// localFit is plan.LocalFit over the job's dataset version, streamed.
func (g *Gateway) localFit(ctx context.Context, j *store.Job, pl *plan.Plan, spec plan.FitSpec) (sums, lo, hi []float64, err error) {
	v, err := g.store.OpenDatasetVersion(j.DatasetID, j.DatasetSHA256)
	if err != nil {
		return nil, nil, nil, service.Wrap(err, "dataset "+j.DatasetID)
	}
	defer func() { _ = v.Close() }()
	sums, lo, hi, err = plan.LocalFit(ctx, pl, spec, g.scanned(v))
	if ctx.Err() != nil {
		return nil, nil, nil, ctx.Err()
	}
	if err != nil {
		// The reason names no value of the data.
		return nil, nil, nil, p2p.Errorf(p2p.CodeConflict, "round 0 at this gateway: %v", err)
	}
	return sums, lo, hi, nil
}

// fedKeepSums keeps, for masking, sums computed at this gateway itself
// (round 0's statistics, an evaluation's figures) in the wide fixed point,
// with what else leaves beside them and the round's shares for this
// gateway; tooLarge words the refusal of values beyond its range (%d: how many).
func (g *Gateway) fedKeepSums(r *fedRound, sums []float64, extremes *wire.FedExtremes, shares []wire.FedShare, tooLarge string) error {
	w, err := secagg.NewWide(len(r.params.Parties))
	if err != nil {
		return err
	}
	words := make([]uint32, w.Length(len(sums)))
	if c := w.Encode(words, sums); c > 0 {
		return p2p.Errorf(p2p.CodeConflict, tooLarge, c)
	}
	g.fed.mu.Lock()
	defer g.fed.mu.Unlock()
	if r.fit == nil {
		r.fit, r.extremes = words, extremes
		r.shares = make([]secagg.EncryptedShare, len(shares))
		for i, s := range shares {
			r.shares[i] = secagg.EncryptedShare(s)
		}
	}
	return nil
}

// fedFitUpdate masks the vector this gateway computed itself (round 0's
// statistics, an evaluation's sums).
func (g *Gateway) fedFitUpdate(r *fedRound, req *wire.FedRoundRequest) (*wire.FedUpdateResponse, error) {
	g.fed.mu.Lock()
	defer g.fed.mu.Unlock()
	if r.fit == nil {
		return nil, p2p.Errorf(p2p.CodeConflict, "round %d has not started at this gateway", req.Round)
	}
	if r.masked == nil {
		in, err := r.party.MaskInput(r.fit, r.shares)
		if err != nil {
			return nil, p2p.Errorf(p2p.CodeConflict, "%v", err)
		}
		r.masked = in.Words
		g.log.Info("federation sums sent", "federation", req.Federation, "round", req.Round, "extremes", r.extremes != nil)
	}
	return &wire.FedUpdateResponse{Ready: true, Party: g.ID(), Words: r.masked, Extremes: r.extremes}, nil
}

// fedTakeFitted takes the statistics round 0 fitted into the stored plan of
// the federation job, once; it returns the job as it is then.
func (g *Gateway) fedTakeFitted(j *store.Job, pl *plan.Plan, fittedJSON json.RawMessage) (*store.Job, error) {
	spec, err := fedFitSpec(pl)
	if err != nil || spec.Empty() {
		return j, err
	}
	if len(fittedJSON) == 0 {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "the federation's plan leaves statistics to fit: round %d needs the plan with the statistics of round 0", j.Progress.Epoch+1)
	}
	fitted, err := plan.Parse(fittedJSON)
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "fitted plan: %v", err)
	}
	q, err := plan.TakeFitted(pl, fitted)
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "fitted plan: %v", err)
	}
	b, err := json.Marshal(q)
	if err != nil {
		return nil, err
	}
	if err := g.store.SetFederationPlan(j.ID, j.Plan, b); err != nil && !errors.Is(err, store.ErrConflictState) {
		return nil, service.Wrap(err, "job "+j.ID)
	}
	g.log.Info("federation statistics fitted", "federation", j.Federation, "job", j.ID)
	return g.store.Job(j.ID)
}

// fedFitDetail is what the officer reads of round 0, or "" if there is none.
func fedFitDetail(pl *plan.Plan) string {
	spec, err := plan.FitNeeds(pl)
	if err != nil || spec.Empty() {
		return ""
	}
	var b strings.Builder
	b.WriteString(" Round 0 fits the preprocessing across the gateways before training:")
	if len(spec.Sums) > 0 {
		fmt.Fprintf(&b, " for standardize, this gateway's row count and the sums and sums of squares of %s leave through secure aggregation (only the totals over all gateways can be read);",
			strings.Join(plan.FitColumns(pl, spec.Sums), ", "))
	}
	if len(spec.Extremes) > 0 {
		fmt.Fprintf(&b, " for min_max, this gateway's own minimum and maximum of %s leave IN THE CLEAR to the coordinator (extremes cannot be summed);",
			strings.Join(plan.FitColumns(pl, spec.Extremes), ", "))
	}
	b.WriteString(" these statistics are exact, not covered by any DP guarantee.")
	return b.String()
}
