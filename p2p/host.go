// Package p2p builds fedgrid's libp2p peers: identity, host, Kademlia DHT,
// gossipsub, bootstrap and reconnect loops, and a request/response helper
// over streams (Call/Handle) that every fedgrid protocol uses.
package p2p

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	cmgr "github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedgrid/fedgrid/internal/version"
)

// DefaultNetwork is the network name used when none is given.
const DefaultNetwork = "default"

// DefaultListen is where peers listen when no address is given: loopback
// only, TCP (and DefaultListenQUIC).
const DefaultListen = "/ip4/127.0.0.1/tcp/0"

// DefaultListenQUIC is the QUIC address peers listen on by default too.
const DefaultListenQUIC = "/ip4/127.0.0.1/udp/0/quic-v1"

// Version is reported to other peers in the user agent and to a gateway on enrolment.
var Version = version.Version

// DHTMode selects whether this peer serves the DHT or only queries it.
type DHTMode int

const (
	// DHTServer answers DHT queries and stores records (network peers, gateways).
	DHTServer DHTMode = iota
	// DHTClient only queries (data scientists' one-shot commands, nodes).
	DHTClient
)

// Config describes one peer. The zero value plus DataDir or Identity is usable.
type Config struct {
	// DataDir holds identity.key (created on first start) unless Identity is set.
	DataDir string
	// Identity overrides the key in DataDir.
	Identity crypto.PrivKey
	// Network names the DHT namespace and topics; peers of different networks never see each other.
	Network string
	// Listen multiaddrs; default DefaultListen and DefaultListenQUIC. Empty slice with NoListen = dial only.
	Listen   []string
	NoListen bool
	// Bootstrap peers (full multiaddrs with /p2p/). Each is dialled with retries
	// and kept connected for the peer's whole life.
	Bootstrap []string
	DHTMode   DHTMode
	// PSK, when set, makes this a private network: only peers with the same key connect.
	PSK []byte
	// Gater, when set, may refuse connections (for example from removed nodes).
	Gater connmgr.ConnectionGater
	// Logger; nil discards.
	Logger *slog.Logger
	// Metrics, when set, gets libp2p's own series (libp2p_*); nil turns
	// libp2p's metrics off. (Collectors are the peer's own; the caller
	// registers them where it serves /metrics.)
	Metrics prometheus.Registerer
	// NewHost, when set, builds the libp2p host instead of the default TCP
	// host (tests put many peers on libp2p's mocknet this way). Listen,
	// NoListen, PSK, Role and Reach do not apply; the peer owns the host and
	// closes it.
	NewHost HostFactory

	// Role sizes the connection manager and resource limits and picks the
	// reachability services (see reachOptions). The zero value, RoleDefault,
	// keeps libp2p's own sizing.
	Role Role
	// Reach: addresses to announce, reachability, relay service.
	Reach
	// MaxConns, when positive, overrides the role's sizing: the resource
	// manager admits that many connections (inbound and in all), with 16
	// streams each, and the connection manager trims only above it (a
	// gateway with a thousand nodes; the gateway role's own sizing admits
	// about 200 inbound connections).
	MaxConns int
}

// Reach is how a peer is reached across networks; the peer commands' flags
// --announce, --no-announce, --reachability and --relay fill it.
type Reach struct {
	// Announce, when set, replaces the listen addresses in what the peer
	// tells others (--announce); NoAnnounce drops addresses or CIDRs from it.
	Announce   []string
	NoAnnounce []string
	// Reachability: ReachAuto (AutoNAT decides; the default except for the
	// network role, which defaults to ReachPublic), ReachPublic or ReachPrivate.
	Reachability string
	// Relay serves circuit relay v2 reservations to this network's peers.
	Relay bool
	// RelayMaxReservations bounds the relay's reservations; default 128.
	RelayMaxReservations int
}

// HostFactory builds a libp2p host for a peer with the given identity.
// Gater is nil when the peer has none; a factory that cannot apply one
// (mocknet) may ignore it: every fedgrid handler checks its caller anyway.
type HostFactory func(identity crypto.PrivKey, gater connmgr.ConnectionGater) (host.Host, error)

