package p2p

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// TestRejoinsNeverStallsConnections: a watcher whose reader is busy
// elsewhere must not hold up the host. libp2p's swarm emits every new
// connection through one channel; an undrained subscription fills after
// some 50 connections, and from then on the host accepts no stream on a
// new connection (measured: Connect waits out identify's 5 s, then every
// stream hangs).
func TestRejoinsNeverStallsConnections(t *testing.T) {
	hub := newTestPeer(t)
	boot := newTestPeer(t)
	w, err := hub.WatchRejoins([]peer.ID{boot.ID()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()

	const dialers = 120 // several times what the event buffers hold
	// Connections arrive a few at a time: what fills the event buffers is
	// their number, not their concurrency, and 120 simultaneous handshakes
	// under the race detector on a loaded 2-core machine time out by
	// themselves. A stalled host still fails every dial after the ~50th.
	const inFlight = 8
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	target := peer.AddrInfo{ID: hub.ID(), Addrs: hub.Host.Addrs()}
	var wg sync.WaitGroup
	errs := make(chan error, dialers)
	slots := make(chan struct{}, inFlight)
	for range dialers {
		h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(tcp.NewTCPTransport), libp2p.DisableRelay())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if err := h.Connect(ctx, target); err != nil {
				errs <- err
				return
			}
			res := <-ping.Ping(ctx, h, hub.ID()) // a stream the hub must accept
			errs <- res.Error
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			t.Log(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d connections to a host with an unread watcher failed", failed, dialers)
	}

	if err := boot.Connect(ctx, target); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.C():
	case <-ctx.Done():
		t.Fatal("the watched peer connected but no rejoin was reported")
	}
	got := w.Take()
	if len(got) != 1 || got[0] != boot.ID() {
		t.Fatalf("rejoins %v, want only %s", got, boot.ID())
	}
	if again := w.Take(); len(again) != 0 {
		t.Fatalf("second take %v, want none", again)
	}
}
