package gateway_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/leaktest"
	"github.com/fedgrid/fedgrid/internal/testcluster"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/network"
	"github.com/fedgrid/fedgrid/node"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

func TestMain(m *testing.M) { leaktest.VerifyMain(m) }

const loopback = testcluster.Loopback

// cluster is a network peer and one gateway (lease 3 s) in this process,
// on loopback TCP; startNode adds nodes.
type cluster struct {
	*testcluster.Cluster
	net *network.Network
	gw  *gateway.Gateway
}

func startCluster(t testing.TB, ctx context.Context) *cluster {
	t.Helper()
	tc := testcluster.Start(t, ctx, testcluster.Options{Network: "gwtest"})
	return &cluster{Cluster: tc, net: tc.Net, gw: tc.GW}
}

func (c *cluster) startNode(t testing.TB, ctx context.Context) *node.Node {
	t.Helper()
	return c.AddNode(t, ctx, nil)
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTrainEndToEnd: a data scientist finds a dataset by tag, submits a
// plan, a node trains it, and the released model is signed and accurate.
func TestTrainEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startCluster(t, ctx)
	st := c.gw.Store()
	if _, err := st.Setup("owner@example.org", "correct horse battery", "Owner"); err != nil {
		t.Fatal(err)
	}
	csv := readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))
	tbl, err := dataset.ReadCSV(bytesReader(csv), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	ds := &store.Dataset{Name: "pima", Tags: []string{"medical", "diabetes"}, Visibility: "public", Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := st.PutDataset(ds, csv); err != nil {
		t.Fatal(err)
	}
	sk, err := p2p.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := p2p.PeerIDOf(sk)
	if _, err := st.CreateUser(store.NewUser{Email: "ds@example.org", Password: "a long password", Name: "DS", Role: store.RoleDataScientist, PeerID: pid.String()}); err != nil {
		t.Fatal(err)
	}
	c.startNode(t, ctx)

	cl, err := client.New(ctx, client.Config{Network: "gwtest", Bootstrap: c.net.Addrs(), Identity: sk})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// The tag's provider record appears in the background.
	var res []client.Result
	wait.For(t, 30*time.Second, "the dataset to be found by tag", func() error {
		if res, err = cl.Search(ctx, []string{"medical"}, nil); err != nil {
			return err
		}
		if len(res) == 0 {
			return errors.New("no result yet")
		}
		return nil
	})
	if len(res) != 1 || res[0].Dataset.ID != ds.ID || res[0].Dataset.Rows != 768 {
		t.Fatalf("search: %+v", res)
	}
	if none, _ := cl.Search(ctx, []string{"medical", "oncology"}, nil); len(none) != 0 {
		t.Fatalf("AND of tags matched a dataset without both: %+v", none)
	}

	planJSON := readFile(t, filepath.Join("..", "plan", "testdata", "logreg_pima.json"))
	j, err := cl.Submit(ctx, c.gw.Peer().ID(), ds.ID, planJSON)
	if err != nil {
		t.Fatal(err)
	}
	j, err = cl.Wait(ctx, c.gw.Peer().ID(), j.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != wire.StateSucceeded || j.Attempt != 1 {
		t.Fatalf("job ended %s (attempt %d): %s", j.State, j.Attempt, j.Error)
	}
	b, err := cl.Model(ctx, c.gw.Peer().ID(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	m, err := plan.ParseModel(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.VerifyModel(m); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// The job and its signed model name the dataset version trained on.
	wantHash := store.ContentHash(csv)
	if j.DatasetVersion != 1 || j.DatasetSHA256 != wantHash {
		t.Fatalf("job names dataset version %d %q, want 1 %q", j.DatasetVersion, j.DatasetSHA256, wantHash)
	}
	if pv := m.Provenance; pv.DatasetVersion != 1 || pv.DatasetSHA256 != wantHash || pv.Dataset != ds.ID {
		t.Fatalf("model provenance %+v, want dataset %s version 1 %s", pv, ds.ID, wantHash)
	}
	ev, err := plan.Evaluate(m, tbl)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Accuracy < 0.74 {
		t.Fatalf("training accuracy %.3f", ev.Accuracy)
	}
	// One changed weight breaks the signature.
	for k, p := range m.Params {
		p.Data[0] += 0.001
		m.Params[k] = p
		break
	}
	if err := gateway.VerifyModel(m); err == nil {
		t.Fatal("tampered model verified")
	}
}

// TestRefusals: strangers and bad plans are refused with reasons, and the
// gateway keeps serving.
func TestRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := startCluster(t, ctx)
	st := c.gw.Store()
	if _, err := st.Setup("owner@example.org", "correct horse battery", "Owner"); err != nil {
		t.Fatal(err)
	}
	csv := readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))
	tbl, _ := dataset.ReadCSV(bytesReader(csv), dataset.Limits{})
	ds := &store.Dataset{Name: "pima", Tags: []string{"medical"}, Visibility: "private", Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := st.PutDataset(ds, csv); err != nil {
		t.Fatal(err)
	}
	stranger, err := client.New(ctx, client.Config{Network: "gwtest", Bootstrap: c.net.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	planJSON := readFile(t, filepath.Join("..", "plan", "testdata", "logreg_pima.json"))
	gwID := c.gw.Peer().ID()
	if _, err := stranger.Submit(ctx, gwID, ds.ID, planJSON); !p2p.IsCode(err, p2p.CodeUnauthorized) {
		t.Fatalf("stranger's submit: %v", err)
	}
	// A stranger cannot claim or fetch: it is not an enrolled node.
	h := c.net.Peer().Host // any peer that is not enrolled
	if _, err := p2p.Call[wire.ClaimRequest, wire.ClaimResponse](ctx, h, gwID, c.gw.Peer().Protocol(wire.ProtoClaim), &wire.ClaimRequest{Job: "x"}, p2p.Limits{}); !p2p.IsCode(err, p2p.CodeForbidden) {
		t.Fatalf("stranger's claim: %v", err)
	}
	if _, err := p2p.Call[wire.FetchRequest, wire.FetchResponse](ctx, h, gwID, c.gw.Peer().Protocol(wire.ProtoFetch), &wire.FetchRequest{Job: "x", Attempt: 1}, p2p.Limits{MaxResponse: wire.MaxShard}); !p2p.IsCode(err, p2p.CodeForbidden) {
		t.Fatalf("stranger's fetch: %v", err)
	}
	// A bad join token is refused.
	if _, err := node.Start(ctx, node.Config{DataDir: t.TempDir(), Network: "gwtest", Listen: []string{loopback}, Gateway: c.gw.Addrs()[0], JoinToken: "forged"}); err == nil {
		t.Fatal("forged join token accepted")
	}

	sk, _ := p2p.GenerateIdentity()
	pid, _ := p2p.PeerIDOf(sk)
	if _, err := st.CreateUser(store.NewUser{Email: "ds@example.org", Password: "a long password", Name: "DS", Role: store.RoleDataScientist, PeerID: pid.String()}); err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(ctx, client.Config{Network: "gwtest", Bootstrap: c.net.Addrs(), Identity: sk})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for name, bad := range map[string]string{
		"unknown op":     `{"format":"fedgrid.plan/v1","name":"x","features":["glucose"],"label":"diabetes","params":{"w":{"shape":[1,1],"init":"zeros"}},"forward":[{"op":"exec_shell","in":["x"],"out":"y_hat"}],"loss":{"op":"bce","in":["y_hat","y"]},"optimizer":{"name":"sgd","learning_rate":0.1},"train":{"epochs":1,"batch_size":8}}`,
		"missing column": `{"format":"fedgrid.plan/v1","name":"x","features":["nope"],"label":"diabetes","params":{"w":{"shape":[1,1],"init":"zeros"},"b":{"shape":[1],"init":"zeros"}},"forward":[{"op":"matmul","in":["x","w"],"out":"z"},{"op":"add","in":["z","b"],"out":"z"},{"op":"sigmoid","in":["z"],"out":"y_hat"}],"loss":{"op":"bce","in":["y_hat","y"]},"optimizer":{"name":"sgd","learning_rate":0.1},"train":{"epochs":1,"batch_size":8}}`,
		"not json":       `{"format":`,
	} {
		if _, err := cl.Submit(ctx, gwID, ds.ID, []byte(bad)); err == nil {
			t.Fatalf("%s: plan accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// Someone else's (or a missing) job does not exist for this user.
	if _, err := cl.Job(ctx, gwID, "nope"); !p2p.IsCode(err, p2p.CodeNotFound) {
		t.Fatalf("missing job: %v", err)
	}
	// Still serving.
	if _, err := cl.Submit(ctx, gwID, ds.ID, planJSON); err != nil {
		t.Fatalf("gateway stopped serving: %v", err)
	}
}