// Peer is a running libp2p peer with its DHT and pubsub router.
type Peer struct {
	Host    host.Host
	DHT     *dht.IpfsDHT
	PubSub  *pubsub.PubSub
	Network string

	log       *slog.Logger
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	scoreMu sync.Mutex
	scores  map[peer.ID]float64

	paths *pathWatch
}

// New starts a peer. If it fails half way, whatever was opened is closed.
func New(ctx context.Context, cfg Config) (_ *Peer, err error) {
	if cfg.Network == "" {
		cfg.Network = DefaultNetwork
	}
	if err := ValidateNetworkName(cfg.Network); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bootstrap, err := ParseAddrInfos(cfg.Bootstrap)
	if err != nil {
		return nil, err
	}
	sk := cfg.Identity
	if sk == nil {
		if cfg.DataDir == "" {
			return nil, errors.New("p2p: either DataDir or Identity is required")
		}
		sk, err = LoadOrCreateIdentity(filepath.Join(cfg.DataDir, IdentityFile))
		if err != nil {
			return nil, err
		}
	}
	paths := newPathWatch(log)
	var h host.Host
	var keeper *relayKeeper
	if cfg.NewHost != nil {
		h, err = cfg.NewHost(sk, cfg.Gater)
	} else {
		h, keeper, err = newHost(cfg, sk, log, bootstrap, paths)
	}
	if err != nil {
		return nil, err
	}
	return start(cfg, h, log, bootstrap, paths, keeper)
}

// newHost builds the default host (TCP and QUIC, the reachability services
// of reachOptions) and listens. keeper, when not nil, is to be run.
func newHost(cfg Config, sk crypto.PrivKey, log *slog.Logger, bootstrap []peer.AddrInfo, paths *pathWatch) (_ host.Host, keeper *relayKeeper, err error) {
	listen := cfg.Listen
	if len(listen) == 0 && !cfg.NoListen {
		listen = []string{DefaultListen, DefaultListenQUIC}
	}
	if err := ValidateReachability(cfg.Reachability); err != nil {
		return nil, nil, err
	}
	if cfg.Reachability == "" && cfg.Role == RoleNetwork {
		cfg.Reachability = ReachPublic
	}
	filter, err := parseAddrFilter(cfg.Announce, cfg.NoAnnounce)
	if err != nil {
		return nil, nil, err
	}
	if len(cfg.PSK) > 0 && len(cfg.PSK) != 32 {
		return nil, nil, fmt.Errorf("p2p: private network key must be 32 bytes, got %d", len(cfg.PSK))
	}
	sz := cfg.Role.sizing()
	if cfg.MaxConns > 0 {
		sz.low, sz.high = cfg.MaxConns/2, cfg.MaxConns
	}
	cm, err := cmgr.NewConnManager(sz.low, sz.high, cmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, nil, fmt.Errorf("connection manager: %w", err)
	}
	var rm network.ResourceManager
	if cfg.MaxConns > 0 {
		rm, err = maxConnsResourceManager(cfg.MaxConns)
	} else {
		rm, err = cfg.Role.resourceManager()
	}
	if err != nil {
		_ = cm.Close()
		return nil, nil, fmt.Errorf("resource manager: %w", err)
	}
	acl := &relayACL{proto: MemberProtocol(cfg.Network)}
	opts := []libp2p.Option{
		libp2p.Identity(sk),
		// No SO_REUSEPORT: two peers must never share a port (connections
		// would be split silently between two peer IDs).
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
		libp2p.UserAgent("fedgrid/" + version.Short()),
		libp2p.WithDialTimeout(10 * time.Second),
	}
	// Listening comes after the host is built, one address at a time, so
	// that a taken port is an error naming it (see listenAll).
	opts = append(opts, libp2p.NoListenAddrs)
	listenAddrs := make([]ma.Multiaddr, 0, len(listen))
	for _, s := range listen {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			_ = cm.Close()
			_ = rm.Close()
			return nil, nil, fmt.Errorf("bad listen address %q: %v", s, err)
		}
		listenAddrs = append(listenAddrs, m)
	}
	listenAddrs = dropQUICWithPSK(&cfg, listenAddrs, log)
	if (cfg.Role == RoleGateway || cfg.Role == RoleNode) && len(bootstrap) > 0 && !cfg.NoListen && cfg.Reachability != ReachPublic {
		// Behind NAT (AutoNAT says private, or --reachability private):
		// reserve a slot with the bootstrap peers that relay and advertise
		// the relay addresses.
		keeper = newRelayKeeper(bootstrap, cfg.Reachability, log)
	}
	opts = append(opts, reachOptions(&cfg, keeper, acl, paths, filter)...)
	if len(cfg.PSK) > 0 {
		opts = append(opts, libp2p.PrivateNetwork(pnet.PSK(cfg.PSK)))
	}
	if cfg.Gater != nil {
		opts = append(opts, libp2p.ConnectionGater(cfg.Gater))
	}
	if cfg.Metrics != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Metrics))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		_ = cm.Close()
		_ = rm.Close()
		return nil, nil, fmt.Errorf("start libp2p host: %w", err)
	}
	acl.setHost(h)
	if err := listenAll(h.Network(), cfg.DataDir, listenAddrs, log); err != nil {
		_ = h.Close()
		return nil, nil, err
	}
	return h, keeper, nil
}

