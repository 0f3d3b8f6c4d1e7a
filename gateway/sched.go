package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// PingInterval is how often an idle node tells its gateway it is alive (a
// node also pings at once when a slot comes free) while the gateway has at
// most PingInterval x MaxPingRate nodes. Every ping is a stream: with a
// thousand nodes, pings every 2 s cost the gateway more CPU than its jobs
// did (BENCHMARKS.md, issue 18).
const PingInterval = 5 * time.Second

// MaxPingRate bounds the idle pings a gateway asks for a second: with more
// than PingInterval x MaxPingRate nodes (250), each answer asks for the
// next ping later, up to MaxPingInterval (as Nomad spaces its clients'
// heartbeats), so the gateway's work for an idle fleet stops growing with
// it. A node that stops pinging counts as gone after three of its
// intervals; one that disconnects fails its next offer at once.
const MaxPingRate = 50

// MaxPingInterval is the longest interval between an idle node's pings. The
// admin app calls a node healthy if seen within 30 s: with touchEvery, a
// stored last-seen is then never older than that.
const MaxPingInterval = 15 * time.Second

// nodeLive is what the gateway knows of a node between its pings.
type nodeLive struct {
	slots, free int
	seen        time.Time
	every       time.Duration // the ping interval the node was last asked for
	memory      int64         // bytes one job may use there; 0: not said
	idx         int           // position in capacity.avail; -1 when not there
}

// capacity tracks the free slots of live nodes, so that the gateway offers
// no more jobs than there are nodes to run them (and one user's hundred jobs
// cannot crowd out the next user's one), and picks the node to offer a job
// to without looking at every node.
type capacity struct {
	mu    sync.Mutex
	nodes map[peer.ID]*nodeLive
	// avail holds the nodes with a free slot, for picking at random in
	// constant time. A node that stopped pinging is dropped from it when a
	// pick comes across it.
	avail []peer.ID
}

// live reports whether a node pinged recently enough to be offered work:
// within three of the intervals it was asked to ping at.
func (n *nodeLive) live(now time.Time) bool {
	return !n.seen.IsZero() && now.Sub(n.seen) <= 3*max(n.every, PingInterval)
}

// pingEvery is the idle ping interval for a gateway with nodes nodes:
// PingInterval, or longer so that nodes/interval stays within MaxPingRate,
// at most MaxPingInterval.
func pingEvery(nodes int) time.Duration {
	every := time.Duration((nodes+MaxPingRate-1)/MaxPingRate) * time.Second // whole seconds, as the answer says
	return min(max(every, PingInterval), MaxPingInterval)
}

// index keeps c.avail in step with n.free. The caller holds c.mu.
func (c *capacity) index(p peer.ID, n *nodeLive) {
	switch {
	case n.free > 0 && n.idx < 0:
		n.idx = len(c.avail)
		c.avail = append(c.avail, p)
	case n.free <= 0 && n.idx >= 0:
		c.unlist(n)
	}
}

// unlist removes n from c.avail. The caller holds c.mu.
func (c *capacity) unlist(n *nodeLive) {
	last := len(c.avail) - 1
	moved := c.avail[last]
	c.avail[n.idx] = moved
	c.nodes[moved].idx = n.idx
	c.avail = c.avail[:last]
	n.idx = -1
}

// ping records a node's ping. It reports whether the node has just become
// able to take work (it was not live, or had no free slot), which is when
// the offer loop has something new to do.
// It also returns the interval at which the node is to ping next.
func (c *capacity) ping(p peer.ID, slots, free int, memory int64) (newlyFree bool, every time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes == nil {
		c.nodes = map[peer.ID]*nodeLive{}
	}
	now := time.Now()
	n := c.nodes[p]
	if n == nil {
		n = &nodeLive{idx: -1}
		c.nodes[p] = n
	}
	wasFree := n.live(now) && n.free > 0
	n.slots, n.free, n.seen, n.memory = slots, max(0, min(free, slots)), now, max(memory, 0)
	n.every = pingEvery(len(c.nodes))
	c.index(p, n)
	return n.free > 0 && !wasFree, n.every
}

// answered records a node's free slots as it stated them answering a direct
// offer (down to 0 when it could not be reached).
func (c *capacity) answered(p peer.ID, free int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[p]; n != nil {
		n.free = max(0, min(free, n.slots))
		c.index(p, n)
	}
}

// took records a grant until the node's next ping says otherwise.
func (c *capacity) took(p peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[p]; n != nil && n.free > 0 {
		n.free--
		c.index(p, n)
	}
}

// released records a finished attempt.
func (c *capacity) released(p peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[p]; n != nil && n.free < n.slots {
		n.free++
		c.index(p, n)
	}
}

func (c *capacity) forget(p peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[p]; n != nil {
		if n.idx >= 0 {
			c.unlist(n)
		}
		delete(c.nodes, p)
	}
}

