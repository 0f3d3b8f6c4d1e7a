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
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedgrid/fedgrid/crypto"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/sources"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/gateway/upload"
	"github.com/fedgrid/fedgrid/internal/config"
	"github.com/fedgrid/fedgrid/internal/webtls"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// Config of a gateway. DefaultConfig gives every default; Start fills the
// fields left zero with those and refuses a config that does not Validate.
type Config struct {
	DataDir   string
	Network   string   // default "default"
	Listen    []string // default loopback, ephemeral port
	Bootstrap []string
	HTTPAddr  string // default 127.0.0.1:8420; "" with NoHTTP to disable
	NoHTTP    bool
	// MetricsAddr, when set, is where GET /metrics is served (plain HTTP,
	// nothing else there), and HTTPAddr serves it no longer. The series time
	// every job (when it starts and ends, how it ends), which the requester
	// of a job under review may not learn: give an address only operators
	// reach whenever HTTPAddr is reachable by anyone else (--metrics-http).
	MetricsAddr string
	Name        string // display name; default "fedgrid gateway"
	PSK         []byte
	Logger      *slog.Logger
	// Reach: announced addresses and reachability (relay reservations behind NAT).
	Reach p2p.Reach

	// TLSCert and TLSKey (PEM files), when set, serve the HTTP API and the
	// admin app over HTTPS only, with HSTS; ReloadTLS reads them again.
	TLSCert, TLSKey string

	// CORSOrigins may call the HTTP API from a browser (the admin app hosted
	// elsewhere, --cors-origin); "*" for any. Empty: same origin only.
	CORSOrigins []string
	// HTTPHosts are the host names (besides IP addresses, localhost and the
	// name in HTTPAddr) the HTTP API answers to; other Host headers get 403.
	HTTPHosts []string

	// NewHost, when set, builds the libp2p host (tests: mocknet); see p2p.Config.
	NewHost p2p.HostFactory
	// Now is the gateway's clock; default time.Now.
	Now func() time.Time

	Lease         time.Duration // lease a node holds without heartbeat; default 15 s
	OfferInterval time.Duration // re-announce queued jobs; default 1 s
	OfferTTL      time.Duration // how long one offer is valid; default 30 s
	Reprovide     time.Duration // re-provide tags; default 1 h (records live 48 h)

	// MaxConns is how many libp2p connections the gateway holds: its
	// nodes, data scientists and other peers; default 4096.
	MaxConns int

	MaxAttempts    int           // retry budget per job; default 3
	AttemptTimeout time.Duration // one attempt; default 1 h
	JobTimeout     time.Duration // whole job, queue time included; default 24 h

	// MaxWorkers and MaxRounds bound a data-parallel plan's train.workers
	// and train.rounds (defaults 8 and 100; at most plan.MaxWorkers and
	// plan.MaxRounds).
	MaxWorkers int
	MaxRounds  int
	// FederationTimeout: the gateway's part in a federation whose
	// coordinator (the data scientist's client) has not been heard from for
	// this long expires: its jobs are cancelled, its epsilon reservation
	// refunded, or charged if a masked update already left; default 24 h.
	FederationTimeout time.Duration
	// WitnessInterval is how often the audit chain's head is published, as
	// a signed checkpoint, to the bootstrap (network) peers; default 30 s.
	WitnessInterval time.Duration
	// AuditLog, when set, receives every audit entry as a JSON line
	// (append-only; see auditExport).
	AuditLog io.Writer
	// AuditLogFrom is the sequence number after which AuditLog starts.
	AuditLogFrom uint64

	// MaxUploadSize bounds one resumable upload (default 1 TiB); an upload
	// the free disk space cannot hold is refused whatever this says.
	// UploadTTL is how long an untouched upload session is kept (default
	// 24 h): the sweep removes older ones, received bytes and all.
	MaxUploadSize int64
	UploadTTL     time.Duration
	// SourceDirs are the directories whose CSV or Parquet files an Owner or
	// uploader may register as dataset sources (file:///path; --source-dir).
	// Each must be an absolute path to a directory; none: file sources are
	// refused. A file is read only when it lies under one of them, as named
	// and with every link resolved.
	SourceDirs []string
	// PGPassFile is where PostgreSQL source passwords are read from, at
	// each snapshot (libpq's .pgpass format, mode 0600; see docs/sources.md).
	// "": no passwords (trust or certificate authentication only).
	PGPassFile string
	// SourceLimits bound one source snapshot's CSV (zero fields: no byte
	// or row limit, 1,000 columns; see ingest.Dataset).
	SourceLimits dataset.Limits
	// SourceTimeout ends a source snapshot's statements on the database;
	// default 10 min.
	SourceTimeout time.Duration
	// SourcePoll is how often scheduled source snapshots are looked for;
	// default 30 s.
	SourcePoll time.Duration
}

