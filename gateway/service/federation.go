package service

import (
	"encoding/json"
	"errors"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// FedJoin is a data scientist's request to take part in a federation
// across gateways with one of this gateway's datasets (the p2p adapter has
// checked the federation's own settings).
type FedJoin struct {
	ID, Federation, Dataset string
	Plan                    json.RawMessage
	Rounds                  int
	// Mu > 0: FedProx, every round's local training carries the proximal term.
	Mu float64
	// Eval: the federation scores a model (Plan is its plan with its
	// preprocessing declared) in one round: nothing trains, nothing is
	// reserved; the same permission and review apply.
	Eval bool
	// Config is the adapter's record of the federation's settings (store.Job.FedConfig).
	Config json.RawMessage
	// Detail words the request for the compliance officer, from the checked
	// plan and the job with its privacy cost.
	Detail func(*plan.Plan, *store.Job) string
}

// JoinFederation is a submission for a whole federation: the dataset-level
// policy, the plan checked against the schema with its preprocessing
// declared (statistics fitted on one gateway's rows would describe it
// alone), the epsilon of every round's DP-SGD composed by the accountant
// and reserved (private data), and on review-gated data the officer's
// approval request filed, in one transaction. The job is a coordinated
// job whose rounds the federation's coordinator drives.
func (s *Service) JoinFederation(a Actor, f FedJoin) (*store.Job, error) {
	ds, dec, err := s.trainAccess(a, f.Dataset)
	if err != nil {
		return nil, err
	}
	pl, err := plan.Parse(f.Plan)
	if err != nil {
		return nil, Errorf(Invalid, "plan refused: %v", err)
	}
	if pl.Model != "" {
		return nil, Errorf(Invalid, "plan refused: a federation trains a full plan, not a hosted model")
	}
	report, err := plan.Check(pl, ds.Columns)
	if err != nil {
		if f.Eval {
			return nil, Errorf(Invalid, "the model does not fit dataset %q: %v", ds.Name, err)
		}
		return nil, Errorf(Invalid, "plan does not fit dataset %q: %v", ds.Name, err)
	}
	if f.Eval {
		return s.joinEvaluation(a, f, ds, dec, pl, report)
	}
	// Undeclared standardize/min_max statistics are fitted across the
	// gateways in round 0 (plan.FitSpec), never on this gateway's rows alone.
	if _, err := plan.FitNeeds(pl); err != nil {
		return nil, Errorf(Invalid, "plan refused: %v", err)
	}
	if pl.Train.Workers > ds.Rows {
		return nil, Errorf(Invalid, "train.workers is %d but dataset %q has %d rows", pl.Train.Workers, ds.Name, ds.Rows)
	}
	planJSON := f.Plan
	if f.Mu > 0 {
		pl.Train.ProximalMu = f.Mu
		if planJSON, err = json.Marshal(pl); err != nil {
			return nil, err
		}
	}
	j := &store.Job{
		ID: f.ID, DatasetID: ds.ID, UserID: a.User.ID, Requester: a.Peer, Plan: planJSON,
		Federation: f.Federation, FedConfig: f.Config, Shards: max(1, pl.Train.Workers), Rounds: f.Rounds,
		MaxAttempts: s.jobs.MaxAttempts, AttemptTimeout: s.jobs.AttemptTimeout, Deadline: s.now().Add(s.jobs.JobTimeout),
		PlanTable: report.String(), Review: dec.Review,
	}
	all := *pl
	all.Train.Epochs = pl.Train.Epochs * f.Rounds
	if err := releaseCost(j, &all, ds); err != nil {
		return nil, err
	}
	var reserve int64
	if ds.Visibility != store.VisibilityPublic && j.EpsilonMicroEps > 0 {
		reserve = j.EpsilonMicroEps
	}
	detail := ""
	if f.Detail != nil {
		detail = f.Detail(pl, j)
	}
	if err := s.st.CreateFederationJob(j, reserve, dec.Review, detail); err != nil {
		if errors.Is(err, store.ErrInsufficientBudget) {
			return nil, Errorf(InsufficientBudget, "the federation's %d rounds would cost epsilon %.6g on dataset %q, more than your budget allows; ask for more with fedgrid request budget",
				f.Rounds, wire.Epsilon(j.EpsilonMicroEps), ds.Name)
		}
		return nil, Wrap(err, "job")
	}
	return j, nil
}

// joinEvaluation is JoinFederation for an evaluation: the model's plan
// must declare all its preprocessing; no epsilon is reserved (only the
// round's secure sums leave, without noise: on review-gated data the
// officer's approval of the request covers them).
func (s *Service) joinEvaluation(a Actor, f FedJoin, ds *store.Dataset, dec store.TrainDecision, pl *plan.Plan, report *plan.Report) (*store.Job, error) {
	if _, err := plan.DeclaredStates(pl); err != nil {
		return nil, Errorf(Invalid, "model refused: %v", err)
	}
	j := &store.Job{
		ID: f.ID, DatasetID: ds.ID, UserID: a.User.ID, Requester: a.Peer, Plan: f.Plan,
		Federation: f.Federation, FedConfig: f.Config, Shards: 1, Rounds: 1, Evaluation: true,
		MaxAttempts: s.jobs.MaxAttempts, AttemptTimeout: s.jobs.AttemptTimeout, Deadline: s.now().Add(s.jobs.JobTimeout),
		PlanTable: report.String(), Review: dec.Review,
	}
	detail := ""
	if f.Detail != nil {
		detail = f.Detail(pl, j)
	}
	if err := s.st.CreateFederationJob(j, 0, dec.Review, detail); err != nil {
		return nil, Wrap(err, "job")
	}
	return j, nil
}
