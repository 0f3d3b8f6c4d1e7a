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
		if i%10 == 9 { // a tenth stopped pinging
			c.nodes[ids[i]].seen = now.Add(-4 * PingInterval)
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
	if !c.ping(ids[4], 2, 1, 0) {
		t.Fatal("a node coming free was not reported")
	}
	if c.ping(ids[4], 2, 1, 0) {
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
