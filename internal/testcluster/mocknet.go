package testcluster

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/fedgrid/fedgrid/p2p"
)

// Mocknet is libp2p's in-memory network: no sockets, and links between
// peers that a test cuts, delays and heals. Every new peer is linked to
// every peer already on it.
//
// mocknet applies no connection gater (libp2p does not let one be set from
// outside), so a gateway's removed-node gater is not in force there; tests
// of that use loopback TCP.
type Mocknet struct {
	mn mocknet.Mocknet

	mu  sync.Mutex
	seq int
}

// NewMocknet returns an empty mocknet, closed when the test ends (after
// the peers the test closes in its own cleanups).
func NewMocknet(t testing.TB) *Mocknet {
	t.Helper()
	m := &Mocknet{mn: mocknet.New()}
	t.Cleanup(func() { _ = m.mn.Close() })
	return m
}

// Hosts is a p2p.HostFactory that adds a peer with the given identity to
// the mocknet and links it to every peer already there.
func (m *Mocknet) Hosts() p2p.HostFactory {
	return func(sk crypto.PrivKey, _ connmgr.ConnectionGater) (host.Host, error) {
		m.mu.Lock()
		m.seq++
		n := m.seq
		m.mu.Unlock()
		// An address in the IPv6 discard prefix 100::/64: mocknet routes by
		// peer ID and never opens a socket, so it is only a label.
		addr, err := ma.NewMultiaddr(fmt.Sprintf("/ip6/100::%x/tcp/4242", n))
		if err != nil {
			return nil, err
		}
		h, err := m.mn.AddPeer(sk, addr)
		if err != nil {
			return nil, fmt.Errorf("mocknet: add peer: %w", err)
		}
		for _, other := range m.mn.Peers() {
			if other == h.ID() {
				continue
			}
			if _, err := m.mn.LinkPeers(h.ID(), other); err != nil {
				return nil, fmt.Errorf("mocknet: link: %w", err)
			}
		}
		return h, nil
	}
}

// Cut removes the link between a and b and closes their connections:
// neither can reach the other until Heal.
func (m *Mocknet) Cut(a, b peer.ID) error {
	if err := m.mn.UnlinkPeers(a, b); err != nil {
		return fmt.Errorf("mocknet: unlink: %w", err)
	}
	return m.mn.DisconnectPeers(a, b)
}

// Heal links a and b again; their own redial loops reconnect them.
func (m *Mocknet) Heal(a, b peer.ID) error {
	if len(m.mn.LinksBetweenPeers(a, b)) > 0 {
		return nil
	}
	_, err := m.mn.LinkPeers(a, b)
	return err
}

// Delay sets the latency of every message between a and b.
func (m *Mocknet) Delay(a, b peer.ID, d time.Duration) {
	for _, l := range m.mn.LinksBetweenPeers(a, b) {
		l.SetOptions(mocknet.LinkOptions{Latency: d})
	}
}
