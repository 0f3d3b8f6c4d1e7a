package gateway

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// PingInterval is how often an idle node tells its gateway it is alive.
const PingInterval = 2 * time.Second

// nodeLive is what the gateway knows of a node between its pings.
type nodeLive struct {
	slots, free int
	seen        time.Time
}

// capacity tracks the free slots of live nodes, so that the gateway offers
// no more jobs than there are nodes to run them (and one user's hundred jobs
// cannot crowd out the next user's one).
type capacity struct {
	mu    sync.Mutex
	nodes map[peer.ID]*nodeLive
}

func (c *capacity) ping(p peer.ID, slots, free int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes == nil {
		c.nodes = map[peer.ID]*nodeLive{}
	}
	c.nodes[p] = &nodeLive{slots: slots, free: max(0, min(free, slots)), seen: time.Now()}
}

// took records a grant until the node's next ping says otherwise.
func (c *capacity) took(p peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[p]; n != nil && n.free > 0 {
		n.free--
	}
}

// released records a finished attempt.
func (c *capacity) released(p peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[p]; n != nil && n.free < n.slots {
		n.free++
	}
}

func (c *capacity) forget(p peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, p)
}

// free returns the free slots of nodes seen lately and how many such nodes there are.
func (c *capacity) free(now time.Time) (slots, live int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if now.Sub(n.seen) <= 3*PingInterval {
			slots += n.free
			live++
		}
	}
	return slots, live
}

// fairOrder interleaves queued jobs round-robin across users, each user's
// jobs oldest first, leaving out jobs still backing off. Users go in the order
// in which they were last served (never served first), then by their oldest
// waiting job: a user with a hundred queued jobs gets one slot in turn with
// a user who has one.
func fairOrder(jobs []*store.Job, now time.Time, lastServed map[string]time.Time) []*store.Job {
	byUser := map[string][]*store.Job{}
	var users []string
	for _, j := range jobs { // jobs come oldest first
		if now.Before(j.NotBefore) {
			continue
		}
		if _, ok := byUser[j.UserID]; !ok {
			users = append(users, j.UserID)
		}
		byUser[j.UserID] = append(byUser[j.UserID], j)
	}
	slices.SortStableFunc(users, func(a, b string) int {
		if c := lastServed[a].Compare(lastServed[b]); c != 0 {
			return c
		}
		return byUser[a][0].QueuedAt.Compare(byUser[b][0].QueuedAt)
	})
	out := make([]*store.Job, 0, len(jobs))
	for round := 0; len(out) < cap(out); round++ {
		added := false
		for _, u := range users {
			if round < len(byUser[u]) {
				out = append(out, byUser[u][round])
				added = true
			}
		}
		if !added {
			break
		}
	}
	return out
}

// publishOffers gossips offers for as many queued jobs, in fair order, as
// live nodes have free slots.
func (g *Gateway) publishOffers(ctx context.Context) {
	jobs, err := g.store.QueuedJobs()
	if err != nil {
		g.log.Error("list queued jobs", "err", err)
		return
	}
	now := time.Now()
	free, live := g.capacity.free(now)
	if live == 0 {
		free = 1 // nodes that have not pinged yet (a restarted gateway) still hear one offer
	}
	g.servedMu.Lock()
	order := fairOrder(jobs, now, g.served)
	g.servedMu.Unlock()
	if len(order) > free {
		order = order[:free]
	}
	for _, j := range order {
		o := wire.Offer{Gateway: g.ID(), Job: j.ID, Expires: now.Add(g.cfg.OfferTTL)}
		if ds, err := g.store.Dataset(j.DatasetID); err == nil {
			o.Rows = ds.Rows
		}
		if !g.gossip(ctx, o) {
			return
		}
	}
}

// gossip publishes one offer; false if the topic is unusable (shutting down).
func (g *Gateway) gossip(ctx context.Context, o wire.Offer) bool {
	g.seqMu.Lock()
	g.offerSeq++
	o.Seq = g.offerSeq
	g.seqMu.Unlock()
	b, err := json.Marshal(o)
	if err != nil {
		return true
	}
	if err := g.topic.Publish(ctx, b); err != nil {
		if ctx.Err() == nil {
			g.log.Warn("publish offer", "job", o.Job, "err", err)
		}
		return false
	}
	return true
}

// servedUser records a grant for fairOrder.
func (g *Gateway) servedUser(user string) {
	g.servedMu.Lock()
	defer g.servedMu.Unlock()
	if g.served == nil {
		g.served = map[string]time.Time{}
	}
	g.served[user] = time.Now()
}

func (g *Gateway) handlePing(_ context.Context, from peer.ID, req *wire.PingRequest) (*wire.Ack, error) {
	if err := g.enrolledNode(from); err != nil {
		return nil, err
	}
	_, wasLive := g.capacity.free(time.Now())
	g.capacity.ping(from, req.Slots, req.Free)
	if req.Free > 0 || wasLive == 0 {
		g.wake(g.kick)
	}
	return &wire.Ack{OK: true}, nil
}
