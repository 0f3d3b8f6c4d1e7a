// Package client is the Go SDK data scientists (and the fedgrid CLI) use to
// find datasets across a fedgrid network and train on them: search through
// the DHT and each gateway's catalog, submit plans, follow jobs and fetch
// released models.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
	"github.com/fedgrid/fedgrid/witness"
)

// Config of a client.
type Config struct {
	Network   string
	Bootstrap []string
	// Identity is the data scientist's key (fedgrid keygen); nil = a throwaway key, enough for search.
	Identity crypto.PrivKey
	PSK      []byte
	Logger   *slog.Logger
	// PerGateway bounds each gateway's dial, and then its catalog answer, in
	// a search; default 5 s. A search dials at most MaxDials gateways at
	// once: the wait for a slot is not counted.
	PerGateway time.Duration
	// NewHost, when set, builds the libp2p host (tests: mocknet); see p2p.Config.
	NewHost p2p.HostFactory
}

// Client talks to a fedgrid network.
type Client struct {
	cfg   Config
	peer  *p2p.Peer
	owned bool // Close closes peer
	// dials bounds the connections searches open at once (MaxDials): a
	// dial still handshaking is held in libp2p's transient scope, which
	// admits about 64 (more on machines with more memory), and hundreds
	// of handshakes at once would only share the CPU.
	dials chan struct{}
}

// MaxDials is how many new connections a search opens at once; the rest of
// the providers it found wait for a slot.
const MaxDials = 32

// New starts a dial-only peer and waits until it can route DHT queries.
func New(ctx context.Context, cfg Config) (_ *Client, err error) {
	if len(cfg.Bootstrap) == 0 {
		return nil, errors.New("at least one --bootstrap address is needed to reach the network")
	}
	if cfg.PerGateway <= 0 {
		cfg.PerGateway = 5 * time.Second
	}
	sk := cfg.Identity
	if sk == nil {
		if sk, err = p2p.GenerateIdentity(); err != nil {
			return nil, err
		}
	}
	p, err := p2p.New(ctx, p2p.Config{Identity: sk, Network: cfg.Network, NoListen: true, Bootstrap: cfg.Bootstrap, DHTMode: p2p.DHTClient, PSK: cfg.PSK, Logger: cfg.Logger, NewHost: cfg.NewHost, Role: p2p.RoleClient})
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, peer: p, owned: true, dials: make(chan struct{}, MaxDials)}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := p.WaitRouting(wctx, 1); err != nil {
		_ = p.Close()
		return nil, fmt.Errorf("cannot reach the network through %s: %v", strings.Join(cfg.Bootstrap, ", "), err)
	}
	return c, nil
}

// Attach makes a client that searches and calls through a peer someone else
// runs (the network peer does, for its HTTP search). Close leaves the peer
// open. Only PerGateway is read from cfg; the network is the peer's.
func Attach(p *p2p.Peer, cfg Config) *Client {
	if cfg.PerGateway <= 0 {
		cfg.PerGateway = 5 * time.Second
	}
	cfg.Network = p.Network
	return &Client{cfg: cfg, peer: p, dials: make(chan struct{}, MaxDials)}
}

// ID is the client's peer ID.
func (c *Client) ID() peer.ID { return c.peer.ID() }

// Close stops the client's peer (unless it was attached to one).
func (c *Client) Close() error {
	if !c.owned {
		return nil
	}
	return c.peer.Close()
}

// Result is one dataset found by Search.
type Result struct {
	Gateway     string            `json:"gateway"`
	GatewayName string            `json:"gateway_name"`
	Addrs       []string          `json:"addrs"`
	Dataset     wire.CatalogEntry `json:"dataset"`
	Ref         string            `json:"ref"` // GATEWAY_PEER_ID/DATASET_ID, what train --dataset takes
	// Models are the models the dataset's gateway hosts: a plan names one
	// with "model": "<id>" and carries only training settings.
	Models []wire.CatalogModel `json:"models,omitempty"`
}

// SearchProgress reports how a search goes, for a progress line.
type SearchProgress struct {
	Found, Answered, Failed int
}

// Query selects datasets. Every criterion given must hold.
type Query struct {
	Tags []string `json:"tags,omitempty"`
	// Any: a dataset needs only one of Tags, not all of them.
	Any bool `json:"any,omitempty"`
	// Text: words that must each appear in the name or the description.
	Text string `json:"text,omitempty"`
	// Columns: names the dataset must have as columns.
	Columns []string `json:"columns,omitempty"`
	// PreviewRows: synthetic preview rows per dataset; 0 = the gateway's default, negative = none.
	PreviewRows int `json:"preview_rows,omitempty"`
}

