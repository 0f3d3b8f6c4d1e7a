package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/fedgrid/fedgrid/crypto/secagg"
	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// Federated evaluation (`fedgrid eval`, wire.FedJoinRequest.Eval): a
// federation of one round that scores a model instead of training one.
// The join is checked like a federation's (the requester's permission on
// the dataset, the model's plan against its schema; on review-gated data an
// officer's approval before the round opens, the request saying what
// leaves); nothing is reserved, as no noise is added: what leaves is only
// this gateway's plan.EvalSums (rows, loss sum, rows right, per-class score
// histograms) masked for secure aggregation, so that the coordinator reads
// the totals over all the gateways and never this gateway's figures.

// fedEvalLength is the masked vector's length of an evaluation.
func fedEvalLength(pl *plan.Plan, parties int) (int, error) {
	n, err := plan.EvalValues(pl)
	if err != nil {
		return 0, p2p.Errorf(p2p.CodeBadRequest, "plan: %v", err)
	}
	w, err := secagg.NewWide(parties)
	if err != nil {
		return 0, p2p.Errorf(p2p.CodeBadRequest, "%v", err)
	}
	return w.Length(n), nil
}

// fedEvalStart scores the model's weights on this gateway's rows: the rows
// of the dataset version the evaluation job was created on, in one
// streamed pass (plan.EvalSums), never whole.
func (g *Gateway) fedEvalStart(ctx context.Context, j *store.Job, pl *plan.Plan, r *fedRound, req *wire.FedTrainRequest) error {
	var params map[string]plan.Tensor
	if err := json.Unmarshal(req.Weights, &params); err != nil {
		return p2p.Errorf(p2p.CodeBadRequest, "weights: %v", err)
	}
	init, err := plan.InitialParams(pl)
	if err != nil {
		return err
	}
	if err := sameShapes(params, init); err != nil {
		return p2p.Errorf(p2p.CodeBadRequest, "weights: %v", err)
	}
	states, err := plan.DeclaredStates(pl)
	if err != nil {
		return p2p.Errorf(p2p.CodeBadRequest, "plan: %v", err)
	}
	m := &plan.Model{Format: plan.ModelFormat, Plan: pl, Params: params, Preprocess: states}
	if err := m.Validate(); err != nil {
		return p2p.Errorf(p2p.CodeBadRequest, "model: %v", err)
	}
	sums, err := g.evalSums(ctx, j, m)
	if err != nil {
		return err
	}
	if err := g.fedKeepSums(r, sums, nil, req.Shares, "scoring at this gateway: %d sums are too large for secure aggregation"); err != nil {
		return err
	}
	g.log.Info("federated evaluation scored", "federation", j.Federation, "job", j.ID)
	return nil
}

// evalSums is plan.EvalSums over the job's dataset version, streamed.
func (g *Gateway) evalSums(ctx context.Context, j *store.Job, m *plan.Model) ([]float64, error) {
	v, err := g.store.OpenDatasetVersion(j.DatasetID, j.DatasetSHA256)
	if err != nil {
		return nil, service.Wrap(err, "dataset "+j.DatasetID)
	}
	defer func() { _ = v.Close() }()
	sums, err := plan.EvalSums(ctx, m, g.scanned(v))
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		// Its errors name columns and rules, never a value of the data.
		return nil, p2p.Errorf(p2p.CodeConflict, "scoring at this gateway: %v", err)
	}
	return sums, nil
}

// fedEvalDetail is what the officer reads of an evaluation.
func fedEvalDetail(req *wire.FedJoinRequest, pl *plan.Plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Federated evaluation %s of a model (plan %q) on this dataset: nothing trains. Only the securely aggregated sums over all the gateways leave, never this gateway's own: row count, loss sum, rows predicted right", req.Federation, pl.Name)
	if n, err := plan.EvalValues(pl); err == nil && n > 3 {
		fmt.Fprintf(&b, ", and per class a histogram of the model's scores over %d bins (for the AUC)", plan.EvalBins)
	}
	b.WriteString(". Participants:")
	for _, p := range req.Participants {
		fmt.Fprintf(&b, " %q (gateway %s, dataset %s);", p.Name, p.Gateway, p.Dataset)
	}
	b.WriteString(" Privacy: NO FORMAL GUARANTEE (exact sums, no noise; no epsilon is spent).")
	return b.String()
}
