// Package node is fedgrid's worker peer. Enrolled by one gateway with a join
// token, it listens to that gateway's job offers, claims a lease when it has a
// free slot, fetches the plan and data shard over a stream, trains with the
// plan engine, heartbeats progress and returns the weights and metrics.
package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fedgrid/fedgrid/internal/strictjson"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/dataset/frames"
	"github.com/fedgrid/fedgrid/internal/config"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// Config of a node. DefaultConfig gives every default; Start fills the
// fields left zero with those and refuses a config that does not Validate.
type Config struct {
	DataDir   string
	Network   string
	Listen    []string
	Bootstrap []string
	// Gateway is the full multiaddr (with /p2p/) of the enrolling gateway.
	Gateway   string
	JoinToken string
	// Slots is how many jobs run at once; default 1.
	Slots  int
	PSK    []byte
	Logger *slog.Logger
	// Reach: announced addresses and reachability.
	Reach p2p.Reach
	// MaxMemory is the memory this node's jobs may use together (default
	// DefaultMaxMemory); each slot gets an equal share, and the node claims
	// no job whose plan needs more than its share.
	MaxMemory int64
	// MaxJitter delays a claim by a random amount up to this, so that not every
	// idle node claims at the same instant; default 20 ms.
	MaxJitter time.Duration
	// Engine computes the gradients of every job this node trains:
	// plan.EngineNative (the default) or plan.EngineGorgonia.
	Engine plan.Engine
	// Train runs a job's training; default plan.TrainSource. Tests wrap it,
	// for example to hold a job on one node while they cut its link.
	Train func(context.Context, *plan.Plan, dataset.Source, plan.TrainOptions) (*plan.Model, error)
	// CacheSize bounds the shard cache (DataDir/shards): the rows of past
	// jobs, kept for later jobs on the same rows; default DefaultCacheSize.
	CacheSize int64
	// NewHost, when set, builds the libp2p host (tests: mocknet); see p2p.Config.
	NewHost p2p.HostFactory
	// Metrics, when set, gets the node's series (fedgrid_node_*) and
	// libp2p's; the caller serves it (fedgrid node --metrics ADDR).
	Metrics *prometheus.Registry
}

// DefaultConfig is a node's configuration before any flag.
func DefaultConfig() Config {
	return Config{Network: p2p.DefaultNetwork, Slots: 1, MaxJitter: 20 * time.Millisecond, Engine: plan.EngineNative}
}

// defaults fills the fields left zero from DefaultConfig.
func (c *Config) defaults() {
	d := DefaultConfig()
	if c.Network == "" {
		c.Network = d.Network
	}
	if c.Slots == 0 {
		c.Slots = d.Slots
	}
	if c.MaxJitter == 0 {
		c.MaxJitter = d.MaxJitter
	}
	if c.Engine == "" {
		c.Engine = d.Engine
	}
	if c.Train == nil {
		c.Train = plan.TrainSource
	}
	if c.CacheSize == 0 {
		c.CacheSize = DefaultCacheSize
	}
}

// Validate reports every field that is not usable as it is, by its name.
func (c Config) Validate() error {
	var ck config.Check
	ck.Require(c.DataDir != "", "DataDir", "is required")
	ck.Add("Network", p2p.ValidateNetworkName(c.Network))
	gws, err := p2p.ParseAddrInfos([]string{c.Gateway})
	switch {
	case c.Gateway == "":
		ck.Require(false, "Gateway", "is required: the enrolling gateway's multiaddr ending in /p2p/<peer id>")
	case err != nil:
		ck.Add("Gateway", err)
	case len(gws) != 1:
		ck.Require(false, "Gateway", "must be one gateway's multiaddr, got %d peers", len(gws))
	}
	_, err = p2p.ParseAddrInfos(c.Bootstrap)
	ck.Add("Bootstrap", err)
	ck.Require(c.Slots >= 1 && c.Slots <= wire.MaxSlots, "Slots", "must be between 1 and %d, got %d", wire.MaxSlots, c.Slots)
	ck.Require(c.MaxJitter >= 0, "MaxJitter", "must not be negative, got %s", c.MaxJitter)
	ck.Require(c.CacheSize >= 0, "CacheSize", "must not be negative, got %d", c.CacheSize)
	_, err = plan.ParseEngine(string(c.Engine))
	ck.Require(err == nil, "Engine", "must be native or gorgonia, got %q", c.Engine)
	ck.Require(len(c.PSK) == 0 || len(c.PSK) == 32, "PSK", "must be 32 bytes, got %d", len(c.PSK))
	return ck.Err("node config")
}

