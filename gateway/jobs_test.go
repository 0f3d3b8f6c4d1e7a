package gateway_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/testcluster"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// env is a cluster with an owner, the diabetes set and registered data scientists.
type env struct {
	*cluster
	ds      *store.Dataset
	plan    []byte
	clients []*client.Client
	users   []*store.User
}

func setup(t *testing.T, ctx context.Context, scientists int) *env {
	t.Helper()
	e := &env{cluster: startCluster(t, ctx)}
	st := e.gw.Store()
	if _, err := st.Setup("owner@example.org", "correct horse battery", "Owner"); err != nil {
		t.Fatal(err)
	}
	csv := readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))
	tbl, err := dataset.ReadCSV(bytesReader(csv), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	e.ds = &store.Dataset{Name: "pima", Tags: []string{"medical"}, Visibility: "public", Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := st.PutDataset(e.ds, csv); err != nil {
		t.Fatal(err)
	}
	e.plan = readFile(t, filepath.Join("..", "plan", "testdata", "logreg_pima.json"))
	for i := 0; i < scientists; i++ {
		cl, u := e.Scientist(t, ctx, string(rune('a'+i))+"@example.org")
		e.clients = append(e.clients, cl)
		e.users = append(e.users, u)
	}
	return e
}

// slowPlan trains long enough to be cancelled or lost mid-way.
func slowPlan(t *testing.T) []byte {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join("..", "plan", "testdata", "mlp_pima.json")), &p); err != nil {
		t.Fatal(err)
	}
	p["train"] = map[string]any{"epochs": 10000, "batch_size": 1, "seed": 1}
	b, _ := json.Marshal(p)
	return b
}

