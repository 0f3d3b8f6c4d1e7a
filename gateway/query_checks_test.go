package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// TestQueryChecksBeforeWork: 20 concurrent DP queries with a wrong column
// or without budget are refused, and audited, before the dataset is read: no
// parse (the gateway's parse counter stays 0) and little allocation (Go's
// cumulative allocation over the 20 stays under 4 CSV sizes; the 20 parses
// they once made allocated far more). Allowed queries scan the stored
// column, each once, and load no table. A data-parallel plan beyond the gateway's --max-workers or
// --max-rounds is refused at submit.
func TestQueryChecksBeforeWork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	st := e.gw.Store()
	gwID := e.gw.Peer().ID()
	cl := e.clients[0]
	var buf bytes.Buffer
	buf.WriteString("age,score,note\n")
	for i := range 100_000 {
		fmt.Fprintf(&buf, "%d.%06d,%d,some text in row %d\n", 20+i%60, i, i%5, i)
	}
	tbl, err := dataset.ReadCSV(bytes.NewReader(buf.Bytes()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	d := &store.Dataset{Name: "ages", Visibility: store.VisibilityPrivate, Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := st.PutDataset(d, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	scans := e.gw.DatasetScans()

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := wire.QueryRequest{Dataset: d.ID, Stat: wire.StatMean, Column: "age", Epsilon: 1, Lower: 0, Upper: 100}
			switch i % 3 {
			case 0:
				q.Column = "no_such_column"
			case 1:
				q.Column = "note" // text
			}
			_, errs[i] = cl.Query(ctx, gwID, q) // no budget at all
		}()
	}
	wg.Wait()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	for i, err := range errs {
		want := p2p.CodeBadRequest
		if i%3 == 2 {
			want = p2p.CodeInsufficientBudget
		}
		if !p2p.IsCode(err, want) {
			t.Fatalf("query %d: %v, want %s", i, err, want)
		}
	}
	if n := e.gw.DatasetScans() - scans; n != 0 {
		t.Fatalf("refused queries read the dataset %d times", n)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("20 refused queries: %d reads, %d KiB allocated in this process (the CSV is %d KiB)", e.gw.DatasetScans()-scans, alloc>>10, buf.Len()>>10)
	if alloc > uint64(buf.Len())*4 {
		t.Fatalf("20 refused queries allocated %d bytes; 20 parses of the %d-byte CSV would allocate many times that, none should", alloc, buf.Len())
	}
	refused, err := st.Audit(store.AuditFilter{Action: "query.refused"})
	if err != nil || len(refused) != 20 {
		t.Fatalf("%d refused queries audited (%v), want 20", len(refused), err)
	}

	// With budget, each query scans the stored column; none loads the table.
	if _, err := st.GrantBudget(e.users[0].ID, 2_000_000, "", "test"); err != nil {
		t.Fatal(err)
	}
	scans = e.gw.DatasetScans()
	for range 2 {
		resp, err := cl.Query(ctx, gwID, wire.QueryRequest{Dataset: d.ID, Stat: wire.StatMean, Column: "age", Epsilon: 1, Lower: 0, Upper: 100})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Rows != tbl.NumRows() {
			t.Fatalf("query over %d rows, want %d", resp.Rows, tbl.NumRows())
		}
	}
	if s := e.gw.DatasetScans() - scans; s != 2 {
		t.Fatalf("two answered queries scanned the dataset %d times, want 2", s)
	}
}

func TestParallelPlanBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	var p map[string]any
	if err := json.Unmarshal(e.plan, &p); err != nil {
		t.Fatal(err)
	}
	tr := p["train"].(map[string]any)
	for _, c := range []struct {
		workers, rounds int
		field           string
	}{{64, 2, "train.workers is 64"}, {2, 1000, "train.rounds is 1000"}} {
		tr["workers"], tr["rounds"] = c.workers, c.rounds
		b, _ := json.Marshal(p)
		_, err := e.clients[0].Submit(ctx, e.gw.Peer().ID(), e.ds.ID, b)
		if !p2p.IsCode(err, p2p.CodeBadRequest) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("workers %d rounds %d: %v", c.workers, c.rounds, err)
		}
	}
}
