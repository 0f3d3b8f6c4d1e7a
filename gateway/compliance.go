package gateway

import (
	"context"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// Data scientists' requests to the compliance officers (budget, permission)
// and their view of their own requests, release requests included. The
// review itself happens over HTTP (gateway/api, /api/v1/requests).

func (g *Gateway) handleRequest(_ context.Context, from peer.ID, req *wire.RequestCreate) (*wire.RequestInfo, error) {
	u, err := g.authorize(from, wire.Request().Descriptor)
	if err != nil {
		return nil, err
	}
	n := store.NewRequest{UserID: u.ID, Requester: from.String(), DatasetID: req.Dataset, Permission: req.Permission, Reason: req.Reason}
	switch req.Kind {
	case wire.KindBudget:
		n.Kind = wire.KindBudget
		if wire.CheckEpsilon(req.Epsilon, false) != nil || req.Epsilon == 0 {
			return nil, p2p.Errorf(p2p.CodeBadRequest, "epsilon must be positive and at most %g, got %v", float64(wire.MaxEpsilon), req.Epsilon)
		}
		n.AmountMicroEps = int64(wire.MicroEpsNearest(req.Epsilon))
		if n.AmountMicroEps < 1 {
			return nil, p2p.Errorf(p2p.CodeBadRequest, "epsilon %v is less than one micro-epsilon", req.Epsilon)
		}
	case wire.KindPermission:
		n.Kind = wire.KindPermission
	default:
		return nil, p2p.Errorf(p2p.CodeBadRequest, "kind must be %s or %s, got %q", wire.KindBudget, wire.KindPermission, req.Kind)
	}
	if req.Dataset != "" {
		// Only datasets this gateway lists; a missing one is reported as such.
		if _, err := g.store.Dataset(req.Dataset); err != nil {
			return nil, storeErr(err, "dataset "+req.Dataset)
		}
	}
	r, err := g.store.CreateRequest(n)
	if err != nil {
		return nil, storeErr(err, "request")
	}
	g.log.Info("request filed", "request", r.ID, "kind", r.Kind, "user", u.ID)
	return requestInfo(r), nil
}

func (g *Gateway) handleRequests(_ context.Context, from peer.ID, req *wire.RequestsQuery) (*wire.RequestList, error) {
	u, err := g.authorize(from, wire.Requests().Descriptor)
	if err != nil {
		return nil, err
	}
	out := &wire.RequestList{Requests: []wire.RequestInfo{}}
	if req.ID != "" {
		r, err := g.store.GetRequest(req.ID)
		if err != nil || r.UserID != u.ID {
			// Other people's requests do not exist for the caller.
			return nil, p2p.Errorf(p2p.CodeNotFound, "request %s not found", req.ID)
		}
		out.Requests = append(out.Requests, *requestInfo(r))
		return out, nil
	}
	rs, err := g.store.Requests(store.RequestFilter{UserID: u.ID, State: req.State})
	if err != nil {
		return nil, err
	}
	const maxListed = 500
	for i, r := range rs {
		if i == maxListed {
			break
		}
		out.Requests = append(out.Requests, *requestInfo(r))
	}
	return out, nil
}

func (g *Gateway) handleWithdraw(_ context.Context, from peer.ID, req *wire.RequestWithdraw) (*wire.RequestInfo, error) {
	u, err := g.authorize(from, wire.Withdraw().Descriptor)
	if err != nil {
		return nil, err
	}
	if req.ID == "" {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "the ID of the request to withdraw is required")
	}
	r, err := g.store.Withdraw(req.ID, u.ID, req.Reason)
	if err != nil {
		return nil, storeErr(err, "request "+req.ID)
	}
	g.log.Info("request withdrawn", "request", r.ID, "kind", r.Kind, "user", u.ID)
	return requestInfo(r), nil
}

// requestInfo is the requester's view: no reviewer identity, no plan or metrics.
func requestInfo(r *store.Request) *wire.RequestInfo {
	info := &wire.RequestInfo{ID: r.ID, Kind: r.Kind, State: r.State, Dataset: r.DatasetID, Job: r.JobID,
		Permission: r.Permission, Reason: r.Reason, CreatedAt: r.CreatedAt}
	switch r.Kind {
	case wire.KindRelease:
		info.Epsilon = wire.Epsilon(r.EpsilonMicroEps)
	case wire.KindBudget:
		info.Epsilon = wire.Epsilon(r.AmountMicroEps)
	}
	if d := r.Decision; d != nil {
		t := d.At
		info.DecidedAt = &t
		info.DecisionReason = d.Reason
		info.Charged = wire.Epsilon(d.ChargedMicroEps)
		switch {
		case strings.HasPrefix(d.Reviewer, store.ReviewerRulePrefix):
			info.DecidedBy = "rule"
		case d.Reviewer == store.ReviewerOverride:
			info.DecidedBy = "override"
		case d.Reviewer == store.ReviewerRequester:
			info.DecidedBy = "requester"
		default:
			info.DecidedBy = "officer"
		}
	}
	return info
}