// listenOffers subscribes a bare peer to the gateway's offer topic and
// returns how many offers of a job it has heard so far.
func (e *env) listenOffers(t *testing.T, ctx context.Context) func(job string) int {
	t.Helper()
	p := e.Peer(t, ctx, p2p.Config{})
	testcluster.Connect(t, ctx, p, e.gw.Addrs())
	topic, err := p.PubSub.Join(p.Topic(wire.JobsTopic(e.gw.ID())))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	heard := map[string]int{}
	done := make(chan struct{})
	go func() { // owned by the test: the cleanup cancels the subscription and waits
		defer close(done)
		for {
			m, err := sub.Next(ctx)
			if err != nil {
				return
			}
			var o wire.Offer
			if json.Unmarshal(m.Data, &o) == nil {
				mu.Lock()
				heard[o.Job]++
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		sub.Cancel()
		<-done
		_ = topic.Close()
	})
	return func(job string) int {
		mu.Lock()
		defer mu.Unlock()
		return heard[job]
	}
}

func (e *env) job(t *testing.T, id string) *store.Job {
	t.Helper()
	j, err := e.gw.Store().Job(id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// A gateway with no node keeps the job queued; it starts as soon as a node joins.
func TestQueueWaitsForNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	j, err := e.clients[0].Submit(ctx, e.gw.Peer().ID(), e.ds.ID, e.plan)
	if err != nil {
		t.Fatal(err)
	}
	// Several offer rounds pass with nobody to take it: a listener on the
	// gateway's offer topic hears them.
	offers := e.listenOffers(t, ctx)
	wait.For(t, 20*time.Second, "three offers of the job", wait.Is(func() bool { return offers(j.ID) >= 3 }))
	if s := e.job(t, j.ID).State; s != wire.StateQueued {
		t.Fatalf("job without nodes is %s", s)
	}
	e.startNode(t, ctx)
	done, err := e.clients[0].Wait(ctx, e.gw.Peer().ID(), j.ID, nil)
	if err != nil || done.State != wire.StateSucceeded {
		t.Fatalf("after a node joined: %+v %v", done, err)
	}
}

// A node that takes a lease and dies: the lease expires, the job goes to a
// live node, exactly one result is stored and the dead attempt's late result
// is refused as stale.
func TestLostNodeFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	gwID := e.gw.Peer().ID()

	// A "node" that claims and then goes silent.
	tok, _, _ := e.gw.Store().CreateJoinToken(time.Minute)
	ghost, err := p2p.New(ctx, p2p.Config{DataDir: t.TempDir(), Network: "gwtest", Listen: []string{loopback}, Bootstrap: e.gw.Addrs(), DHTMode: p2p.DHTClient})
	if err != nil {
		t.Fatal(err)
	}
	defer ghost.Close()
	if _, err := p2p.Call[wire.EnrollRequest, wire.EnrollResponse](ctx, ghost.Host, gwID, ghost.Protocol(wire.ProtoEnroll), &wire.EnrollRequest{Token: tok, Slots: 1}, p2p.Limits{}); err != nil {
		t.Fatal(err)
	}
	j, err := e.clients[0].Submit(ctx, gwID, e.ds.ID, e.plan)
	if err != nil {
		t.Fatal(err)
	}
	grant, err := p2p.Call[wire.ClaimRequest, wire.ClaimResponse](ctx, ghost.Host, gwID, ghost.Protocol(wire.ProtoClaim), &wire.ClaimRequest{Job: j.ID}, p2p.Limits{})
	if err != nil || grant.Attempt != 1 {
		t.Fatalf("ghost claim: %+v %v", grant, err)
	}
	// A second claim of the same job is refused: one lease per attempt.
	if _, err := p2p.Call[wire.ClaimRequest, wire.ClaimResponse](ctx, ghost.Host, gwID, ghost.Protocol(wire.ProtoClaim), &wire.ClaimRequest{Job: j.ID}, p2p.Limits{}); !p2p.IsCode(err, p2p.CodeConflict) {
		t.Fatalf("double grant: %v", err)
	}
	e.startNode(t, ctx)
	done, err := e.clients[0].Wait(ctx, gwID, j.ID, nil)
	if err != nil || done.State != wire.StateSucceeded || done.Attempt != 2 {
		t.Fatalf("failover: %+v %v", done, err)
	}
	stored, _ := e.gw.Store().Result(j.ID)
	// The ghost wakes up and returns attempt 1's "result": refused.
	_, err = p2p.Call[wire.ResultRequest, wire.Ack](ctx, ghost.Host, gwID, ghost.Protocol(wire.ProtoResult), &wire.ResultRequest{Job: j.ID, Attempt: 1, Model: json.RawMessage(`{"format":"fedgrid.model/v1"}`)}, p2p.Limits{MaxRequest: wire.MaxModel})
	if !p2p.IsCode(err, p2p.CodeStale) {
		t.Fatalf("late result of a lost attempt: %v", err)
	}
	again, _ := e.gw.Store().Result(j.ID)
	if string(again) != string(stored) {
		t.Fatal("the stored result changed after a stale delivery")
	}
}

// A peer publishing forged offers on a gateway's topic is rejected by the
// nodes' validators and loses gossipsub score; no node claims a forged job.
func TestForgedOffersRejected(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 0)
	nd := e.startNode(t, ctx)
	rogue, err := p2p.New(ctx, p2p.Config{DataDir: t.TempDir(), Network: "gwtest", Listen: []string{loopback}})
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	if err := rogue.Connect(ctx, nd.Peer().Host.Peerstore().PeerInfo(nd.ID())); err != nil {
		// the node's addresses are its own; dial them directly
		ai, _ := p2p.ParseAddrInfos(nd.Addrs())
		if err := rogue.Connect(ctx, ai[0]); err != nil {
			t.Fatal(err)
		}
	}
	topic, err := rogue.PubSub.Join(rogue.Topic(wire.JobsTopic(e.gw.ID())))
	if err != nil {
		t.Fatal(err)
	}
	defer topic.Close()
	wait.For(t, 10*time.Second, "rogue to see the node on the topic", wait.Is(func() bool {
		for _, p := range topic.ListPeers() {
			if p == nd.ID() {
				return true
			}
		}
		return false
	}))
	for i := 0; i < 20; i++ {
		forged, _ := json.Marshal(wire.Offer{Gateway: e.gw.ID(), Job: "forged", Expires: time.Now().Add(time.Minute), Seq: int64(i)})
		if err := topic.Publish(ctx, forged); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 15*time.Second, "the rogue's score to drop", wait.Is(func() bool { return nd.Peer().Score(rogue.ID()) < 0 }))
	if _, err := e.gw.Store().Job("forged"); err == nil {
		t.Fatal("a forged job exists")
	}
	t.Logf("rogue's score at the node: %.1f", nd.Peer().Score(rogue.ID()))
}

// Cancelling a running job stops the node within seconds.
func TestCancelRunningJob(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	e.startNode(t, ctx)
	gwID := e.gw.Peer().ID()
	j, err := e.clients[0].Submit(ctx, gwID, e.ds.ID, slowPlan(t))
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 20*time.Second, "the job to run", wait.Is(func() bool { return e.job(t, j.ID).State == wire.StateRunning }))
	info, err := e.clients[0].Cancel(ctx, gwID, j.ID)
	if err != nil || info.State != wire.StateCancelled {
		t.Fatalf("cancel: %+v %v", info, err)
	}
	// The node learns it at its next heartbeat (<= 1 s) and frees its slot:
	// a new job runs on the single-slot node.
	j2, err := e.clients[0].Submit(ctx, gwID, e.ds.ID, e.plan)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done, err := e.clients[0].Wait(ctx, gwID, j2.ID, nil)
	if err != nil || done.State != wire.StateSucceeded {
		t.Fatalf("job after cancel: %+v %v", done, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the cancelled job held the node for %v", d)
	}
	if s := e.job(t, j.ID).State; s != wire.StateCancelled {
		t.Fatalf("cancelled job is now %s", s)
	}
}