// Node is a running worker.
type Node struct {
	cfg      Config
	peer     *p2p.Peer
	gw       peer.AddrInfo
	log      *slog.Logger
	slots    chan struct{}
	sub      *pubsub.Subscription
	topic    *pubsub.Topic
	mu       sync.Mutex
	running  map[string]context.CancelFunc // job -> cancel
	claiming map[string]context.CancelFunc // job -> stop waiting to claim
	offered  map[string]wire.Offer         // offers heard and not yet known taken
	pingCh   chan struct{}
	metrics  *nodeMetrics
	cache    *shardCache

	closeOnce sync.Once
	closeErr  error
}

// Start connects to the gateway, enrols, and starts taking offers. If the
// gateway refuses the enrolment Start fails with its reason.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxMemory <= 0 {
		if cfg.MaxMemory, err = DefaultMaxMemory(); err != nil {
			return nil, err
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cache, err := openShardCache(filepath.Join(cfg.DataDir, "shards"), cfg.CacheSize, log)
	if err != nil {
		return nil, err
	}
	gws, err := p2p.ParseAddrInfos([]string{cfg.Gateway})
	if err != nil {
		return nil, err
	}
	p, err := p2p.New(ctx, p2p.Config{
		DataDir: cfg.DataDir, Network: cfg.Network, Listen: cfg.Listen,
		Bootstrap: append(append([]string{}, cfg.Bootstrap...), cfg.Gateway),
		DHTMode:   p2p.DHTClient, PSK: cfg.PSK, Logger: log, NewHost: cfg.NewHost,
		Role: p2p.RoleNode, Reach: cfg.Reach,
		Metrics: registerer(cfg.Metrics),
	})
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, peer: p, gw: gws[0], log: log, metrics: newNodeMetrics(cfg.Metrics), slots: make(chan struct{}, cfg.Slots), running: map[string]context.CancelFunc{}, claiming: map[string]context.CancelFunc{}, offered: map[string]wire.Offer{}, pingCh: make(chan struct{}, 1), cache: cache}
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	n.metrics.register(cfg.Metrics, n)
	p2p.Serve(p, wire.OfferJob(), nil, n.handleOffer)
	if err := n.enroll(ctx); err != nil {
		return nil, err
	}
	topicName := p.Topic(wire.JobsTopic(n.gw.ID.String()))
	gwID := n.gw.ID
	// Accept only offers authored (and signed, gossipsub's StrictSign) by our gateway.
	if err := p.PubSub.RegisterTopicValidator(topicName, func(_ context.Context, _ peer.ID, m *pubsub.Message) pubsub.ValidationResult {
		if m.GetFrom() != gwID {
			return pubsub.ValidationReject
		}
		var o wire.Offer
		if strictjson.Decode(m.Data, &o) != nil || o.Validate() != nil || o.Gateway != gwID.String() {
			return pubsub.ValidationReject
		}
		m.ValidatorData = &o
		return pubsub.ValidationAccept
	}); err != nil {
		return nil, fmt.Errorf("offer validator: %w", err)
	}
	n.topic, err = p.PubSub.Join(topicName)
	if err != nil {
		return nil, fmt.Errorf("join offers topic: %w", err)
	}
	if err := n.topic.SetScoreParams(p2p.OfferTopicScore()); err != nil {
		return nil, fmt.Errorf("offer topic scoring: %w", err)
	}
	n.sub, err = n.topic.Subscribe()
	if err != nil {
		return nil, fmt.Errorf("subscribe to offers: %w", err)
	}
	p.Go(n.offers)
	p.Go(n.pings)
	return n, nil
}

