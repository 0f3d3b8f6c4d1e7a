// Package network is the fedgrid network peer: the well-known bootstrap
// address and a DHT server for a named network, with an HTTP search over
// every gateway of the network and a directory of them. It holds nothing
// private.
//
// The directory is learned from the DHT, not from a protocol of its own:
// every gateway provides p2p.GatewaysKey (that record is its announcement),
// the network peer stores such records as a DHT server and finds the rest
// with a lookup, and lists a gateway only after dialling it and getting its
// catalog's answer. So the directory needs no extra trust or state, works
// the same with several network peers, survives a restart of this peer
// (gateways put their records back), and never lists a gateway that is gone.
package network

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/internal/config"
	"github.com/fedgrid/fedgrid/internal/webtls"
	"github.com/fedgrid/fedgrid/obs"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
	"github.com/fedgrid/fedgrid/witness"
)

// DefaultListen is the network peer's default, well-known address (TCP),
// and DefaultListenQUIC its QUIC twin on the same port number.
const (
	DefaultListen     = "/ip4/127.0.0.1/tcp/4001"
	DefaultListenQUIC = "/ip4/127.0.0.1/udp/4001/quic-v1"
)

// Config of a network peer. DefaultConfig gives every default; Start fills
// the fields left zero with those and refuses a config that does not Validate.
type Config struct {
	DataDir   string
	Network   string
	Listen    []string // default DefaultListen
	Bootstrap []string // other network peers
	HTTPAddr  string   // "" = no HTTP
	// TLSCert and TLSKey (PEM files), when set, serve HTTP over HTTPS only,
	// with HSTS; ReloadTLS reads them again.
	TLSCert, TLSKey string
	PSK             []byte
	Logger          *slog.Logger
	// Reach: announced addresses, reachability (default public) and the relay service.
	Reach p2p.Reach
	// PerGateway bounds each gateway's dial and answer in a search; default 5 s.
	PerGateway time.Duration
	// MaxSearches bounds the searches running at once; default 8. More wait.
	MaxSearches int
	// NewHost, when set, builds the libp2p host (tests: mocknet); see p2p.Config.
	NewHost p2p.HostFactory
}

// DefaultConfig is a network peer's configuration before any flag.
func DefaultConfig() Config {
	return Config{Network: p2p.DefaultNetwork, Listen: []string{DefaultListen, DefaultListenQUIC}, PerGateway: 5 * time.Second, MaxSearches: 8}
}

// defaults fills the fields left zero from DefaultConfig.
func (c *Config) defaults() {
	d := DefaultConfig()
	if len(c.Listen) == 0 {
		c.Listen = d.Listen
	}
	if c.Network == "" {
		c.Network = d.Network
	}
	if c.PerGateway == 0 {
		c.PerGateway = d.PerGateway
	}
	if c.MaxSearches == 0 {
		c.MaxSearches = d.MaxSearches
	}
}

// Validate reports every field that is not usable as it is, by its name.
func (c Config) Validate() error {
	var ck config.Check
	ck.Require(c.DataDir != "", "DataDir", "is required")
	ck.Add("Network", p2p.ValidateNetworkName(c.Network))
	_, err := p2p.ParseAddrInfos(c.Bootstrap)
	ck.Add("Bootstrap", err)
	ck.Require(c.PerGateway > 0, "PerGateway", "must be positive, got %s", c.PerGateway)
	ck.Require(c.MaxSearches >= 1, "MaxSearches", "must be at least 1, got %d", c.MaxSearches)
	ck.Require(len(c.PSK) == 0 || len(c.PSK) == 32, "PSK", "must be 32 bytes, got %d", len(c.PSK))
	return ck.Err("network config")
}

// Metrics is the network peer's registry, served at GET /metrics on its
// HTTP address: build info, HTTP requests, libp2p's series.
func (n *Network) Metrics() *prometheus.Registry { return n.reg }

// Network is a running network peer.
type Network struct {
	cfg     Config
	peer    *p2p.Peer
	search  *client.Client
	slots   chan struct{}
	reg     *prometheus.Registry
	httpM   *obs.HTTPMetrics
	httpSrv *http.Server
	httpLn  net.Listener
	httpErr chan error
	certs   *webtls.Certs
	log     *slog.Logger
	witness *witness.Store

	closeOnce sync.Once
	closeErr  error
}

