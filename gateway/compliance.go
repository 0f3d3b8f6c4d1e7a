package gateway

import (
	"context"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// Data scientists' requests to the compliance officers (budget, permission)
// and their view of their own requests, release requests included: p2p
// adapters of the service layer. The review itself happens over HTTP
// (gateway/api, /api/v1/requests).

func (g *Gateway) handleRequest(_ context.Context, c caller, req *wire.RequestCreate) (*wire.RequestInfo, error) {
	v, err := g.svc.Ask(c.Actor, req)
	if err != nil {
		return nil, err
	}
	return v.Info(), nil
}

// maxListed bounds one answer of ds/requests.
const maxListed = 500

func (g *Gateway) handleRequests(_ context.Context, c caller, req *wire.RequestsQuery) (*wire.RequestList, error) {
	out := &wire.RequestList{Requests: []wire.RequestInfo{}}
	if req.ID != "" {
		v, err := g.svc.Request(c.Actor, req.ID)
		if err != nil {
			return nil, err
		}
		out.Requests = append(out.Requests, *v.Info())
		return out, nil
	}
	// The protocol lists the caller's own requests.
	vs, err := g.svc.Requests(c.Actor, store.RequestFilter{UserID: c.UserID(), State: req.State})
	if err != nil {
		return nil, err
	}
	for i, v := range vs {
		if i == maxListed {
			break
		}
		out.Requests = append(out.Requests, *v.Info())
	}
	return out, nil
}

func (g *Gateway) handleWithdraw(_ context.Context, c caller, req *wire.RequestWithdraw) (*wire.RequestInfo, error) {
	v, err := g.svc.Withdraw(c.Actor, req.ID, req.Reason)
	if err != nil {
		return nil, err
	}
	return v.Info(), nil
}