// pick chooses a live node with a free slot that a job needing need bytes
// fits (see fits), not in skip, by the power of two choices: of two such
// nodes drawn at random, the one with more free slots. It holds one of that
// node's slots (took) for the offer about to go to it. Its cost does not
// depend on the number of nodes, unless random draws find no node the job
// fits (a job only a few large nodes can take): then it looks at each.
func (c *capacity) pick(now time.Time, skip []peer.ID, need int64) (peer.ID, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var best peer.ID
	var bestNode *nodeLive
	seen := 0
	for draw := 0; draw < 16 && seen < 2 && len(c.avail) > 0; draw++ {
		p := c.avail[rand.IntN(len(c.avail))]
		n := c.nodes[p]
		if !n.live(now) {
			c.unlist(n) // back on its next ping
			continue
		}
		if slices.Contains(skip, p) || p == best || !fits(n.memory, need) {
			continue
		}
		seen++
		if bestNode == nil || n.free > bestNode.free {
			best, bestNode = p, n
		}
	}
	if bestNode == nil {
		// Few nodes left with a free slot, or few the job fits: look at
		// each rather than miss one.
		for i := len(c.avail) - 1; i >= 0; i-- {
			p := c.avail[i]
			n := c.nodes[p]
			if !n.live(now) {
				c.unlist(n)
				continue
			}
			if !slices.Contains(skip, p) && fits(n.memory, need) && (bestNode == nil || n.free > bestNode.free) {
				best, bestNode = p, n
			}
		}
	}
	if bestNode == nil {
		return "", false
	}
	bestNode.free--
	c.index(best, bestNode)
	return best, true
}