// DefaultConfig is a gateway's configuration before any flag: the HTTP
// admin API on 127.0.0.1:8420 and the scheduling defaults.
func DefaultConfig() Config {
	return Config{
		Network:        p2p.DefaultNetwork,
		HTTPAddr:       "127.0.0.1:8420",
		Name:           "fedgrid gateway",
		Lease:          15 * time.Second,
		OfferInterval:  time.Second,
		OfferTTL:       30 * time.Second,
		Reprovide:      time.Hour,
		MaxAttempts:    3,
		AttemptTimeout: time.Hour,
		JobTimeout:     24 * time.Hour,

		MaxWorkers:        8,
		MaxRounds:         100,
		FederationTimeout: 24 * time.Hour,
		WitnessInterval:   30 * time.Second,
		MaxConns:          4096,
		MaxUploadSize:     1 << 40,
		UploadTTL:         24 * time.Hour,
		SourceTimeout:     10 * time.Minute,
		SourcePoll:        30 * time.Second,
	}
}

// defaults fills the fields left zero from DefaultConfig.
func (c *Config) defaults() {
	d := DefaultConfig()
	if c.Network == "" {
		c.Network = d.Network
	}
	if c.HTTPAddr == "" && !c.NoHTTP {
		c.HTTPAddr = d.HTTPAddr
	}
	if c.Name == "" {
		c.Name = d.Name
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	setZero(&c.Lease, d.Lease)
	setZero(&c.OfferInterval, d.OfferInterval)
	setZero(&c.OfferTTL, d.OfferTTL)
	setZero(&c.Reprovide, d.Reprovide)
	setZero(&c.MaxAttempts, d.MaxAttempts)
	setZero(&c.AttemptTimeout, d.AttemptTimeout)
	setZero(&c.JobTimeout, d.JobTimeout)
	setZero(&c.MaxWorkers, d.MaxWorkers)
	setZero(&c.MaxRounds, d.MaxRounds)
	setZero(&c.FederationTimeout, d.FederationTimeout)
	setZero(&c.WitnessInterval, d.WitnessInterval)
	setZero(&c.MaxConns, d.MaxConns)
	setZero(&c.MaxUploadSize, d.MaxUploadSize)
	setZero(&c.UploadTTL, d.UploadTTL)
	setZero(&c.SourceTimeout, d.SourceTimeout)
	setZero(&c.SourcePoll, d.SourcePoll)
}

func setZero[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// Validate reports every field that is not usable as it is, by its name:
// a missing DataDir, a bad Network name or Bootstrap address, and
// durations or counts that are not positive.
func (c Config) Validate() error {
	var ck config.Check
	ck.Require(c.DataDir != "", "DataDir", "is required")
	ck.Add("Network", p2p.ValidateNetworkName(c.Network))
	_, err := p2p.ParseAddrInfos(c.Bootstrap)
	ck.Add("Bootstrap", err)
	ck.Require(c.NoHTTP || c.HTTPAddr != "", "HTTPAddr", "must not be empty (NoHTTP turns HTTP off)")
	if c.MetricsAddr != "" {
		_, port, err := net.SplitHostPort(c.MetricsAddr)
		ck.Require(err == nil, "MetricsAddr", "must be HOST:PORT, got %q", c.MetricsAddr)
		ck.Require(c.NoHTTP || port == "0" || c.MetricsAddr != c.HTTPAddr, "MetricsAddr", "must differ from HTTPAddr (%s)", c.HTTPAddr)
	}
	ck.Require(len(c.PSK) == 0 || len(c.PSK) == 32, "PSK", "must be 32 bytes, got %d", len(c.PSK))
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"SourceTimeout", c.SourceTimeout}, {"SourcePoll", c.SourcePoll}, {"Lease", c.Lease}, {"OfferInterval", c.OfferInterval}, {"OfferTTL", c.OfferTTL}, {"Reprovide", c.Reprovide}, {"AttemptTimeout", c.AttemptTimeout}, {"JobTimeout", c.JobTimeout}, {"FederationTimeout", c.FederationTimeout}} {
		ck.Require(d.v > 0, d.name, "must be positive, got %s", d.v)
	}
	ck.Require(c.Lease <= 0 || c.Lease >= time.Second, "Lease", "must be at least 1s (nodes heartbeat in whole seconds), got %s", c.Lease)
	ck.Require(c.MaxAttempts >= 1, "MaxAttempts", "must be at least 1, got %d", c.MaxAttempts)
	ck.Require(c.MaxWorkers >= 1 && c.MaxWorkers <= plan.MaxWorkers, "MaxWorkers", "must be 1 to %d, got %d", plan.MaxWorkers, c.MaxWorkers)
	ck.Require(c.MaxRounds >= 1 && c.MaxRounds <= plan.MaxRounds, "MaxRounds", "must be 1 to %d, got %d", plan.MaxRounds, c.MaxRounds)
	ck.Require(c.WitnessInterval > 0, "WitnessInterval", "must be positive, got %s", c.WitnessInterval)
	ck.Require(c.MaxUploadSize > 0, "MaxUploadSize", "must be positive, got %d", c.MaxUploadSize)
	if _, err := sources.AllowedDirs(c.SourceDirs); err != nil {
		ck.Add("SourceDirs", err)
	}
	ck.Require(c.UploadTTL >= time.Minute, "UploadTTL", "must be at least 1m, got %s", c.UploadTTL)
	return ck.Err("gateway config")
}

