package gateway

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
)

// gatewaysTag stands for p2p.GatewaysKey in the provide loop; no dataset tag
// can take this form (tags are printable).
const gatewaysTag = "\x00gateways"

// Indexing states of a dataset (IndexState.State).
const (
	IndexPending  = "pending"  // not yet advertised in the DHT
	IndexProvided = "provided" // every key that finds it was provided
	IndexFailed   = "failed"   // the last attempt for one of its keys failed; retried
	IndexUnknown  = "unknown"  // no such dataset
)

// IndexState says whether a dataset can be found through the DHT: its tags'
// keys and the gateway's own key (for searches without tags).
type IndexState struct {
	State string `json:"state"`
	// At: provided - when the oldest of its keys was last provided;
	// failed - when the attempt failed.
	At    time.Time `json:"at,omitzero"`
	Error string    `json:"error,omitempty"`
}

// IndexState reports how far the advertisement of one dataset has got.
func (g *Gateway) IndexState(datasetID string) IndexState {
	d, err := g.store.Dataset(datasetID)
	if errors.Is(err, store.ErrNotFound) {
		return IndexState{State: IndexUnknown}
	}
	if err != nil {
		return IndexState{State: IndexFailed, Error: err.Error()}
	}
	t := indexTableOf(g)
	if t == nil {
		return IndexState{State: IndexPending}
	}
	return t.state(append([]string{gatewaysTag}, d.Tags...))
}

// tagState is the outcome of the last provide of one key.
type tagState struct {
	provided time.Time // last success
	failed   time.Time // last failure, if after the last success
	err      string
}

// indexTable holds a gateway's provide outcomes. The provide loop, which
// owns it, sets it up in Gateway.index and removes it when it ends.
type indexTable struct {
	mu      sync.Mutex
	tags    map[string]tagState
	waiting string // why nothing was attempted yet, if so
}

func indexTableOf(g *Gateway) *indexTable { return g.index.Load() }

func (t *indexTable) state(tags []string) IndexState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := IndexState{State: IndexProvided}
	for _, tag := range tags {
		s, ok := t.tags[tag]
		switch {
		case !ok:
			if out.State == IndexProvided {
				out = IndexState{State: IndexPending, Error: t.waiting}
			}
		case !s.failed.IsZero():
			return IndexState{State: IndexFailed, At: s.failed, Error: s.err}
		case out.State == IndexProvided && (out.At.IsZero() || s.provided.Before(out.At)):
			out.At = s.provided
		}
	}
	return out
}

func (t *indexTable) set(tag string, s tagState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tags[tag] = s
	t.waiting = ""
}