// free returns the free slots of nodes seen lately and how many such nodes there are.
func (c *capacity) free(now time.Time) (slots, live int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.live(now) {
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

// publishOffers offers as many queued jobs, in fair order, as live nodes
// have free slots. Each job is offered over a direct stream to one node
// picked among those with a free slot (see capacity.pick); a node that
// declines (its slot was taken meanwhile) is marked busy and the job goes to
// another. Only a job whose direct offers reached no node (maxDirect tried),
// or any job while no node has pinged, is gossiped to every node, again every
// OfferInterval until taken. The gateway's work per job does not grow with
// the number of nodes.
func (g *Gateway) publishOffers(ctx context.Context) {
	jobs, err := g.store.QueuedRefs()
	if err != nil {
		g.log.Error("list queued jobs", "err", err)
		return
	}
	now := g.cfg.Now()
	free, live := g.capacity.free(now)
	g.servedMu.Lock()
	order := fairOrder(jobs, now, g.served)
	g.servedMu.Unlock()
	g.offerMu.Lock()
	defer g.offerMu.Unlock()
	if g.offered == nil {
		g.offered = map[string]*offerState{}
	}
	queued := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		queued[j.ID] = true
	}
	// Jobs whose node is answering a direct offer or claiming hold a slot
	// already counted out of free.
	promised := 0
	for id, st := range g.offered {
		switch {
		case !queued[id]:
			delete(g.offered, id)
		case st.waiting(now):
			promised++
		}
	}
	limit := free + promised
	if live == 0 {
		limit = 1 // nodes that have not pinged yet (a restarted gateway) still hear one offer
	}
	if len(order) > limit {
		order = order[:limit]
	}
	for _, j := range order {
		st := g.offered[j.ID]
		if st == nil {
			st = &offerState{}
			g.offered[j.ID] = st
		}
		if st.waiting(now) {
			continue // its node is answering or claiming it
		}
		expires := now.Add(g.cfg.OfferTTL)
		if len(st.unreached) < maxDirect && live > 0 {
			select {
			case g.offerSlots <- struct{}{}:
			default:
				// As many direct offers in flight as allowed: the next
				// answer wakes this loop again.
				g.offerBacklog.Store(true)
				continue
			}
			p, ok := g.capacity.pick(now, st.unreached, j.MemoryNeed(true))
			if ok {
				st.to, st.at, st.inFlight, st.accepted = p, now, true, false
				o := wire.DirectOffer{Job: j.ID, Expires: expires, Memory: j.MemoryBytes, StreamMemory: j.StreamMemoryBytes}
				g.peer.Go(func(ctx context.Context) { g.offerDirect(ctx, o, p) })
				continue
			}
			<-g.offerSlots
			if !st.open && len(st.unreached) == 0 {
				// Every free slot is being offered: wait for a node to
				// answer, finish or ping.
				continue
			}
		}
		// No node has pinged yet (a restarted gateway), or direct offers
		// of this job reached no node: gossip it to every node.
		st.to, st.at, st.open, st.accepted = "", now, true, false
		if !g.gossip(ctx, wire.Offer{Gateway: g.ID(), Job: j.ID, Expires: expires, Free: free, Memory: j.MemoryBytes, StreamMemory: j.StreamMemoryBytes}) {
			return
		}
	}
}

// maxDirect is how many nodes a direct offer of a job may fail to reach
// before the job is gossiped.
const maxDirect = 2

// maxOffersInFlight bounds the direct offers waiting for an answer.
const maxOffersInFlight = 64

// offerTimeout bounds one direct offer, dial included. A node that is gone
// fails at once (its connection is closed); a node that got the offer may
// be slow to answer on a busy machine, and offering the job to another node
// meanwhile would only have both claim it, so the wait is long.
const offerTimeout = 10 * time.Second

// offerDirect offers job to node p over a stream and records the answer: a
// node that declines or does not answer is passed over, and the job goes to
// the next one (or to gossip) at once.
func (g *Gateway) offerDirect(ctx context.Context, o wire.DirectOffer, p peer.ID) {
	job := o.Job
	g.metrics.directOffers.Inc()
	octx, cancel := context.WithTimeout(ctx, offerTimeout)
	ans, err := p2p.Request(octx, g.peer, p, wire.OfferJob(), &o)
	cancel()
	<-g.offerSlots
	accepted := err == nil && ans.Accepted
	switch {
	case err != nil:
		g.capacity.answered(p, 0) // nothing more for it until it pings again
		if ctx.Err() == nil {
			g.log.Debug("direct offer not answered", "job", job, "node", p, "err", err)
		}
	default:
		g.capacity.answered(p, ans.Free)
	}
	// A node that got the offer but was slow to answer (a busy machine) is
	// not gone: the job goes directly to another node rather than to gossip.
	unreached := errors.Is(err, p2p.ErrNoStream)
	g.offerMu.Lock()
	if st := g.offered[job]; st != nil && st.to == p {
		st.inFlight = false
		if accepted {
			st.accepted, st.at = true, time.Now() // its claim is on the way
		} else {
			st.to = "" // offer it again now, to another node
		}
		if unreached {
			st.unreached = append(st.unreached, p)
		}
	}
	g.offerMu.Unlock()
	if g.offerBacklog.Swap(false) || !accepted {
		g.wake(g.kick)
	}
}

// directWait is how long the nodes that heard a gossiped offer have to
// claim it before the job is offered again.
const directWait = 500 * time.Millisecond

// claimWait is how long a node that accepted a direct offer has to claim the
// job before it is offered again: the node holds a slot for it and claims at
// once, but a busy machine may take seconds, and offering the job to another
// node meanwhile would have both claim it. It matches the node's claim
// timeout.
const claimWait = 10 * time.Second

// offerState is what the gateway remembers of a queued job's offers.
type offerState struct {
	unreached []peer.ID // nodes a direct offer of the job did not reach
	to        peer.ID   // node of the current direct offer, "" when none
	at        time.Time // when the last offer went out
	inFlight  bool      // the direct offer to `to` awaits its answer
	accepted  bool      // `to` accepted the direct offer and is claiming
	open      bool      // the job was gossiped to every node
}

// waiting reports whether a node is answering or claiming the job.
func (st *offerState) waiting(now time.Time) bool {
	if st.to == "" {
		return false
	}
	if st.accepted {
		return now.Sub(st.at) < claimWait
	}
	return st.inFlight || now.Sub(st.at) < directWait
}

// claimedDirect reports whether node p claims job on a direct offer (its
// slot was already counted when it was picked), and whether the job was
// ever gossiped, so that a grant is announced only where it was offered.
func (g *Gateway) claimedDirect(job string, p peer.ID) (direct, gossiped bool) {
	g.offerMu.Lock()
	defer g.offerMu.Unlock()
	st := g.offered[job]
	if st == nil {
		return false, false
	}
	return st.to == p, st.open
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
	g.metrics.gossipSends.Add(float64(len(g.topic.ListPeers())))
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

func (g *Gateway) handlePing(_ context.Context, c caller, req *wire.PingRequest) (*wire.PingResponse, error) {
	from := c.peer
	g.metrics.pings.Inc()
	// The scheduler builds one entry per free slot on every offer tick.
	if req.Slots < 1 || req.Slots > wire.MaxSlots || req.Free < 0 || req.Free > req.Slots {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "slots must be between 1 and %d and free between 0 and slots, got slots %d free %d", wire.MaxSlots, req.Slots, req.Free)
	}
	newlyFree, every := g.capacity.ping(from, req.Slots, req.Free, req.MaxJobMemory)
	if newlyFree {
		g.wake(g.kick)
	}
	resp := &wire.PingResponse{OK: true}
	if every != PingInterval { // left out at the default: what older nodes read
		resp.NextPing = int(every / time.Second)
	}
	return resp, nil
}
