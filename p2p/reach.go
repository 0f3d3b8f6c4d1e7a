package p2p

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Role says what a peer is for; it sizes the connection manager and the
// resource limits, and picks the reachability services it runs.
type Role int

const (
	// RoleDefault (the zero value) keeps libp2p's own sizing (resource limits
	// scaled to the machine's memory) and a 64/256 connection manager.
	RoleDefault Role = iota
	// RoleClient is a data scientist's short-lived, dial-only peer.
	RoleClient
	// RoleNetwork is the network peer: bootstrap, DHT server, AutoNAT and relay service.
	RoleNetwork
	// RoleGateway is a data owner's gateway.
	RoleGateway
	// RoleNode is a worker node.
	RoleNode
)

func (r Role) String() string {
	switch r {
	case RoleNetwork:
		return "network"
	case RoleGateway:
		return "gateway"
	case RoleNode:
		return "node"
	case RoleClient:
		return "client"
	default:
		return "default"
	}
}

// sizing is a role's connection manager watermarks and resource budget.
type sizing struct {
	low, high int   // connection manager: trim to low above high
	memory    int64 // resource manager: memory for libp2p
	fds       int   // resource manager: file descriptors for libp2p
	// conns, when positive, replaces memory and fds: the resource manager
	// admits that many connections (maxConnsResourceManager).
	conns int
}

func (r Role) sizing() sizing {
	switch r {
	case RoleNetwork: // everyone's bootstrap, DHT server and relay
		return sizing{low: 256, high: 1024, memory: 4 << 30, fds: 8192}
	case RoleGateway: // its nodes, data scientists, DHT neighbours
		return sizing{low: 128, high: 512, memory: 2 << 30, fds: 4096}
	case RoleNode: // its gateway, the network peer, a few DHT peers
		return sizing{low: 32, high: 128, memory: 512 << 20, fds: 1024}
	case RoleClient:
		// One command's worth of connections, but a search dials every
		// gateway that provides a tag at once: scaled from 256 MiB the
		// limit was 160 connections, and a search of 300 gateways got
		// answers from half of them. Connections past high are trimmed
		// once older than the grace period (a minute).
		return sizing{low: 16, high: 64, conns: 2048}
	default: // memory and fds 0: libp2p's AutoScale
		return sizing{low: 64, high: 256}
	}
}

// resourceManager is libp2p's resource manager with its default limits
// (libp2p's services included) scaled to the role's budget.
func (r Role) resourceManager() (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	sz := r.sizing()
	if sz.conns > 0 {
		return maxConnsResourceManager(sz.conns)
	}
	if sz.memory == 0 {
		return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
	}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.Scale(sz.memory, sz.fds)))
}

// Reachability values for Config.Reachability.
const (
	ReachAuto    = "auto"    // AutoNAT decides (public addresses only)
	ReachPublic  = "public"  // dialable as announced: no relay reservation
	ReachPrivate = "private" // behind NAT: reserve relay slots, advertise relay addresses
)

// ValidateReachability checks a --reachability value.
func ValidateReachability(s string) error {
	switch s {
	case "", ReachAuto, ReachPublic, ReachPrivate:
		return nil
	}
	return fmt.Errorf("reachability must be %s, %s or %s, got %q", ReachAuto, ReachPublic, ReachPrivate, s)
}

// isQUIC reports whether m is a QUIC address.
func isQUIC(m ma.Multiaddr) bool {
	for _, c := range m {
		if c.Code() == ma.P_QUIC_V1 || c.Code() == ma.P_QUIC {
			return true
		}
	}
	return false
}

// addrFilter is --announce / --no-announce: what a peer tells others.
type addrFilter struct {
	announce []ma.Multiaddr // if set, these replace the listen addresses
	exact    []ma.Multiaddr // never announced
	nets     []*net.IPNet   // never announced: addresses inside
}

// parseAddrFilter reads --announce (multiaddrs) and --no-announce
// (multiaddrs, /ip4/A/ipcidr/N or CIDRs like 10.0.0.0/8).
func parseAddrFilter(announce, noAnnounce []string) (*addrFilter, error) {
	f := &addrFilter{}
	for _, s := range announce {
		m, err := ma.NewMultiaddr(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--announce %q is not a multiaddr: %v", s, err)
		}
		f.announce = append(f.announce, m)
	}
	for _, s := range noAnnounce {
		s = strings.TrimSpace(s)
		if _, n, err := net.ParseCIDR(s); err == nil {
			f.nets = append(f.nets, n)
			continue
		}
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("--no-announce %q is neither a multiaddr nor a CIDR (10.0.0.0/8): %v", s, err)
		}
		if len(m) == 2 && m[1].Code() == ma.P_IPCIDR {
			_, n, err := net.ParseCIDR(m[0].Value() + "/" + m[1].Value())
			if err != nil {
				return nil, fmt.Errorf("--no-announce %q: %v", s, err)
			}
			f.nets = append(f.nets, n)
			continue
		}
		f.exact = append(f.exact, m)
	}
	return f, nil
}

func (f *addrFilter) empty() bool {
	return len(f.announce) == 0 && len(f.exact) == 0 && len(f.nets) == 0
}

