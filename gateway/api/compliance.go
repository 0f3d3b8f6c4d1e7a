package api

import (
	"encoding/json"
	"time"

	"github.com/fedgrid/fedgrid/wire"

	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// The review queue (/api/v1/requests) and approval rules (/api/v1/rules).

// RequestView is a request as the review queue shows it: for a release
// request, everything the officer needs (the dataset, the plan as a table of
// layers, the metrics, the epsilon it costs and what that guarantees, the
// requester's history); the decision once taken.
type RequestView struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"`  // release, budget, permission or federation
	State string `json:"state"` // pending, approved or denied
	// Requester.
	UserID    string `json:"user_id"`
	UserEmail string `json:"user_email,omitempty"`
	UserRole  string `json:"user_role,omitempty"`
	Requester string `json:"requester,omitempty"` // peer ID
	// Reason is the requester's justification (budget and permission requests).
	Reason  string       `json:"reason,omitempty"`
	Dataset *DatasetInfo `json:"dataset,omitempty"`
	// Detail: what a federation request asks (rounds, strategy, the other
	// gateways by name, epsilon).
	Detail string `json:"detail,omitempty"`

	// Release requests.
	JobID           string          `json:"job_id,omitempty"`
	Epsilon         float64         `json:"epsilon"` // release: its cost; budget: the amount asked
	EpsilonMicroEps int64           `json:"epsilon_micro_eps"`
	Delta           float64         `json:"delta,omitempty"`
	DP              bool            `json:"dp"`
	Guarantee       string          `json:"guarantee,omitempty"`
	PlanTable       string          `json:"plan_table,omitempty"`
	Plan            json.RawMessage `json:"plan,omitempty"`
	Metrics         json.RawMessage `json:"metrics,omitempty"`
	// Error: the job failed; its outcome to release (or not) is this error.
	Error string `json:"error,omitempty"`
	// AutoApprovable: an approval rule could ever approve it (false without DP-SGD).
	AutoApprovable bool `json:"auto_approvable"`

	// Permission requests: train or auto_release.
	Permission string `json:"permission,omitempty"`

	CreatedAt time.Time     `json:"created_at"`
	Decision  *DecisionView `json:"decision,omitempty"`
	// History is the requester's record when the view was made (single request views and lists).
	History *HistoryView `json:"history,omitempty"`
}

// DatasetInfo is the dataset a request concerns.
type DatasetInfo struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Tags       []string `json:"tags"`
	Visibility string   `json:"visibility"`
	Rows       int      `json:"rows"`
}

// DecisionView is a decision: who (a user ID, "rule:<id>" or "override"), when, why, what it charged.
type DecisionView struct {
	Approved        bool      `json:"approved"`
	Reviewer        string    `json:"reviewer"`
	ReviewerEmail   string    `json:"reviewer_email,omitempty"`
	RuleID          string    `json:"rule_id,omitempty"`
	Reason          string    `json:"reason,omitempty"`
	ChargedEpsilon  float64   `json:"charged_epsilon"`
	ChargedMicroEps int64     `json:"charged_micro_eps"`
	At              time.Time `json:"at"`
}

// HistoryView is the requester's past requests (counts by state) and budget.
type HistoryView struct {
	Requests         map[string]int `json:"requests"`
	Releases         map[string]int `json:"releases"`
	BudgetEpsilon    float64        `json:"budget_epsilon"`
	ReservedEpsilon  float64        `json:"reserved_epsilon"`
	SpentEpsilon     float64        `json:"spent_epsilon"`
	DatasetUsedEps   float64        `json:"dataset_used_epsilon"`
	BudgetMicroEps   int64          `json:"budget_micro_eps"`
	SpentMicroEps    int64          `json:"spent_micro_eps"`
	ReservedMicroEps int64          `json:"reserved_micro_eps"`
}

// RequestList answers GET /api/v1/requests.
type RequestList struct {
	Requests []RequestView `json:"requests"`
}

// DecideRequest is the body of approve (optional; reason optional) and deny (reason required).
type DecideRequest struct {
	Reason string `json:"reason"`
}

// RuleRequest is POST /api/v1/rules's body.
type RuleRequest struct {
	Tags       []string   `json:"tags" required:"true"`
	Roles      []string   `json:"roles"`
	MaxEpsilon float64    `json:"max_epsilon" required:"true"`
	Quota      int        `json:"quota" required:"true"`
	ExpiresAt  *time.Time `json:"expires_at"`
	Disabled   bool       `json:"disabled"`
	Note       string     `json:"note"`
}

