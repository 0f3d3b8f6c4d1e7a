package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/testcluster"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/node"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// TestPartitionedNodeLosesLease runs every peer on libp2p's mocknet and cuts
// the link between a node and its gateway in the middle of a job: the
// gateway lets the lease lapse and the job completes on another node as
// attempt 2. When the link heals, the cut-off node learns from its next
// heartbeat that the lease is gone, and its result for attempt 1 is refused
// as stale; the stored result stays the other node's.
func TestPartitionedNodeLosesLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testcluster.Start(t, ctx, testcluster.Options{Mocknet: true, Gateway: func(cfg *gateway.Config) { cfg.Lease = 2 * time.Second }})
	st, gwID := c.GW.Store(), c.GW.Peer().ID()
	if _, err := st.Setup("owner@example.org", "correct horse battery", "Owner"); err != nil {
		t.Fatal(err)
	}
	csv := readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))
	tbl, err := dataset.ReadCSV(bytesReader(csv), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	ds := &store.Dataset{Name: "pima", Tags: []string{"medical"}, Visibility: "public", Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := st.PutDataset(ds, csv); err != nil {
		t.Fatal(err)
	}
	cl, _ := c.Scientist(t, ctx, "ds@example.org")

	// Node A trains for real, but only once the test lets it: it holds
	// the job for as long as the partition needs. started tells the test
	// that A has the lease, the plan and the data, and heartbeats.
	var logA testcluster.Log
	release, started := make(chan struct{}), make(chan struct{})
	var startOnce sync.Once
	nodeA := c.AddNode(t, ctx, func(cfg *node.Config) {
		cfg.Logger = logA.Logger()
		cfg.Train = func(ctx context.Context, p *plan.Plan, tbl dataset.Source, o plan.TrainOptions) (*plan.Model, error) {
			startOnce.Do(func() { close(started) })
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return plan.TrainSource(ctx, p, tbl, o)
		}
	})
	defer close(release)
	planJSON := readFile(t, filepath.Join("..", "plan", "testdata", "logreg_pima.json"))
	j, err := cl.Submit(ctx, gwID, ds.ID, planJSON)
	if err != nil {
		t.Fatal(err)
	}
	job := func() *store.Job {
		got, err := st.Job(j.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatalf("node A never started the job; its log:\n%s", logA.String())
	}
	if got := job(); got.State != wire.StateRunning || got.Node != nodeA.ID().String() {
		t.Fatalf("node A trains a job that is %s on %q", got.State, got.Node)
	}

	if err := c.Mock.Cut(nodeA.ID(), gwID); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the gateway to take the lease back", func() error {
		if got := job(); got.State == wire.StateRunning && got.Attempt == 1 {
			return fmt.Errorf("attempt 1 still running, lease until %s", got.LeaseExpires)
		}
		return nil
	})
	nodeB := c.AddNode(t, ctx, nil)
	wait.For(t, time.Minute, "the job to finish", func() error {
		if got := job(); got.State != wire.StateSucceeded && got.State != wire.StateFailed {
			return fmt.Errorf("job is %s (attempt %d on %q)", got.State, got.Attempt, got.Node)
		}
		return nil
	})
	if got := job(); got.State != wire.StateSucceeded || got.Attempt != 2 || got.Node != nodeB.ID().String() {
		t.Fatalf("after the partition: %s attempt %d on %s (node B is %s): %s", got.State, got.Attempt, got.Node, nodeB.ID(), got.Error)
	}
	stored, err := st.Result(j.ID)
	if err != nil {
		t.Fatal(err)
	}

	if err := c.Mock.Heal(nodeA.ID(), gwID); err != nil {
		t.Fatal(err)
	}
	// Node A redials by itself; its next heartbeat for attempt 1 is refused.
	wait.For(t, 30*time.Second, "node A to learn it lost the lease", func() error {
		if !logA.Has("lease lost") {
			return fmt.Errorf("node A's log:\n%s", logA.String())
		}
		return nil
	})
	h := nodeA.Peer()
	late := &wire.ResultRequest{Job: j.ID, Attempt: 1, Model: json.RawMessage(`{"format":"fedgrid.model/v1"}`)}
	if _, err := p2p.Call[wire.ResultRequest, wire.Ack](ctx, h.Host, gwID, h.Protocol(wire.ProtoResult), late, p2p.Limits{MaxRequest: wire.MaxModel}); !p2p.IsCode(err, p2p.CodeStale) {
		t.Fatalf("node A's late result for attempt 1: %v", err)
	}
	again, err := st.Result(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(stored) {
		t.Fatal("the stored result changed after the stale delivery")
	}
	if got := job(); got.State != wire.StateSucceeded || got.Attempt != 2 || got.Node != nodeB.ID().String() {
		t.Fatalf("the healed node changed the job: %s attempt %d on %s", got.State, got.Attempt, got.Node)
	}
}