// ID is the node's peer ID.
func (n *Node) ID() peer.ID { return n.peer.ID() }

// Addrs are the node's full multiaddrs.
func (n *Node) Addrs() []string { return n.peer.Addrs() }

func (n *Node) enroll(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for attempt := 0; ; attempt++ {
		_, err := p2p.Request(ctx, n.peer, n.gw.ID, wire.Enroll(),
			&wire.EnrollRequest{Token: n.cfg.JoinToken, Slots: n.cfg.Slots, Version: p2p.Version, MaxJobMemory: n.jobMemory()})
		if err == nil {
			n.log.Info("enrolled", "gateway", n.gw.ID, "engine", n.cfg.Engine)
			return nil
		}
		var remote *p2p.Error
		if errors.As(err, &remote) { // the gateway answered: a refusal is final
			return fmt.Errorf("gateway refused enrolment: %s", remote.Message)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot reach gateway %s to enrol: %v", n.gw.ID, last)
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
}

func (n *Node) offers(ctx context.Context) {
	defer n.sub.Cancel()
	for {
		m, err := n.sub.Next(ctx)
		if err != nil {
			return
		}
		o, ok := m.ValidatorData.(*wire.Offer)
		if !ok || time.Now().After(o.Expires) {
			continue
		}
		n.mu.Lock()
		if o.Taken {
			delete(n.offered, o.Job)
			if stop := n.claiming[o.Job]; stop != nil {
				stop() // another node has it: do not claim
			}
		} else if _, running := n.running[o.Job]; !running && (o.For == "" || o.For == n.peer.ID().String()) {
			n.offered[o.Job] = *o
		}
		n.mu.Unlock()
		n.dispatch(ctx)
	}
}

// rank orders offers differently on every node (a hash of node and job), so
// that idle nodes facing the same offers mostly claim different jobs.
func (n *Node) rank(job string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(n.peer.ID()))
	h.Write([]byte(job))
	return h.Sum64()
}

// dispatch claims remembered offers while slots are free: the best-ranked
// offer first; an offer that could not be had is forgotten and the next one
// tried.
func (n *Node) dispatch(ctx context.Context) {
	for {
		n.mu.Lock()
		now := time.Now()
		var best *wire.Offer
		for id, o := range n.offered {
			if now.After(o.Expires) {
				delete(n.offered, id)
				continue
			}
			if _, busy := n.claiming[id]; busy {
				continue
			}
			if memoryNeed(o.Memory, o.StreamMemory) > n.jobMemory() {
				delete(n.offered, id) // it does not fit: never claim it
				continue
			}
			// Offers directed at this node first, then by rank.
			mine := o.For != ""
			bestMine := best != nil && best.For != ""
			if best == nil || (mine && !bestMine) || (mine == bestMine && n.rank(id) < n.rank(best.Job)) {
				o := o
				best = &o
			}
		}
		if best == nil {
			n.mu.Unlock()
			return
		}
		select {
		case n.slots <- struct{}{}:
		default:
			n.mu.Unlock()
			return // no free slot: only eligible nodes claim
		}
		free := best.Free
		if best.For != "" {
			free = 1 // directed at this node: claim at once
		}
		n.startTake(ctx, best.Job, free)
		n.mu.Unlock()
	}
}

// startTake claims job on a slot the caller has just taken, in a goroutine
// the peer owns. The caller holds n.mu.
func (n *Node) startTake(ctx context.Context, job string, free int) {
	cctx, stop := context.WithCancel(ctx)
	n.claiming[job] = stop
	delete(n.offered, job)
	n.peer.Go(func(ctx context.Context) {
		release := sync.OnceFunc(func() {
			<-n.slots
			n.pingNow()
			n.dispatch(ctx)
		})
		defer release()
		n.take(ctx, cctx, job, free, release)
	})
}

// handleOffer answers the gateway's direct offer of one job: with a free
// slot, the node holds it for the job, answers that it accepts and claims
// the job at once; without one it declines, and the gateway asks another
// node. Only this node's gateway may offer it jobs.
func (n *Node) handleOffer(_ context.Context, from peer.ID, req *wire.DirectOffer) (*wire.OfferAnswer, error) {
	if from != n.gw.ID {
		return nil, p2p.Errorf(p2p.CodeForbidden, "only this node's gateway (%s) offers it jobs", n.gw.ID)
	}
	if err := req.Validate(); err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "offer refused: %v", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	free := func() int { return n.cfg.Slots - len(n.slots) }
	if _, running := n.running[req.Job]; running || n.claiming[req.Job] != nil {
		return &wire.OfferAnswer{Accepted: true, Free: free()}, nil // already on it
	}
	if time.Now().After(req.Expires) || memoryNeed(req.Memory, req.StreamMemory) > n.jobMemory() {
		return &wire.OfferAnswer{Free: free()}, nil
	}
	select {
	case n.slots <- struct{}{}:
	default:
		return &wire.OfferAnswer{Free: 0}, nil
	}
	n.startTake(n.peer.Context(), req.Job, 1)
	return &wire.OfferAnswer{Accepted: true, Free: free()}, nil
}

// pings tells the gateway every PingInterval that this node is alive and
// how many slots are free, so that it offers only what can run.
// The gateway may ask for a longer interval (wire.PingResponse.NextPing)
// when it has many nodes.
func (n *Node) pings(ctx context.Context) {
	every := pingInterval
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.pingCh:
		default:
		}
		n.mu.Lock()
		running := make([]string, 0, len(n.running))
		for j := range n.running {
			running = append(running, j)
		}
		n.mu.Unlock()
		req := &wire.PingRequest{Slots: n.cfg.Slots, Free: n.cfg.Slots - len(n.slots), Running: running, Version: p2p.Version, MaxJobMemory: n.jobMemory()}
		resp, err := p2p.Request(ctx, n.peer, n.gw.ID, wire.Ping(), req)
		if err != nil && ctx.Err() == nil {
			n.log.Debug("ping gateway", "err", err)
		}
		if err == nil {
			if next := nextPing(resp.NextPing); next != every {
				every = next
				t.Reset(every)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.pingCh:
		}
	}
}