// Start starts the peer and, if configured, its HTTP endpoint.
func Start(ctx context.Context, cfg Config) (_ *Network, err error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Network{cfg: cfg, slots: make(chan struct{}, cfg.MaxSearches), log: cfg.Logger, reg: obs.NewRegistry("network", p2p.Version)}
	n.httpM = obs.NewHTTPMetrics(n.reg)
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	n.peer, err = p2p.New(ctx, p2p.Config{DataDir: cfg.DataDir, Network: cfg.Network, Listen: cfg.Listen, Bootstrap: cfg.Bootstrap, DHTMode: p2p.DHTServer, PSK: cfg.PSK, Logger: cfg.Logger, NewHost: cfg.NewHost,
		Role: p2p.RoleNetwork, Reach: cfg.Reach, Metrics: n.reg})
	if err != nil {
		return nil, err
	}
	n.reg.MustRegister(n.peer.Collectors()...) // connections by path, hole punches
	n.search = client.Attach(n.peer, client.Config{PerGateway: cfg.PerGateway, Logger: cfg.Logger})
	if cfg.HTTPAddr == "" && (cfg.TLSCert != "" || cfg.TLSKey != "") {
		return nil, errors.New("--tls-cert and --tls-key need --http")
	}
	if n.witness, err = witness.Open(cfg.DataDir); err != nil {
		return nil, err
	}
	n.serveWitness()
	if cfg.HTTPAddr != "" {
		if cfg.TLSCert != "" || cfg.TLSKey != "" {
			if n.certs, err = webtls.Load(cfg.TLSCert, cfg.TLSKey); err != nil {
				return nil, err
			}
		}
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPAddr, err)
		}
		n.httpLn = ln
		handler := n.httpM.Wrap(n.routes())
		if n.certs != nil {
			ln = tls.NewListener(ln, n.certs.Config())
			handler = webtls.HSTS(handler)
		}
		n.httpSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, MaxHeaderBytes: 64 << 10}
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
	mux.Handle("GET /metrics", obs.Handler(n.reg))
	mux.HandleFunc("GET /api/v1/search", n.handleSearch)
	mux.HandleFunc("GET /api/v1/gateways", n.handleGateways)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no route "+r.Method+" "+r.URL.Path)
	})
	return mux
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// ParseQuery reads a search from URL parameters: tag (repeatable or
// comma-separated), match=all|any, text, column (repeatable or
// comma-separated), preview (synthetic rows per dataset, -1 = none) and
// limit (results, 0 = all).
func ParseQuery(v url.Values) (q client.Query, limit int, err error) {
	list := func(name string) []string {
		var out []string
		for _, s := range v[name] {
			for _, part := range strings.Split(s, ",") {
				if part = strings.TrimSpace(part); part != "" {
					out = append(out, part)
				}
			}
		}
		return out
	}
	for name := range v {
		switch name {
		case "tag", "match", "text", "column", "preview", "limit":
		default:
			return q, 0, fmt.Errorf("unknown parameter %q (known: tag, match, text, column, preview, limit)", name)
		}
	}
	q.Tags, q.Columns, q.Text = list("tag"), list("column"), v.Get("text")
	switch m := v.Get("match"); m {
	case "", wire.MatchAll:
	case wire.MatchAny:
		q.Any = true
	default:
		return q, 0, fmt.Errorf("match must be %q or %q, got %q", wire.MatchAll, wire.MatchAny, m)
	}
	if len(q.Tags) > wire.MaxQueryTags || len(q.Columns) > wire.MaxQueryColumns || len(q.Text) > wire.MaxQueryText {
		return q, 0, fmt.Errorf("at most %d tags, %d columns and %d characters of text", wire.MaxQueryTags, wire.MaxQueryColumns, wire.MaxQueryText)
	}
	num := func(name string, lo, hi int) (int, error) {
		s := v.Get(name)
		if s == "" {
			return 0, nil
		}
		x, err := strconv.Atoi(s)
		if err != nil || x < lo || x > hi {
			return 0, fmt.Errorf("%s must be a whole number from %d to %d, got %q", name, lo, hi, s)
		}
		return x, nil
	}
	if q.PreviewRows, err = num("preview", -1, wire.MaxPreviewRows); err != nil {
		return q, 0, err
	}
	if limit, err = num("limit", 0, 1_000_000); err != nil {
		return q, 0, err
	}
	return q, limit, nil
}

// acquire takes a search slot, waiting while MaxSearches run.
func (n *Network) acquire(r *http.Request) bool {
	select {
	case n.slots <- struct{}{}:
		return true
	case <-r.Context().Done():
		return false
	}
}

func (n *Network) handleSearch(w http.ResponseWriter, r *http.Request) {
	q, limit, err := ParseQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if !n.acquire(r) {
		return
	}
	defer func() { <-n.slots }()
	var prog client.SearchProgress
	res, err := n.search.SearchQuery(r.Context(), q, func(p client.SearchProgress) { prog = p })
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "search: "+err.Error())
		return
	}
	total := len(res)
	if limit > 0 && len(res) > limit {
		res = res[:limit]
	}
	if res == nil {
		res = []client.Result{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"results": res, "total": total,
		"gateways": map[string]int{"found": prog.Found, "answered": prog.Answered, "unreachable": prog.Failed},
	})
}

func (n *Network) handleGateways(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Query()) > 0 {
		writeError(w, http.StatusBadRequest, "bad_request", "this route takes no parameters")
		return
	}
	if !n.acquire(r) {
		return
	}
	defer func() { <-n.slots }()
	gws, err := n.search.Gateways(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "gateways: "+err.Error())
		return
	}
	if gws == nil {
		gws = []client.Gateway{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"network": n.cfg.Network, "gateways": gws})
}

// Search runs a search from this peer, as GET /api/v1/search does.
func (n *Network) Search(ctx context.Context, q client.Query) ([]client.Result, error) {
	return n.search.SearchQuery(ctx, q, nil)
}

// Gateways lists the live gateways of the network, as GET /api/v1/gateways does.
func (n *Network) Gateways(ctx context.Context) ([]client.Gateway, error) {
	return n.search.Gateways(ctx)
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
	if n.certs != nil {
		return "https://" + n.httpLn.Addr().String()
	}
	return "http://" + n.httpLn.Addr().String()
}

// ReloadTLS reads the HTTPS certificate and key again (on SIGHUP); on an
// error the one in use stays. Without HTTPS it does nothing.
func (n *Network) ReloadTLS() error {
	if n.certs == nil {
		return nil
	}
	return n.certs.Reload()
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
