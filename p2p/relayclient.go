package p2p

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// relayKeeper holds circuit relay v2 reservations with the bootstrap peers
// that serve relays while this peer is not reachable from outside (behind
// NAT), and gives the relay addresses to the address factory.
//
// libp2p's autorelay would do this, but it advertises a relay only through
// the relay's public addresses (autorelay/addrsplosion.go drops every
// other), so a network peer on a private or reserved range — an
// organisation's own WAN, the namespace test's 198.18.0.0/15 — could never
// be used. This keeps reservations with go-libp2p's circuit v2 client
// (client.Reserve) and takes the addresses the relay vouches for.
type relayKeeper struct {
	relays []peer.AddrInfo
	force  string // ReachPrivate: always reserve; ReachAuto: while AutoNAT says private
	log    *slog.Logger

	mu      sync.Mutex
	host    host.Host
	private bool
	rsvps   map[peer.ID]*client.Reservation
	retry   map[peer.ID]time.Time // no new attempt before
}

func newRelayKeeper(relays []peer.AddrInfo, reach string, log *slog.Logger) *relayKeeper {
	return &relayKeeper{relays: relays, force: reach, log: log, private: reach == ReachPrivate,
		rsvps: map[peer.ID]*client.Reservation{}, retry: map[peer.ID]time.Time{}}
}

// addrs are the circuit addresses of the reservations held now.
func (k *relayKeeper) addrs() []ma.Multiaddr {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []ma.Multiaddr
	now := time.Now()
	circuit, _ := ma.NewComponent("p2p-circuit", "")
	for relay, r := range k.rsvps {
		if now.After(r.Expiration) {
			continue
		}
		loopbackOK := k.host != nil && k.viaLoopback(relay)
		for _, a := range r.Addrs {
			if manet.IsIPLoopback(a) && !loopbackOK {
				continue // the relay's loopback address is nobody else's way in
			}
			out = append(out, a.Encapsulate(circuit))
		}
	}
	slices.SortFunc(out, ma.Multiaddr.Compare)
	return out
}

func (k *relayKeeper) viaLoopback(relay peer.ID) bool {
	for _, c := range k.host.Network().ConnsToPeer(relay) {
		if manet.IsIPLoopback(c.RemoteMultiaddr()) {
			return true
		}
	}
	return false
}

// run keeps the reservations until ctx ends.
func (k *relayKeeper) run(ctx context.Context, h host.Host) {
	k.mu.Lock()
	k.host = h
	k.mu.Unlock()
	sub, err := h.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		k.log.Warn("relay reservations: cannot follow reachability", "err", err)
		return
	}
	defer sub.Close()
	// A reservation lives as long as the connection it was made on.
	h.Network().Notify(&network.NotifyBundle{DisconnectedF: func(n network.Network, c network.Conn) {
		if n.Connectedness(c.RemotePeer()) == network.Connected {
			return
		}
		k.mu.Lock()
		if _, ok := k.rsvps[c.RemotePeer()]; ok {
			delete(k.rsvps, c.RemotePeer())
			k.log.Info("relay reservation lost with the connection", "relay", c.RemotePeer())
		}
		k.mu.Unlock()
	}})
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-sub.Out():
			if ev, ok := e.(event.EvtLocalReachabilityChanged); ok && k.force != ReachPrivate {
				k.mu.Lock()
				k.private = ev.Reachability == network.ReachabilityPrivate
				if !k.private {
					clear(k.rsvps)
				}
				k.mu.Unlock()
				k.log.Info("reachability", "reachability", ev.Reachability.String())
			}
		case <-tick.C:
		}
		k.reserve(ctx, h)
	}
}

// reserve makes or renews the reservations that are due.
func (k *relayKeeper) reserve(ctx context.Context, h host.Host) {
	now := time.Now()
	for _, ai := range k.relays {
		k.mu.Lock()
		due := k.private && now.After(k.retry[ai.ID])
		if r := k.rsvps[ai.ID]; r != nil && time.Until(r.Expiration) > 10*time.Minute {
			due = false
		}
		k.mu.Unlock()
		if !due || h.Network().Connectedness(ai.ID) != network.Connected {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := client.Reserve(rctx, h, ai)
		cancel()
		k.mu.Lock()
		if err != nil {
			k.retry[ai.ID] = now.Add(30 * time.Second)
			k.mu.Unlock()
			if ctx.Err() == nil {
				k.log.Info("relay reservation refused or failed; retrying in 30s", "relay", ai.ID, "err", err)
			}
			continue
		}
		_, renewed := k.rsvps[ai.ID]
		k.rsvps[ai.ID] = r
		k.mu.Unlock()
		if !renewed {
			k.log.Info("relay reservation: reachable through the relay", "relay", ai.ID, "expires", r.Expiration.Format(time.RFC3339), "addrs", len(r.Addrs))
		}
	}
}
