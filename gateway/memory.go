package gateway

import (
	"github.com/libp2p/go-libp2p/core/peer"
)

// fits reports whether a job needing need bytes fits a node whose jobs may
// use memory bytes (0 on either side: not known, so it fits).
func fits(memory, need int64) bool { return memory == 0 || need == 0 || need <= memory }

// said records the memory a job may use on node p (from its enrolment),
// without counting it live.
func (c *capacity) said(p peer.ID, memory int64) {
	if memory <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes == nil {
		c.nodes = map[peer.ID]*nodeLive{}
	}
	if n := c.nodes[p]; n != nil {
		n.memory = memory
		return
	}
	c.nodes[p] = &nodeLive{memory: memory, idx: -1}
}

// largestMemory returns the most memory a job may use on any node that has
// said (live or not), and whether any has.
func (c *capacity) largestMemory() (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var top int64
	for _, n := range c.nodes {
		top = max(top, n.memory)
	}
	return top, top > 0
}
