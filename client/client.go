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
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// Config of a client.
type Config struct {
	Network   string
	Bootstrap []string
	// Identity is the data scientist's key (fedgrid keygen); nil = a throwaway key, enough for search.
	Identity crypto.PrivKey
	PSK      []byte
	Logger   *slog.Logger
	// PerGateway bounds each gateway's dial + catalog answer; default 5 s.
	PerGateway time.Duration
}

// Client talks to a fedgrid network.
type Client struct {
	cfg  Config
	peer *p2p.Peer
}

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
	p, err := p2p.New(ctx, p2p.Config{Identity: sk, Network: cfg.Network, NoListen: true, Bootstrap: cfg.Bootstrap, DHTMode: p2p.DHTClient, PSK: cfg.PSK, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, peer: p}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := p.WaitRouting(wctx, 1); err != nil {
		_ = p.Close()
		return nil, fmt.Errorf("cannot reach the network through %s: %v", strings.Join(cfg.Bootstrap, ", "), err)
	}
	return c, nil
}

// ID is the client's peer ID.
func (c *Client) ID() peer.ID { return c.peer.ID() }

// Close stops the client's peer.
func (c *Client) Close() error { return c.peer.Close() }

// Result is one dataset found by Search.
type Result struct {
	Gateway     string            `json:"gateway"`
	GatewayName string            `json:"gateway_name"`
	Addrs       []string          `json:"addrs"`
	Dataset     wire.CatalogEntry `json:"dataset"`
	Ref         string            `json:"ref"` // GATEWAY_PEER_ID/DATASET_ID, what train --dataset takes
}

// SearchProgress reports how a search goes, for a progress line.
type SearchProgress struct {
	Found, Answered, Failed int
}

// Search finds every live gateway providing all tags (none = every gateway)
// and asks each for its matching datasets. Gateways are asked concurrently,
// each within PerGateway; one that cannot be dialled is left out.
func (c *Client) Search(ctx context.Context, tags []string, progress func(SearchProgress)) ([]Result, error) {
	keys := []string{}
	for _, t := range tags {
		t = strings.TrimSpace(t)
		if t != "" {
			keys = append(keys, t)
		}
	}
	var (
		mu      sync.Mutex
		seen    = map[peer.ID]bool{}
		results []Result
		prog    SearchProgress
		wg      sync.WaitGroup
		errs    []error
	)
	report := func() {
		if progress != nil {
			progress(prog)
		}
	}
	ask := func(ai peer.AddrInfo) {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(ctx, c.cfg.PerGateway)
		defer cancel()
		resp, err := c.catalog(ctx, ai, keys)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			prog.Failed++
			errs = append(errs, err)
			report()
			return
		}
		prog.Answered++
		addrs := make([]string, 0, len(ai.Addrs))
		for _, a := range c.peer.Host.Peerstore().Addrs(ai.ID) {
			addrs = append(addrs, a.String()+"/p2p/"+ai.ID.String())
		}
		sort.Strings(addrs)
		for _, d := range resp.Datasets {
			results = append(results, Result{Gateway: ai.ID.String(), GatewayName: resp.Name, Addrs: addrs, Dataset: d, Ref: ai.ID.String() + "/" + d.ID})
		}
		report()
	}
	lookup := func(key string) {
		ck := p2p.GatewaysKey(c.peer.Network)
		if key != "" {
			ck = c.peer.TagKey(key)
		}
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for ai := range c.peer.DHT.FindProvidersAsync(fctx, ck, 0) {
			mu.Lock()
			dup := seen[ai.ID]
			seen[ai.ID] = true
			if !dup {
				prog.Found++
				report()
			}
			mu.Unlock()
			if dup {
				continue
			}
			wg.Add(1)
			go ask(ai)
		}
	}
	if len(keys) == 0 {
		lookup("")
	} else {
		// Providers of the first tag are enough: a dataset carrying all tags carries it.
		lookup(keys[0])
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
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
	_ = errs // unreachable gateways are gone gateways: not listed
	return results, nil
}