// Removing a node cuts it off: its connection is closed and refused.
func TestRemovedNodeCutOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 0)
	nd := e.startNode(t, ctx)
	if err := e.gw.Store().RemoveNode(nd.ID().String()); err != nil {
		t.Fatal(err)
	}
	e.gw.RemoveNode(nd.ID().String())
	gwID := e.gw.Peer().ID()
	// The node keeps redialling; the gater refuses it every time. The call
	// below dials the gateway itself, so it meets the gater too.
	if _, err := p2p.Call[wire.ClaimRequest, wire.ClaimResponse](ctx, nd.Peer().Host, gwID, nd.Peer().Protocol(wire.ProtoClaim), &wire.ClaimRequest{Job: "x"}, p2p.Limits{Timeout: 3 * time.Second}); err == nil {
		t.Fatal("a removed node still talks to the gateway")
	}
	// A new token does not bring the same identity back.
	tok, _, _ := e.gw.Store().CreateJoinToken(time.Minute)
	if _, err := e.gw.Store().RedeemJoinToken(tok, nd.ID().String(), 1, "x"); err == nil {
		t.Fatal("removed node re-enrolled")
	}
}

// One user's burst does not starve another user's single job.
func TestFairQueue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := setup(t, ctx, 2)
	gwID := e.gw.Peer().ID()
	var burst []string
	for i := 0; i < 8; i++ {
		j, err := e.clients[0].Submit(ctx, gwID, e.ds.ID, e.plan)
		if err != nil {
			t.Fatal(err)
		}
		burst = append(burst, j.ID)
	}
	lone, err := e.clients[1].Submit(ctx, gwID, e.ds.ID, e.plan)
	if err != nil {
		t.Fatal(err)
	}
	e.startNode(t, ctx) // one slot: jobs run one by one
	done, err := e.clients[1].Wait(ctx, gwID, lone.ID, nil)
	if err != nil || done.State != wire.StateSucceeded {
		t.Fatalf("lone job: %+v %v", done, err)
	}
	before := 0
	for _, id := range burst {
		j := e.job(t, id)
		if !j.StartedAt.IsZero() && j.StartedAt.Before(done.StartedAt.UTC()) {
			before++
		}
		t.Logf("burst job %s started %s", id, j.StartedAt.Format("15:04:05.000"))
	}
	t.Logf("lone job started %s", done.StartedAt.UTC().Format("15:04:05.000"))
	if before > 2 {
		t.Fatalf("%d of the burst's jobs started before the other user's one", before)
	}
}

// TestPingBounds: an enrolled node's ping is refused when it claims more
// slots than enrolment allows or more free slots than it has; the scheduler
// would otherwise build an entry per claimed slot on every offer tick.
func TestPingBounds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	gwID := e.gw.Peer().ID()
	node := rawPeer(t, ctx, e)
	tok, _, _ := e.gw.Store().CreateJoinToken(time.Minute)
	if _, err := p2p.Call[wire.EnrollRequest, wire.EnrollResponse](ctx, node.Host, gwID, node.Protocol(wire.ProtoEnroll), &wire.EnrollRequest{Token: tok, Slots: 2}, p2p.Limits{}); err != nil {
		t.Fatal(err)
	}
	ping := func(slots, free int) error {
		_, err := p2p.Call[wire.PingRequest, wire.Ack](ctx, node.Host, gwID, node.Protocol(wire.ProtoPing), &wire.PingRequest{Slots: slots, Free: free}, p2p.Limits{})
		return err
	}
	if err := ping(2, 1); err != nil {
		t.Fatalf("good ping: %v", err)
	}
	for _, c := range [][2]int{{1_000_000_000, 1_000_000_000}, {0, 0}, {2, 3}, {2, -1}} {
		if err := ping(c[0], c[1]); !p2p.IsCode(err, p2p.CodeBadRequest) {
			t.Errorf("ping slots %d free %d: %v", c[0], c[1], err)
		}
	}
	if err := ping(2, 2); err != nil {
		t.Fatalf("the gateway stopped serving after bad pings: %v", err)
	}
}
