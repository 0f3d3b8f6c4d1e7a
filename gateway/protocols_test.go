package gateway_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// TestEveryProtocolIsADescriptor: the gateway serves exactly the protocols
// of wire.Protocols (no stream protocol outside a descriptor), and each
// refuses a peer its descriptor does not admit before doing anything: an
// unregistered peer is unauthorized on data scientists' protocols and
// forbidden on nodes' ones; anyone's protocols answer it.
func TestEveryProtocolIsADescriptor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := startCluster(t, ctx)
	gw := c.gw.Peer()
	var served []string
	prefix := "/fedgrid/gwtest/"
	for _, id := range gw.Host.Mux().Protocols() {
		name, ok := strings.CutPrefix(string(id), prefix)
		if !ok || strings.HasPrefix(name, "kad/") || id == p2p.MemberProtocol("gwtest") {
			continue // libp2p's own protocols, the DHT, the relay's membership marker (no requests)
		}
		served = append(served, strings.TrimSuffix(name, "/1.0.0"))
	}
	var described []string
	for _, d := range wire.Protocols() {
		described = append(described, d.Name)
		if d.MaxRequest <= 0 || d.MaxResponse <= 0 || d.Timeout <= 0 {
			t.Errorf("%s: limits %+v", d.Name, d)
		}
	}
	slices.Sort(served)
	slices.Sort(described)
	if !slices.Equal(served, described) {
		t.Fatalf("served %v, described %v", served, described)
	}

	stranger := c.net.Peer() // a peer that is neither a node nor bound to an account
	if err := stranger.Host.Connect(ctx, peer.AddrInfo{ID: gw.ID(), Addrs: gw.Host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	for _, d := range wire.Protocols() {
		_, err := p2p.Call[json.RawMessage, json.RawMessage](ctx, stranger.Host, gw.ID(), gw.Protocol(d.Name), &json.RawMessage{'{', '}'}, p2p.LimitsOf(d))
		switch d.Caller {
		case wire.CallerScientist:
			if !p2p.IsCode(err, p2p.CodeUnauthorized) {
				t.Errorf("%s from an unregistered peer: %v, want unauthorized", d.Name, err)
			}
		case wire.CallerNode:
			if !p2p.IsCode(err, p2p.CodeForbidden) {
				t.Errorf("%s from a peer that is no node: %v, want forbidden", d.Name, err)
			}
		case wire.CallerAnyone:
			if p2p.IsCode(err, p2p.CodeUnauthorized) || p2p.IsCode(err, p2p.CodeForbidden) {
				t.Errorf("%s is open to anyone, but: %v", d.Name, err)
			}
		default:
			t.Errorf("%s: no caller policy", d.Name)
		}
	}
}