// start runs the DHT, pubsub and bootstrap loops on h. If it fails, h is closed.
func start(cfg Config, h host.Host, log *slog.Logger, bootstrap []peer.AddrInfo, paths *pathWatch, keeper *relayKeeper) (_ *Peer, err error) {
	paths.setHost(h)
	h.SetStreamHandler(MemberProtocol(cfg.Network), func(s network.Stream) { _ = s.Reset() })
	pctx, cancel := context.WithCancel(context.Background())
	p := &Peer{Host: h, Network: cfg.Network, log: log, ctx: pctx, cancel: cancel, paths: paths}
	defer func() {
		if err != nil {
			_ = p.Close()
		}
	}()

	mode := dht.ModeServer
	if cfg.DHTMode == DHTClient {
		mode = dht.ModeClient
	}
	p.DHT, err = dht.New(h,
		dht.Mode(mode),
		dht.ProtocolPrefix(protocol.ID("/fedgrid/"+cfg.Network)),
		dht.BootstrapPeers(bootstrap...),
		// kad-dht's own default. Peers enter each other's routing tables
		// as they connect; the refresh only looks for peers not yet met.
		// Every 30 s (as before), 300 gateways' refresh lookups and their
		// answers took both cores of a 2-core machine (BENCHMARKS.md,
		// "300 gateways").
		dht.RoutingTableRefreshPeriod(10*time.Minute),
	)
	if err != nil {
		return nil, fmt.Errorf("start DHT: %w", err)
	}
	p.PubSub, err = pubsub.NewGossipSub(pctx, h,
		pubsub.WithMessageIdFn(contentID),
		pubsub.WithPeerOutboundQueueSize(256),
		pubsub.WithValidateQueueSize(256),
		pubsub.WithMaxMessageSize(64<<10),
		// A gateway's nodes connect to it, not to each other: its topic is a
		// star, and a mesh of at most Dhi peers would leave most nodes to hear
		// offers only through lazy gossip, a heartbeat later. Our own messages
		// go to every subscribed peer.
		pubsub.WithFloodPublish(true),
		pubsub.WithPeerScore(scoreParams(), scoreThresholds),
		// Scores are copied out for Score every few seconds: at every
		// 500 ms, a gateway with a thousand nodes scored each of them twice
		// a second for nothing but this copy.
		pubsub.WithPeerScoreInspect(pubsub.PeerScoreInspectFn(p.inspectScores), scoreInspectEvery),
	)
	if err != nil {
		return nil, fmt.Errorf("start gossipsub: %w", err)
	}
	for _, ai := range bootstrap {
		p.Keep(ai)
	}
	if keeper != nil {
		p.Go(func(ctx context.Context) { keeper.run(ctx, h) })
	}
	return p, nil
}