// PatchRuleRequest is PATCH /api/v1/rules/{id}'s body; absent fields stay.
type PatchRuleRequest struct {
	Tags       *[]string  `json:"tags"`
	Roles      *[]string  `json:"roles"`
	MaxEpsilon *float64   `json:"max_epsilon"`
	Quota      *int       `json:"quota"`
	ExpiresAt  *time.Time `json:"expires_at"`
	NoExpiry   bool       `json:"no_expiry"` // true: remove the expiry
	Disabled   *bool      `json:"disabled"`
	Note       *string    `json:"note"`
}

// RuleView is an approval rule as the API shows it (epsilon in both units).
type RuleView struct {
	ID                 string    `json:"id"`
	Tags               []string  `json:"tags"`
	Roles              []string  `json:"roles"`
	MaxEpsilon         float64   `json:"max_epsilon"`
	MaxEpsilonMicroEps int64     `json:"max_epsilon_micro_eps"`
	Quota              int       `json:"quota"`
	Used               int       `json:"used"`
	ExpiresAt          time.Time `json:"expires_at,omitzero"`
	Expired            bool      `json:"expired"`
	Disabled           bool      `json:"disabled"`
	Note               string    `json:"note,omitempty"`
	CreatedBy          string    `json:"created_by,omitempty"`
	CreatedAt          time.Time `json:"created_at"`
}

// RuleList answers GET /api/v1/rules.
type RuleList struct {
	Rules []RuleView `json:"rules"`
}

// requestView builds the HTTP shape of a service view (already redacted
// for the caller); a reviewer's single-request view also carries the
// requester's history.
func (a *API) requestView(sv *service.RequestView, withHistory bool, users map[string]*store.User) RequestView {
	r := sv.Request
	v := RequestView{ID: r.ID, Kind: r.Kind, State: r.State, UserID: r.UserID, Requester: r.Requester, Reason: r.Reason,
		JobID: r.JobID, Detail: r.Detail, DP: r.DP, Delta: r.Delta, Guarantee: r.Guarantee, PlanTable: r.PlanTable, Plan: r.Plan, Metrics: r.Metrics, Error: r.Error,
		Permission: r.Permission, CreatedAt: r.CreatedAt, AutoApprovable: r.Kind == wire.KindRelease && r.DP}
	user := func(id string) *store.User {
		if id == "" {
			return nil
		}
		if u, ok := users[id]; ok {
			return u
		}
		u, err := a.st.User(id)
		if err != nil {
			u = nil
		}
		users[id] = u
		return u
	}
	if u := user(r.UserID); u != nil {
		v.UserEmail, v.UserRole = u.Email, u.Role
	}
	switch r.Kind {
	case wire.KindRelease, wire.KindFederation:
		v.EpsilonMicroEps = r.EpsilonMicroEps
	case wire.KindBudget:
		v.EpsilonMicroEps = r.AmountMicroEps
	}
	v.Epsilon = wire.Epsilon(v.EpsilonMicroEps)
	if r.DatasetID != "" {
		v.Dataset = &DatasetInfo{ID: r.DatasetID}
		if d, err := a.st.Dataset(r.DatasetID); err == nil {
			v.Dataset.Name, v.Dataset.Tags, v.Dataset.Visibility, v.Dataset.Rows = d.Name, d.Tags, d.Visibility, d.Rows
		}
	}
	if d := r.Decision; d != nil {
		v.Decision = &DecisionView{Approved: d.Approved, Reviewer: d.Reviewer, RuleID: d.RuleID, Reason: d.Reason,
			ChargedEpsilon: wire.Epsilon(d.ChargedMicroEps), ChargedMicroEps: d.ChargedMicroEps, At: d.At}
		if u := user(d.Reviewer); u != nil {
			v.Decision.ReviewerEmail = u.Email
		}
	}
	if withHistory && sv.Reviewer {
		v.History = a.history(r)
	}
	return v
}

// history is the requester's record next to a request, for reviewers.
func (a *API) history(r *store.Request) *HistoryView {
	h, err := a.st.UserHistory(r.UserID, r.DatasetID)
	if err != nil {
		return nil
	}
	return &HistoryView{Requests: h.Requests, Releases: h.Releases,
		BudgetEpsilon: wire.Epsilon(h.BudgetMicroEps), ReservedEpsilon: wire.Epsilon(h.ReservedMicroEps), SpentEpsilon: wire.Epsilon(h.SpentMicroEps),
		DatasetUsedEps: wire.Epsilon(h.DatasetUsedMicroEp), BudgetMicroEps: h.BudgetMicroEps, SpentMicroEps: h.SpentMicroEps, ReservedMicroEps: h.ReservedMicroEps}
}