// Search finds the datasets carrying all tags (none = every dataset).
func (c *Client) Search(ctx context.Context, tags []string, progress func(SearchProgress)) ([]Result, error) {
	return c.SearchQuery(ctx, Query{Tags: tags}, progress)
}

// Gateway is a live gateway found in the DHT.
type Gateway struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Addrs    []string `json:"addrs"`
	Datasets int      `json:"datasets"`
}

// Gateways lists every gateway that announced itself in the network's DHT
// and answers now (its catalog is asked, without previews), sorted by name.
func (c *Client) Gateways(ctx context.Context) ([]Gateway, error) {
	var out []Gateway
	var mu sync.Mutex
	err := c.each(ctx, nil, &wire.CatalogRequest{PreviewRows: -1}, nil, func(ai peer.AddrInfo, addrs []string, resp *wire.CatalogResponse) {
		mu.Lock()
		out = append(out, Gateway{ID: ai.ID.String(), Name: resp.Name, Addrs: addrs, Datasets: len(resp.Datasets)})
		mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// SearchQuery finds the gateways that provide the query's tags in the DHT
// (every gateway for a query without tags) and asks each, concurrently and
// within PerGateway, for its matching datasets. A provider that cannot be
// dialled or does not answer is a gone gateway and is left out. Results are
// de-duplicated and sorted by gateway name, dataset name and reference.
func (c *Client) SearchQuery(ctx context.Context, q Query, progress func(SearchProgress)) ([]Result, error) {
	tags := []string{}
	for _, t := range q.Tags {
		if t = strings.ToLower(strings.TrimSpace(t)); t != "" && !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	req := &wire.CatalogRequest{Tags: tags, Text: strings.TrimSpace(q.Text), Columns: q.Columns, PreviewRows: q.PreviewRows}
	if q.Any {
		req.Match = wire.MatchAny
	}
	if len(tags) > wire.MaxQueryTags {
		return nil, fmt.Errorf("at most %d tags per search", wire.MaxQueryTags)
	}
	// Which DHT keys find the candidates: with all tags required, the
	// providers of one tag are enough (a gateway with such a dataset
	// provides each of its tags); with any, the union over the tags.
	var keys []string
	switch {
	case len(tags) == 0:
		keys = nil
	case q.Any:
		keys = tags
	default:
		keys = tags[:1]
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	var results []Result
	err := c.each(ctx, keys, req, progress, func(ai peer.AddrInfo, addrs []string, resp *wire.CatalogResponse) {
		mu.Lock()
		defer mu.Unlock()
		for _, d := range resp.Datasets {
			ref := ai.ID.String() + "/" + d.ID
			if seen[ref] {
				continue
			}
			seen[ref] = true
			results = append(results, Result{Gateway: ai.ID.String(), GatewayName: resp.Name, Addrs: addrs, Dataset: d, Ref: ref, Models: resp.Models})
		}
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(results, func(i, j int) bool {
		a, b := results[i], results[j]
		if a.GatewayName != b.GatewayName {
			return a.GatewayName < b.GatewayName
		}
		if a.Dataset.Name != b.Dataset.Name {
			return a.Dataset.Name < b.Dataset.Name
		}
		return a.Ref < b.Ref
	})
	return results, nil
}

// each finds the providers of keys (none = the gateways key), concurrently
// for every key, and asks each distinct live provider req as soon as it is
// found. found is called once per answering gateway, from many goroutines.
func (c *Client) each(ctx context.Context, keys []string, req *wire.CatalogRequest, progress func(SearchProgress), found func(peer.AddrInfo, []string, *wire.CatalogResponse)) error {
	var (
		mu   sync.Mutex
		seen = map[peer.ID]bool{}
		prog SearchProgress
		wg   sync.WaitGroup
	)
	report := func() { // with mu held
		if progress != nil {
			progress(prog)
		}
	}
	ask := func(ai peer.AddrInfo) {
		defer wg.Done()
		resp, err := c.catalog(ctx, ai, req)
		if err != nil {
			c.log().Debug("gateway left out", "gateway", ai.ID, "err", err)
			mu.Lock()
			prog.Failed++
			report()
			mu.Unlock()
			return
		}
		addrs := []string{}
		for _, a := range c.peer.Host.Peerstore().Addrs(ai.ID) {
			addrs = append(addrs, a.String()+"/p2p/"+ai.ID.String())
		}
		sort.Strings(addrs)
		found(ai, addrs, resp)
		mu.Lock()
		prog.Answered++
		report()
		mu.Unlock()
	}
	provider := func(ai peer.AddrInfo) {
		if ai.ID == c.peer.ID() {
			return
		}
		mu.Lock()
		dup := seen[ai.ID]
		seen[ai.ID] = true
		if !dup {
			prog.Found++
			report()
		}
		mu.Unlock()
		if !dup {
			wg.Add(1)
			go ask(ai)
		}
	}
	// Gateways store their records on the bootstrap peers directly as well
	// as on the DHT's closest peers: asking the bootstrap peers first finds
	// every gateway they know even where a lookup's closest set misses some.
	bootstrap, _ := p2p.ParseAddrInfos(c.cfg.Bootstrap)
	direct := func(ck cid.Cid) {
		defer wg.Done()
		for _, b := range bootstrap {
			for _, ai := range c.peer.ProvidersAt(ctx, b.ID, ck) {
				provider(ai)
			}
		}
	}
	lookup := func(ck cid.Cid) {
		defer wg.Done()
		wg.Add(1)
		go direct(ck)
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for ai := range c.peer.DHT.FindProvidersAsync(fctx, ck, 0) {
			provider(ai)
		}
	}
	if len(keys) == 0 {
		wg.Add(1)
		go lookup(p2p.GatewaysKey(c.peer.Network))
	}
	for _, k := range keys {
		wg.Add(1)
		go lookup(c.peer.TagKey(k))
	}
	wg.Wait()
	return ctx.Err()
}

func (c *Client) log() *slog.Logger {
	if c.cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.cfg.Logger
}

// catalog dials a provider (confirming that it is alive), unless a
// connection from an earlier call is up, and asks its catalog: the dial and
// the answer within PerGateway each. Waiting for a dial slot (MaxDials) is
// bounded by ctx only.
func (c *Client) catalog(ctx context.Context, ai peer.AddrInfo, req *wire.CatalogRequest) (*wire.CatalogResponse, error) {
	if c.peer.Host.Network().Connectedness(ai.ID) != network.Connected {
		if err := c.dial(ctx, ai); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PerGateway)
	defer cancel()
	resp, err := p2p.Request(ctx, c.peer, ai.ID, wire.Catalog(), req)
	if err != nil {
		return nil, err
	}
	if resp.Gateway != ai.ID.String() {
		return nil, fmt.Errorf("gateway %s answered in the name of %s", ai.ID, resp.Gateway)
	}
	return resp, nil
}

// dial connects to a provider within PerGateway, once one of the MaxDials
// slots is free.
func (c *Client) dial(ctx context.Context, ai peer.AddrInfo) error {
	select {
	case c.dials <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.dials }()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PerGateway)
	defer cancel()
	if len(ai.Addrs) == 0 {
		// A provider record without addresses: ask the DHT where it is.
		found, err := c.peer.FindPeer(ctx, ai.ID)
		if err != nil {
			return err
		}
		ai = found
	}
	return c.peer.Connect(ctx, ai)
}

// SplitRef splits "GATEWAY_PEER_ID/ID".
func SplitRef(ref string) (peer.ID, string, error) {
	gw, id, ok := strings.Cut(ref, "/")
	if !ok || gw == "" || id == "" || strings.Contains(id, "/") {
		return "", "", fmt.Errorf("%q is not of the form GATEWAY_PEER_ID/ID", ref)
	}
	pid, err := peer.Decode(gw)
	if err != nil {
		return "", "", fmt.Errorf("%q: %q is not a peer ID: %v", ref, gw, err)
	}
	return pid, id, nil
}

// call reaches a gateway by peer ID (found through the DHT) and makes one request.
func call[Req, Resp any](ctx context.Context, c *Client, gw peer.ID, proto wire.Protocol[Req, Resp], req *Req) (*Resp, error) {
	ai, err := c.peer.FindPeer(ctx, gw)
	if err != nil {
		return nil, fmt.Errorf("gateway %s is not reachable: %v", gw, err)
	}
	if err := c.peer.Connect(ctx, ai); err != nil {
		return nil, fmt.Errorf("gateway %s is not reachable: %v", gw, err)
	}
	return p2p.Request(ctx, c.peer, gw, proto, req)
}

// Submit sends a plan for a dataset; the gateway validates it and queues a job.
func (c *Client) Submit(ctx context.Context, gw peer.ID, datasetID string, planJSON []byte) (*wire.JobInfo, error) {
	if len(planJSON) > wire.MaxPlan {
		return nil, fmt.Errorf("plan is %d bytes; the limit is %d", len(planJSON), wire.MaxPlan)
	}
	if !json.Valid(planJSON) {
		return nil, errors.New("plan file is not valid JSON")
	}
	return call(ctx, c, gw, wire.Submit(), &wire.SubmitRequest{Dataset: datasetID, Plan: planJSON})
}

// Job returns the state of one of the caller's jobs.
func (c *Client) Job(ctx context.Context, gw peer.ID, id string) (*wire.JobInfo, error) {
	return call(ctx, c, gw, wire.Job(), &wire.JobRequest{Job: id})
}

// Wait polls a job until it ends, calling onUpdate on every change. A job
// on review-gated data reads under_review from submission to a compliance
// officer's decision: Wait returns then too (see WaitDecision).
func (c *Client) Wait(ctx context.Context, gw peer.ID, id string, onUpdate func(*wire.JobInfo)) (*wire.JobInfo, error) {
	return c.waitUntil(ctx, gw, id, onUpdate, func(j *wire.JobInfo) bool {
		return wire.Terminal(j.State) || j.State == wire.StateUnderReview
	})
}

// WaitDecision is Wait that, for a job under review, goes on waiting until
// the officer decides: the outcome released, or the release denied.
func (c *Client) WaitDecision(ctx context.Context, gw peer.ID, id string, onUpdate func(*wire.JobInfo)) (*wire.JobInfo, error) {
	return c.waitUntil(ctx, gw, id, onUpdate, func(j *wire.JobInfo) bool { return wire.Terminal(j.State) })
}

func (c *Client) waitUntil(ctx context.Context, gw peer.ID, id string, onUpdate func(*wire.JobInfo), done func(*wire.JobInfo) bool) (*wire.JobInfo, error) {
	var last string
	for {
		j, err := c.Job(ctx, gw, id)
		if err != nil {
			var remote *p2p.Error
			if errors.As(err, &remote) || ctx.Err() != nil {
				return nil, err
			}
			// a transient failure: try again on the next tick
		} else {
			sig := fmt.Sprintf("%s/%d/%d/%g", j.State, j.Attempt, j.Progress.Epoch, j.Progress.Loss)
			if sig != last && onUpdate != nil {
				onUpdate(j)
			}
			last = sig
			if done(j) {
				return j, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Model returns a job's released model (fedgrid.model/v1 JSON).
func (c *Client) Model(ctx context.Context, gw peer.ID, id string) ([]byte, error) {
	r, err := call(ctx, c, gw, wire.Model(), &wire.JobRequest{Job: id})
	if err != nil {
		return nil, err
	}
	return r.Model, nil
}

// Cancel cancels one of the caller's jobs; a running node stops within seconds.
func (c *Client) Cancel(ctx context.Context, gw peer.ID, id string) (*wire.JobInfo, error) {
	return call(ctx, c, gw, wire.Cancel(), &wire.JobRequest{Job: id})
}

// Ask files a request with a gateway's compliance officers: more budget
// (Kind wire.KindBudget, Epsilon) or a permission on a dataset (Kind
// wire.KindPermission, Dataset, Permission). Reason is required.
func (c *Client) Ask(ctx context.Context, gw peer.ID, req wire.RequestCreate) (*wire.RequestInfo, error) {
	return call(ctx, c, gw, wire.Request(), &req)
}

// Requests lists the caller's own requests at a gateway (release requests
// included), newest first; id, if set, selects one; state filters.
func (c *Client) Requests(ctx context.Context, gw peer.ID, id, state string) ([]wire.RequestInfo, error) {
	r, err := call(ctx, c, gw, wire.Requests(), &wire.RequestsQuery{ID: id, State: state})
	if err != nil {
		return nil, err
	}
	return r.Requests, nil
}

// Withdraw takes back one of the caller's pending requests at gw.
func (c *Client) Withdraw(ctx context.Context, gw peer.ID, id, reason string) (*wire.RequestInfo, error) {
	return call(ctx, c, gw, wire.Withdraw(), &wire.RequestWithdraw{ID: id, Reason: reason})
}

// Query asks a gateway for a differentially private statistic; the epsilon
// is charged to the caller's budget there.
func (c *Client) Query(ctx context.Context, gw peer.ID, req wire.QueryRequest) (*wire.QueryResponse, error) {
	return call(ctx, c, gw, wire.Query(), &req)
}

// Checkpoints asks the network peer witness for the signed audit
// checkpoints it keeps for gateway, and checks each signature.
func (c *Client) Checkpoints(ctx context.Context, witnessID peer.ID, gateway string) ([]wire.Checkpoint, error) {
	resp, err := call(ctx, c, witnessID, wire.WitnessGet(), &wire.CheckpointsRequest{Gateway: gateway})
	if err != nil {
		return nil, err
	}
	for i := range resp.Checkpoints {
		cp := &resp.Checkpoints[i]
		if err := witness.Verify(cp); err != nil || cp.Gateway != gateway {
			return nil, fmt.Errorf("witness %s answered a checkpoint that is not the gateway's: %v", witnessID, err)
		}
	}
	return resp.Checkpoints, nil
}