// pingNow asks the ping loop to tell the gateway at once (a slot came free).
func (n *Node) pingNow() {
	select {
	case n.pingCh <- struct{}{}:
	default:
	}
}

// memoryNeed is what an offered job needs on this node, which streams rows
// it cannot hold: the stream bound when the gateway gives one.
func memoryNeed(memory, stream int64) int64 {
	if stream > 0 {
		return stream
	}
	return memory
}

// jobMemory is the bytes one job may use: MaxMemory over the slots.
func (n *Node) jobMemory() int64 { return n.cfg.MaxMemory / int64(n.cfg.Slots) }

// pingInterval matches the gateway's gateway.PingInterval.
const pingInterval = 5 * time.Second

// maxPingInterval bounds the interval a gateway may ask for (its own bound
// is gateway.MaxPingInterval).
const maxPingInterval = time.Minute

// nextPing is the idle ping interval a gateway's answer asks for: its
// NextPing seconds within [pingInterval, maxPingInterval], or pingInterval
// when it names none.
func nextPing(seconds int) time.Duration {
	if seconds <= 0 {
		return pingInterval
	}
	return min(max(time.Duration(seconds)*time.Second, pingInterval), maxPingInterval)
}

// take waits out a random jitter (dropping the claim if the job is taken
// meanwhile), claims the job and, if granted, runs it.
func (n *Node) take(ctx, claimCtx context.Context, job string, free int, release func()) {
	defer func() {
		n.mu.Lock()
		if stop := n.claiming[job]; stop != nil {
			stop()
		}
		delete(n.claiming, job)
		n.mu.Unlock()
	}()
	// Jitter spreads the claims of idle nodes; it grows with the number of
	// free slots the gateway saw, up to MaxJitter, and is zero when this node
	// is the only candidate.
	if free > 1 {
		select {
		case <-claimCtx.Done():
			return
		case <-time.After(rand.N(min(n.cfg.MaxJitter, time.Duration(free)*time.Millisecond))):
		}
	}
	// Once sent, the claim is not cancelled by a "taken" offer: the gateway
	// gossips that offer before it answers the very claim it granted, and a
	// node that dropped its own grant left the job leased to nobody until the
	// lease expired. The gateway's answer (grant or conflict) decides.
	grant, err := p2p.Request(ctx, n.peer, n.gw.ID, wire.Claim(), &wire.ClaimRequest{Job: job, MaxJobMemory: n.jobMemory(), Streams: true})
	if err != nil {
		n.log.Debug("claim not granted", "job", job, "err", err)
		return
	}
	n.log.Info("lease granted", "job", job, "attempt", grant.Attempt)
	jctx, cancel := context.WithCancel(ctx)
	n.mu.Lock()
	n.running[job] = cancel
	n.mu.Unlock()
	defer func() {
		cancel()
		n.mu.Lock()
		delete(n.running, job)
		n.mu.Unlock()
	}()
	// The lease is renewed from the grant until the result is delivered:
	// a large shard's fetch or a large model's upload can outlast it.
	progress, stopLease := n.keepLease(jctx, cancel, grant)
	defer stopLease()
	model, runErr := n.run(jctx, grant, progress)
	if ctx.Err() != nil {
		return // shutting down: the lease expires and the gateway re-queues the job
	}
	// The slot is free from now on: the next offer can be claimed while this
	// result travels.
	release()
	req := &wire.ResultRequest{Job: job, Attempt: grant.Attempt}
	switch {
	case runErr != nil && jctx.Err() != nil:
		n.log.Info("job cancelled", "job", job)
		return
	case errors.Is(runErr, errNoFetch):
		// Not the job's fault: let the lease lapse, and the gateway
		// re-queues the job for another attempt.
		n.log.Warn("giving the job back", "job", job, "attempt", grant.Attempt, "err", runErr)
		return
	case runErr != nil:
		req.Error = runErr.Error()
	default:
		req.Model = model
	}
	n.sendResult(ctx, req)
}

