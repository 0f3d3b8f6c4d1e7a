package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fedgrid/fedgrid/dataset/frames"
	"github.com/fedgrid/fedgrid/wire"
)

// DefaultCacheSize bounds the shard cache when Config.CacheSize is 0.
const DefaultCacheSize = 8 << 30

// shardCache keeps the rows of jobs in the node's data directory
// (shards/<key>.shard, the key being wire.DataSpec.Key: a dataset version,
// a shard definition, the columns), so that a later job on the same rows
// (the next round of a data-parallel job, another plan on the same data)
// reads them from disk instead of the network.
//
// A file is written as <key>.*.tmp, synced and renamed: a crash leaves a
// temp file (removed at the next start), never a partial shard. A hit is
// checked whole (layout and every frame's checksum) before it is used, and
// every frame again whenever training reads it; a damaged file is removed
// and the rows fetched again. The total
// size is bounded: after each write the least recently used files are
// removed (a hit touches its file's modification time). A file removed
// while a job reads it stays readable to that job (its descriptor is open).
type shardCache struct {
	dir string
	max int64
	lim frames.Limits
	log *slog.Logger
	mu  sync.Mutex // serialises fills and evictions
}

func openShardCache(dir string, max int64, log *slog.Logger) (*shardCache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("shard cache: %w", err)
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
	for _, t := range tmps {
		_ = os.Remove(t) // left by a crash during a fill
	}
	return &shardCache{dir: dir, max: max, lim: frames.Limits{MaxFrame: wire.MaxFrame}, log: log}, nil
}

func (c *shardCache) path(key string) string { return filepath.Join(c.dir, key+".shard") }

// open returns the cached rows of key, or nil when the cache does not hold
// them. A damaged file is removed (and is a miss).
func (c *shardCache) open(key string) (*frames.File, error) {
	if !wire.ValidKey(key) {
		return nil, fmt.Errorf("data key %q is not a key", key)
	}
	p := c.path(key)
	f, err := frames.Open(p, c.lim)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil
	case errors.Is(err, frames.ErrMalformed):
		c.log.Warn("shard cache file damaged; fetching again", "file", p, "err", err)
		_ = os.Remove(p)
		return nil, nil
	case err != nil:
		return nil, err
	}
	if err := f.Verify(); err != nil {
		_ = f.Close()
		c.log.Warn("shard cache file damaged; fetching again", "file", p, "err", err)
		_ = os.Remove(p)
		return nil, nil
	}
	now := time.Now()
	_ = os.Chtimes(p, now, now)
	return f, nil
}

// fill writes the stream r (checked frame by frame) as key's file and
// opens it. want is what job/open said the rows are.
func (c *shardCache) fill(key string, r io.Reader, want wire.DataSpec) (_ *frames.File, err error) {
	if !wire.ValidKey(key) {
		return nil, fmt.Errorf("data key %q is not a key", key)
	}
	fr, err := frames.NewReader(r, frames.Limits{MaxFrame: wire.MaxFrame, MaxRows: want.Rows})
	if err != nil {
		return nil, err
	}
	if h := fr.Header(); h.Rows != want.Rows || !slices.Equal(h.Columns, want.Columns) {
		return nil, fmt.Errorf("the data stream has %d rows and columns %v; job/open said %d rows and %v", h.Rows, h.Columns, want.Rows, want.Columns)
	}
	tmp, err := os.CreateTemp(c.dir, key+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("shard cache: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	w := bufio.NewWriterSize(tmp, 256<<10)
	size := int64(len(frames.Magic))
	if _, err := w.WriteString(frames.Magic); err != nil {
		return nil, err
	}
	if _, err := w.Write(fr.HeaderFrame()); err != nil {
		return nil, err
	}
	for {
		_, frame, rerr := fr.Next()
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return nil, rerr
		}
		if size += int64(len(frame)); size > c.max {
			return nil, fmt.Errorf("the job's data is more than the node's shard cache may hold (%d bytes); give the node a larger --cache-size", c.max)
		}
		if _, err := w.Write(frame); err != nil {
			return nil, fmt.Errorf("shard cache: %w", err)
		}
		if rerr != nil { // io.EOF: the end frame, written
			break
		}
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("shard cache: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("shard cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("shard cache: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := os.Rename(tmp.Name(), c.path(key)); err != nil {
		return nil, fmt.Errorf("shard cache: %w", err)
	}
	if d, err := os.Open(c.dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	c.evict(key)
	return frames.Open(c.path(key), c.lim)
}

// evict removes the least recently used files but keep until the cache is
// within its size. The caller holds c.mu.
func (c *shardCache) evict(keep string) {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	type file struct {
		name string
		size int64
		used time.Time
	}
	var files []file
	var total int64
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".shard") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		files = append(files, file{e.Name(), info.Size(), info.ModTime()})
		total += info.Size()
	}
	slices.SortFunc(files, func(a, b file) int { return a.used.Compare(b.used) })
	for _, f := range files {
		if total <= c.max {
			return
		}
		if f.name == keep+".shard" {
			continue
		}
		if err := os.Remove(filepath.Join(c.dir, f.name)); err == nil {
			total -= f.size
			c.log.Info("shard cache: evicted", "file", f.name, "bytes", f.size)
		}
	}
}