// contentID deduplicates messages by content hash: a re-announced identical
// offer from the same author is one message.
func contentID(m *pb.Message) string {
	h := sha256.New()
	h.Write(m.GetFrom())
	h.Write(m.GetData())
	return string(h.Sum(nil))
}

// ValidateNetworkName refuses names that would break protocol IDs.
func ValidateNetworkName(n string) error {
	if n == "" || len(n) > 64 {
		return fmt.Errorf("network name must be 1 to 64 characters, got %q", n)
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("network name %q may hold only letters, digits, '-', '_' and '.'", n)
		}
	}
	return nil
}

// ID is this peer's ID.
func (p *Peer) ID() peer.ID { return p.Host.ID() }

// Context is cancelled when the peer closes.
func (p *Peer) Context() context.Context { return p.ctx }

// Protocol returns the stream protocol ID for name in this peer's network.
func (p *Peer) Protocol(name string) protocol.ID {
	return ProtocolID(p.Network, name)
}

// ProtocolID returns "/fedgrid/<network>/<name>/<version.StreamProtocol>".
func ProtocolID(network, name string) protocol.ID {
	return protocol.ID("/fedgrid/" + network + "/" + name + "/" + version.StreamProtocol)
}

// Topic returns the gossipsub topic name for name in this peer's network.
func (p *Peer) Topic(name string) string { return "/fedgrid/" + p.Network + "/" + name }

// Addrs returns this peer's full multiaddrs (with /p2p/<id>).
func (p *Peer) Addrs() []string {
	ai := peer.AddrInfo{ID: p.Host.ID(), Addrs: p.Host.Addrs()}
	mas, err := peer.AddrInfoToP2pAddrs(&ai)
	if err != nil {
		return nil
	}
	out := make([]string, len(mas))
	for i, m := range mas {
		out[i] = m.String()
	}
	return out
}

// TagKey is the DHT key under which gateways provide a dataset tag.
func TagKey(network, tag string) cid.Cid {
	d := sha256.Sum256([]byte("fedgrid/" + network + "/tag/" + strings.ToLower(tag)))
	// Encode fails only for unknown hash codes; SHA2_256 is known.
	sum, _ := mh.Encode(d[:], mh.SHA2_256)
	return cid.NewCidV1(cid.Raw, sum)
}

// GatewaysKey is the DHT key every gateway of a network provides, so that a
// search without tags (and the network's directory) can find them all.
func GatewaysKey(network string) cid.Cid { return TagKey(network, "\x00gateways") }

// TagKey is TagKey for this peer's network.
func (p *Peer) TagKey(tag string) cid.Cid { return TagKey(p.Network, tag) }

// Connect dials ai with a deadline.
func (p *Peer) Connect(ctx context.Context, ai peer.AddrInfo) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.Host.Connect(ctx, ai); err != nil {
		return fmt.Errorf("connect to %s: %w", ai.ID.ShortString(), err)
	}
	return nil
}

// FindPeer returns addresses for id: from the peerstore if connected or
// known, else from the DHT.
func (p *Peer) FindPeer(ctx context.Context, id peer.ID) (peer.AddrInfo, error) {
	if p.Host.Network().Connectedness(id) == network.Connected {
		return peer.AddrInfo{ID: id, Addrs: p.Host.Peerstore().Addrs(id)}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ai, err := p.DHT.FindPeer(ctx, id)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("find peer %s: %w", id, err)
	}
	return ai, nil
}

// Keep protects the connection to ai and redials it, with backoff, whenever
// it drops, until the peer closes. Use it for bootstrap peers and a node's gateway.
func (p *Peer) Keep(ai peer.AddrInfo) {
	p.Host.ConnManager().Protect(ai.ID, "fedgrid-keep")
	p.Host.Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Hour*24*365)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.keep(ai)
	}()
}

