package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/fedgrid/fedgrid/wire"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The review queue. A Request asks a compliance officer for something:
//
//   - release: the result of a job on private data may leave the gateway.
//     It is created, in the transaction that marks the job succeeded, with
//     everything the officer needs (plan table, metrics, epsilon). The job's
//     epsilon was reserved at submit; approval commits the reservation and
//     releases the result to the requester alone, denial refunds it.
//   - budget: more privacy budget; approval grants it.
//   - permission: to train on a dataset, or to have results released without
//     review; approval sets the per-user override.
//
// Every decision records its reviewer and time and is audited; a request is
// decided once (a second decision is ErrConflictState), so two officers
// approving at the same moment charge the budget once.

const (
	prefixRequest = "request/"
)

// Reviewer names for decisions not made by a person.
const (
	ReviewerRulePrefix = "rule:"    // an approval rule, followed by its ID
	ReviewerOverride   = "override" // a per-user override releases without review
	// ReviewerRequester: the requester withdrew the request.
	ReviewerRequester = "requester"
)

// Decision is how and by whom a request was decided.
type Decision struct {
	Approved bool   `json:"approved"`
	Reviewer string `json:"reviewer"` // a user ID, "rule:<id>" or "override"
	RuleID   string `json:"rule_id,omitempty"`
	Reason   string `json:"reason,omitempty"`
	// ChargedMicroEps is what the decision took from the budget.
	ChargedMicroEps int64     `json:"charged_micro_eps"`
	At              time.Time `json:"at"`
}