// errNoFetch: the plan and data could not be fetched for want of a
// connection (a dropped stream, a restarting gateway) three times; the job
// is given back, not failed. A refusal from the gateway, a timeout (a
// shard too large for the link would time out again) and a malformed
// answer are reported.
var errNoFetch = errors.New("plan and data not fetched")

// connectionLost reports whether a call failed for want of a connection
// rather than by the gateway's answer, a timeout or a malformed message.
func connectionLost(err error) bool {
	var remote *p2p.Error
	var netErr net.Error
	timeout := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout())
	return !errors.As(err, &remote) && !timeout && !errors.Is(err, p2p.ErrMalformed) && !errors.Is(err, p2p.ErrTooLarge)
}

// keepLease heartbeats a granted job's lease, with the progress set through
// the returned function, until stop is called. A lost lease or a
// cancellation from the gateway cancels the job (cancel).
func (n *Node) keepLease(ctx context.Context, cancel context.CancelFunc, g *wire.ClaimResponse) (progress func(plan.Progress), stop func()) {
	var mu sync.Mutex
	prog := wire.HeartbeatRequest{Job: g.Job, Attempt: g.Attempt}
	lease := time.Duration(max(g.LeaseSeconds, 3)) * time.Second
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() { // owned by keepLease's caller: stop ends it and waits
		defer close(stopped)
		t := time.NewTicker(min(lease/3, time.Second))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			mu.Lock()
			req := prog
			mu.Unlock()
			resp, err := p2p.Request(ctx, n.peer, n.gw.ID, wire.Heartbeat(), &req)
			if err != nil {
				if p2p.IsCode(err, p2p.CodeStale) || p2p.IsCode(err, p2p.CodeNotFound) {
					n.log.Warn("lease lost; stopping", "job", g.Job, "attempt", g.Attempt)
					cancel()
					return
				}
				n.log.Debug("heartbeat not answered", "job", g.Job, "attempt", g.Attempt, "err", err)
				continue
			}
			if resp.Cancelled {
				cancel()
				return
			}
		}
	}()
	var once sync.Once
	return func(p plan.Progress) {
			mu.Lock()
			prog.Epoch, prog.Epochs, prog.Loss = p.Epoch, p.Epochs, p.Loss
			mu.Unlock()
		}, func() {
			once.Do(func() { close(done) })
			<-stopped
		}
}

