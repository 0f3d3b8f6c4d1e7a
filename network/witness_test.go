package network_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/network"
	"github.com/fedgrid/fedgrid/p2p"
)

// TestWitnessReadByItsGatewayOnly: a gateway's checkpoints carry its audit
// chain's length, which grows when a job is granted or ends; read by anyone,
// they would time the jobs of a requester whose outcome is under review. So
// only the gateway's own key (audit verify --data DIR uses it) reads them.
func TestWitnessReadByItsGatewayOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := network.Start(ctx, network.Config{DataDir: t.TempDir(), Network: "witnesstest", Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	gwKey, err := p2p.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	gw, err := p2p.PeerIDOf(gwKey)
	if err != nil {
		t.Fatal(err)
	}
	witnessID, err := peer.Decode(n.ID())
	if err != nil {
		t.Fatal(err)
	}
	open := func(cfg client.Config) *client.Client {
		t.Helper()
		cfg.Network, cfg.Bootstrap = "witnesstest", n.Addrs()
		c, err := client.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	stranger := open(client.Config{})
	if _, err := stranger.Checkpoints(ctx, witnessID, gw.String()); err == nil || !strings.Contains(err.Error(), "own key") {
		t.Fatalf("a stranger read a gateway's checkpoints: %v", err)
	}
	own := open(client.Config{Identity: gwKey})
	if cps, err := own.Checkpoints(ctx, witnessID, gw.String()); err != nil || len(cps) != 0 {
		t.Fatalf("the gateway's own key: %v %v", cps, err)
	}
}
