package p2p

import (
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// TestClientAdmitsASearchOfManyGateways: a data scientist's search dials
// every gateway that provides a tag at once. The client role's resource
// manager must admit hundreds of such connections (its limit scaled from
// 256 MiB was 160, and a search of 300 gateways heard from half of them).
func TestClientAdmitsASearchOfManyGateways(t *testing.T) {
	rm, err := RoleClient.resourceManager()
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	const gateways = 600
	var scopes []network.ConnManagementScope
	defer func() {
		for _, s := range scopes {
			s.Done()
		}
	}()
	for i := range gateways {
		addr := ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 10000+i))
		s, err := rm.OpenConnection(network.DirOutbound, true, addr)
		if err != nil {
			t.Fatalf("connection %d of %d refused: %v", i+1, gateways, err)
		}
		scopes = append(scopes, s)
		sk, _ := GenerateIdentity()
		pid, _ := peer.IDFromPrivateKey(sk)
		if err := s.SetPeer(pid); err != nil { // out of the transient scope, as a connection that is up
			t.Fatalf("connection %d of %d: %v", i+1, gateways, err)
		}
	}
}
