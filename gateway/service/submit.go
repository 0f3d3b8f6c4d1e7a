package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// trainAccess is the dataset-level policy for training and queries: the
// dataset exists, and the actor may use it (store.CanTrain: their role, a
// per-user override); dec says whether results go to review.
func (s *Service) trainAccess(a Actor, datasetID string) (*store.Dataset, store.TrainDecision, error) {
	ds, err := s.st.Dataset(datasetID)
	if err != nil {
		return nil, store.TrainDecision{}, Wrap(err, "dataset "+datasetID)
	}
	dec, err := s.st.CanTrain(a.UserID(), ds.ID)
	if err != nil {
		return nil, dec, Wrap(err, "dataset "+datasetID)
	}
	if !dec.Allowed {
		return nil, dec, Errorf(Forbidden, "you may not use dataset %q: %s (ask with fedgrid request permission)", ds.Name, dec.Reason)
	}
	return ds, dec, nil
}

// DatasetForQuery is the dataset a DP query may read, after the same
// policy as training.
func (s *Service) DatasetForQuery(a Actor, datasetID string) (*store.Dataset, error) {
	ds, _, err := s.trainAccess(a, datasetID)
	return ds, err
}

// Submit validates a plan against a dataset and queues a job: the
// dataset-level policy, plan validation and shape checks against the
// dataset's schema, the release's epsilon reserved (private data), the job
// created queued, in one transaction.
func (s *Service) Submit(a Actor, datasetID string, planJSON json.RawMessage) (*JobView, error) {
	u := a.User
	ds, dec, err := s.trainAccess(a, datasetID)
	if err != nil {
		return nil, err
	}
	pl, err := plan.Parse(planJSON)
	if err != nil {
		return nil, Errorf(Invalid, "plan refused: %v", err)
	}
	hostedID := pl.Model
	var init json.RawMessage
	if hostedID != "" {
		if pl, planJSON, init, err = s.resolveHosted(pl); err != nil {
			return nil, err
		}
	}
	report, err := plan.Check(pl, ds.Columns)
	if err != nil {
		return nil, Errorf(Invalid, "plan does not fit dataset %q: %v", ds.Name, err)
	}
	need, least, err := s.checkLimits(pl, ds.Rows)
	if err != nil {
		return nil, err
	}
	j := &store.Job{
		MemoryBytes: need, StreamMemoryBytes: least,
		DatasetID: ds.ID, UserID: u.ID, Requester: a.Peer, Plan: planJSON, Init: init, HostedModel: hostedID,
		MaxAttempts: s.jobs.MaxAttempts, AttemptTimeout: s.jobs.AttemptTimeout, Deadline: s.now().Add(s.jobs.JobTimeout),
		PlanTable: report.String(), Review: dec.Review,
	}
	if pl.Train.Workers > 1 {
		j.Shards, j.Rounds = pl.Train.Workers, max(1, pl.Train.Rounds)
		if pl.Train.Workers > ds.Rows {
			return nil, Errorf(Invalid, "train.workers is %d but dataset %q has %d rows", pl.Train.Workers, ds.Name, ds.Rows)
		}
	}
	if err := releaseCost(j, pl, ds); err != nil {
		return nil, err
	}
	// Private data: the release's epsilon is reserved now, so that no job
	// trains whose result could never be paid for.
	if ds.Visibility != store.VisibilityPublic && j.EpsilonMicroEps > 0 {
		err = s.st.CreateJobReserving(j, j.EpsilonMicroEps)
	} else {
		err = s.st.CreateJob(j)
	}
	if err != nil {
		if errors.Is(err, store.ErrInsufficientBudget) {
			return nil, Errorf(InsufficientBudget, "releasing this job's result would cost epsilon %.6g on dataset %q, more than your budget allows (%s); ask for more with fedgrid request budget",
				wire.Epsilon(j.EpsilonMicroEps), ds.Name, strings.TrimPrefix(err.Error(), "store: "))
		}
		return nil, Wrap(err, "job")
	}
	if s.hooks.JobSubmitted != nil {
		s.hooks.JobSubmitted(j)
	}
	s.log.Info("job queued", "job", j.ID, "dataset", ds.ID, "user", u.ID, "workers", j.Shards, "epsilon_micro", j.EpsilonMicroEps, "review", dec.Review, "hosted_model", hostedID)
	return s.jobView(a, j), nil
}

// resolveHosted turns a plan that names a hosted model ("model": "<id>",
// with only training settings) into the full plan the node trains: the
// hosted model's plan with the request's settings (plan.Resolve), and the
// hosted weights as the job's starting weights. The job keeps both, so it
// trains as submitted even if the model is deleted or replaced meanwhile,
// and its released model carries the resolved plan.
func (s *Service) resolveHosted(pl *plan.Plan) (*plan.Plan, json.RawMessage, json.RawMessage, error) {
	raw, err := s.st.HostedModelJSON(pl.Model)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, Errorf(Invalid, "plan refused: model %q is not hosted on this gateway (its catalog lists the hosted models)", pl.Model)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	hosted, err := plan.ParseModel(raw)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("hosted model %q: %w", pl.Model, err)
	}
	resolved, err := plan.Resolve(pl, hosted)
	if err != nil {
		return nil, nil, nil, Errorf(Invalid, "plan refused: %v", err)
	}
	planJSON, err := json.Marshal(resolved)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(planJSON) > plan.MaxPlanBytes {
		return nil, nil, nil, Errorf(Invalid, "plan refused: hosted model %q's plan is %d bytes, more than the limit of %d", pl.Model, len(planJSON), plan.MaxPlanBytes)
	}
	init, err := json.Marshal(hosted.Params)
	if err != nil {
		return nil, nil, nil, err
	}
	return resolved, planJSON, init, nil
}

// releaseCost sets the job's privacy cost: the epsilon of its DP-SGD plan on
// the dataset's training rows (the same count the node's accountant uses),
// rounded up to whole micro-epsilon. A plan without DP-SGD costs nothing and
// has no formal guarantee (DP false).
func releaseCost(j *store.Job, pl *plan.Plan, ds *store.Dataset) error {
	if pl.Privacy == nil || pl.Privacy.DPSGD == nil {
		return nil
	}
	train, _ := dataset.SplitIndices(ds.Rows, pl.Train.ValidationFraction, pl.Train.Seed)
	eps, err := pl.Epsilon(len(train))
	if err != nil {
		return Errorf(Invalid, "cannot account the plan's privacy on dataset %q: %v", ds.Name, err)
	}
	if math.IsNaN(eps) || math.IsInf(eps, 0) || eps > wire.MaxEpsilon {
		return Errorf(Invalid, "the plan's DP-SGD spends epsilon %v on dataset %q: too much to account; add noise or train fewer steps", eps, ds.Name)
	}
	j.EpsilonMicroEps = int64(wire.MicroEpsCharge(eps))
	j.Delta = pl.Privacy.Delta
	j.DP = true
	return nil
}
