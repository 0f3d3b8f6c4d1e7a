// Package gateway is a data owner's peer: it keeps datasets, users, jobs and
// results in badger (gateway/store), serves the HTTP admin API (gateway/api),
// advertises dataset tags in the DHT, answers catalog queries, offers queued
// jobs to its enrolled nodes on gossipsub and hands plans, data shards and
// leases to them over direct streams.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// Config of a gateway. Zero values get the defaults written beside each field.
type Config struct {
	DataDir   string
	Network   string   // default "default"
	Listen    []string // default loopback, ephemeral port
	Bootstrap []string
	HTTPAddr  string // default 127.0.0.1:8420; "" with NoHTTP to disable
	NoHTTP    bool
	Name      string // display name; default "fedgrid gateway"
	PSK       []byte
	Logger    *slog.Logger

	// CORSOrigins may call the HTTP API from a browser (the admin app hosted
	// elsewhere, --cors-origin); "*" for any. Empty: same origin only.
	CORSOrigins []string

	// NewHost, when set, builds the libp2p host (tests: mocknet); see p2p.Config.
	NewHost p2p.HostFactory

	Lease         time.Duration // lease a node holds without heartbeat; default 15 s
	OfferInterval time.Duration // re-announce queued jobs; default 1 s
	OfferTTL      time.Duration // how long one offer is valid; default 30 s
	Reprovide     time.Duration // re-provide tags; default 1 h (records live 48 h)

	MaxAttempts    int           // retry budget per job; default 3
	AttemptTimeout time.Duration // one attempt; default 1 h
	JobTimeout     time.Duration // whole job, queue time included; default 24 h
}

func (c *Config) defaults() {
	if c.Network == "" {
		c.Network = p2p.DefaultNetwork
	}
	if c.HTTPAddr == "" && !c.NoHTTP {
		c.HTTPAddr = "127.0.0.1:8420"
	}
	if c.Name == "" {
		c.Name = "fedgrid gateway"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Lease <= 0 {
		c.Lease = 15 * time.Second
	}
	if c.OfferInterval <= 0 {
		c.OfferInterval = time.Second
	}
	if c.OfferTTL <= 0 {
		c.OfferTTL = 30 * time.Second
	}
	if c.Reprovide <= 0 {
		c.Reprovide = time.Hour
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = time.Hour
	}
	if c.JobTimeout <= 0 {
		c.JobTimeout = 24 * time.Hour
	}
}

// Gateway is a running gateway.
type Gateway struct {
	cfg   Config
	log   *slog.Logger
	peer  *p2p.Peer
	store *store.Store
	svc   *service.Service // the service layer both transports adapt
	topic *pubsub.Topic

	httpSrv *http.Server
	httpLn  net.Listener
	httpErr chan error

	kick      chan struct{} // wake the offer loop
	provideCh chan struct{} // wake the provide loop
	coordKick chan struct{} // wake the data-parallel coordinator
	seqMu     sync.Mutex
	offerSeq  int64
	offerMu   sync.Mutex
	offered   map[string]*offerState // queued job -> its offers so far
	capacity  capacity
	touchMu   sync.Mutex
	touched   map[peer.ID]time.Time // node -> last stored last-seen
	servedMu  sync.Mutex
	served    map[string]time.Time // user -> last grant, for fair offers
	gater     *denyGater
	metrics   *metrics

	closeOnce sync.Once
	closeErr  error
}

// Start opens the store, starts the peer, the HTTP API and the loops. On a
// failure half way everything opened so far is closed again.
func Start(ctx context.Context, cfg Config) (_ *Gateway, err error) {
	cfg.defaults()
	if cfg.DataDir == "" {
		return nil, errors.New("gateway: --data is required")
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), provideCh: make(chan struct{}, 1), coordKick: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			_ = g.Close()
		}
	}()
	g.store, err = store.Open(filepath.Join(cfg.DataDir, "db"), cfg.Logger.With("sub", "store"))
	if err != nil {
		return nil, err
	}
	revoked, err := g.store.RevokedNodes()
	if err != nil {
		return nil, err
	}
	g.gater = newDenyGater(revoked)
	g.metrics = newMetrics(g)
	g.svc = service.New(service.Config{Store: g.store, Logger: cfg.Logger.With("sub", "service"), Hooks: service.Hooks{
		JobCancelled: func(*store.Job) {
			g.metrics.cancelled.Inc() // the store cancelled its shards with it
			g.wake(g.kick)
		},
	}})
	g.peer, err = p2p.New(ctx, p2p.Config{
		DataDir: cfg.DataDir, Network: cfg.Network, Listen: cfg.Listen, Bootstrap: cfg.Bootstrap,
		DHTMode: p2p.DHTServer, PSK: cfg.PSK, Logger: cfg.Logger.With("sub", "p2p"), Gater: g.gater,
		NewHost: cfg.NewHost,
	})
	if err != nil {
		return nil, err
	}
	g.topic, err = g.peer.PubSub.Join(g.peer.Topic(wire.JobsTopic(g.peer.ID().String())))
	if err != nil {
		return nil, fmt.Errorf("join jobs topic: %w", err)
	}
	if err := g.topic.SetScoreParams(p2p.OfferTopicScore()); err != nil {
		return nil, fmt.Errorf("offer topic scoring: %w", err)
	}
	g.registerProtocols()
	if !cfg.NoHTTP {
		if err := g.startHTTP(); err != nil {
			return nil, err
		}
	}
	g.peer.Go(g.offerLoop)
	g.peer.Go(g.leaseLoop)
	g.peer.Go(g.provideLoop)
	g.peer.Go(g.coordLoop)
	return g, nil
}

func (g *Gateway) wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// RemoveNode cuts a node off at once: its connections are closed and
// refused from now on. (The store has already un-enrolled it.)
func (g *Gateway) RemoveNode(id string) {
	pid, err := peer.Decode(id)
	if err != nil {
		return
	}
	g.gater.add(pid)
	g.capacity.forget(pid)
	_ = g.peer.Host.Network().ClosePeer(pid)
	g.log.Info("node removed and cut off", "node", id)
}

var timeNow = time.Now

// ID is the gateway's peer ID.
func (g *Gateway) ID() string { return g.peer.ID().String() }

// Addrs are the gateway's full multiaddrs.
func (g *Gateway) Addrs() []string { return g.peer.Addrs() }

// HTTPURL is the base URL of the admin API, or "" without HTTP.
func (g *Gateway) HTTPURL() string {
	if g.httpLn == nil {
		return ""
	}
	return "http://" + g.httpLn.Addr().String()
}

// Metrics gathers the gateway's Prometheus series (as GET /metrics serves them).
func (g *Gateway) Metrics() *prometheus.Registry { return g.metrics.reg }

// Store gives tests and the CLI's offline commands access to the state.
func (g *Gateway) Store() *store.Store { return g.store }

// Peer is the gateway's libp2p peer.
func (g *Gateway) Peer() *p2p.Peer { return g.peer }

// Close stops HTTP, the loops and the peer, then closes the store. Idempotent.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		var errs []error
		if g.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, g.httpSrv.Shutdown(ctx))
			cancel()
			errs = append(errs, <-g.httpErr)
		}
		if g.peer != nil {
			errs = append(errs, g.peer.Close())
		}
		if g.topic != nil {
			if err := g.topic.Close(); err != nil && !errors.Is(err, context.Canceled) {
				g.log.Debug("close topic", "err", err)
			}
		}
		if g.store != nil {
			errs = append(errs, g.store.Close())
		}
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}
