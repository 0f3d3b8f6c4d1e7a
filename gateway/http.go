package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/fedgrid/fedgrid/gateway/api"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/webtls"
	"github.com/fedgrid/fedgrid/ui"
)

func (g *Gateway) startHTTP() error {
	a, err := api.New(api.Config{
		Store:   g.store,
		Service: g.svc,
		Sources: g.sources,
		Name:    g.cfg.Name,
		PeerID:  func() string { return g.peer.ID().String() },
		Addrs:   g.peer.Addrs,
		Hooks: api.Hooks{
			DatasetAdded:   func(*store.Dataset) { g.wake(g.provideCh) },
			DatasetRemoved: func(*store.Dataset) { g.wake(g.provideCh) },
			NodeRemoved:    g.RemoveNode,
			Preview:        g.Preview,
			IndexState: func(id string) api.Indexing {
				s := g.IndexState(id)
				return api.Indexing{State: s.State, At: s.At, Error: s.Error}
			},
		},
		Logger:     g.log.With("sub", "http"),
		SetupToken: g.setupToken,
		Uploads:    g.uploads,
		UploadTTL:  g.cfg.UploadTTL,
	})
	if err != nil {
		return err
	}
	if g.cfg.TLSCert != "" || g.cfg.TLSKey != "" {
		if g.certs, err = webtls.Load(g.cfg.TLSCert, g.cfg.TLSKey); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", g.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen for HTTP on %s: %w", g.cfg.HTTPAddr, err)
	}
	g.httpLn = ln
	handler := g.metrics.http.Wrap(g.routes(a.Handler()))
	if g.certs != nil {
		ln = tls.NewListener(ln, g.certs.Config())
		handler = webtls.HSTS(handler)
	}
	g.httpSrv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       5 * time.Minute, // uploads
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	g.httpErr = make(chan error, 1)
	go func() { // owned by Close: Shutdown ends Serve
		err := g.httpSrv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		g.httpErr <- err
	}()
	return nil
}

// routes adds the gateway's own endpoints in front of the admin API.
func (g *Gateway) routes(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	if g.cfg.MetricsAddr == "" {
		mux.Handle("GET /metrics", g.metrics.handler())
	}
	// The admin web app (ui/, embedded in the binary), with SPA fallback.
	mux.Handle("/admin/", http.StripPrefix("/admin", ui.Handler()))
	mux.Handle("GET /admin", http.RedirectHandler("/admin/", http.StatusMovedPermanently))
	mux.Handle("GET /{$}", http.RedirectHandler("/admin/", http.StatusFound))
	mux.Handle("/", api)
	// CORS for the API when the app is hosted elsewhere (--cors-origin);
	// any other Host or Origin is refused.
	return hostGuard(g.httpHosts(), g.cfg.CORSOrigins, cors(g.cfg.CORSOrigins, mux))
}

// httpHosts are the host names the gateway answers to besides IP addresses
// and localhost: Config.HTTPHosts and the name in Config.HTTPAddr.
func (g *Gateway) httpHosts() []string {
	hosts := slices.Clone(g.cfg.HTTPHosts)
	if h, _, err := net.SplitHostPort(g.cfg.HTTPAddr); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return hosts
}

// SetupToken returns the one-time token POST /api/v1/setup needs while the
// gateway has no Owner ("" once it has one). It is new at every start until
// setup is done; the command prints it.
func (g *Gateway) SetupToken() string {
	if done, err := g.store.SetupDone(); err != nil || done {
		return ""
	}
	return g.setupToken
}

// startMetricsHTTP serves GET /metrics alone on Config.MetricsAddr, an
// address for operators (see Config.MetricsAddr).
func (g *Gateway) startMetricsHTTP() error {
	ln, err := net.Listen("tcp", g.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w", g.cfg.MetricsAddr, err)
	}
	g.metricsLn = ln
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", g.metrics.handler())
	hosts := slices.Clone(g.cfg.HTTPHosts)
	if h, _, err := net.SplitHostPort(g.cfg.MetricsAddr); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	g.metricsSrv = &http.Server{
		Handler:           hostGuard(hosts, nil, mux), // no DNS rebinding either
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	g.metricsErr = make(chan error, 1)
	go func() { // owned by Close: Shutdown ends Serve
		err := g.metricsSrv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		g.metricsErr <- err
	}()
	return nil
}

// loopback reports whether a listener's address is reachable from this host only.
func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