// Request is one entry of the review queue.
type Request struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	State     string `json:"state"`
	UserID    string `json:"user_id"`
	Requester string `json:"requester,omitempty"` // the requester's peer ID
	DatasetID string `json:"dataset_id,omitempty"`
	// Reason is the requester's justification (budget, permission).
	Reason string `json:"reason,omitempty"`
	// Detail says in words what a federation request asks: the rounds, the
	// strategy, the other gateways by name and the epsilon per round.
	Detail string `json:"detail,omitempty"`

	// Release.
	JobID           string          `json:"job_id,omitempty"`
	EpsilonMicroEps int64           `json:"epsilon_micro_eps,omitempty"`
	Delta           float64         `json:"delta,omitempty"`
	DP              bool            `json:"dp,omitempty"`
	Guarantee       string          `json:"guarantee,omitempty"` // what the epsilon means, in words
	PlanTable       string          `json:"plan_table,omitempty"`
	Plan            json.RawMessage `json:"plan,omitempty"`
	Metrics         json.RawMessage `json:"metrics,omitempty"`
	// Error: the job failed, and this is its error, released to the
	// requester only with an approval (a release of the outcome).
	Error         string `json:"error,omitempty"`
	ReservationID string `json:"reservation_id,omitempty"`

	// Budget: the epsilon asked for.
	AmountMicroEps int64 `json:"amount_micro_eps,omitempty"`
	// Permission: wire.AskTrain or wire.AskAutoRelease.
	Permission string `json:"permission,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	Decision  *Decision `json:"decision,omitempty"`
}

// jobTransition runs inside the transaction that changes a top-level job's
// state: a coordinated job that ends cancels its unfinished shards; a
// failed or cancelled job's reservation is refunded; a succeeded job's
// result is released at once, approved by a rule, or queued for review.
func (s *Store) jobTransition(txn *badger.Txn, j *Job) error {
	if j.Coordinated() && j.Terminal() {
		if err := s.cancelShards(txn, j); err != nil {
			return err
		}
	}
	switch j.State {
	case wire.StateFailed:
		return s.decideFailure(txn, j)
	case wire.StateCancelled:
		return s.refundJob(txn, j, "job "+j.State)
	case wire.StateSucceeded:
		if j.Evaluation {
			return nil // nothing to release: the aggregates left under the federation's approval
		}
		return s.decideRelease(txn, j)
	}
	return nil
}

// refundJob refunds a job's reservation if it is still held.
func (s *Store) refundJob(txn *badger.Txn, j *Job, reason string) error {
	if j.ReservationID == "" {
		return nil
	}
	var res Reservation
	if err := getJSON(txn, prefixReservation+j.ReservationID, &res); err != nil {
		return err
	}
	if res.State != ReservationHeld {
		return nil
	}
	_, err := s.settleTxn(txn, j.ReservationID, ReservationRefunded, "", reason+" (job "+j.ID+")")
	return err
}

// commitJob commits a job's reservation; it returns what was charged.
func (s *Store) commitJob(txn *badger.Txn, j *Job, actor, reason string) (int64, error) {
	if j.ReservationID == "" {
		return 0, nil
	}
	res, err := s.settleTxn(txn, j.ReservationID, ReservationCommitted, actor, reason)
	if err != nil {
		return 0, err
	}
	return res.AmountMicroEps, nil
}

// Guarantee texts.
const (
	guaranteeNone = "NO FORMAL PRIVACY GUARANTEE: the plan does not use DP-SGD, so the released model may disclose training rows. " +
		"A person may still approve it; no approval rule can."
)

func guaranteeText(j *Job) string {
	if !j.DP {
		return guaranteeNone
	}
	return fmt.Sprintf("(epsilon %.6g, delta %g)-differential privacy for each row of the dataset (DP-SGD, RDP accountant, computed by the gateway from the plan and the dataset's rows)",
		wire.Epsilon(j.EpsilonMicroEps), j.Delta)
}

// releasePolicy is how a finished job's outcome may leave, decided when it
// ends: review says whether a compliance officer must decide (why, when
// not); public, o and dsErr are what it was decided from.
type releasePolicy struct {
	review, public, forbidden bool
	why                       string
	d                         Dataset
	dsErr                     error
	o                         Override
}

func (s *Store) releasePolicyTxn(txn *badger.Txn, j *Job) (*releasePolicy, error) {
	p := &releasePolicy{}
	p.dsErr = getJSON(txn, prefixDataset+j.DatasetID, &p.d)
	if p.dsErr != nil && !errors.Is(p.dsErr, ErrNotFound) {
		return nil, p.dsErr
	}
	if err := getJSON(txn, prefixOverride+j.DatasetID+"/"+j.UserID, &p.o); err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	p.public = p.dsErr == nil && p.d.Visibility == VisibilityPublic
	p.review, p.why = !p.public, "public dataset"
	if p.o.AutoRelease != nil {
		p.review = !*p.o.AutoRelease
		p.why = "per-user override: results released without review"
	}
	p.forbidden = p.o.Train != nil && !*p.o.Train
	if p.forbidden || p.dsErr != nil {
		p.review = true // nothing automatic for a user refused since submit, or a dataset gone
	}
	return p, nil
}

// decideFailure settles a failed top-level job, inside its transaction.
// Whether a job fails can depend on a value in the data, so the outcome
// of a job whose result was due for review (Review, set at submit) goes
// through review like a model: a release request carrying the error,
// the reservation held until the decision (approval charges it as for a
// model, denial or withdrawal refunds it), or an approval rule's decision
// exactly as for a model (ruleDecides), so that neither the decision nor
// its timing depends on the outcome. Any other failed job is refunded.
func (s *Store) decideFailure(txn *badger.Txn, j *Job) error {
	if !j.Review {
		return s.refundJob(txn, j, "job "+j.State)
	}
	p, err := s.releasePolicyTxn(txn, j)
	if err != nil {
		return err
	}
	if !p.review {
		return s.refundJob(txn, j, "job "+j.State)
	}
	now := s.now().UTC()
	r := releaseRequest(j, now)
	r.Metrics, r.Error = nil, j.Error
	j.RequestID = r.ID
	j.Release, j.ReleaseReason = wire.ReleasePending, releasePendingReason
	if decided, err := s.ruleDecides(txn, j, p, r, now); err != nil || decided {
		return err
	}
	if err := putJSON(txn, prefixRequest+r.ID, r); err != nil {
		return err
	}
	return s.audit(txn, AuditEvent{Action: "request.create", Target: "request/" + r.ID,
		Detail: map[string]any{"kind": wire.KindRelease, "job_id": j.ID, "user_id": j.UserID, "dataset_id": j.DatasetID, "epsilon_micro_eps": j.EpsilonMicroEps, "dp": j.DP, "outcome": wire.StateFailed}})
}

// releasePendingReason is a pending release's reason, whatever the outcome.
const releasePendingReason = "waits for a compliance officer's review"

// decideRelease settles a succeeded job's result, inside its transaction.
func (s *Store) decideRelease(txn *badger.Txn, j *Job) error {
	p, err := s.releasePolicyTxn(txn, j)
	if err != nil {
		return err
	}
	public, review, why := p.public, p.review, p.why
	now := s.now().UTC()
	if !review {
		charged, err := s.commitJob(txn, j, ReviewerOverride, "released without review: "+why)
		if err != nil {
			return err
		}
		j.Release, j.ReleaseReason = wire.ReleaseReleased, why
		if !public {
			// A private result released by override still leaves a record in the history.
			r := releaseRequest(j, now)
			r.State = wire.RequestApproved
			r.Decision = &Decision{Approved: true, Reviewer: ReviewerOverride, Reason: why, ChargedMicroEps: charged, At: now}
			j.RequestID = r.ID
			if err := putJSON(txn, prefixRequest+r.ID, r); err != nil {
				return err
			}
		}
		return s.audit(txn, AuditEvent{Action: "release.auto", Target: "job/" + j.ID,
			Detail: map[string]any{"dataset_id": j.DatasetID, "user_id": j.UserID, "reason": why, "charged_micro_eps": charged, "request_id": j.RequestID}})
	}
	r := releaseRequest(j, now)
	j.RequestID = r.ID
	j.Release, j.ReleaseReason = wire.ReleasePending, releasePendingReason
	if decided, err := s.ruleDecides(txn, j, p, r, now); err != nil || decided {
		return err
	}
	if err := putJSON(txn, prefixRequest+r.ID, r); err != nil {
		return err
	}
	return s.audit(txn, AuditEvent{Action: "request.create", Target: "request/" + r.ID,
		Detail: map[string]any{"kind": wire.KindRelease, "job_id": j.ID, "user_id": j.UserID, "dataset_id": j.DatasetID, "epsilon_micro_eps": j.EpsilonMicroEps, "dp": j.DP}})
}

// ruleDecides lets an approval rule decide the release request r of j's
// outcome, inside its transaction: unless an override asks for a person,
// the user was refused since, the dataset is gone or the plan has no
// formal guarantee. A rule matches on what was known at submit (tags,
// role, epsilon), never on the outcome: a model and an error it covers are
// released alike, at the job's end, and charged alike. It reports whether
// a rule decided (r and j are then stored approved and audited).
func (s *Store) ruleDecides(txn *badger.Txn, j *Job, p *releasePolicy, r *Request, now time.Time) (bool, error) {
	if p.o.AutoRelease != nil || p.forbidden || p.dsErr != nil || !j.DP {
		return false, nil
	}
	rule, err := s.matchRule(txn, j, &p.d, now)
	if err != nil || rule == nil {
		return false, err
	}
	reviewer := ReviewerRulePrefix + rule.ID
	charged, err := s.commitJob(txn, j, reviewer, "approved by rule "+rule.ID)
	if err != nil {
		return false, err
	}
	rule.Used++
	if err := putJSON(txn, prefixRule+rule.ID, rule); err != nil {
		return false, err
	}
	r.State = wire.RequestApproved
	r.Decision = &Decision{Approved: true, Reviewer: reviewer, RuleID: rule.ID, Reason: "matched approval rule " + rule.ID, ChargedMicroEps: charged, At: now}
	j.Release, j.ReleaseReason = wire.ReleaseApproved, "approved by approval rule "+rule.ID
	if err := putJSON(txn, prefixRequest+r.ID, r); err != nil {
		return false, err
	}
	return true, s.audit(txn, AuditEvent{Actor: reviewer, Action: "request.approve", Target: "request/" + r.ID,
		Detail: map[string]any{"kind": wire.KindRelease, "job_id": j.ID, "rule_id": rule.ID, "automatic": true, "charged_micro_eps": charged, "user_id": j.UserID, "dataset_id": j.DatasetID}})
}

func releaseRequest(j *Job, now time.Time) *Request {
	return &Request{
		ID: newID(), Kind: wire.KindRelease, State: wire.RequestPending, UserID: j.UserID, Requester: j.Requester, DatasetID: j.DatasetID,
		JobID: j.ID, EpsilonMicroEps: j.EpsilonMicroEps, Delta: j.Delta, DP: j.DP, Guarantee: guaranteeText(j),
		PlanTable: j.PlanTable, Plan: j.Plan, Metrics: j.Metrics, ReservationID: j.ReservationID, CreatedAt: now,
	}
}

// NewRequest is a data scientist's request for budget or a permission.
type NewRequest struct {
	Kind           string
	UserID         string
	Requester      string
	DatasetID      string // permission: required; budget: optional (context for the officer)
	AmountMicroEps int64  // budget
	Permission     string // permission: wire.AskTrain or wire.AskAutoRelease
	Reason         string
}

// Limits of a request's fields.
const (
	MaxRequestReason  = 2000
	maxPendingPerUser = 100
)

// CreateRequest files a budget or permission request.
func (s *Store) CreateRequest(n NewRequest) (*Request, error) {
	n.Reason = strings.TrimSpace(n.Reason)
	switch {
	case n.Reason == "":
		return nil, invalid("reason", "required: say why you need it")
	case len(n.Reason) > MaxRequestReason:
		return nil, invalid("reason", "longer than %d bytes", MaxRequestReason)
	}
	switch n.Kind {
	case wire.KindBudget:
		if n.AmountMicroEps <= 0 {
			return nil, invalid("epsilon", "must be positive")
		}
		n.Permission = ""
	case wire.KindPermission:
		if n.Permission != wire.AskTrain && n.Permission != wire.AskAutoRelease {
			return nil, invalid("permission", "must be %s or %s", wire.AskTrain, wire.AskAutoRelease)
		}
		if n.DatasetID == "" {
			return nil, invalid("dataset", "required for a permission request")
		}
		n.AmountMicroEps = 0
	default:
		return nil, invalid("kind", "must be %s or %s", wire.KindBudget, wire.KindPermission)
	}
	r := &Request{ID: newID(), Kind: n.Kind, State: wire.RequestPending, UserID: n.UserID, Requester: n.Requester, DatasetID: n.DatasetID,
		Reason: n.Reason, AmountMicroEps: n.AmountMicroEps, Permission: n.Permission, CreatedAt: s.now().UTC()}
	err := s.update(func(txn *badger.Txn) error {
		if _, err := getUser(txn, n.UserID); err != nil {
			return err
		}
		if n.DatasetID != "" {
			if ok, err := exists(txn, prefixDataset+n.DatasetID); err != nil {
				return err
			} else if !ok {
				return fmt.Errorf("%w: dataset %s", ErrNotFound, n.DatasetID)
			}
		}
		pending := 0
		if err := scanJSON(txn, prefixRequest, func(b []byte) error {
			var x Request
			if err := json.Unmarshal(b, &x); err != nil {
				return err
			}
			if x.UserID == n.UserID && x.State == wire.RequestPending && x.Kind != wire.KindRelease {
				pending++
			}
			return nil
		}); err != nil {
			return err
		}
		if pending >= maxPendingPerUser {
			return fmt.Errorf("%w: %d requests of yours are already pending", ErrConflictState, pending)
		}
		if err := putJSON(txn, prefixRequest+r.ID, r); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: n.UserID, Action: "request.create", Target: "request/" + r.ID,
			Detail: map[string]any{"kind": r.Kind, "dataset_id": r.DatasetID, "amount_micro_eps": r.AmountMicroEps, "permission": r.Permission, "reason": r.Reason}})
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// GetRequest returns one request, or ErrNotFound.
func (s *Store) GetRequest(id string) (*Request, error) {
	var r Request
	if err := s.view(func(txn *badger.Txn) error { return getJSON(txn, prefixRequest+id, &r) }); err != nil {
		return nil, err
	}
	return &r, nil
}

// RequestFilter selects requests. Zero fields match everything.
type RequestFilter struct {
	State     string
	Kind      string
	UserID    string
	DatasetID string
	JobID     string
}

func (f RequestFilter) match(r *Request) bool {
	return (f.State == "" || r.State == f.State) && (f.Kind == "" || r.Kind == f.Kind) && (f.UserID == "" || r.UserID == f.UserID) &&
		(f.DatasetID == "" || r.DatasetID == f.DatasetID) && (f.JobID == "" || r.JobID == f.JobID)
}

// Requests lists matching requests, newest first.
func (s *Store) Requests(f RequestFilter) ([]*Request, error) {
	var out []*Request
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = scanWhere(txn, prefixRequest, f.match)
		return err
	})
	slices.SortStableFunc(out, func(a, b *Request) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, err
}

// History is what an officer sees of a requester next to a request.
type History struct {
	Requests           map[string]int `json:"requests"` // by state, over all kinds
	Releases           map[string]int `json:"releases"` // release requests by state
	BudgetMicroEps     int64          `json:"budget_micro_eps"`
	ReservedMicroEps   int64          `json:"reserved_micro_eps"`
	SpentMicroEps      int64          `json:"spent_micro_eps"`
	DatasetUsedMicroEp int64          `json:"dataset_used_micro_eps,omitempty"` // reserved + spent on the request's dataset
}

// UserHistory summarises a user's requests and budget (datasetID: also the
// usage on that dataset; may be "").
func (s *Store) UserHistory(userID, datasetID string) (*History, error) {
	h := &History{Requests: map[string]int{}, Releases: map[string]int{}}
	err := s.view(func(txn *badger.Txn) error {
		rec, err := getUser(txn, userID)
		if err != nil {
			return err
		}
		h.BudgetMicroEps, h.ReservedMicroEps, h.SpentMicroEps = rec.BudgetMicroEps, rec.ReservedMicroEps, rec.SpentMicroEps
		if datasetID != "" {
			var c DatasetCap
			if err := getJSON(txn, capKey(userID, datasetID), &c); err == nil {
				h.DatasetUsedMicroEp = c.UsedMicroEps
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		return scanJSON(txn, prefixRequest, func(b []byte) error {
			var r Request
			if err := json.Unmarshal(b, &r); err != nil {
				return err
			}
			if r.UserID != userID {
				return nil
			}
			h.Requests[r.State]++
			if r.Kind == wire.KindRelease {
				h.Releases[r.State]++
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// Decide approves or denies a pending request, in one transaction, as
// reviewer (a user ID). A denial needs a reason. Approving a release commits
// the job's reservation and releases the result; a budget request grants the
// amount; a permission request sets the override. Denying a release refunds
// the reservation. A request already decided: ErrConflictState. A reviewer
// cannot decide their own request (ErrForbidden).
func (s *Store) Decide(id string, approve bool, reviewer, reason string) (*Request, error) {
	reason = strings.TrimSpace(reason)
	if !approve && reason == "" {
		return nil, invalid("reason", "required: a denial must say why")
	}
	if len(reason) > MaxRequestReason {
		return nil, invalid("reason", "longer than %d bytes", MaxRequestReason)
	}
	var out Request
	err := s.update(func(txn *badger.Txn) error {
		var r Request
		if err := getJSON(txn, prefixRequest+id, &r); err != nil {
			return fmt.Errorf("%w: request %s", err, id)
		}
		if r.State != wire.RequestPending {
			return fmt.Errorf("%w: request %s is already %s", ErrConflictState, r.ID, r.State)
		}
		if reviewer == r.UserID {
			return fmt.Errorf("%w: you cannot decide your own request", ErrForbidden)
		}
		if err := requesterControls(txn, r.UserID, reviewer); err != nil {
			return err
		}
		now := s.now().UTC()
		dec := &Decision{Approved: approve, Reviewer: reviewer, Reason: reason, At: now}
		switch r.Kind {
		case wire.KindRelease:
			var j Job
			if err := getJSON(txn, prefixJob+r.JobID, &j); err != nil {
				return fmt.Errorf("job %s of request %s: %w", r.JobID, r.ID, err)
			}
			if approve {
				charged, err := s.commitJob(txn, &j, reviewer, "release approved (request "+r.ID+")")
				if err != nil {
					return err
				}
				dec.ChargedMicroEps = charged
				j.Release, j.ReleaseReason = wire.ReleaseApproved, "approved by a compliance officer"
				if reason != "" {
					j.ReleaseReason += ": " + reason
				}
			} else {
				if err := s.refundJob(txn, &j, "release denied (request "+r.ID+")"); err != nil {
					return err
				}
				j.Release, j.ReleaseReason = wire.ReleaseDenied, reason
			}
			if err := putJSON(txn, prefixJob+j.ID, &j); err != nil {
				return err
			}
		case wire.KindBudget:
			if approve {
				if _, err := s.grantTxn(txn, r.UserID, r.AmountMicroEps, reviewer, "budget request "+r.ID+": "+r.Reason); err != nil {
					return err
				}
			}
		case wire.KindPermission:
			if approve {
				if err := s.grantPermissionTxn(txn, &r, reviewer); err != nil {
					return err
				}
			}
		case wire.KindFederation:
			if !approve {
				if err := s.endFederationTxn(txn, &r, "the compliance officer denied the federation: "+reason); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%w: request %s has unknown kind %q", ErrInvalid, r.ID, r.Kind)
		}
		r.State = wire.RequestDenied
		action := "request.deny"
		if approve {
			r.State, action = wire.RequestApproved, "request.approve"
		}
		r.Decision = dec
		if err := putJSON(txn, prefixRequest+r.ID, &r); err != nil {
			return err
		}
		out = r
		return s.audit(txn, AuditEvent{Actor: reviewer, Action: action, Target: "request/" + r.ID,
			Detail: map[string]any{"kind": r.Kind, "user_id": r.UserID, "dataset_id": r.DatasetID, "job_id": r.JobID, "reason": reason, "charged_micro_eps": dec.ChargedMicroEps}})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// requesterControls refuses a decision by reviewer on a request of
// requester who could change the reviewer's account (reset its password or
// role, rebind its peer ID): through it the requester would decide their own
// request.
func requesterControls(txn *badger.Txn, requester, reviewer string) error {
	err := canManage(txn, requester, reviewer, "")
	switch {
	case err == nil:
		return fmt.Errorf("%w: the requester can change your account, so you cannot decide their request; another reviewer must", ErrForbidden)
	case errors.Is(err, ErrForbidden), errors.Is(err, ErrNotFound):
		return nil
	}
	return err
}

// Withdraw takes back a pending request on behalf of its requester
// (userID): nobody decides it any more. A withdrawn release refunds the
// job's reservation and its result never leaves. Someone else's request is
// ErrNotFound, as if it did not exist; one already decided (or withdrawn)
// is ErrConflictState. Withdrawal and a decision racing each other: the
// first to commit wins and the other gets ErrConflictState.
func (s *Store) Withdraw(id, userID, reason string) (*Request, error) {
	reason = strings.TrimSpace(reason)
	if len(reason) > MaxRequestReason {
		return nil, invalid("reason", "longer than %d bytes", MaxRequestReason)
	}
	var out Request
	err := s.update(func(txn *badger.Txn) error {
		var r Request
		if err := getJSON(txn, prefixRequest+id, &r); err != nil || r.UserID != userID {
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			return fmt.Errorf("%w: request %s", ErrNotFound, id)
		}
		if r.State != wire.RequestPending {
			return fmt.Errorf("%w: request %s is already %s", ErrConflictState, r.ID, r.State)
		}
		if err := s.withdrawTxn(txn, &r, ReviewerRequester, "withdrawn by the requester", reason); err != nil {
			return err
		}
		out = r
		return s.audit(txn, AuditEvent{Actor: userID, Action: "request.withdraw", Target: "request/" + r.ID,
			Detail: map[string]any{"kind": r.Kind, "dataset_id": r.DatasetID, "job_id": r.JobID, "reason": reason}})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// withdrawTxn marks a pending request withdrawn by reviewer; a release
// request's job gets its reservation refunded and never releases.
func (s *Store) withdrawTxn(txn *badger.Txn, r *Request, reviewer, why, reason string) error {
	if r.Kind == wire.KindRelease {
		var j Job
		if err := getJSON(txn, prefixJob+r.JobID, &j); err != nil {
			return fmt.Errorf("job %s of request %s: %w", r.JobID, r.ID, err)
		}
		if err := s.refundJob(txn, &j, "release withdrawn (request "+r.ID+")"); err != nil {
			return err
		}
		j.Release, j.ReleaseReason = wire.ReleaseWithdrawn, why
		if reason != "" {
			j.ReleaseReason += ": " + reason
		}
		if err := putJSON(txn, prefixJob+j.ID, &j); err != nil {
			return err
		}
	}
	if r.Kind == wire.KindFederation {
		if err := s.endFederationTxn(txn, r, "the federation request was "+why); err != nil {
			return err
		}
	}
	r.State = wire.RequestWithdrawn
	r.Decision = &Decision{Reviewer: reviewer, Reason: reason, At: s.now().UTC()}
	return putJSON(txn, prefixRequest+r.ID, r)
}

// grantPermissionTxn sets the override a permission request asked for.
func (s *Store) grantPermissionTxn(txn *badger.Txn, r *Request, actor string) error {
	if ok, err := exists(txn, prefixDataset+r.DatasetID); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%w: dataset %s", ErrNotFound, r.DatasetID)
	}
	key := prefixOverride + r.DatasetID + "/" + r.UserID
	o := Override{DatasetID: r.DatasetID, UserID: r.UserID}
	if err := getJSON(txn, key, &o); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	yes := true
	switch r.Permission {
	case wire.AskTrain:
		o.Train = &yes
	case wire.AskAutoRelease:
		o.AutoRelease = &yes
	}
	if err := putJSON(txn, key, o); err != nil {
		return err
	}
	return s.audit(txn, AuditEvent{Actor: actor, Action: "dataset.override", Target: "dataset/" + r.DatasetID,
		Detail: map[string]any{"user_id": r.UserID, "train": o.Train, "auto_release": o.AutoRelease, "request_id": r.ID}})
}
