package p2p

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// Connection paths, as Path reports them and the logs and metrics name them.
const (
	PathDirect  = "direct"  // a direct connection (possibly after hole punching)
	PathRelayed = "relayed" // only through a circuit relay
	PathNone    = "none"    // not connected
)

// MemberProtocol is a protocol every fedgrid peer of the network speaks
// (identify advertises it). The relay service serves only peers that
// advertise it: with a private network key (--psk-file) nobody else can
// even connect; without one it keeps other libp2p software from using the
// network peer as a relay.
func MemberProtocol(network string) protocol.ID { return ProtocolID(network, "member") }

// connPath is the path of one connection.
func connPath(c network.Conn) string {
	if c.Stat().Limited || isRelayAddr(c.RemoteMultiaddr()) {
		return PathRelayed
	}
	return PathDirect
}

// Path says how this peer is connected to id: direct when any connection is
// direct, relayed when all go through a relay, none when not connected.
func (p *Peer) Path(id peer.ID) string {
	out := PathNone
	for _, c := range p.Host.Network().ConnsToPeer(id) {
		if connPath(c) == PathDirect {
			return PathDirect
		}
		out = PathRelayed
	}
	return out
}

// pathWatch logs every connection's path and hole punching's outcome, and
// counts them for the metrics.
type pathWatch struct {
	log  *slog.Logger
	mu   sync.Mutex
	host host.Host // set once the host exists

	punches *prometheus.CounterVec
}

func newPathWatch(log *slog.Logger) *pathWatch {
	return &pathWatch{log: log, punches: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedgrid_p2p_holepunch_total",
		Help: "DCUtR hole punches that ended, by result (success: a relayed connection became direct).",
	}, []string{"result"})}
}

func (w *pathWatch) setHost(h host.Host) {
	w.mu.Lock()
	w.host = h
	w.mu.Unlock()
	h.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			if connPath(c) == PathRelayed {
				w.log.Info("connection", "peer", c.RemotePeer(), "path", PathRelayed, "via", c.RemoteMultiaddr().String(), "dir", c.Stat().Direction.String())
			} else {
				w.log.Debug("connection", "peer", c.RemotePeer(), "path", PathDirect, "addr", c.RemoteMultiaddr().String(), "dir", c.Stat().Direction.String())
			}
		},
	})
}

// Trace receives DCUtR's events (holepunch.EventTracer).
func (w *pathWatch) Trace(evt *holepunch.Event) {
	switch e := evt.Evt.(type) {
	case *holepunch.EndHolePunchEvt:
		if e.Success {
			w.punches.WithLabelValues("success").Inc()
			w.log.Info("hole punching succeeded: the relayed connection is now direct", "peer", evt.Remote, "path", PathDirect, "took", e.EllapsedTime.Round(time.Millisecond))
		} else {
			w.punches.WithLabelValues("failure").Inc()
			w.log.Info("hole punching failed: the connection stays relayed", "peer", evt.Remote, "path", PathRelayed, "err", e.Error)
		}
	case *holepunch.DirectDialEvt:
		if e.Success {
			w.log.Info("direct dial succeeded: no hole punching needed", "peer", evt.Remote, "path", PathDirect)
		}
	}
}

// Collectors are the peer's connection metrics: connections by path and
// hole punches by result. Register them where the peer's /metrics is served.
func (p *Peer) Collectors() []prometheus.Collector {
	conns := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fedgrid_p2p_connections_relayed", Help: "Open libp2p connections that go through a circuit relay.",
	}, func() float64 { return float64(p.countConns(PathRelayed)) })
	direct := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fedgrid_p2p_connections_direct", Help: "Open direct libp2p connections.",
	}, func() float64 { return float64(p.countConns(PathDirect)) })
	return []prometheus.Collector{conns, direct, p.paths.punches}
}

func (p *Peer) countConns(path string) int {
	n := 0
	for _, c := range p.Host.Network().Conns() {
		if connPath(c) == path {
			n++
		}
	}
	return n
}

// relayACL lets only peers of this network reserve relay slots and open
// circuits (relayv2.ACLFilter).
type relayACL struct {
	proto protocol.ID
	mu    sync.Mutex
	host  host.Host
}

func (a *relayACL) setHost(h host.Host) {
	a.mu.Lock()
	a.host = h
	a.mu.Unlock()
}

func (a *relayACL) member(id peer.ID) bool {
	a.mu.Lock()
	h := a.host
	a.mu.Unlock()
	if h == nil {
		return false
	}
	// The request may come before identify has finished: wait for it (a
	// bounded wait on the relay's stream handler).
	if ids, ok := h.(interface{ IDService() identify.IDService }); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, c := range h.Network().ConnsToPeer(id) {
			select {
			case <-ids.IDService().IdentifyWait(c):
			case <-ctx.Done():
			}
		}
	}
	ok, err := h.Peerstore().SupportsProtocols(id, a.proto)
	return err == nil && len(ok) > 0
}

// AllowReserve implements relayv2.ACLFilter.
func (a *relayACL) AllowReserve(id peer.ID, _ ma.Multiaddr) bool { return a.member(id) }

// AllowConnect implements relayv2.ACLFilter.
func (a *relayACL) AllowConnect(src peer.ID, _ ma.Multiaddr, _ peer.ID) bool { return a.member(src) }
