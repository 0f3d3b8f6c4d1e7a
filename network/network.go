// Package network is the fedgrid network peer: the well-known bootstrap
// address and a DHT server for a named network. It holds nothing private.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/fedgrid/fedgrid/p2p"
)

// DefaultListen is the network peer's default, well-known address.
const DefaultListen = "/ip4/127.0.0.1/tcp/4001"

// Config of a network peer.
type Config struct {
	DataDir   string
	Network   string
	Listen    []string // default DefaultListen
	Bootstrap []string // other network peers
	HTTPAddr  string   // "" = no HTTP
	PSK       []byte
	Logger    *slog.Logger
}

// Network is a running network peer.
type Network struct {
	cfg     Config
	peer    *p2p.Peer
	httpSrv *http.Server
	httpLn  net.Listener
	httpErr chan error

	closeOnce sync.Once
	closeErr  error
}

// Start starts the peer and, if configured, its HTTP endpoint.
func Start(ctx context.Context, cfg Config) (_ *Network, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("network: --data is required")
	}
	if len(cfg.Listen) == 0 {
		cfg.Listen = []string{DefaultListen}
	}
	if cfg.Network == "" {
		cfg.Network = p2p.DefaultNetwork
	}
	n := &Network{cfg: cfg}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	n.peer, err = p2p.New(ctx, p2p.Config{DataDir: cfg.DataDir, Network: cfg.Network, Listen: cfg.Listen, Bootstrap: cfg.Bootstrap, DHTMode: p2p.DHTServer, PSK: cfg.PSK, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPAddr, err)
		}
		n.httpLn = ln
		n.httpSrv = &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, MaxHeaderBytes: 64 << 10}
		n.httpErr = make(chan error, 1)
		go func() { // owned by Close
			err := n.httpSrv.Serve(ln)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			n.httpErr <- err
		}()
	}
	return n, nil
}

func (n *Network) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"network": n.cfg.Network, "peer_id": n.peer.ID().String(), "addrs": n.peer.Addrs(),
			"routing_table": n.peer.DHT.RoutingTable().Size(),
		})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]string{"code": "not_found", "message": "no route " + r.Method + " " + r.URL.Path}})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ID is the peer ID.
func (n *Network) ID() string { return n.peer.ID().String() }

// Addrs are the full multiaddrs other peers bootstrap from.
func (n *Network) Addrs() []string { return n.peer.Addrs() }

// Peer is the underlying libp2p peer.
func (n *Network) Peer() *p2p.Peer { return n.peer }

// HTTPURL is the HTTP base URL, or "".
func (n *Network) HTTPURL() string {
	if n.httpLn == nil {
		return ""
	}
	return "http://" + n.httpLn.Addr().String()
}

// Close stops HTTP and the peer. Idempotent.
func (n *Network) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, n.httpSrv.Shutdown(ctx))
			cancel()
			errs = append(errs, <-n.httpErr)
		}
		if n.peer != nil {
			errs = append(errs, n.peer.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}
