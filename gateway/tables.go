package gateway

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// tableCache keeps datasets read whole, keyed by dataset version, in bounded
// memory (least recently used out first, by dataset.Table.MemSize), so that
// DP queries, shard fetches and data-parallel rounds parse a dataset once
// however often they read it. Concurrent loads of one version share one
// parse. Tables are immutable, so callers share them.
type tableCache struct {
	max    int64
	mu     sync.Mutex
	used   int64
	lru    *list.List // of *tableEntry, most recent first
	byKey  map[string]*list.Element
	loads  map[string]*tableLoad
	parses atomic.Int64 // tables loaded whole, for tests and metrics
	scans  atomic.Int64 // streamed reads that loaded no table (DP queries)
}

type tableEntry struct {
	key  string
	t    *dataset.Table
	size int64
}

type tableLoad struct {
	done chan struct{}
	t    *dataset.Table
	err  error
}

func newTableCache(maxBytes int64) *tableCache {
	return &tableCache{max: maxBytes, lru: list.New(), byKey: map[string]*list.Element{}, loads: map[string]*tableLoad{}}
}

// tableKey names one version of a dataset: a replaced dataset keeps its ID
// but not its content hash (nor, usually, its size and creation time).
func tableKey(d *store.Dataset) string {
	return fmt.Sprintf("%s\x00%s\x00%d\x00%d\x00%d", d.ID, d.SHA256, d.Size, d.Rows, d.CreatedAt.UnixNano())
}

// table returns the parsed dataset id, from the cache or by reading and
// parsing it (once for concurrent callers).
func (c *tableCache) table(st *store.Store, id string) (*store.Dataset, *dataset.Table, error) {
	d, err := st.Dataset(id)
	if err != nil {
		return nil, nil, err
	}
	key := tableKey(d)
	c.mu.Lock()
	if e, ok := c.byKey[key]; ok {
		c.lru.MoveToFront(e)
		c.mu.Unlock()
		return d, e.Value.(*tableEntry).t, nil
	}
	if l, ok := c.loads[key]; ok {
		c.mu.Unlock()
		<-l.done
		return d, l.t, l.err
	}
	l := &tableLoad{done: make(chan struct{})}
	c.loads[key] = l
	c.mu.Unlock()

	l.t, l.err = c.parse(st, d)
	c.mu.Lock()
	delete(c.loads, key)
	if l.err == nil {
		c.add(key, l.t)
	}
	c.mu.Unlock()
	close(l.done)
	return d, l.t, l.err
}

// parse reads the dataset's stored version whole into a table; it refuses
// one whose version changed between the two reads, and one that would need
// more than maxTableBytes of memory (the consumers that need a whole table
// are cut for datasets that fit in memory; scans serve the others).
func (c *tableCache) parse(st *store.Store, want *store.Dataset) (*dataset.Table, error) {
	d, v, err := st.OpenDataset(want.ID)
	if err != nil {
		return nil, err
	}
	defer func() { _ = v.Close() }()
	if tableKey(d) != tableKey(want) {
		return nil, fmt.Errorf("dataset %s changed while it was read; try again", want.ID)
	}
	c.parses.Add(1)
	t, err := dataset.Collect(context.Background(), v, maxTableBytes)
	if err != nil {
		return nil, fmt.Errorf("read dataset %s: %w", d.ID, err)
	}
	return t, nil
}

// maxTableBytes bounds a table read whole (dataset.Table.MemSize).
const maxTableBytes = 4 * wire.MaxShard

// add caches t under key (c.mu held), evicting the least recently used
// tables to stay within max; a table larger than max is not kept.
func (c *tableCache) add(key string, t *dataset.Table) {
	size := t.MemSize()
	if size > c.max {
		return
	}
	for c.used+size > c.max {
		old := c.lru.Back()
		e := old.Value.(*tableEntry)
		c.lru.Remove(old)
		delete(c.byKey, e.key)
		c.used -= e.size
	}
	c.byKey[key] = c.lru.PushFront(&tableEntry{key: key, t: t, size: size})
	c.used += size
}

// DatasetParses returns how many times this gateway has read a dataset
// whole into memory for data-parallel rounds (each version once while it
// stays cached). DP queries and shard fetches scan the stored columns
// instead (DatasetScans).
func (g *Gateway) DatasetParses() int64 { return g.tables.parses.Load() }

// DatasetScans returns how many DP queries read a dataset as a streamed
// scan of its stored columns.
func (g *Gateway) DatasetScans() int64 { return g.tables.scans.Load() }
