package gateway

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// denyGater refuses every connection with a removed node, so that removing a
// node cuts it off at once. It is not the authorisation check (libp2p's
// Connect can report success for a gated peer): every protocol handler still
// checks enrolment in the store.
type denyGater struct {
	mu   sync.RWMutex
	deny map[peer.ID]bool
}

func newDenyGater(ids []string) *denyGater {
	g := &denyGater{deny: map[peer.ID]bool{}}
	for _, s := range ids {
		if id, err := peer.Decode(s); err == nil {
			g.deny[id] = true
		}
	}
	return g
}

func (g *denyGater) add(id peer.ID) {
	g.mu.Lock()
	g.deny[id] = true
	g.mu.Unlock()
}

func (g *denyGater) allowed(id peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return !g.deny[id]
}

func (g *denyGater) InterceptPeerDial(p peer.ID) bool                 { return g.allowed(p) }
func (g *denyGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allowed(p) }
func (g *denyGater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *denyGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
func (g *denyGater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	return g.allowed(c.RemotePeer()), 0
}
