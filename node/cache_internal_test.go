package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/dataset/frames"
	"github.com/fedgrid/fedgrid/wire"
)

// shardStream is a table of rows rows as job/data sends it, and its spec.
func shardStream(t *testing.T, rows int) ([]byte, wire.DataSpec) {
	t.Helper()
	var b strings.Builder
	b.WriteString("a,b\n")
	for i := range rows {
		fmt.Fprintf(&b, "%d,%d\n", i, i%3)
	}
	tab, err := dataset.ReadCSV(strings.NewReader(b.String()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := frames.NewWriter(&buf, frames.Header{Columns: tab.Columns(), Rows: rows}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Scan(context.Background(), 0, rows, 500, w.Write); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), wire.DataSpec{Rows: rows, Columns: tab.Columns()}
}

func key(i int) string { return fmt.Sprintf("%064x", i) }

// The cache keeps what fits its size, evicting the least recently used
// file; a damaged file is a miss and is removed; a crash's temp file is
// removed at start.
func TestShardCacheLRUAndDamage(t *testing.T) {
	dir := t.TempDir()
	stream, spec := shardStream(t, 3000)
	size := int64(len(frames.Magic) + len(stream))
	if err := os.WriteFile(filepath.Join(dir, key(9)+".123.tmp"), []byte("half a shard"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := openShardCache(dir, 2*size, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Fatalf("temp files left at start: %v", left)
	}
	fill := func(i int) {
		t.Helper()
		f, err := c.fill(key(i), bytes.NewReader(stream), spec)
		if err != nil {
			t.Fatal(err)
		}
		if f.NumRows() != 3000 {
			t.Fatalf("%d rows", f.NumRows())
		}
		_ = f.Close()
	}
	has := func(i int) bool {
		t.Helper()
		f, err := c.open(key(i))
		if err != nil {
			t.Fatal(err)
		}
		if f == nil {
			return false
		}
		_ = f.Close()
		return true
	}
	// Modification times order the files; set them apart explicitly
	// rather than waiting for the clock.
	age := func(i int, ago time.Duration) {
		tm := time.Now().Add(-ago)
		if err := os.Chtimes(c.path(key(i)), tm, tm); err != nil {
			t.Fatal(err)
		}
	}
	fill(1)
	age(1, 2*time.Hour)
	fill(2)
	age(2, time.Hour)
	if !has(1) { // touches 1: now 2 is the least recently used
		t.Fatal("key 1 missing")
	}
	fill(3)
	if has(2) || !has(1) || !has(3) {
		t.Fatalf("after a third fill: 1 %v, 2 %v, 3 %v; want 2 evicted", has(1), has(2), has(3))
	}
	if has(4) {
		t.Fatal("a key never filled is a hit")
	}

	// A flipped byte in the middle of key 3's file: a miss, and removed.
	p := c.path(key(3))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if has(3) {
		t.Fatal("a damaged file is a hit")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("the damaged file is still there: %v", err)
	}

	// A stream cut short or not what job/open said leaves nothing behind.
	if _, err := c.fill(key(5), bytes.NewReader(stream[:len(stream)-10]), spec); err == nil {
		t.Fatal("a stream cut short was cached")
	}
	other := spec
	other.Rows = 10
	if _, err := c.fill(key(6), bytes.NewReader(stream), other); err == nil {
		t.Fatal("a stream of other rows than announced was cached")
	}
	if has(5) || has(6) {
		t.Fatal("a failed fill left a file")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
	small, err := openShardCache(t.TempDir(), size/2, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := small.fill(key(7), bytes.NewReader(stream), spec); err == nil || !strings.Contains(err.Error(), "--cache-size") {
		t.Fatalf("a shard over the cache size: %v", err)
	}
	if _, err := c.open("../../etc/passwd"); err == nil {
		t.Fatal("a key that is a path")
	}
}