// sendResult delivers a result with retries: the gateway's answer is
// idempotent for the same attempt.
func (n *Node) sendResult(ctx context.Context, req *wire.ResultRequest) {
	for try := 0; try < 10; try++ {
		tctx, cancel := context.WithTimeout(ctx, resultTryTimeout)
		_, err := p2p.Request(tctx, n.peer, n.gw.ID, wire.Result(), req)
		cancel()
		if err == nil {
			n.log.Info("result delivered", "job", req.Job, "attempt", req.Attempt, "failed", req.Error != "")
			return
		}
		var remote *p2p.Error
		if errors.As(err, &remote) {
			n.log.Warn("result refused", "job", req.Job, "attempt", req.Attempt, "reason", remote.Message)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(try+1) * 250 * time.Millisecond):
		}
	}
}

// resultTryTimeout bounds one try to deliver a result (the protocol's own
// deadline is longer).
const resultTryTimeout = 60 * time.Second

// run fetches and trains; progress reports each epoch. From a gateway that
// serves job/open the rows come from the shard cache or, when it lacks
// them, as a stream (job/data) written to the cache; from an older gateway
// they come with the plan as CSV (job/fetch).
func (n *Node) run(ctx context.Context, g *wire.ClaimResponse, progress func(plan.Progress)) (json.RawMessage, error) {
	if ok, _ := n.peer.Host.Peerstore().SupportsProtocols(n.gw.ID, n.peer.Protocol(wire.ProtoOpen)); len(ok) == 0 {
		return n.runFetched(ctx, g, progress)
	}
	o, err := retryFetch(ctx, func() (*wire.OpenResponse, error) {
		return p2p.Request(ctx, n.peer, n.gw.ID, wire.Open(), &wire.FetchRequest{Job: g.Job, Attempt: g.Attempt})
	})
	if err != nil {
		return nil, err
	}
	pl, err := plan.Parse(o.Plan)
	if err != nil {
		return nil, fmt.Errorf("plan refused by node: %w", err)
	}
	if _, err := plan.Check(pl, o.Data.Columns); err != nil {
		return nil, fmt.Errorf("plan does not fit the data: %w", err)
	}
	src, err := n.cache.open(o.Data.Key)
	if err != nil {
		return nil, fmt.Errorf("shard cache: %w", err)
	}
	if src != nil {
		n.log.Info("data from the shard cache", "job", g.Job, "key", o.Data.Key[:12], "rows", src.NumRows())
		n.metrics.cached(true)
	} else {
		n.metrics.cached(false)
		start := time.Now()
		src, err = retryFetch(ctx, func() (*frames.File, error) {
			rc, err := p2p.OpenStream(ctx, n.peer, n.gw.ID, wire.Data(), &wire.DataRequest{Job: g.Job, Attempt: g.Attempt, Key: o.Data.Key})
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			return n.cache.fill(o.Data.Key, rc, o.Data)
		})
		if err != nil {
			return nil, err
		}
		n.log.Info("data received", "job", g.Job, "key", o.Data.Key[:12], "rows", src.NumRows(), "seconds", time.Since(start).Seconds())
	}
	defer src.Close()
	if src.NumRows() != o.Data.Rows || !slices.Equal(src.Columns(), o.Data.Columns) {
		return nil, fmt.Errorf("data shard refused by node: %d rows and columns %v, job/open said %d rows", src.NumRows(), src.Columns(), o.Data.Rows)
	}
	return n.train(ctx, g, pl, o.Init, src, progress)
}

