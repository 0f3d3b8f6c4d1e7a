package gateway

import (
	"context"
	"errors"
	"io"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// The p2p transport's adapter over the service layer: every protocol is
// served through serve, which resolves and authorises the caller from the
// protocol's descriptor (service.PeerActor: the one policy) before the
// handler runs, and maps every error once (p2pError).

// caller is the peer a p2p request came from, as the service sees it.
type caller struct {
	service.Actor
	peer peer.ID
}

// handler serves one p2p request from an authorised caller.
type handler[Req, Resp any] func(ctx context.Context, c caller, req *Req) (*Resp, error)

// serve registers protocol d. A descriptor that checks its caller first
// gets the policy run before the request is read as well.
func serve[Req, Resp any](g *Gateway, d wire.Protocol[Req, Resp], fn handler[Req, Resp]) {
	p2p.Serve(g.peer, d, g.allow(d.Descriptor), func(ctx context.Context, from peer.ID, req *Req) (*Resp, error) {
		c, err := g.caller(d.Descriptor, from)
		if err != nil {
			return nil, err
		}
		resp, err := fn(ctx, c, req)
		return resp, g.p2pError(d.Name, err)
	})
}

// serveStream is serve for a protocol whose response is a stream of frames.
func serveStream[Req any](g *Gateway, d wire.Protocol[Req, wire.Frames], fn func(ctx context.Context, c caller, req *Req) (func(context.Context, io.Writer) error, error)) {
	p2p.ServeStream(g.peer, d, g.allow(d.Descriptor), func(ctx context.Context, from peer.ID, req *Req) (func(context.Context, io.Writer) error, error) {
		c, err := g.caller(d.Descriptor, from)
		if err != nil {
			return nil, err
		}
		w, err := fn(ctx, c, req)
		return w, g.p2pError(d.Name, err)
	})
}

// allow is the caller policy of protocol d, run before a request is read.
func (g *Gateway) allow(d wire.Descriptor) func(peer.ID) error {
	return func(from peer.ID) error {
		_, err := g.svc.PeerActor(from.String(), d)
		return g.p2pError(d.Name, err)
	}
}

// caller resolves and authorises the peer of a request of protocol d.
func (g *Gateway) caller(d wire.Descriptor, from peer.ID) (caller, error) {
	a, err := g.svc.PeerActor(from.String(), d)
	if err != nil {
		return caller{}, g.p2pError(d.Name, err)
	}
	if a.Kind == service.Node {
		g.metrics.nodeRequests.Inc()
		g.touchNode(from)
	}
	return caller{Actor: a, peer: from}, nil
}

// p2pCode is the one map from a service error kind to a p2p code; false
// for Internal.
func p2pCode(k service.Kind) (string, bool) {
	switch k {
	case service.Invalid:
		return p2p.CodeBadRequest, true
	case service.Unauthorized, service.BadCredentials:
		return p2p.CodeUnauthorized, true
	case service.Forbidden:
		return p2p.CodeForbidden, true
	case service.NotFound:
		return p2p.CodeNotFound, true
	case service.Conflict, service.Exists, service.Protected, service.SetupDone:
		return p2p.CodeConflict, true
	case service.InsufficientBudget:
		return p2p.CodeInsufficientBudget, true
	case service.Stale:
		return p2p.CodeStale, true
	case service.SetupRequired, service.Unavailable, service.Busy:
		return p2p.CodeUnavailable, true
	case service.TooLarge:
		return p2p.CodeTooLarge, true
	}
	return "", false
}

// p2pError is the answer to a failed p2p request: a *p2p.Error a handler
// made stays; anything else is classified by the service layer and mapped
// by p2pCode. An internal error's text never reaches the peer (it is logged).
func (g *Gateway) p2pError(proto string, err error) error {
	if err == nil {
		return nil
	}
	var pe *p2p.Error
	if errors.As(err, &pe) {
		return pe
	}
	e := service.As(err)
	code, ok := p2pCode(e.Kind)
	if !ok {
		g.log.Error("p2p request failed", "protocol", proto, "err", err)
		return p2p.Errorf(p2p.CodeInternal, "internal error")
	}
	if e.Field != "" {
		return p2p.Errorf(code, "%s: %s", e.Field, e.Msg)
	}
	return p2p.Errorf(code, "%s", e.Msg)
}