// apply is the host's address factory. Relay addresses (p2p-circuit) are
// kept even with --announce: they are how peers behind NAT are reached.
func (f *addrFilter) apply(addrs []ma.Multiaddr) []ma.Multiaddr {
	out := make([]ma.Multiaddr, 0, len(addrs)+len(f.announce))
	if len(f.announce) > 0 {
		out = append(out, f.announce...)
		for _, a := range addrs {
			if isRelayAddr(a) {
				out = append(out, a)
			}
		}
	} else {
		out = append(out, addrs...)
	}
	return slices.DeleteFunc(out, f.blocked)
}

func (f *addrFilter) blocked(a ma.Multiaddr) bool {
	for _, x := range f.exact {
		if a.Equal(x) {
			return true
		}
	}
	if len(f.nets) == 0 || isRelayAddr(a) {
		return false
	}
	ip, err := manet.ToIP(a)
	if err != nil {
		return false
	}
	for _, n := range f.nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func isRelayAddr(a ma.Multiaddr) bool {
	for _, c := range a {
		if c.Code() == ma.P_CIRCUIT {
			return true
		}
	}
	return false
}

// reachOptions are the libp2p options for transports and reachability:
// TCP and (without a private network key) QUIC; AutoNAT; the circuit relay
// v2 client everywhere, the relay service on the network peer, the relay
// addresses of keeper's reservations (gateways and nodes behind NAT); DCUtR
// hole punching; the address filters.
func reachOptions(cfg *Config, keeper *relayKeeper, relayACL relayv2.ACLFilter, tracer holepunch.EventTracer, filter *addrFilter) []libp2p.Option {
	var opts []libp2p.Option
	if len(cfg.PSK) == 0 { // QUIC cannot carry a libp2p private network
		opts = append(opts, libp2p.Transport(quic.NewTransport))
	}
	opts = append(opts, libp2p.EnableRelay(), libp2p.EnableHolePunching(holepunch.WithTracer(tracer)))
	switch cfg.Reachability {
	case ReachPublic:
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case ReachPrivate:
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	if (cfg.Role == RoleNetwork || cfg.Role == RoleGateway) && cfg.Reachability != ReachPrivate {
		// Tell other peers whether we could dial them back (AutoNAT v1 and
		// v2). Not when forced private: libp2p would then build the
		// dial-back swarm but never the service that closes it (a leak).
		opts = append(opts, libp2p.EnableNATService(), libp2p.EnableAutoNATv2())
	}
	if cfg.Relay {
		res := relayv2.DefaultResources()
		// Relayed connections carry fedgrid's streams (plans, data shards,
		// models) when hole punching fails, so they are not cut after 128 KiB
		// or 2 minutes; what is limited is who may reserve (this network's
		// peers, relayACL), how many (MaxReservations, per IP) and how many
		// circuits each has.
		res.Limit = nil
		res.MaxReservations = cfg.RelayMaxReservations
		if res.MaxReservations <= 0 {
			res.MaxReservations = 128
		}
		res.ReservationTTL = time.Hour
		opts = append(opts, libp2p.EnableRelayService(
			relayv2.WithResources(res),
			relayv2.WithACL(relayACL),
			// The relay tells its clients the addresses it announces, private
			// ones included: a network peer on a private network is a relay too.
			relayv2.WithReservationAddressFilter(func(ma.Multiaddr) bool { return true }),
		))
	}
	if keeper != nil || !filter.empty() {
		opts = append(opts, libp2p.AddrsFactory(func(addrs []ma.Multiaddr) []ma.Multiaddr {
			if keeper != nil {
				addrs = append(addrs, keeper.addrs()...)
			}
			return filter.apply(addrs)
		}))
	}
	return opts
}

// dropQUICWithPSK removes QUIC listen addresses when a private network key
// is set (libp2p's QUIC transport cannot use one) and says so.
func dropQUICWithPSK(cfg *Config, addrs []ma.Multiaddr, log *slog.Logger) []ma.Multiaddr {
	if len(cfg.PSK) == 0 {
		return addrs
	}
	return slices.DeleteFunc(addrs, func(m ma.Multiaddr) bool {
		if isQUIC(m) {
			log.Warn("not listening on QUIC: a private network (--psk-file) works over TCP only", "listen", m.String())
			return true
		}
		return false
	})
}

// maxConnsResourceManager is libp2p's default resource manager with room for
// maxConns connections (inbound, outbound and in all) and 16 streams each, and as many streams negotiating
// at once as connections (on a busy machine a thousand nodes' pings,
// heartbeats and fetches overran the default of about 500). It exports no
// metrics: its tracing was 6% of a 1,000-node gateway's CPU.
func maxConnsResourceManager(maxConns int) (network.ResourceManager, error) {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	conns := rcmgr.LimitVal(maxConns)
	streams := rcmgr.LimitVal(16 * maxConns)
	system := rcmgr.ResourceLimits{ConnsInbound: conns, ConnsOutbound: conns, Conns: conns, StreamsInbound: streams, StreamsOutbound: streams, Streams: streams}
	transient := rcmgr.ResourceLimits{StreamsInbound: conns, Streams: 2 * conns}
	limits := rcmgr.PartialLimitConfig{System: system, Transient: transient}.Build(scaling.AutoScale())
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), rcmgr.WithMetricsDisabled())
}