func (p *Peer) keep(ai peer.AddrInfo) {
	backoff := 100 * time.Millisecond
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	wasConnected := false
	failures := 0
	for {
		if p.Host.Network().Connectedness(ai.ID) != network.Connected {
			if err := p.Connect(p.ctx, ai); err != nil {
				if p.ctx.Err() != nil {
					return
				}
				failures++
				if failures%3 == 0 && p.DHT.RoutingTable().Size() > 0 {
					// The peer may have come back on another address: ask the DHT.
					fctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
					if found, err := p.DHT.FindPeer(fctx, ai.ID); err == nil && len(found.Addrs) > 0 {
						ai.Addrs = found.Addrs
						p.Host.Peerstore().AddAddrs(ai.ID, found.Addrs, time.Hour)
					}
					cancel()
				}
				p.log.Debug("redial failed", "peer", ai.ID, "err", err, "retry_in", backoff)
				select {
				case <-p.ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(backoff*2, 5*time.Second)
				wasConnected = false
				continue
			}
			backoff = 100 * time.Millisecond
			failures = 0
			if !wasConnected {
				p.log.Info("connected", "peer", ai.ID)
				// A (re)joined bootstrap peer: refresh the routing table so
				// that DHT operations work again without a restart.
				select {
				case <-p.DHT.ForceRefresh():
				default:
				}
			}
			wasConnected = true
		}
		select {
		case <-p.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// ProvidersAt asks one DHT server directly for the providers it holds for
// key (no lookup). Errors count as no providers: the caller has the DHT lookup too.
func (p *Peer) ProvidersAt(ctx context.Context, server peer.ID, key cid.Cid) []peer.AddrInfo {
	if p.Host.Network().Connectedness(server) != network.Connected {
		return nil
	}
	pm, err := dhtpb.NewProtocolMessenger(p.DHT.MessageSender())
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	provs, _, err := pm.GetProviders(ctx, server, key.Hash())
	if err != nil {
		return nil
	}
	out := make([]peer.AddrInfo, 0, len(provs))
	for _, ai := range provs {
		if ai != nil {
			out = append(out, *ai)
		}
	}
	return out
}

// PutProviderAt stores this peer's provider record for key directly on one DHT server.
func (p *Peer) PutProviderAt(ctx context.Context, server peer.ID, key cid.Cid) error {
	if p.Host.Network().Connectedness(server) != network.Connected {
		return errors.New("not connected")
	}
	pm, err := dhtpb.NewProtocolMessenger(p.DHT.MessageSender())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return pm.PutProviderAddrs(ctx, server, key.Hash(), peer.AddrInfo{ID: p.ID(), Addrs: p.Host.Addrs()})
}

// WaitRouting waits until the DHT routing table holds at least n peers.
func (p *Peer) WaitRouting(ctx context.Context, n int) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for p.DHT.RoutingTable().Size() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("DHT routing table has %d peers, want %d: %w", p.DHT.RoutingTable().Size(), n, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Go runs fn in a goroutine owned by the peer: it gets a context cancelled
// on Close, and Close waits for it.
func (p *Peer) Go(fn func(ctx context.Context)) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn(p.ctx)
	}()
}

// Close stops every loop, then the DHT, pubsub and host. Idempotent.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		p.cancel()
		p.wg.Wait()
		var errs []error
		if p.DHT != nil {
			errs = append(errs, p.DHT.Close())
		}
		errs = append(errs, p.Host.Close())
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// ParseAddrInfos parses full multiaddrs (with /p2p/) and merges those of one peer.
func ParseAddrInfos(addrs []string) ([]peer.AddrInfo, error) {
	var mas []ma.Multiaddr
	for _, a := range addrs {
		for _, part := range strings.Split(a, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			m, err := ma.NewMultiaddr(part)
			if err != nil {
				return nil, fmt.Errorf("bad multiaddr %q: %v", part, err)
			}
			mas = append(mas, m)
		}
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, fmt.Errorf("bad peer address (it must end in /p2p/<peer id>): %v", err)
	}
	return infos, nil
}