// listRequests: everything with can_triage_requests; otherwise only the
// caller's own requests (someone else's user filter is 403). Pending
// requests a reviewer sees carry their requester's record.
func (a *API) listRequests(c *call) (any, error) {
	q := c.r.URL.Query()
	vs, err := a.svc.Requests(c.who, store.RequestFilter{State: q.Get("state"), Kind: q.Get("kind"), UserID: q.Get("user"), DatasetID: q.Get("dataset"), JobID: q.Get("job")})
	if err != nil {
		return nil, err
	}
	out := RequestList{Requests: make([]RequestView, 0, len(vs))}
	users := map[string]*store.User{}
	histories := map[string]*HistoryView{}
	for _, sv := range vs {
		v := a.requestView(sv, false, users)
		if sv.Reviewer && sv.Request.State == wire.RequestPending {
			key := sv.Request.UserID + "/" + sv.Request.DatasetID
			if h, ok := histories[key]; ok {
				v.History = h
			} else {
				v.History = a.history(sv.Request)
				histories[key] = v.History
			}
		}
		out.Requests = append(out.Requests, v)
	}
	return out, nil
}

func (a *API) getRequest(c *call) (any, error) {
	sv, err := a.svc.Request(c.who, c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	return a.requestView(sv, true, map[string]*store.User{}), nil
}

func (a *API) decide(c *call, approve bool) (any, error) {
	var req DecideRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	sv, err := a.svc.Decide(c.who, c.r.PathValue("id"), approve, req.Reason)
	if err != nil {
		return nil, err
	}
	return a.requestView(sv, true, map[string]*store.User{}), nil
}

func (a *API) approveRequest(c *call) (any, error) { return a.decide(c, true) }
func (a *API) denyRequest(c *call) (any, error)    { return a.decide(c, false) }

// ---- rules

func (a *API) ruleView(r *store.Rule) RuleView {
	roles := r.Roles
	if roles == nil {
		roles = []string{}
	}
	return RuleView{ID: r.ID, Tags: r.Tags, Roles: roles, MaxEpsilon: wire.Epsilon(r.MaxEpsilonMicroEps), MaxEpsilonMicroEps: r.MaxEpsilonMicroEps,
		Quota: r.Quota, Used: r.Used, ExpiresAt: r.ExpiresAt, Expired: !r.ExpiresAt.IsZero() && !a.cfg.Now().Before(r.ExpiresAt),
		Disabled: r.Disabled, Note: r.Note, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt}
}

func (a *API) listRules(*call) (any, error) {
	rs, err := a.st.Rules()
	if err != nil {
		return nil, err
	}
	out := RuleList{Rules: make([]RuleView, 0, len(rs))}
	for _, r := range rs {
		out.Rules = append(out.Rules, a.ruleView(r))
	}
	return out, nil
}

func (a *API) getRule(c *call) (any, error) {
	r, err := a.st.GetRule(c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	return a.ruleView(r), nil
}

func (a *API) createRule(c *call) (any, error) {
	var req RuleRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	eps, err := epsToMicro("max_epsilon", req.MaxEpsilon, false)
	if err != nil {
		return nil, err
	}
	r := store.Rule{Tags: req.Tags, Roles: req.Roles, MaxEpsilonMicroEps: eps, Quota: req.Quota, Disabled: req.Disabled, Note: req.Note}
	if req.ExpiresAt != nil {
		r.ExpiresAt = req.ExpiresAt.UTC()
	}
	out, err := a.st.CreateRule(r, c.actor())
	if err != nil {
		return nil, err
	}
	return a.ruleView(out), nil
}

func (a *API) patchRule(c *call) (any, error) {
	var req PatchRuleRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	var eps int64
	if req.MaxEpsilon != nil {
		var err error
		if eps, err = epsToMicro("max_epsilon", *req.MaxEpsilon, false); err != nil {
			return nil, err
		}
	}
	if req.NoExpiry && req.ExpiresAt != nil {
		return nil, badField("no_expiry", "cannot be given with expires_at")
	}
	out, err := a.st.UpdateRule(c.r.PathValue("id"), c.actor(), func(r *store.Rule) {
		if req.Tags != nil {
			r.Tags = *req.Tags
		}
		if req.Roles != nil {
			r.Roles = *req.Roles
		}
		if req.MaxEpsilon != nil {
			r.MaxEpsilonMicroEps = eps
		}
		if req.Quota != nil {
			r.Quota = *req.Quota
		}
		if req.ExpiresAt != nil {
			r.ExpiresAt = req.ExpiresAt.UTC()
		}
		if req.NoExpiry {
			r.ExpiresAt = time.Time{}
		}
		if req.Disabled != nil {
			r.Disabled = *req.Disabled
		}
		if req.Note != nil {
			r.Note = *req.Note
		}
	})
	if err != nil {
		return nil, err
	}
	return a.ruleView(out), nil
}

func (a *API) deleteRule(c *call) (any, error) {
	return nil, a.st.DeleteRule(c.r.PathValue("id"), c.actor())
}
