package store

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/wire"
)

// A request of kind wire.KindFederation asks to take part in a federation across gateways
// on review-gated data: every round's aggregate leaves the gateway, so the
// gateway's compliance officer approves the federation (its plan, rounds,
// strategy, the other gateways and the epsilon per round) before round 1.
// An approval rule may approve it like a release (DP-SGD plans only).
// Denied or withdrawn, the federation job is cancelled and its reservation
// refunded. The final model is released under the usual rules.

// CreateFederationJob stores a gateway's federation job (Federation set),
// reserving reserve micro-epsilon (0: none), and, when review is set, its
// approval request, all in one transaction. The request's ID is in
// j.FedRequestID.
func (s *Store) CreateFederationJob(j *Job, reserve int64, review bool, detail string) error {
	if j.Federation == "" {
		return invalid("federation", "required")
	}
	return s.createJob(j, reserve, func(txn *badger.Txn) error {
		if !review {
			return nil
		}
		now := s.now().UTC()
		r := &Request{
			ID: newID(), Kind: wire.KindFederation, State: wire.RequestPending, UserID: j.UserID, Requester: j.Requester, DatasetID: j.DatasetID,
			JobID: j.ID, EpsilonMicroEps: j.EpsilonMicroEps, Delta: j.Delta, DP: j.DP, Guarantee: guaranteeText(j),
			PlanTable: j.PlanTable, Plan: j.Plan, ReservationID: j.ReservationID, Detail: detail, CreatedAt: now,
		}
		j.FedRequestID = r.ID
		if j.DP {
			var d Dataset
			if err := getJSON(txn, prefixDataset+j.DatasetID, &d); err != nil {
				return err
			}
			rule, err := s.matchRule(txn, j, &d, now)
			if err != nil {
				return err
			}
			if rule != nil {
				rule.Used++
				if err := putJSON(txn, prefixRule+rule.ID, rule); err != nil {
					return err
				}
				reviewer := ReviewerRulePrefix + rule.ID
				r.State = wire.RequestApproved
				r.Decision = &Decision{Approved: true, Reviewer: reviewer, RuleID: rule.ID, Reason: "matched approval rule " + rule.ID, At: now}
				if err := putJSON(txn, prefixRequest+r.ID, r); err != nil {
					return err
				}
				return s.audit(txn, AuditEvent{Actor: reviewer, Action: "request.approve", Target: "request/" + r.ID,
					Detail: map[string]any{"kind": wire.KindFederation, "job_id": j.ID, "rule_id": rule.ID, "automatic": true, "user_id": j.UserID, "dataset_id": j.DatasetID}})
			}
		}
		if err := putJSON(txn, prefixRequest+r.ID, r); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Action: "request.create", Target: "request/" + r.ID,
			Detail: map[string]any{"kind": wire.KindFederation, "job_id": j.ID, "user_id": j.UserID, "dataset_id": j.DatasetID, "epsilon_micro_eps": j.EpsilonMicroEps, "dp": j.DP}})
	})
}

// FederationApproval is the state of a federation job's approval request:
// "" when the job needs none, else the request's state (pending, approved,
// denied, withdrawn).
func (s *Store) FederationApproval(j *Job) (string, error) {
	if j.FedRequestID == "" {
		return "", nil
	}
	r, err := s.GetRequest(j.FedRequestID)
	if err != nil {
		return "", err
	}
	return r.State, nil
}

// endFederationTxn cancels the job of a federation request that was denied
// or withdrawn; the state change refunds its reservation.
func (s *Store) endFederationTxn(txn *badger.Txn, r *Request, why string) error {
	var j Job
	if err := getJSON(txn, prefixJob+r.JobID, &j); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("job %s of request %s: %w", r.JobID, r.ID, err)
	}
	if j.Terminal() {
		return nil
	}
	old := j.State
	j.State, j.Error, j.FinishedAt = wire.StateCancelled, why, s.now().UTC()
	return s.putJob(txn, &j, old)
}

