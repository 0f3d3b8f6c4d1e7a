package gateway

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// PingInterval is how often an idle node tells its gateway it is alive.
const PingInterval = 2 * time.Second

// nodeLive is what the gateway knows of a node between its pings.
type nodeLive struct {
	slots, free int
	seen        time.Time
	memory      int64 // bytes one job may use there; 0: not said
}

// capacity tracks the free slots of live nodes, so that the gateway offers
// no more jobs than there are nodes to run them (and one user's hundred jobs
// cannot crowd out the next user's one).
type capacity struct {
	mu    sync.Mutex
	nodes map[peer.ID]*nodeLive
}

func (c *capacity) ping(p peer.ID, slots, free int, memory int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes == nil {
		c.nodes = map[peer.ID]*nodeLive{}
	}
	c.nodes[p] = &nodeLive{slots: slots, free: max(0, min(free, slots)), seen: time.Now(), memory: max(memory, 0)}
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

// freeSlots lists one entry per free slot of live nodes, in a stable order.
func (c *capacity) freeSlots(now time.Time) []peer.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []peer.ID
	for id, n := range c.nodes {
		if now.Sub(n.seen) <= 3*PingInterval {
			for i := 0; i < n.free; i++ {
				out = append(out, id)
			}
		}
	}
	slices.Sort(out)
	return out
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
func fairOrder(jobs []store.JobRef, now time.Time, lastServed map[string]time.Time) []store.JobRef {
	byUser := map[string][]store.JobRef{}
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
	out := make([]store.JobRef, 0, len(jobs))
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
	jobs, err := g.store.QueuedRefs()
	if err != nil {
		g.log.Error("list queued jobs", "err", err)
		return
	}
	now := g.cfg.Now()
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
	// Direct each offer at one free slot, so that one node claims each job
	// instead of every idle node racing for the same one. A directed offer
	// is not repeated while its node has directWait to claim; a job that two
	// directed offers did not place is offered open, to whoever is free.
	g.offerMu.Lock()
	defer g.offerMu.Unlock()
	if g.offered == nil {
		g.offered = map[string]*offerState{}
	}
	queued := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		queued[j.ID] = true
	}
	promised := map[peer.ID]int{}
	for id, st := range g.offered {
		switch {
		case !queued[id]:
			delete(g.offered, id)
		case st.to != "" && now.Sub(st.at) < directWait:
			promised[st.to]++
		}
	}
	var avail []peer.ID
	for _, p := range g.capacity.freeSlots(now) {
		if promised[p] > 0 {
			promised[p]--
			continue
		}
		avail = append(avail, p)
	}
	for _, j := range order {
		st := g.offered[j.ID]
		if st == nil {
			st = &offerState{}
			g.offered[j.ID] = st
		}
		if st.to != "" && now.Sub(st.at) < directWait {
			continue // its node is claiming it
		}
		o := wire.Offer{Gateway: g.ID(), Job: j.ID, Expires: now.Add(g.cfg.OfferTTL), Free: free, Memory: j.MemoryBytes}
		st.to, st.at = "", now
		if i := g.capacity.firstFitting(avail, j.MemoryBytes); st.directed < 2 && i >= 0 {
			st.to, avail = avail[i], slices.Delete(avail, i, i+1)
			st.directed++
			o.For = st.to.String()
		}
		if !g.gossip(ctx, o) {
			return
		}
	}
}

// directWait is how long a node named in a directed offer has to claim it
// before the job is offered again.
const directWait = 500 * time.Millisecond

// offerState is what the gateway remembers of a queued job's offers.
type offerState struct {
	directed int       // directed offers so far
	to       peer.ID   // node of the last directed offer, "" after an open one
	at       time.Time // when the last offer went out
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
	g.served[user] = g.cfg.Now()
}

func (g *Gateway) handlePing(_ context.Context, c caller, req *wire.PingRequest) (*wire.Ack, error) {
	from := c.peer
	// The scheduler builds one entry per free slot on every offer tick.
	if req.Slots < 1 || req.Slots > wire.MaxSlots || req.Free < 0 || req.Free > req.Slots {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "slots must be between 1 and %d and free between 0 and slots, got slots %d free %d", wire.MaxSlots, req.Slots, req.Free)
	}
	_, wasLive := g.capacity.free(time.Now())
	g.capacity.ping(from, req.Slots, req.Free, req.MaxJobMemory)
	if req.Free > 0 || wasLive == 0 {
		g.wake(g.kick)
	}
	return &wire.Ack{OK: true}, nil
}
