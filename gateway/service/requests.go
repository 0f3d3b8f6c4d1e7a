package service

import (
	"slices"
	"strings"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// Request returns one request as the actor may see it (their own, or any
// with can_triage_requests); any other is NotFound.
func (s *Service) Request(a Actor, id string) (*RequestView, error) {
	r, err := s.st.GetRequest(id)
	if err != nil {
		return nil, Errorf(NotFound, "request %s not found", id)
	}
	v := requestView(a, r)
	if v == nil {
		return nil, Errorf(NotFound, "request %s not found", id)
	}
	return v, nil
}

// Requests lists the requests the actor may see, newest first: everyone's
// with can_triage_requests (asking for another user's needs it), else
// their own.
func (s *Service) Requests(a Actor, f store.RequestFilter) ([]*RequestView, error) {
	if f.State != "" && !slices.Contains(wire.RequestStates(), f.State) {
		return nil, FieldError("state", "must be one of %s", strings.Join(wire.RequestStates(), ", "))
	}
	if f.Kind != "" && !slices.Contains(wire.RequestKinds(), f.Kind) {
		return nil, FieldError("kind", "must be one of %s", strings.Join(wire.RequestKinds(), ", "))
	}
	if !a.Can(store.PermTriageRequests) {
		if f.UserID != "" && !a.owns(f.UserID) {
			return nil, Errorf(Forbidden, "listing other users' requests needs %s", store.PermTriageRequests)
		}
		f.UserID = a.UserID()
	}
	rs, err := s.st.Requests(f)
	if err != nil {
		return nil, err
	}
	out := []*RequestView{}
	for _, r := range rs {
		if v := requestView(a, r); v != nil {
			out = append(out, v)
		}
	}
	return out, nil
}

// Ask files the actor's request for budget (Epsilon, optionally naming a
// dataset) or for a permission on a dataset.
func (s *Service) Ask(a Actor, req *wire.RequestCreate) (*RequestView, error) {
	n := store.NewRequest{UserID: a.UserID(), Requester: a.Peer, DatasetID: req.Dataset, Permission: req.Permission, Reason: req.Reason}
	switch req.Kind {
	case wire.KindBudget:
		n.Kind = wire.KindBudget
		if wire.CheckEpsilon(req.Epsilon, false) != nil || req.Epsilon == 0 {
			return nil, FieldError("epsilon", "must be positive and at most %g, got %v", float64(wire.MaxEpsilon), req.Epsilon)
		}
		n.AmountMicroEps = int64(wire.MicroEpsNearest(req.Epsilon))
		if n.AmountMicroEps < 1 {
			return nil, FieldError("epsilon", "%v is less than one micro-epsilon", req.Epsilon)
		}
	case wire.KindPermission:
		n.Kind = wire.KindPermission
	default:
		return nil, FieldError("kind", "must be %s or %s, got %q", wire.KindBudget, wire.KindPermission, req.Kind)
	}
	if req.Dataset != "" {
		// Only datasets this gateway lists; a missing one is reported as such.
		if _, err := s.st.Dataset(req.Dataset); err != nil {
			return nil, Wrap(err, "dataset "+req.Dataset)
		}
	}
	r, err := s.st.CreateRequest(n)
	if err != nil {
		return nil, Wrap(err, "request")
	}
	s.log.Info("request filed", "request", r.ID, "kind", r.Kind, "user", n.UserID)
	return requestView(a, r), nil
}

// Withdraw takes back one of the actor's pending requests.
func (s *Service) Withdraw(a Actor, id, reason string) (*RequestView, error) {
	if id == "" {
		return nil, FieldError("id", "the ID of the request to withdraw is required")
	}
	r, err := s.st.Withdraw(id, a.UserID(), reason)
	if err != nil {
		return nil, Wrap(err, "request "+id)
	}
	s.log.Info("request withdrawn", "request", r.ID, "kind", r.Kind, "user", a.UserID())
	return requestView(a, r), nil
}

// Decide approves or denies a pending request (can_triage_requests, which
// the transports check with the route; approving budget also needs
// can_manage_privacy_budget). Nobody decides their own request.
func (s *Service) Decide(a Actor, id string, approve bool, reason string) (*RequestView, error) {
	if !a.Can(store.PermTriageRequests) {
		return nil, Errorf(Forbidden, "deciding requests needs %s", store.PermTriageRequests)
	}
	r, err := s.st.GetRequest(id)
	if err != nil {
		return nil, Wrap(err, "")
	}
	if approve && r.Kind == wire.KindBudget && !a.Can(store.PermManagePrivacyBudget) {
		return nil, Errorf(Forbidden, "approving a budget request needs %s", store.PermManagePrivacyBudget)
	}
	r, err = s.st.Decide(id, approve, a.UserID(), reason)
	if err != nil {
		return nil, err
	}
	s.log.Info("request decided", "request", r.ID, "kind", r.Kind, "approved", approve, "reviewer", a.UserID())
	return requestView(a, r), nil
}

// Info is the view in the p2p protocol's shape.
func (v *RequestView) Info() *wire.RequestInfo {
	r := v.Request
	info := &wire.RequestInfo{ID: r.ID, Kind: r.Kind, State: r.State, Dataset: r.DatasetID, Job: r.JobID,
		Permission: r.Permission, Reason: r.Reason, CreatedAt: r.CreatedAt, DecidedBy: v.DecidedBy}
	switch r.Kind {
	case wire.KindRelease, wire.KindFederation:
		info.Epsilon = wire.Epsilon(r.EpsilonMicroEps)
	case wire.KindBudget:
		info.Epsilon = wire.Epsilon(r.AmountMicroEps)
	}
	if d := r.Decision; d != nil {
		t := d.At
		info.DecidedAt = &t
		info.DecisionReason = d.Reason
		info.Charged = wire.Epsilon(d.ChargedMicroEps)
	}
	return info
}