// MarkFederationSent records that the gateway released its masked update of
// round in the federation job jobID.
func (s *Store) MarkFederationSent(jobID string, round int) error {
	_, err := s.modifyJob(jobID, func(_ *badger.Txn, j *Job) error {
		if j.Federation == "" || j.State != wire.StateRunning {
			return fmt.Errorf("%w: job %s is not a running federation job", ErrConflictState, j.ID)
		}
		j.FedSent = max(j.FedSent, round)
		return nil
	})
	return err
}

// FailFederation ends a running federation job that stopped with msg. Once
// the gateway released a masked update (FedSent > 0) the federation's
// aggregates carried its data, so its reservation is charged, not refunded:
// the privacy was spent whether or not a final model came out.
func (s *Store) FailFederation(jobID, msg string) error {
	_, err := s.modifyJob(jobID, func(txn *badger.Txn, j *Job) error {
		if j.Federation == "" || j.State != wire.StateRunning {
			return fmt.Errorf("%w: job %s is not a running federation job", ErrConflictState, j.ID)
		}
		if j.FedSent > 0 {
			// Committed here, the reservation is no longer held when the
			// failure's transition would refund it.
			if _, err := s.commitJob(txn, j, "", fmt.Sprintf("federation stopped after this gateway released %d rounds' masked updates", j.FedSent)); err != nil {
				return err
			}
		}
		j.State, j.Error, j.FinishedAt = wire.StateFailed, msg, s.now().UTC()
		return s.audit(txn, AuditEvent{Action: "job.fail", Target: "job/" + j.ID, Detail: map[string]any{"error": msg, "federation_rounds_released": j.FedSent}})
	})
	return err
}

// SetFederationPlan replaces the plan of a running federation job with
// fitted (the same plan with the statistics round 0 fitted declared) while
// its plan is still old: before round 1 trains with it, and only once.
func (s *Store) SetFederationPlan(jobID string, old, fitted []byte) error {
	_, err := s.modifyJob(jobID, func(txn *badger.Txn, j *Job) error {
		if j.Federation == "" || j.State != wire.StateRunning {
			return fmt.Errorf("%w: job %s is not a running federation job", ErrConflictState, j.ID)
		}
		if !bytes.Equal(j.Plan, old) {
			return fmt.Errorf("%w: the plan of job %s changed meanwhile", ErrConflictState, j.ID)
		}
		j.Plan = fitted
		return s.audit(txn, AuditEvent{Action: "job.plan_fitted", Target: "job/" + j.ID, Detail: map[string]any{"federation": j.Federation}})
	})
	return err
}

// FedLastHeard is when the job's federation coordinator was last heard
// from, as stored: its last recorded call, or the join.
func (j *Job) FedLastHeard() time.Time {
	if j.FedHeardAt.After(j.CreatedAt) {
		return j.FedHeardAt
	}
	return j.CreatedAt
}

// TouchFederation records that the coordinator of an unfinished federation
// job was heard from at at.
func (s *Store) TouchFederation(jobID string, at time.Time) error {
	_, err := s.modifyJob(jobID, func(_ *badger.Txn, j *Job) error {
		if j.Federation == "" || j.Terminal() {
			return fmt.Errorf("%w: job %s is not an unfinished federation job", ErrConflictState, j.ID)
		}
		if at.After(j.FedHeardAt) {
			j.FedHeardAt = at.UTC()
		}
		return nil
	})
	return err
}

// FinishEvaluation ends a running evaluation's federation job: succeeded,
// with no result and nothing to release (what left were the round's secure
// sums, under the federation's approval).
func (s *Store) FinishEvaluation(jobID string) error {
	_, err := s.modifyJob(jobID, func(txn *badger.Txn, j *Job) error {
		if j.Federation == "" || !j.Evaluation || j.State != wire.StateRunning {
			return fmt.Errorf("%w: job %s is not a running evaluation", ErrConflictState, j.ID)
		}
		j.State, j.FinishedAt = wire.StateSucceeded, s.now().UTC()
		return s.audit(txn, AuditEvent{Action: "job.complete", Target: "job/" + j.ID, Detail: map[string]any{"evaluation": true, "federation": j.Federation}})
	})
	return err
}

