package client

import (
	"context"
	"sort"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// Jobs lists the caller's own jobs at gw, newest first; state filters.
func (c *Client) Jobs(ctx context.Context, gw peer.ID, state string) ([]wire.JobInfo, error) {
	r, err := call(ctx, c, gw, wire.Jobs(), &wire.JobsQuery{State: state})
	if err != nil {
		return nil, err
	}
	return r.Jobs, nil
}

// GatewayJobs is one gateway's answer to MyJobs.
type GatewayJobs struct {
	Gateway     string         `json:"gateway"`
	GatewayName string         `json:"gateway_name"`
	Jobs        []wire.JobInfo `json:"jobs"`
	// Error says why the gateway's jobs could not be listed; "" when they were.
	Error string `json:"error,omitempty"`
}

// MyJobs asks gateways for the caller's jobs: the ones given, or, with
// none, every gateway of the network (Gateways). A discovered gateway where
// the caller's peer ID is not registered is left out; one given by the
// caller is kept with its error. Each gateway has PerGateway to answer.
// Sorted by gateway name and ID.
func (c *Client) MyJobs(ctx context.Context, gateways []peer.ID, state string) ([]GatewayJobs, error) {
	type target struct {
		id       peer.ID
		name     string
		explicit bool
	}
	var targets []target
	if len(gateways) > 0 {
		for _, g := range gateways {
			targets = append(targets, target{id: g, explicit: true})
		}
	} else {
		gws, err := c.Gateways(ctx)
		if err != nil {
			return nil, err
		}
		for _, g := range gws {
			id, err := peer.Decode(g.ID)
			if err != nil {
				continue
			}
			targets = append(targets, target{id: id, name: g.Name})
		}
	}
	out := make([]*GatewayJobs, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gctx, cancel := context.WithTimeout(ctx, c.cfg.PerGateway)
			defer cancel()
			jobs, err := c.Jobs(gctx, t.id, state)
			if err != nil {
				if !t.explicit && (p2p.IsCode(err, p2p.CodeUnauthorized) || p2p.IsCode(err, p2p.CodeForbidden)) {
					return // not one of the caller's gateways
				}
				out[i] = &GatewayJobs{Gateway: t.id.String(), GatewayName: t.name, Jobs: []wire.JobInfo{}, Error: err.Error()}
				return
			}
			out[i] = &GatewayJobs{Gateway: t.id.String(), GatewayName: t.name, Jobs: jobs}
		}()
	}
	wg.Wait()
	var res []GatewayJobs
	for _, g := range out {
		if g != nil {
			res = append(res, *g)
		}
	}
	sort.Slice(res, func(i, j int) bool {
		if res[i].GatewayName != res[j].GatewayName {
			return res[i].GatewayName < res[j].GatewayName
		}
		return res[i].Gateway < res[j].Gateway
	})
	return res, nil
}