func (c *Client) catalog(ctx context.Context, ai peer.AddrInfo, tags []string) (*wire.CatalogResponse, error) {
	if ai.ID == c.peer.ID() {
		return nil, errors.New("self")
	}
	if err := c.peer.Connect(ctx, ai); err != nil {
		return nil, err
	}
	resp, err := p2p.Call[wire.CatalogRequest, wire.CatalogResponse](ctx, c.peer.Host, ai.ID, c.peer.Protocol(wire.ProtoCatalog), &wire.CatalogRequest{Tags: tags},
		p2p.Limits{MaxRequest: wire.MaxSmall, MaxResponse: wire.MaxCatalog, Timeout: c.cfg.PerGateway})
	if err != nil {
		return nil, err
	}
	if resp.Gateway != ai.ID.String() {
		return nil, fmt.Errorf("gateway %s answered in the name of %s", ai.ID, resp.Gateway)
	}
	return resp, nil
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
func call[Req, Resp any](ctx context.Context, c *Client, gw peer.ID, proto string, req *Req, lim p2p.Limits) (*Resp, error) {
	ai, err := c.peer.FindPeer(ctx, gw)
	if err != nil {
		return nil, fmt.Errorf("gateway %s is not reachable: %v", gw, err)
	}
	if err := c.peer.Connect(ctx, ai); err != nil {
		return nil, fmt.Errorf("gateway %s is not reachable: %v", gw, err)
	}
	return p2p.Call[Req, Resp](ctx, c.peer.Host, gw, c.peer.Protocol(proto), req, lim)
}

// Submit sends a plan for a dataset; the gateway validates it and queues a job.
func (c *Client) Submit(ctx context.Context, gw peer.ID, datasetID string, planJSON []byte) (*wire.JobInfo, error) {
	if len(planJSON) > wire.MaxPlan {
		return nil, fmt.Errorf("plan is %d bytes; the limit is %d", len(planJSON), wire.MaxPlan)
	}
	if !json.Valid(planJSON) {
		return nil, errors.New("plan file is not valid JSON")
	}
	return call[wire.SubmitRequest, wire.JobInfo](ctx, c, gw, wire.ProtoSubmit, &wire.SubmitRequest{Dataset: datasetID, Plan: planJSON},
		p2p.Limits{MaxRequest: wire.MaxPlan + wire.MaxSmall, MaxResponse: wire.MaxSmall, Timeout: 30 * time.Second})
}

// Job returns the state of one of the caller's jobs.
func (c *Client) Job(ctx context.Context, gw peer.ID, id string) (*wire.JobInfo, error) {
	return call[wire.JobRequest, wire.JobInfo](ctx, c, gw, wire.ProtoJob, &wire.JobRequest{Job: id}, p2p.Limits{MaxRequest: wire.MaxSmall, MaxResponse: wire.MaxSmall, Timeout: 10 * time.Second})
}

// Wait polls a job until it ends, calling onUpdate on every change.
func (c *Client) Wait(ctx context.Context, gw peer.ID, id string, onUpdate func(*wire.JobInfo)) (*wire.JobInfo, error) {
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
			if wire.Terminal(j.State) {
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
	r, err := call[wire.JobRequest, wire.ModelResponse](ctx, c, gw, wire.ProtoModel, &wire.JobRequest{Job: id}, p2p.Limits{MaxRequest: wire.MaxSmall, MaxResponse: wire.MaxModel, Timeout: 2 * time.Minute})
	if err != nil {
		return nil, err
	}
	return r.Model, nil
}

// Cancel cancels one of the caller's jobs; a running node stops within seconds.
func (c *Client) Cancel(ctx context.Context, gw peer.ID, id string) (*wire.JobInfo, error) {
	return call[wire.JobRequest, wire.JobInfo](ctx, c, gw, wire.ProtoCancel, &wire.JobRequest{Job: id}, p2p.Limits{MaxRequest: wire.MaxSmall, MaxResponse: wire.MaxSmall, Timeout: 10 * time.Second})
}