// Gateway is a running gateway.
type Gateway struct {
	cfg   Config
	log   *slog.Logger
	peer  *p2p.Peer
	store *store.Store
	svc   *service.Service // the service layer both transports adapt
	topic *pubsub.Topic
	// setupToken is POST /api/v1/setup's one-time token (see SetupToken).
	setupToken string
	// datasetScans counts the streamed reads of a whole dataset version
	// (DatasetScans).
	datasetScans atomic.Int64
	// uploads keeps the resumable upload sessions (DataDir/uploads).
	uploads *upload.Store
	// sources snapshots PostgreSQL sources, on demand and on schedule.
	sources *sources.Manager

	httpSrv *http.Server
	httpLn  net.Listener
	httpErr chan error

	metricsLn  net.Listener
	metricsSrv *http.Server
	metricsErr chan error
	certs      *webtls.Certs

	kick      chan struct{} // wake the offer loop
	provideCh chan struct{} // wake the provide loop
	coordKick chan struct{} // wake the data-parallel coordinator
	seqMu     sync.Mutex
	offerSeq  int64
	offerMu   sync.Mutex
	offered   map[string]*offerState // queued job -> its offers so far
	// offerSlots bounds the direct offers awaiting an answer; offerBacklog
	// records that a job waited for one of them.
	offerSlots   chan struct{}
	offerBacklog atomic.Bool
	capacity     capacity
	touchMu      sync.Mutex
	touched      map[peer.ID]time.Time // node -> last stored last-seen
	servedMu     sync.Mutex
	served       map[string]time.Time // user -> last grant, for fair offers
	gater        *denyGater
	metrics      *metrics
	index        atomic.Pointer[indexTable] // set by the provide loop while it runs
	fed          fedParts                   // this gateway's rounds in federations (fedpart.go)
	fedSeen      fedSeen                    // when each federation's coordinator was last heard (fedexpiry.go)

	closeOnce sync.Once
	closeErr  error
}

