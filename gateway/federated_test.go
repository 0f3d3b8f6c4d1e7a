package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// FedAvg over 3 nodes on the diabetes set reaches held-out accuracy within
// 0.02 of training the same plan on one node. One split's 154 held-out rows
// make single runs differ by a few rows either way, so the test compares the
// mean over four splits.
func TestFedAvgMatchesSingleNode(t *testing.T) {
	if testing.Short() {
		t.Skip("trains twice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	all, err := dataset.ReadCSV(bytes.NewReader(readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		e.startNode(t, ctx)
	}
	gwID := e.gw.Peer().ID()
	var p map[string]any
	if err := json.Unmarshal(e.plan, &p); err != nil {
		t.Fatal(err)
	}
	// A calm optimizer, so that both runs converge and the comparison
	// measures FedAvg rather than the noise of the last steps.
	p["optimizer"] = map[string]any{"name": "adam", "learning_rate": 0.01}
	singleJSON, _ := json.Marshal(p)
	tr := p["train"].(map[string]any)
	tr["workers"], tr["rounds"], tr["epochs"] = 3, 5, 20
	fedJSON, _ := json.Marshal(p)

	var sumSingle, sumFed float64
	const splits = 4
	for seed := int64(1); seed <= splits; seed++ {
		trainT, holdout := all.Split(0.2, seed)
		var buf bytes.Buffer
		if err := trainT.WriteCSV(&buf); err != nil {
			t.Fatal(err)
		}
		ds := &store.Dataset{Name: "pima-train", Tags: []string{"medical"}, Visibility: "public", Columns: trainT.Columns(), Rows: trainT.NumRows()}
		if err := e.gw.Store().PutDataset(ds, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		single, _ := e.trainModel(t, ctx, ds.ID, singleJSON)
		fed, info := e.trainModel(t, ctx, ds.ID, fedJSON)
		// Every round ran as 3 shard jobs on the nodes.
		for r := 1; r <= 5; r++ {
			for s := 0; s < 3; s++ {
				id := fmt.Sprintf("%s-r%d-s%d", info.ID, r, s)
				if sj, err := e.gw.Store().Job(id); err != nil || sj.State != wire.StateSucceeded || sj.Node == "" {
					t.Fatalf("shard job %s: %+v %v", id, sj, err)
				}
				// The shards are the gateway's: their plans carry statistics
				// fitted on every row, their metrics are computed on the data.
				if _, err := e.clients[0].Job(ctx, gwID, id); !p2p.IsCode(err, p2p.CodeNotFound) {
					t.Fatalf("the requester reads shard job %s: %v", id, err)
				}
			}
		}
		if len(fed.Metrics.TrainLoss) != 5 {
			t.Fatalf("want a loss per round, got %v", fed.Metrics.TrainLoss)
		}
		es, err := plan.Evaluate(single, holdout)
		if err != nil {
			t.Fatal(err)
		}
		ef, err := plan.Evaluate(fed, holdout)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("split %d held-out accuracy: single node %.4f, FedAvg 3 nodes x 5 rounds %.4f", seed, es.Accuracy, ef.Accuracy)
		sumSingle += es.Accuracy
		sumFed += ef.Accuracy
	}
	ms, mf := sumSingle/splits, sumFed/splits
	t.Logf("mean held-out accuracy: single node %.4f, FedAvg %.4f", ms, mf)
	if math.Abs(ms-mf) > 0.02 {
		t.Fatalf("FedAvg %.4f vs single node %.4f: more than 0.02 apart", mf, ms)
	}
}

// A node lost mid-round has its shard re-queued; the round and the job still complete.
func TestFedAvgShardReassigned(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	gwID := e.gw.Peer().ID()
	tok, _, _ := e.gw.Store().CreateJoinToken(time.Minute)
	ghost, err := p2p.New(ctx, p2p.Config{DataDir: t.TempDir(), Network: "gwtest", Listen: []string{loopback}, Bootstrap: e.gw.Addrs(), DHTMode: p2p.DHTClient})
	if err != nil {
		t.Fatal(err)
	}
	defer ghost.Close()
	if _, err := p2p.Call[wire.EnrollRequest, wire.EnrollResponse](ctx, ghost.Host, gwID, ghost.Protocol(wire.ProtoEnroll), &wire.EnrollRequest{Token: tok, Slots: 1}, p2p.Limits{}); err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	_ = json.Unmarshal(e.plan, &p)
	tr := p["train"].(map[string]any)
	tr["workers"], tr["rounds"], tr["epochs"] = 2, 2, 5
	fedJSON, _ := json.Marshal(p)
	j, err := e.clients[0].Submit(ctx, gwID, e.ds.ID, fedJSON)
	if err != nil {
		t.Fatal(err)
	}
	shard0 := j.ID + "-r1-s0"
	wait.For(t, 10*time.Second, "round 1's shard jobs", wait.Is(func() bool { _, err := e.gw.Store().Job(shard0); return err == nil }))
	// The ghost takes shard 0 of round 1, fetches its data, and dies.
	grant, err := p2p.Call[wire.ClaimRequest, wire.ClaimResponse](ctx, ghost.Host, gwID, ghost.Protocol(wire.ProtoClaim), &wire.ClaimRequest{Job: shard0}, p2p.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := p2p.Call[wire.FetchRequest, wire.FetchResponse](ctx, ghost.Host, gwID, ghost.Protocol(wire.ProtoFetch), &wire.FetchRequest{Job: shard0, Attempt: grant.Attempt}, p2p.Limits{MaxResponse: wire.MaxShard})
	if err != nil {
		t.Fatal(err)
	}
	shardTable, err := dataset.ReadCSV(bytes.NewReader(f.CSV), dataset.Limits{})
	if err != nil || shardTable.NumRows() != 384 {
		t.Fatalf("shard 0 of 2 of 768 rows: %v rows, %v", shardTable.NumRows(), err)
	}
	_ = ghost.Close()
	e.startNode(t, ctx)
	e.startNode(t, ctx)
	done, err := e.clients[0].Wait(ctx, gwID, j.ID, nil)
	if err != nil || done.State != wire.StateSucceeded {
		t.Fatalf("data-parallel job after a lost shard: %+v %v", done, err)
	}
	if s0, _ := e.gw.Store().Job(shard0); s0.Attempt != 2 || s0.State != wire.StateSucceeded {
		t.Fatalf("shard 0 should have succeeded on its second attempt: %+v", s0)
	}
}

// trainModel submits planJSON on dataset dsID as the first scientist,
// waits for the job to succeed and returns its model.
func (e *env) trainModel(t *testing.T, ctx context.Context, dsID string, planJSON []byte) (*plan.Model, *wire.JobInfo) {
	t.Helper()
	gwID := e.gw.Peer().ID()
	j, err := e.clients[0].Submit(ctx, gwID, dsID, planJSON)
	if err != nil {
		t.Fatal(err)
	}
	j, err = e.clients[0].Wait(ctx, gwID, j.ID, nil)
	if err != nil || j.State != wire.StateSucceeded {
		t.Fatalf("job: %+v %v", j, err)
	}
	b, err := e.clients[0].Model(ctx, gwID, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	m, err := plan.ParseModel(b)
	if err != nil {
		t.Fatal(err)
	}
	return m, j
}