// IdleFederations lists the unfinished federation jobs whose coordinator
// was last heard from (FedLastHeard) before cutoff.
func (s *Store) IdleFederations(cutoff time.Time) ([]*Job, error) {
	var out []*Job
	err := s.view(func(txn *badger.Txn) error {
		for _, state := range []string{wire.StateRunning, wire.StateQueued} {
			jobs, err := jobsInState(txn, state)
			if err != nil {
				return err
			}
			for _, j := range jobs {
				if j.Federation != "" && j.ParentID == "" && j.FedLastHeard().Before(cutoff) {
					out = append(out, j)
				}
			}
		}
		return nil
	})
	return out, err
}

// ExpireFederation cancels a federation job whose coordinator was not heard
// from since before cutoff (checked again in the transaction: a call that
// came meanwhile keeps it; ErrConflictState then), with why as its error.
// Its shard jobs are cancelled with it. The reservation follows the rules
// of FailFederation: charged once the gateway released a masked update
// (the aggregates carried its data), refunded before. A pending approval
// request of the federation is withdrawn. One transaction, audited as
// federation.expire.
func (s *Store) ExpireFederation(jobID string, cutoff time.Time, why string) (*Job, error) {
	var out Job
	err := s.update(func(txn *badger.Txn) error {
		var j Job
		if err := getJSON(txn, prefixJob+jobID, &j); err != nil {
			return err
		}
		if j.Federation == "" || j.Terminal() {
			return fmt.Errorf("%w: job %s is not an unfinished federation job", ErrConflictState, j.ID)
		}
		heard := j.FedLastHeard()
		if !heard.Before(cutoff) {
			return fmt.Errorf("%w: the coordinator of job %s was heard from at %s", ErrConflictState, j.ID, heard.Format(time.RFC3339))
		}
		var charged int64
		if j.FedSent > 0 {
			c, err := s.commitJob(txn, &j, "", fmt.Sprintf("federation expired after this gateway released %d rounds' masked updates", j.FedSent))
			if err != nil {
				return err
			}
			charged = c
		}
		old := j.State
		j.State, j.Error, j.FinishedAt, j.LeaseExpires = wire.StateCancelled, why, s.now().UTC(), time.Time{}
		if err := s.putJob(txn, &j, old); err != nil {
			return err
		}
		withdrawn := ""
		if j.FedRequestID != "" {
			var r Request
			if err := getJSON(txn, prefixRequest+j.FedRequestID, &r); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			} else if err == nil && r.State == wire.RequestPending {
				if err := s.withdrawTxn(txn, &r, "", "expired", why); err != nil {
					return err
				}
				withdrawn = r.ID
			}
		}
		out = j
		return s.audit(txn, AuditEvent{Action: "federation.expire", Target: "job/" + j.ID, Detail: map[string]any{
			"federation": j.Federation, "last_heard": heard.UTC().Format(time.RFC3339Nano), "error": why,
			"federation_rounds_released": j.FedSent, "charged_micro_eps": charged, "withdrawn_request": withdrawn}})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ErrRoundKeysLost: the gateway already made keys for that round and
// attempt of a federation (before a restart, as it holds none now).
var ErrRoundKeysLost = errors.New("store: this round's keys were made before and are lost")

// OpenFederationRound records, before the gateway hands out its keys for a
// round's attempt, that it made them. A round and attempt not after the
// last recorded one is ErrRoundKeysLost: keys are made once per attempt.
func (s *Store) OpenFederationRound(jobID string, round, attempt int) error {
	_, err := s.modifyJob(jobID, func(_ *badger.Txn, j *Job) error {
		if j.Federation == "" || j.State != wire.StateRunning {
			return fmt.Errorf("%w: job %s is not a running federation job", ErrConflictState, j.ID)
		}
		if k := j.FedKeys; k != nil && (round < k.Round || round == k.Round && attempt <= k.Attempt) {
			return fmt.Errorf("%w: round %d attempt %d (last made: round %d attempt %d)", ErrRoundKeysLost, round, attempt, k.Round, k.Attempt)
		}
		j.FedKeys = &FedRoundMark{Round: round, Attempt: attempt}
		return nil
	})
	return err
}
