package gateway_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// gaugeValue reads one of the gateway's gauges.
func (e *env) gauge(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := e.gw.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) > 0 && mf.Metric[0].Gauge != nil {
			return mf.Metric[0].Gauge.GetValue()
		}
	}
	return 0
}

// TestDirectOffers: with live nodes, every job is offered to one node over a
// direct stream and claimed once; nothing is gossiped to the other nodes.
func TestDirectOffers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	const nodes, jobs = 4, 12
	for range nodes {
		e.startNode(t, ctx)
	}
	wait.For(t, 20*time.Second, "every node to ping", wait.Is(func() bool { return e.gauge(t, "fedgrid_nodes_live") >= nodes }))
	gwID := e.gw.Peer().ID()
	var wg sync.WaitGroup
	errs := make(chan error, jobs)
	for range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, err := e.clients[0].Submit(ctx, gwID, e.ds.ID, e.plan)
			if err == nil {
				var done *wire.JobInfo
				done, err = e.clients[0].Wait(ctx, gwID, j.ID, nil)
				if err == nil && done.State != wire.StateSucceeded {
					t.Errorf("job %s: %s %s", j.ID, done.State, done.Error)
				}
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	m := e.gw.Metrics()
	claims := counterValue(t, m, "fedgrid_claims_total")
	grants := counterValue(t, m, "fedgrid_lease_grants_total")
	direct := counterValue(t, m, "fedgrid_offers_direct_total")
	gossip := counterValue(t, m, "fedgrid_offer_gossip_sends_total")
	t.Logf("%d jobs: %v claims, %v grants, %v direct offers, %v gossip sends", jobs, claims, grants, direct, gossip)
	if claims != jobs || grants != jobs {
		t.Fatalf("%v claims and %v grants for %d jobs", claims, grants, jobs)
	}
	if direct < jobs || gossip != 0 {
		t.Fatalf("%v direct offers and %v gossip sends for %d jobs", direct, gossip, jobs)
	}
}

// TestDirectOfferFallback: a node that does not answer direct offers (one
// without the protocol, as an older node) still gets the job, through the
// gossiped offer.
func TestDirectOfferFallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	nd := e.startNode(t, ctx)
	nd.Peer().Host.RemoveStreamHandler(nd.Peer().Protocol(wire.ProtoOffer))
	wait.For(t, 20*time.Second, "the node to ping", wait.Is(func() bool { return e.gauge(t, "fedgrid_nodes_live") >= 1 }))
	gwID := e.gw.Peer().ID()
	j, err := e.clients[0].Submit(ctx, gwID, e.ds.ID, e.plan)
	if err != nil {
		t.Fatal(err)
	}
	done, err := e.clients[0].Wait(ctx, gwID, j.ID, nil)
	if err != nil || done.State != wire.StateSucceeded {
		t.Fatalf("job: %+v %v", done, err)
	}
	if n := counterValue(t, e.gw.Metrics(), "fedgrid_offer_gossip_sends_total"); n < 1 {
		t.Fatalf("the job ran without a gossiped offer (%v sends)", n)
	}
}

// TestDirectOfferOnlyFromGateway: a node refuses a direct offer from any peer
// but its gateway, and does not claim the job.
func TestDirectOfferOnlyFromGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	nd := e.startNode(t, ctx)
	rogue := rawPeer(t, ctx, e)
	ai, err := peer.AddrInfoFromString(nd.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := rogue.Connect(ctx, *ai); err != nil {
		t.Fatal(err)
	}
	claims := counterValue(t, e.gw.Metrics(), "fedgrid_claims_total")
	_, err = p2p.Call[wire.DirectOffer, wire.OfferAnswer](ctx, rogue.Host, nd.ID(), rogue.Protocol(wire.ProtoOffer),
		&wire.DirectOffer{Job: "forged", Expires: time.Now().Add(time.Minute)}, p2p.Limits{Timeout: 5 * time.Second})
	if !p2p.IsCode(err, p2p.CodeForbidden) {
		t.Fatalf("offer from a stranger: %v", err)
	}
	// A malformed offer from the gateway's own key is refused as such; the
	// node keeps serving (checked through a good job below).
	j, err := e.clients[0].Submit(ctx, e.gw.Peer().ID(), e.ds.ID, e.plan)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2p.Call[wire.DirectOffer, wire.OfferAnswer](ctx, e.gw.Peer().Host, nd.ID(), e.gw.Peer().Protocol(wire.ProtoOffer),
		&wire.DirectOffer{Job: ""}, p2p.Limits{Timeout: 5 * time.Second}); !p2p.IsCode(err, p2p.CodeBadRequest) {
		t.Fatalf("malformed offer: %v", err)
	}
	done, err := e.clients[0].Wait(ctx, e.gw.Peer().ID(), j.ID, nil)
	if err != nil || done.State != wire.StateSucceeded {
		t.Fatalf("job: %+v %v", done, err)
	}
	if got := counterValue(t, e.gw.Metrics(), "fedgrid_claims_total") - claims; got != 1 {
		t.Fatalf("%v claims for one job after a forged offer", got)
	}
}
