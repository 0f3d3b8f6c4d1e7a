package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestCapacityPick: picks go only to live nodes with a free slot and not
// skipped, hold the slot they pick, and run out exactly when the free slots
// do; answers, grants and releases keep the picking set in step.
func TestCapacityPick(t *testing.T) {
	var c capacity
	now := time.Now()
	ids := make([]peer.ID, 1000)
	want := 0
	for i := range ids {
		ids[i] = peer.ID(fmt.Sprintf("node-%04d", i))
		free := i % 3 // 0, 1 or 2 free slots of 2
		c.ping(ids[i], 2, free, 0)
		if i%10 == 9 { // a tenth stopped pinging: nothing for four of their intervals
			c.nodes[ids[i]].seen = now.Add(-4 * c.nodes[ids[i]].every)
			continue
		}
		want += free
	}
	if free, live := c.free(now); free != want || live != 900 {
		t.Fatalf("free %d live %d, want %d and 900", free, live, want)
	}
	skip := []peer.ID{ids[1], ids[2]}
	got := map[peer.ID]int{}
	for n := 0; ; n++ {
		p, ok := c.pick(now, skip, 0)
		if !ok {
			break
		}
		if n > want {
			t.Fatal("more picks than free slots")
		}
		got[p]++
	}
	total := 0
	for p, k := range got {
		var i int
		if _, err := fmt.Sscanf(string(p), "node-%04d", &i); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 || p == ids[1] || p == ids[2] || k > i%3 {
			t.Fatalf("picked %s %d times (free %d)", p, k, i%3)
		}
		total += k
	}
	// Only the skipped nodes' slots are left.
	if total != want-3 {
		t.Fatalf("picked %d of %d free slots", total, want)
	}
	if free, _ := c.free(now); free != 3 {
		t.Fatalf("free %d after %d picks of %d", free, total, want)
	}
	// A release puts a node back in the picking set; a decline takes it out.
	c.released(ids[4])
	if p, ok := c.pick(now, skip, 0); !ok || p != ids[4] {
		t.Fatalf("after a release: picked %s %v", p, ok)
	}
	c.released(ids[4])
	c.answered(ids[4], 0)
	if p, ok := c.pick(now, skip, 0); ok {
		t.Fatalf("after a decline: picked %s", p)
	}
	// A ping after the decline makes it free again, and says so.
	if newlyFree, _ := c.ping(ids[4], 2, 1, 0); !newlyFree {
		t.Fatal("a node coming free was not reported")
	}
	if newlyFree, _ := c.ping(ids[4], 2, 1, 0); newlyFree {
		t.Fatal("a node already free was reported again")
	}
	// A job needs more memory than the node allows one job: not picked; one
	// that fits is.
	c.ping(ids[4], 2, 1, 1<<30)
	if p, ok := c.pick(now, skip, 2<<30); ok {
		t.Fatalf("a job too large for every node went to %s", p)
	}
	if p, ok := c.pick(now, skip, 1<<29); !ok || p != ids[4] {
		t.Fatalf("a job that fits: picked %s %v", p, ok)
	}
	c.forget(ids[4])
	if p, ok := c.pick(now, skip, 0); ok {
		t.Fatalf("after forgetting the node: picked %s", p)
	}
}

// TestPingEvery: a gateway asks for pings every PingInterval up to
// PingInterval x MaxPingRate nodes, then spaces them so that it hears at
// most MaxPingRate a second, up to MaxPingInterval; a node that skipped
// three of its intervals is no longer live.
func TestPingEvery(t *testing.T) {
	for _, tc := range []struct {
		nodes int
		want  time.Duration
	}{{0, PingInterval}, {1, PingInterval}, {250, PingInterval}, {251, 6 * time.Second}, {500, 10 * time.Second}, {1000, MaxPingInterval}, {100000, MaxPingInterval}} {
		if got := pingEvery(tc.nodes); got != tc.want {
			t.Errorf("%d nodes: every %v, want %v", tc.nodes, got, tc.want)
		}
		if rate := float64(tc.nodes) / pingEvery(tc.nodes).Seconds(); tc.want < MaxPingInterval && rate > MaxPingRate {
			t.Errorf("%d nodes: %.0f pings/s", tc.nodes, rate)
		}
	}
	var c capacity
	var every time.Duration
	for i := range 600 {
		_, every = c.ping(peer.ID(fmt.Sprintf("node-%04d", i)), 1, 1, 0)
	}
	if every != 12*time.Second {
		t.Fatalf("600th node asked to ping every %v, want 12s", every)
	}
	n := c.nodes[peer.ID("node-0599")]
	if now := n.seen.Add(3 * every); !n.live(now) {
		t.Fatal("a node three of its intervals after its ping is not live")
	}
	if now := n.seen.Add(3*every + time.Second); n.live(now) {
		t.Fatal("a node that missed three of its intervals is live")
	}
	if p, ok := c.pick(n.seen.Add(time.Hour), nil, 0); ok {
		t.Fatalf("picked %s, silent for an hour", p)
	}
}
