// Package testcluster runs fedgrid peers in one test process: a network
// peer, gateways, nodes and data scientists' clients, on loopback TCP with
// ephemeral ports or on libp2p's mocknet, where a test can cut, delay and
// heal the link between two peers. Tests wait on them with package
// internal/wait.
//
// It is test support: only _test.go files import it.
package testcluster

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/network"
	"github.com/fedgrid/fedgrid/node"
	"github.com/fedgrid/fedgrid/p2p"
)

// Loopback is the listen address of every TCP peer: 127.0.0.1, an
// ephemeral port the kernel picks (read back from the peer's Addrs).
const Loopback = "/ip4/127.0.0.1/tcp/0"

// Options of a cluster. The zero value is a network peer and one gateway
// (no HTTP, lease 3 s) on loopback TCP, network "testnet".
type Options struct {
	// Network name; default "testnet".
	Network string
	// Mocknet puts every peer on an in-memory mocknet (Cluster.Mock)
	// instead of loopback TCP.
	Mocknet bool
	// Net adjusts the network peer's config before it starts.
	Net func(*network.Config)
	// Gateway adjusts the first gateway's config before it starts.
	Gateway func(*gateway.Config)
}

// Cluster is a network peer and a gateway, to which a test adds nodes,
// more gateways, clients and raw peers. Everything it starts is closed when
// the test ends.
type Cluster struct {
	Net  *network.Network
	GW   *gateway.Gateway
	Mock *Mocknet // nil on TCP
	opts Options
}

// Start starts the network peer and the first gateway.
func Start(t testing.TB, ctx context.Context, o Options) *Cluster {
	t.Helper()
	if o.Network == "" {
		o.Network = "testnet"
	}
	c := &Cluster{opts: o}
	if o.Mocknet {
		c.Mock = NewMocknet(t)
	}
	ncfg := network.Config{DataDir: t.TempDir(), Network: o.Network, Listen: []string{Loopback}, NewHost: c.hosts()}
	if o.Net != nil {
		o.Net(&ncfg)
	}
	var err error
	if c.Net, err = network.Start(ctx, ncfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Net.Close() })
	c.GW = c.StartGateway(t, ctx, func(cfg *gateway.Config) {
		cfg.Name, cfg.Lease = "A", 3*time.Second
		if o.Gateway != nil {
			o.Gateway(cfg)
		}
	})
	return c
}

// hosts is the host factory of the cluster's peers: mocknet's, or nil for
// the default TCP host.
func (c *Cluster) hosts() p2p.HostFactory {
	if c.Mock == nil {
		return nil
	}
	return c.Mock.Hosts()
}

// StartGateway starts a gateway bootstrapped from the network peer, without
// HTTP unless adjust sets HTTPAddr.
func (c *Cluster) StartGateway(t testing.TB, ctx context.Context, adjust func(*gateway.Config)) *gateway.Gateway {
	t.Helper()
	cfg := gateway.Config{DataDir: t.TempDir(), Network: c.opts.Network, Listen: []string{Loopback}, Bootstrap: c.Net.Addrs(), NoHTTP: true, NewHost: c.hosts()}
	if adjust != nil {
		adjust(&cfg)
		if cfg.HTTPAddr != "" {
			cfg.NoHTTP = false
		}
	}
	gw, err := gateway.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	return gw
}

// AddNode enrols a node with the first gateway through a fresh join token.
func (c *Cluster) AddNode(t testing.TB, ctx context.Context, adjust func(*node.Config)) *node.Node {
	t.Helper()
	tok, _, err := c.GW.Store().CreateJoinToken(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{DataDir: t.TempDir(), Network: c.opts.Network, Listen: []string{Loopback}, Gateway: c.GW.Addrs()[0], JoinToken: tok, NewHost: c.hosts()}
	if adjust != nil {
		adjust(&cfg)
	}
	nd, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nd.Close() })
	return nd
}

// NodeConfig is what AddNode would start, for a test that starts the node
// itself (to see it fail).
func (c *Cluster) NodeConfig(t testing.TB, token string) node.Config {
	return node.Config{DataDir: t.TempDir(), Network: c.opts.Network, Listen: []string{Loopback}, Gateway: c.GW.Addrs()[0], JoinToken: token, NewHost: c.hosts()}
}

// Client starts a data scientist's client with identity sk (nil: a
// throwaway key) bootstrapped from the network peer.
func (c *Cluster) Client(t testing.TB, ctx context.Context, sk crypto.PrivKey) *client.Client {
	t.Helper()
	cl, err := client.New(ctx, client.Config{Network: c.opts.Network, Bootstrap: c.Net.Addrs(), Identity: sk, NewHost: c.hosts()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// Scientist registers a data scientist with the first gateway and starts
// their client.
func (c *Cluster) Scientist(t testing.TB, ctx context.Context, email string) (*client.Client, *store.User) {
	t.Helper()
	sk, err := p2p.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	pid, err := p2p.PeerIDOf(sk)
	if err != nil {
		t.Fatal(err)
	}
	u, err := c.GW.Store().CreateUser(store.NewUser{Email: email, Password: "a long password", Name: "DS", Role: store.RoleDataScientist, PeerID: pid.String()})
	if err != nil {
		t.Fatal(err)
	}
	return c.Client(t, ctx, sk), u
}

// Peer starts a bare fedgrid peer (no role) of the cluster's network, for
// tests that speak the protocols by hand. cfg's Network, DataDir or
// Identity and host are filled in when unset.
func (c *Cluster) Peer(t testing.TB, ctx context.Context, cfg p2p.Config) *p2p.Peer {
	t.Helper()
	if cfg.Network == "" {
		cfg.Network = c.opts.Network
	}
	if cfg.DataDir == "" && cfg.Identity == nil {
		cfg.DataDir = t.TempDir()
	}
	if len(cfg.Listen) == 0 && !cfg.NoListen {
		cfg.Listen = []string{Loopback}
	}
	if cfg.NewHost == nil {
		cfg.NewHost = c.hosts()
	}
	p, err := p2p.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Connect dials to from from, with a deadline.
func Connect(t testing.TB, ctx context.Context, from *p2p.Peer, to []string) {
	t.Helper()
	ais, err := p2p.ParseAddrInfos(to)
	if err != nil || len(ais) != 1 {
		t.Fatalf("address %v: %v", to, err)
	}
	if err := from.Connect(ctx, ais[0]); err != nil {
		t.Fatal(err)
	}
}

// Log records what a peer logs, so that a test can wait for a message.
type Log struct {
	mu   sync.Mutex
	msgs []string
}

// Logger returns a logger that records into l (every level).
func (l *Log) Logger() *slog.Logger { return slog.New(&logHandler{l: l}) }

// Has reports whether a message containing s was logged.
func (l *Log) Has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.msgs, func(m string) bool { return strings.Contains(m, s) })
}

// String is everything logged, one message a line.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.msgs, "\n")
}

type logHandler struct {
	l     *Log
	attrs []slog.Attr
}

func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	h.l.mu.Lock()
	h.l.msgs = append(h.l.msgs, b.String())
	h.l.mu.Unlock()
	return nil
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logHandler{l: h.l, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *logHandler) WithGroup(string) slog.Handler { return h }
