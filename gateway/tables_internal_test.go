package gateway

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// TestTableCache: concurrent loads of one dataset parse it once; the cache
// stays within its bytes, least recently used out first; a replaced dataset
// (a new version) is parsed again.
func TestTableCache(t *testing.T) {
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	put := func(id string, rows int) *dataset.Table {
		var b bytes.Buffer
		b.WriteString("x,y\n")
		for i := range rows {
			fmt.Fprintf(&b, "%d,%d\n", i, i%2)
		}
		tb, err := dataset.ReadCSV(bytes.NewReader(b.Bytes()), dataset.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutDataset(&store.Dataset{ID: id, Name: id, Columns: tb.Columns(), Rows: tb.NumRows()}, b.Bytes()); err != nil {
			t.Fatal(err)
		}
		return tb
	}
	one := put("a", 1000).MemSize()
	put("b", 1000)
	put("c", 1000)
	c := newTableCache(2*one + one/2) // room for two
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, tb, err := c.table(st, "a"); err != nil || tb.NumRows() != 1000 {
				t.Errorf("load a: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := c.parses.Load(); n != 1 {
		t.Fatalf("10 concurrent loads parsed %d times", n)
	}
	for _, id := range []string{"b", "a", "c"} { // a used after b: b goes
		if _, _, err := c.table(st, id); err != nil {
			t.Fatal(err)
		}
	}
	if c.used > c.max || c.parses.Load() != 3 {
		t.Fatalf("used %d of %d after %d parses", c.used, c.max, c.parses.Load())
	}
	if _, _, err := c.table(st, "a"); err != nil || c.parses.Load() != 3 {
		t.Fatalf("a was evicted: %d parses, %v", c.parses.Load(), err)
	}
	if _, _, err := c.table(st, "b"); err != nil || c.parses.Load() != 4 {
		t.Fatalf("b was kept: %d parses, %v", c.parses.Load(), err)
	}
	put("a", 500) // a new version of a
	if _, tb, err := c.table(st, "a"); err != nil || tb.NumRows() != 500 || c.parses.Load() != 5 {
		t.Fatalf("new version of a: %d parses, %v", c.parses.Load(), err)
	}
	if _, _, err := c.table(st, "nope"); err == nil {
		t.Fatal("a missing dataset loaded")
	}
}