// provideLoop announces one DHT provider record per dataset tag, plus the
// gateway's own key: at start, whenever datasets change, every Reprovide
// (records expire after 48 h), and at once when a bootstrap peer comes back
// or the routing table refills after being empty - a restarted DHT server
// has lost the records it held. Keys no dataset carries any more are no
// longer provided, so their records lapse. It runs in the background, never
// on a request's path, and also keeps the catalog's preview summaries.
func (g *Gateway) provideLoop(ctx context.Context) {
	table := &indexTable{tags: map[string]tagState{}, waiting: "no DHT peer yet"}
	g.index.Store(table)
	defer g.index.Store(nil)

	bootstrap := map[peer.ID]bool{}
	if infos, err := p2p.ParseAddrInfos(g.cfg.Bootstrap); err == nil {
		for _, ai := range infos {
			bootstrap[ai.ID] = true
		}
	}
	// Rejoins drains the connection events itself: this loop spends
	// seconds in DHT provides, and a subscriber that stops reading stalls
	// every new connection of the host.
	var rejoinC <-chan struct{}
	watch, err := g.peer.WatchRejoins(slices.Collect(maps.Keys(bootstrap)))
	if err != nil {
		g.log.Error("watch bootstrap peers; a restarted bootstrap peer will get records only at the next reprovide", "err", err)
	} else {
		defer func() { _ = watch.Close() }()
		rejoinC = watch.C()
	}

	provided := map[string]time.Time{}
	// rejoined: bootstrap peers that came back, until every key has been
	// put to them directly (or the deadline passes).
	rejoined := map[peer.ID]time.Time{}
	routable := false
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	fast := time.NewTicker(200 * time.Millisecond)
	defer fast.Stop()
	for {
		dss, err := g.store.Datasets()
		if err != nil {
			g.log.Error("list datasets", "err", err)
		}
		tags := currentTags(dss)

		rt := g.peer.DHT.RoutingTable()
		if !routable && rt.Size() > 0 {
			clear(provided) // (re)joined the network: whatever we provided before may be gone
		}
		routable = rt.Size() > 0
		for id, deadline := range rejoined {
			if err := g.putAll(ctx, id, tags); err == nil {
				delete(rejoined, id)
				clear(provided) // and through the DHT too: other servers may have restarted as well
				g.log.Info("bootstrap peer back: every key put to it again", "peer", id)
			} else if time.Now().After(deadline) {
				delete(rejoined, id)
				g.log.Warn("bootstrap peer back but refuses provider records; they follow at the next reprovide", "peer", id, "err", err)
			}
		}

		for tag := range provided {
			if !tags[tag] {
				delete(provided, tag) // no dataset carries it any more: let its record lapse
			}
		}
		table.mu.Lock()
		for tag := range table.tags {
			if !tags[tag] {
				delete(table.tags, tag)
			}
		}
		table.mu.Unlock()
		for _, tag := range sortedTags(tags) {
			if last, ok := provided[tag]; ok && time.Since(last) < g.cfg.Reprovide {
				continue
			}
			if !routable {
				break // nobody to store the record yet; try again on the next tick
			}
			// Every client's search starts at the bootstrap peers: put the
			// record there directly first (cheap, and findable at once),
			// then provide it through the DHT to the closest peers.
			atBootstrap := false
			for id := range bootstrap {
				if err := g.peer.PutProviderAt(ctx, id, g.keyOf(tag)); err != nil {
					g.log.Debug("put provider record on bootstrap peer", "peer", id, "tag", tag, "err", err)
					continue
				}
				atBootstrap = true
			}
			pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := g.peer.DHT.Provide(pctx, g.keyOf(tag), true)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				g.log.Warn("provide tag", "tag", tag, "err", err, "on_bootstrap", atBootstrap)
				table.mu.Lock()
				prev := table.tags[tag]
				table.mu.Unlock()
				st := tagState{provided: prev.provided, failed: time.Now(), err: err.Error()}
				if atBootstrap {
					// Findable through the bootstrap peers; the DHT provide is retried.
					st = tagState{provided: time.Now()}
				}
				table.set(tag, st)
				continue
			}
			now := time.Now()
			provided[tag] = now
			table.set(tag, tagState{provided: now})
			g.log.Debug("tag provided", "tag", tag)
		}
		g.refreshSummaries(ctx, dss)

		tick := t.C
		if len(rejoined) > 0 {
			tick = fast.C
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick:
				break wait
			case <-g.provideCh:
				break wait
			case <-rejoinC:
				for _, id := range watch.Take() {
					rejoined[id] = time.Now().Add(30 * time.Second)
				}
				tick = fast.C
			}
		}
	}
}

func (g *Gateway) keyOf(tag string) cid.Cid {
	if tag == gatewaysTag {
		return p2p.GatewaysKey(g.peer.Network)
	}
	return g.peer.TagKey(tag)
}

// putAll stores a provider record for every key directly on one peer. A
// restarted DHT server (the network peer) has lost every record it held;
// it may not be among the closest peers a Provide would pick, but it is
// where every client's lookup starts.
func (g *Gateway) putAll(ctx context.Context, id peer.ID, tags map[string]bool) error {
	for _, tag := range sortedTags(tags) {
		if err := g.peer.PutProviderAt(ctx, id, g.keyOf(tag)); err != nil {
			return err
		}
	}
	return nil
}

func currentTags(dss []*store.Dataset) map[string]bool {
	set := map[string]bool{gatewaysTag: true}
	for _, d := range dss {
		for _, t := range d.Tags {
			set[t] = true
		}
	}
	return set
}

func sortedTags(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