// Start opens the store, starts the peer, the HTTP API and the loops. On a
// failure half way everything opened so far is closed again.
func Start(ctx context.Context, cfg Config) (_ *Gateway, err error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), offerSlots: make(chan struct{}, maxOffersInFlight), provideCh: make(chan struct{}, 1), coordKick: make(chan struct{}, 1)}
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
	if g.uploads, err = upload.Open(filepath.Join(cfg.DataDir, "uploads"), cfg.MaxUploadSize); err != nil {
		return nil, err
	}
	g.uploads.Now = cfg.Now
	g.uploads.SyncBytes = upload.DefaultSyncBytes
	// Uploads become columnar versions under the store's datasets
	// directory: count them there before accepting an upload.
	if err := g.uploads.SetIngestDir(g.store.DatasetsDir()); err != nil {
		return nil, err
	}
	g.metrics = newMetrics(g)
	g.svc = service.New(service.Config{Store: g.store, Logger: cfg.Logger.With("sub", "service"),
		Jobs:   service.JobPolicy{MaxAttempts: cfg.MaxAttempts, AttemptTimeout: cfg.AttemptTimeout, JobTimeout: cfg.JobTimeout},
		Limits: service.SubmitLimits{MaxWorkers: cfg.MaxWorkers, MaxRounds: cfg.MaxRounds, NodeMemory: g.capacity.largestMemory},
		Hooks: service.Hooks{
			JobSubmitted: func(*store.Job) {
				g.metrics.submitted.Inc()
				g.wake(g.kick)
				g.wake(g.coordKick)
			},
			JobCancelled: func(j *store.Job) {
				g.metrics.jobEnded(wire.StateCancelled, j.StartedAt) // the store cancelled its shards with it
				g.wake(g.kick)
			},
		}})
	g.peer, err = p2p.New(ctx, p2p.Config{
		DataDir: cfg.DataDir, Network: cfg.Network, Listen: cfg.Listen, Bootstrap: cfg.Bootstrap,
		DHTMode: p2p.DHTServer, PSK: cfg.PSK, Logger: cfg.Logger.With("sub", "p2p"), Gater: g.gater,
		NewHost: cfg.NewHost, Role: p2p.RoleGateway, Reach: cfg.Reach, MaxConns: cfg.MaxConns,
		Metrics: g.metrics.reg,
	})
	if err != nil {
		return nil, err
	}
	for _, c := range g.peer.Collectors() { // connections by path, hole punches
		if err := g.metrics.reg.Register(c); err != nil {
			return nil, fmt.Errorf("register p2p metrics: %w", err)
		}
	}
	g.topic, err = g.peer.PubSub.Join(g.peer.Topic(wire.JobsTopic(g.peer.ID().String())))
	if err != nil {
		return nil, fmt.Errorf("join jobs topic: %w", err)
	}
	if err := g.topic.SetScoreParams(p2p.OfferTopicScore()); err != nil {
		return nil, fmt.Errorf("offer topic scoring: %w", err)
	}
	g.registerProtocols()
	fileDirs, err := sources.AllowedDirs(cfg.SourceDirs)
	if err != nil {
		return nil, err
	}
	g.sources = sources.New(sources.Config{Store: g.store, Logger: cfg.Logger.With("sub", "sources"), PGPassFile: cfg.PGPassFile, FileDirs: fileDirs,
		Limits: cfg.SourceLimits, StatementTimeout: cfg.SourceTimeout, Poll: cfg.SourcePoll, Now: cfg.Now,
		Added: func(*store.Dataset) { g.wake(g.provideCh) }})
	if done, err := g.store.SetupDone(); err != nil {
		return nil, err
	} else if !done {
		g.setupToken = crypto.RandomToken()
	}
	if !cfg.NoHTTP {
		if err := g.startHTTP(); err != nil {
			return nil, err
		}
	}
	if cfg.MetricsAddr != "" {
		if err := g.startMetricsHTTP(); err != nil {
			return nil, err
		}
	} else if !cfg.NoHTTP && !loopback(g.httpLn.Addr()) {
		g.log.Warn("GET /metrics is served on the admin HTTP address, which other hosts can reach: its series time every job, "+
			"including jobs whose outcome is under review; serve them on an address only operators reach with --metrics-http", "http", g.httpLn.Addr().String())
	}
	g.peer.Go(g.offerLoop)
	g.peer.Go(g.leaseLoop)
	g.peer.Go(g.provideLoop)
	g.peer.Go(g.coordLoop)
	g.peer.Go(g.witnessLoop)
	g.peer.Go(g.fedExpiryLoop)
	g.peer.Go(g.uploadSweepLoop)
	g.peer.Go(g.sources.Run) // scheduled snapshots; stops with the peer
	if cfg.AuditLog != nil {
		g.peer.Go(g.auditExport)
	}
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

// ID is the gateway's peer ID.
func (g *Gateway) ID() string { return g.peer.ID().String() }

// Addrs are the gateway's full multiaddrs.
func (g *Gateway) Addrs() []string { return g.peer.Addrs() }

// HTTPURL is the base URL of the admin API, or "" without HTTP.
func (g *Gateway) HTTPURL() string {
	if g.httpLn == nil {
		return ""
	}
	if g.certs != nil {
		return "https://" + g.httpLn.Addr().String()
	}
	return "http://" + g.httpLn.Addr().String()
}

// MetricsURL is the base URL of the operators' metrics address
// (Config.MetricsAddr), or "" when /metrics is served on HTTPURL.
func (g *Gateway) MetricsURL() string {
	if g.metricsLn == nil {
		return ""
	}
	return "http://" + g.metricsLn.Addr().String()
}

// ReloadTLS reads the HTTPS certificate and key again (on SIGHUP); on an
// error the one in use stays. Without HTTPS it does nothing.
func (g *Gateway) ReloadTLS() error {
	if g.certs == nil {
		return nil
	}
	return g.certs.Reload()
}

// Metrics gathers the gateway's Prometheus series (as GET /metrics serves them).
func (g *Gateway) Metrics() *prometheus.Registry { return g.metrics.reg }

// Store gives tests and the CLI's offline commands access to the state.
func (g *Gateway) Store() *store.Store { return g.store }

// Sources registers and snapshots the gateway's dataset sources.
func (g *Gateway) Sources() *sources.Manager { return g.sources }

// Peer is the gateway's libp2p peer.
func (g *Gateway) Peer() *p2p.Peer { return g.peer }

// Close stops HTTP, the loops and the peer, then closes the store. Idempotent.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		var errs []error
		if g.sources != nil { // first: a snapshot runs past its HTTP request, and writes to the store
			g.sources.Close()
		}
		if g.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, g.httpSrv.Shutdown(ctx))
			cancel()
			errs = append(errs, <-g.httpErr)
		}
		if g.metricsSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, g.metricsSrv.Shutdown(ctx))
			cancel()
			errs = append(errs, <-g.metricsErr)
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