// retryFetch calls fetch up to three times while it fails for want of a
// connection (a dropped stream, a restarting gateway). Such a failure in
// the end is errNoFetch (the job is given back); any other is reported.
func retryFetch[T any](ctx context.Context, fetch func() (T, error)) (T, error) {
	var v T
	var err error
	for try := 1; ; try++ {
		v, err = fetch()
		if err == nil || !connectionLost(err) || try == 3 {
			break
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(time.Duration(try) * time.Second):
		}
	}
	if err != nil && connectionLost(err) {
		return v, fmt.Errorf("%w: %w", errNoFetch, err)
	} else if err != nil {
		// The gateway's answer, a timeout or a malformed response: report it.
		return v, fmt.Errorf("fetch plan and data: %w", err)
	}
	return v, nil
}

// runFetched is run against a gateway of an earlier release: the plan and
// the rows (CSV) in one answer.
func (n *Node) runFetched(ctx context.Context, g *wire.ClaimResponse, progress func(plan.Progress)) (json.RawMessage, error) {
	f, err := retryFetch(ctx, func() (*wire.FetchResponse, error) {
		return p2p.Request(ctx, n.peer, n.gw.ID, wire.Fetch(), &wire.FetchRequest{Job: g.Job, Attempt: g.Attempt})
	})
	if err != nil {
		return nil, err
	}
	// The node re-checks what the gateway validated.
	pl, err := plan.Parse(f.Plan)
	if err != nil {
		return nil, fmt.Errorf("plan refused by node: %w", err)
	}
	tbl, err := dataset.ReadCSV(bytes.NewReader(f.CSV), dataset.Limits{MaxBytes: wire.MaxShard})
	if err != nil {
		return nil, fmt.Errorf("data shard refused by node: %w", err)
	}
	if _, err := plan.Check(pl, tbl.Columns()); err != nil {
		return nil, fmt.Errorf("plan does not fit the data: %w", err)
	}
	return n.train(ctx, g, pl, f.Init, tbl, progress)
}

// train runs the plan over src within the node's memory for one job.
func (n *Node) train(ctx context.Context, g *wire.ClaimResponse, pl *plan.Plan, initJSON json.RawMessage, src dataset.Source, progress func(plan.Progress)) (json.RawMessage, error) {
	var init map[string]plan.Tensor
	if len(initJSON) > 0 {
		if err := json.Unmarshal(initJSON, &init); err != nil {
			return nil, fmt.Errorf("starting weights refused by node: %w", err)
		}
	}
	n.log.Info("training", "job", g.Job, "attempt", g.Attempt, "engine", n.cfg.Engine, "rows", src.NumRows())
	start := time.Now()
	// A streamed run keeps its preprocessed rows in a scratch file beside
	// the shard cache (a "*.tmp" there: removed at the next start if a
	// crash left it), within the cache's size.
	model, err := n.cfg.Train(ctx, pl, src, plan.TrainOptions{Init: init, Progress: progress, Engine: n.cfg.Engine, MaxMemory: n.jobMemory(),
		ScratchDir: n.cache.dir, ScratchMax: n.cfg.CacheSize})
	n.metrics.trained(start, err)
	if err != nil {
		return nil, fmt.Errorf("training failed: %w", err)
	}
	b, err := json.Marshal(model)
	if err != nil {
		return nil, fmt.Errorf("encode model: %w", err)
	}
	return b, nil
}

// Close stops taking offers, cancels running jobs and closes the peer.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.sub != nil { // nil when Start failed between Join and Subscribe
			n.sub.Cancel()
		}
		n.closeErr = n.peer.Close()
		if n.topic != nil {
			_ = n.topic.Close()
		}
	})
	return n.closeErr
}

// Peer is the node's libp2p peer.
func (n *Node) Peer() *p2p.Peer { return n.peer }
