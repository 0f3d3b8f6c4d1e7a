package p2p

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const loopTCP = "/ip4/127.0.0.1/tcp/0"

func mustStart(t *testing.T, cfg Config) *Peer {
	t.Helper()
	p, err := startPeer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// waitFor polls cond every 50 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		<-tick.C
	}
}

func circuitAddrs(p *Peer) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range p.Host.Addrs() {
		if isRelayAddr(a) {
			out = append(out, a)
		}
	}
	return out
}

// TestRelayReachesAPeerBehindNAT: a peer that knows it is not reachable
// (reachability private) reserves a slot with the network peer's relay and
// advertises relay addresses; a dial-only peer that knows only those
// reaches it, the connection shows as relayed (in Path and the metrics) and
// fedgrid streams work over it (relayed circuits are not data-capped).
func TestRelayReachesAPeerBehindNAT(t *testing.T) {
	var logs syncBuffer
	relay := mustStart(t, Config{DataDir: t.TempDir(), Role: RoleNetwork, Listen: []string{loopTCP}, Reach: Reach{Relay: true}})
	behind := mustStart(t, Config{DataDir: t.TempDir(), Role: RoleGateway, Listen: []string{loopTCP}, Bootstrap: relay.Addrs(),
		// Loopback stands for the private side of a NAT: not announced, so
		// the relay is the only way in.
		Reach: Reach{Reachability: ReachPrivate, NoAnnounce: []string{"127.0.0.0/8"}}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	waitFor(t, 20*time.Second, "the peer behind NAT advertises no relay address", func() bool { return len(circuitAddrs(behind)) > 0 })

	scientist := mustStart(t, Config{DataDir: t.TempDir(), Role: RoleClient, NoListen: true, Bootstrap: relay.Addrs()})
	pid := behind.Protocol("echo")
	lim := Limits{MaxRequest: 1 << 20, MaxResponse: 1 << 20, Timeout: 10 * time.Second}
	Handle(behind.Context(), behind.Host, pid, lim, func(_ context.Context, _ peer.ID, r *echoReq) (*echoResp, error) {
		return &echoResp{Text: strings.ToUpper(r.Text)}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := scientist.Connect(ctx, peer.AddrInfo{ID: behind.ID(), Addrs: circuitAddrs(behind)}); err != nil {
		t.Fatal(err)
	}
	if got := scientist.Path(behind.ID()); got != PathRelayed {
		t.Fatalf("path %q, want %q", got, PathRelayed)
	}
	big := strings.Repeat("x", 300<<10) // more than libp2p's default 128 KiB circuit cap
	got, err := Call[echoReq, echoResp](ctx, scientist.Host, behind.ID(), pid, &echoReq{Text: big}, lim)
	if err != nil || got.Text != strings.ToUpper(big) {
		t.Fatalf("echo over the relay: %v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(behind.Collectors()...)
	if n := testutil.ToFloat64(behind.Collectors()[0]); n < 1 {
		t.Errorf("fedgrid_p2p_connections_relayed = %v, want at least 1", n)
	}
	waitFor(t, 5*time.Second, "no log line says the connection is relayed", func() bool {
		return strings.Contains(logs.String(), "path=relayed") && strings.Contains(logs.String(), scientist.ID().String())
	})
}

// TestRelayServesOnlyItsNetwork: the relay refuses reservations from peers
// that are not fedgrid peers of its network, and grants them to those that are.
func TestRelayServesOnlyItsNetwork(t *testing.T) {
	relay := mustStart(t, Config{DataDir: t.TempDir(), Network: "test", Role: RoleNetwork, Listen: []string{loopTCP}, Reach: Reach{Relay: true}})
	ai := peer.AddrInfo{ID: relay.ID(), Addrs: relay.Host.Addrs()}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	stranger, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(tcp.NewTCPTransport), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	if err := stranger.Connect(ctx, ai); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reserve(ctx, stranger, ai); err == nil {
		t.Error("a peer that is not of the network got a relay reservation")
	}
	other := mustStart(t, Config{DataDir: t.TempDir(), Network: "other", Listen: []string{loopTCP}})
	if err := other.Connect(ctx, ai); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reserve(ctx, other.Host, ai); err == nil {
		t.Error("a peer of another network got a relay reservation")
	}
	member := mustStart(t, Config{DataDir: t.TempDir(), Network: "test", Listen: []string{loopTCP}})
	if err := member.Connect(ctx, ai); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reserve(ctx, member.Host, ai); err != nil {
		t.Errorf("a peer of the network was refused a reservation: %v", err)
	}
}

// TestQUICLoopback: two peers connect over QUIC alone.
func TestQUICLoopback(t *testing.T) {
	quic := []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	a := mustStart(t, Config{DataDir: t.TempDir(), Listen: quic})
	b := mustStart(t, Config{DataDir: t.TempDir(), Listen: quic, Bootstrap: a.Addrs()})
	waitFor(t, 10*time.Second, "no connection over QUIC", func() bool {
		for _, c := range b.Host.Network().ConnsToPeer(a.ID()) {
			if isQUIC(c.RemoteMultiaddr()) {
				return true
			}
		}
		return false
	})
	if b.Path(a.ID()) != PathDirect {
		t.Errorf("path %q, want direct", b.Path(a.ID()))
	}
}

// TestQUICDroppedWithPSK: with a private network key QUIC is not used
// (libp2p cannot carry one over QUIC); the peer says so and listens on TCP.
func TestQUICDroppedWithPSK(t *testing.T) {
	var logs syncBuffer
	p := mustStart(t, Config{DataDir: t.TempDir(), PSK: make([]byte, 32), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for _, a := range p.Host.Network().ListenAddresses() {
		if isQUIC(a) {
			t.Errorf("listens on QUIC %s with a private network key", a)
		}
	}
	if !strings.Contains(logs.String(), "not listening on QUIC") {
		t.Errorf("no warning about QUIC:\n%s", logs.String())
	}
}

func TestAnnounceFilters(t *testing.T) {
	pub := "/ip4/192.0.2.7/tcp/4001"
	p := mustStart(t, Config{DataDir: t.TempDir(), Listen: []string{loopTCP}, Reach: Reach{Announce: []string{pub, "/ip4/10.1.2.3/tcp/4001"}, NoAnnounce: []string{"10.0.0.0/8"}}})
	got := p.Host.Addrs()
	if len(got) != 1 || got[0].String() != pub {
		t.Fatalf("announced %v, want only %s", got, pub)
	}
	q := mustStart(t, Config{DataDir: t.TempDir(), Listen: []string{loopTCP, "/ip4/127.0.0.1/udp/0/quic-v1"}, Reach: Reach{NoAnnounce: []string{"/ip4/127.0.0.0/ipcidr/8"}}})
	if got := q.Host.Addrs(); len(got) != 0 {
		t.Errorf("announced %v although 127.0.0.0/8 is excluded", got)
	}
	for _, bad := range [][2][]string{{{"not-a-multiaddr"}, nil}, {nil, {"10.0.0.0/33"}}} {
		if _, err := parseAddrFilter(bad[0], bad[1]); err == nil {
			t.Errorf("filter %v accepted", bad)
		}
	}
}
