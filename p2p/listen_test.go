package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// tcpPort is the TCP port of p's first listen address.
func tcpPort(t *testing.T, p *Peer) int {
	t.Helper()
	for _, a := range p.Host.Network().ListenAddresses() {
		if port, code := portOf(a); code == ma.P_TCP && port != 0 {
			return port
		}
	}
	t.Fatalf("no TCP listen address in %v", p.Host.Network().ListenAddresses())
	return 0
}

func startPeer(t *testing.T, cfg Config) (*Peer, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cfg.Network == "" {
		cfg.Network = "test"
	}
	return New(ctx, cfg)
}

// syncBuffer is a log sink a test can read while peers write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTakenPortIsAnError(t *testing.T) {
	first := newTestPeer(t)
	port := tcpPort(t, first)
	addr := "/ip4/127.0.0.1/tcp/" + strconv.Itoa(port)
	second, err := startPeer(t, Config{DataDir: t.TempDir(), Listen: []string{addr}})
	if err == nil {
		_ = second.Close()
		t.Fatalf("a second peer listened on %s, taken by the first", addr)
	}
	var le *ListenError
	if !errors.As(err, &le) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("error %v (%T) is not a ListenError for a port in use", err, err)
	}
	if !strings.Contains(err.Error(), "port "+strconv.Itoa(port)+" is already in use") {
		t.Errorf("error does not name the port: %v", err)
	}
}

func TestPortKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	var logs syncBuffer
	cfg := Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))} // default listen: port 0
	p, err := startPeer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	port := tcpPort(t, p)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p, err = startPeer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := tcpPort(t, p); got != port {
		t.Errorf("restart listens on port %d, want the kept port %d", got, port)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "cannot keep") {
		t.Errorf("warned although the port was kept:\n%s", logs.String())
	}

	// Someone else takes the port: the peer says so and listens elsewhere.
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p, err = startPeer(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	moved := tcpPort(t, p)
	if moved == port {
		t.Fatalf("listens on port %d, which another socket holds", port)
	}
	if !strings.Contains(logs.String(), "cannot keep the port of the last start") || !strings.Contains(logs.String(), "port="+strconv.Itoa(port)) {
		t.Errorf("no warning naming the lost port %d:\n%s", port, logs.String())
	}
	rec, err := readPorts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Ports[DefaultListen] != moved {
		t.Errorf("ports record %v, want %s -> %d", rec.Ports, DefaultListen, moved)
	}
}

func TestUnreadablePortsRecordIsNotFatal(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, PortsFile), []byte(`{"version": 99, "ports": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	p, err := startPeer(t, Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !strings.Contains(logs.String(), "schema version 99") {
		t.Errorf("no warning about the record's version:\n%s", logs.String())
	}
}

// TestExplicitPortWinsOverKeptPort: a restart that names, in another listen
// address, the port a port-0 address had last time listens on both: the
// explicit address gets its port, the port-0 one a new one.
func TestExplicitPortWinsOverKeptPort(t *testing.T) {
	// Between the first peer's close and the restart, the freed port is an
	// ordinary ephemeral port again: another process's outgoing connection
	// may take it as its local port (seen once while other test packages
	// ran). That is the world taking the port, not the code under test, so
	// such a round starts over with a new data directory; three tries.
	for try := 1; ; try++ {
		err := explicitPortWinsOverKeptPort(t)
		var le *ListenError
		if err == nil || !errors.As(err, &le) || !errors.Is(le.Err, syscall.EADDRINUSE) || try == 3 {
			if err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Logf("try %d: %v; again", try, err)
	}
}

func explicitPortWinsOverKeptPort(t *testing.T) error {
	dir := t.TempDir()
	p, err := startPeer(t, Config{DataDir: dir, Listen: []string{DefaultListen}})
	if err != nil {
		return err
	}
	port := tcpPort(t, p)
	if err := p.Close(); err != nil {
		return err
	}
	explicit := "/ip4/127.0.0.1/tcp/" + strconv.Itoa(port)
	p, err = startPeer(t, Config{DataDir: dir, Listen: []string{DefaultListen, explicit}})
	if err != nil {
		return fmt.Errorf("restart with the kept port named explicitly: %w", err)
	}
	defer p.Close()
	got := map[int]bool{}
	for _, a := range p.Host.Network().ListenAddresses() {
		if strings.Contains(a.String(), "/tcp/") {
			n, _ := portOf(a)
			got[n] = true
		}
	}
	if len(got) != 2 || !got[port] {
		return fmt.Errorf("listens on TCP ports %v, want %d and a new one", got, port)
	}
	return nil
}
