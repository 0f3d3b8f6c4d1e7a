package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// rawPeer is a bare libp2p peer connected to the gateway: a stranger, or
// (after enrolling with a join token) a node, making direct stream requests.
func rawPeer(t *testing.T, ctx context.Context, e *env) *p2p.Peer {
	t.Helper()
	sk, _ := p2p.GenerateIdentity()
	p, err := p2p.New(ctx, p2p.Config{Identity: sk, Network: "gwtest", NoListen: true, DHTMode: p2p.DHTClient})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	ai, err := peer.AddrInfoFromString(e.gw.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Connect(ctx, *ai); err != nil {
		t.Fatal(err)
	}
	return p
}

func fetchModel(ctx context.Context, p *p2p.Peer, gw peer.ID, job string) error {
	_, err := p2p.Call[wire.JobRequest, wire.ModelResponse](ctx, p.Host, gw, p.Protocol(wire.ProtoModel), &wire.JobRequest{Job: job}, p2p.Limits{MaxResponse: wire.MaxModel})
	return err
}

func (e *env) privateDataset(t *testing.T, name string, tags []string) *store.Dataset {
	t.Helper()
	csv := readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))
	tbl, err := dataset.ReadCSV(bytesReader(csv), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	d := &store.Dataset{Name: name, Tags: tags, Visibility: store.VisibilityPrivate, Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := e.gw.Store().PutDataset(d, csv); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestReleaseReview (acceptance 1, 2, 4 over p2p): a result on private data
// is served by no path before approval (the requester's ds/model, another
// requester, a stranger's and an enrolled node's direct streams); approval
// charges exactly the job's epsilon and releases the signed model to the
// requester alone; denial charges nothing and the requester sees why.
func TestReleaseReview(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := setup(t, ctx, 2)
	st := e.gw.Store()
	gwID := e.gw.Peer().ID()
	alice, bob := e.clients[0], e.clients[1]
	officer, err := st.CreateUser(store.NewUser{Email: "officer@example.org", Password: "a long password", Name: "CO", Role: store.RoleComplianceOfficer})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GrantBudget(e.users[0].ID, 5_000_000, "", "test"); err != nil {
		t.Fatal(err)
	}
	priv := e.privateDataset(t, "pima private", []string{"medical"})
	dpPlan := readFile(t, filepath.Join("..", "plan", "testdata", "dp_logreg_pima.json"))
	pl, err := plan.Parse(dpPlan)
	if err != nil {
		t.Fatal(err)
	}
	wantEps, err := pl.Epsilon(priv.Rows)
	if err != nil {
		t.Fatal(err)
	}
	wantMicro := int64(math.Ceil(wantEps * 1e6))

	// Bob has no budget: the DP job's release could never be paid, so it is refused up front.
	if _, err := bob.Submit(ctx, gwID, priv.ID, dpPlan); !p2p.IsCode(err, p2p.CodeInsufficientBudget) || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("submit beyond budget: %v", err)
	}
	e.startNode(t, ctx)
	j, err := alice.Submit(ctx, gwID, priv.ID, dpPlan)
	if err != nil {
		t.Fatal(err)
	}
	if !j.Review || !j.DP || j.Epsilon != float64(wantMicro)/1e6 {
		t.Fatalf("submitted job %+v, want epsilon %v", j, float64(wantMicro)/1e6)
	}
	if u, _ := st.User(e.users[0].ID); u.ReservedMicroEps != wantMicro || u.BudgetMicroEps != 5_000_000-wantMicro {
		t.Fatalf("reservation: %+v", u)
	}
	var leaked []wire.JobInfo
	j, err = alice.Wait(ctx, gwID, j.ID, func(u *wire.JobInfo) {
		if u.Progress != (wire.Progress{LossWithheld: true}) || u.State != wire.StateUnderReview || u.Attempt != 0 {
			leaked = append(leaked, *u)
		}
	})
	if err != nil || j.State != wire.StateUnderReview {
		t.Fatalf("job %+v %v", j, err)
	}
	// The requester's view stays the same until the officer decides; the
	// job itself runs to its end meanwhile.
	wait.For(t, time.Minute, "the job to succeed", wait.Is(func() bool {
		cur, _ := st.Job(j.ID)
		return cur.State == wire.StateSucceeded
	}))
	stored, _ := st.Job(j.ID)
	j, _ = alice.Job(ctx, gwID, j.ID)
	if j.State != wire.StateUnderReview || j.Release != wire.ReleasePending || j.Metrics != nil || j.Request != "" || j.FinishedAt != nil || j.StartedAt != nil {
		t.Fatalf("a finished job under review shows more than it is under review: %+v", j)
	}
	if len(leaked) > 0 {
		t.Fatalf("the requester saw progress of a job under review: %+v", leaked)
	}
	j.Request = stored.RequestID // the officer's queue has it; the requester does not

	// No path serves it before approval.
	if _, err := alice.Model(ctx, gwID, j.ID); !p2p.IsCode(err, p2p.CodeForbidden) || !strings.Contains(err.Error(), "review") {
		t.Fatalf("requester before approval: %v", err)
	}
	if _, err := bob.Model(ctx, gwID, j.ID); !p2p.IsCode(err, p2p.CodeNotFound) {
		t.Fatalf("another requester: %v", err)
	}
	stranger := rawPeer(t, ctx, e)
	if err := fetchModel(ctx, stranger, gwID, j.ID); !p2p.IsCode(err, p2p.CodeUnauthorized) {
		t.Fatalf("stranger's direct stream: %v", err)
	}
	nodePeer := rawPeer(t, ctx, e)
	tok, _, err := st.CreateJoinToken(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2p.Call[wire.EnrollRequest, wire.EnrollResponse](ctx, nodePeer.Host, gwID, nodePeer.Protocol(wire.ProtoEnroll), &wire.EnrollRequest{Token: tok, Slots: 1}, p2p.Limits{}); err != nil {
		t.Fatal(err)
	}
	if err := fetchModel(ctx, nodePeer, gwID, j.ID); !p2p.IsCode(err, p2p.CodeUnauthorized) {
		t.Fatalf("enrolled node's direct stream: %v", err)
	}
	// A shard-style or made-up ID is no way around it either.
	if _, err := alice.Model(ctx, gwID, j.ID+"-r1-s0"); !p2p.IsCode(err, p2p.CodeNotFound) {
		t.Fatalf("made-up job ID: %v", err)
	}
	// Bob cannot read Alice's requests; Alice can.
	if _, err := bob.Requests(ctx, gwID, j.Request, ""); !p2p.IsCode(err, p2p.CodeNotFound) {
		t.Fatalf("bob reading alice's request: %v", err)
	}
	if rs, err := bob.Requests(ctx, gwID, "", ""); err != nil || len(rs) != 0 {
		t.Fatalf("bob's list: %v %v", rs, err)
	}
	// Nor does Alice see it yet: it was filed when the job ended.
	if _, err := alice.Requests(ctx, gwID, j.Request, ""); !p2p.IsCode(err, p2p.CodeNotFound) {
		t.Fatalf("alice reading her pending release request: %v", err)
	}
	if u, _ := st.User(e.users[0].ID); u.SpentMicroEps != 0 {
		t.Fatalf("charged before approval: %+v", u)
	}

	// Approval: exactly the job's epsilon, once; the model is signed and carries it.
	if _, err := st.Decide(j.Request, true, officer.ID, "aggregate model, DP"); err != nil {
		t.Fatal(err)
	}
	u, _ := st.User(e.users[0].ID)
	if u.SpentMicroEps != wantMicro || u.ReservedMicroEps != 0 || u.BudgetMicroEps != 5_000_000-wantMicro {
		t.Fatalf("after approval: %+v (want spent %d)", u, wantMicro)
	}
	if _, err := bob.Model(ctx, gwID, j.ID); !p2p.IsCode(err, p2p.CodeNotFound) {
		t.Fatalf("another requester after approval: %v", err)
	}
	if err := fetchModel(ctx, stranger, gwID, j.ID); err == nil {
		t.Fatal("stranger fetched an approved model")
	}
	b, err := alice.Model(ctx, gwID, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	m, err := plan.ParseModel(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.VerifyModel(m); err != nil {
		t.Fatal(err)
	}
	if m.Privacy == nil || m.Privacy.Epsilon != float64(wantMicro)/1e6 {
		t.Fatalf("model privacy %+v", m.Privacy)
	}
	if j, _ = alice.Job(ctx, gwID, j.ID); j.Release != wire.ReleaseApproved || j.Metrics == nil || j.Progress.LossWithheld {
		t.Fatalf("approved job %+v", j)
	}

	// A non-DP plan on private data: no charge, no guarantee; denied with a reason.
	j2, err := alice.Submit(ctx, gwID, priv.ID, e.plan)
	if err != nil {
		t.Fatal(err)
	}
	if j2.DP || j2.Epsilon != 0 {
		t.Fatalf("non-DP job %+v", j2)
	}
	if j2, err = alice.Wait(ctx, gwID, j2.ID, nil); err != nil || j2.Release != wire.ReleasePending || j2.State != wire.StateUnderReview {
		t.Fatalf("non-DP job %+v %v", j2, err)
	}
	wait.For(t, time.Minute, "the non-DP job to succeed", wait.Is(func() bool {
		cur, _ := st.Job(j2.ID)
		return cur.State == wire.StateSucceeded
	}))
	stored2, _ := st.Job(j2.ID)
	j2.Request = stored2.RequestID
	if r, _ := st.GetRequest(j2.Request); !strings.Contains(r.Guarantee, "NO FORMAL PRIVACY GUARANTEE") || r.PlanTable == "" || !strings.Contains(r.PlanTable, "matmul") {
		t.Fatalf("request shows no guarantee warning or plan table: %+v", r)
	}
	if _, err := st.Decide(j2.Request, false, officer.ID, "not differentially private"); err != nil {
		t.Fatal(err)
	}
	j2, _ = alice.Job(ctx, gwID, j2.ID)
	if j2.State != wire.StateDenied || j2.Release != wire.ReleaseDenied || j2.ReleaseReason != "not differentially private" || j2.Metrics != nil {
		t.Fatalf("denied job %+v", j2)
	}
	if _, err := alice.Model(ctx, gwID, j2.ID); !p2p.IsCode(err, p2p.CodeForbidden) || !strings.Contains(err.Error(), "not differentially private") {
		t.Fatalf("denied model: %v", err)
	}
	if u2, _ := st.User(e.users[0].ID); u2.SpentMicroEps != wantMicro || u2.BudgetMicroEps != u.BudgetMicroEps {
		t.Fatalf("denial charged: %+v", u2)
	}
}

// TestWithdrawOverP2P: a requester takes back a pending release request:
// the reserved epsilon comes back, the result stays with the gateway, and
// nobody else can withdraw it.
func TestWithdrawOverP2P(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 2)
	st := e.gw.Store()
	gwID := e.gw.Peer().ID()
	alice, bob := e.clients[0], e.clients[1]
	if _, err := st.GrantBudget(e.users[0].ID, 5_000_000, "", "test"); err != nil {
		t.Fatal(err)
	}
	priv := e.privateDataset(t, "pima private", []string{"medical"})
	e.startNode(t, ctx)
	j, err := alice.Submit(ctx, gwID, priv.ID, readFile(t, filepath.Join("..", "plan", "testdata", "dp_logreg_pima.json")))
	if err != nil {
		t.Fatal(err)
	}
	if j, err = alice.Wait(ctx, gwID, j.ID, nil); err != nil || j.Release != wire.ReleasePending {
		t.Fatalf("job %+v %v", j, err)
	}
	wait.For(t, time.Minute, "the job to succeed", wait.Is(func() bool {
		cur, _ := st.Job(j.ID)
		return cur.State == wire.StateSucceeded
	}))
	stored, _ := st.Job(j.ID)
	j.Request = stored.RequestID // hidden from the requester until decided; withdrawal by ID still works
	if u, _ := st.User(e.users[0].ID); u.ReservedMicroEps == 0 {
		t.Fatalf("nothing reserved: %+v", u)
	}
	if _, err := bob.Withdraw(ctx, gwID, j.Request, ""); !p2p.IsCode(err, p2p.CodeNotFound) {
		t.Fatalf("bob withdrawing alice's request: %v", err)
	}
	if _, err := alice.Withdraw(ctx, gwID, "", ""); !p2p.IsCode(err, p2p.CodeBadRequest) {
		t.Fatalf("withdraw without an ID: %v", err)
	}
	r, err := alice.Withdraw(ctx, gwID, j.Request, "wrong cohort")
	if err != nil {
		t.Fatal(err)
	}
	if r.State != wire.RequestWithdrawn || r.DecidedBy != "requester" || r.DecisionReason != "wrong cohort" || r.Charged != 0 {
		t.Fatalf("withdrawn request %+v", r)
	}
	if u, _ := st.User(e.users[0].ID); u.ReservedMicroEps != 0 || u.SpentMicroEps != 0 || u.BudgetMicroEps != 5_000_000 {
		t.Fatalf("after withdrawal: %+v", u)
	}
	if _, err := alice.Withdraw(ctx, gwID, j.Request, ""); !p2p.IsCode(err, p2p.CodeConflict) {
		t.Fatalf("second withdrawal: %v", err)
	}
	if j, _ = alice.Job(ctx, gwID, j.ID); j.State != wire.StateCancelled || j.Release != wire.ReleaseWithdrawn || j.Metrics != nil || !j.Progress.LossWithheld {
		t.Fatalf("withdrawn job %+v", j)
	}
	if _, err := alice.Model(ctx, gwID, j.ID); !p2p.IsCode(err, p2p.CodeForbidden) || !strings.Contains(err.Error(), "cancelled before its outcome was released") {
		t.Fatalf("model of a withdrawn release: %v", err)
	}

	// Cancelling a job under review that has already ended withdraws its
	// outcome: it reads as a job cancelled while running would.
	j3, err := alice.Submit(ctx, gwID, priv.ID, readFile(t, filepath.Join("..", "plan", "testdata", "dp_logreg_pima.json")))
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, time.Minute, "the job to succeed", wait.Is(func() bool {
		cur, _ := st.Job(j3.ID)
		return cur.State == wire.StateSucceeded
	}))
	if j3, err = alice.Cancel(ctx, gwID, j3.ID); err != nil || j3.State != wire.StateCancelled || j3.Release != wire.ReleaseWithdrawn || j3.FinishedAt != nil {
		t.Fatalf("cancel of a finished job under review: %+v %v", j3, err)
	}
	if u, _ := st.User(e.users[0].ID); u.ReservedMicroEps != 0 || u.SpentMicroEps != 0 {
		t.Fatalf("after cancelling a finished job under review: %+v", u)
	}
}

// TestRequestsOverP2P: budget and permission requests; approving changes the
// budget and the permission.
func TestRequestsOverP2P(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	st := e.gw.Store()
	gwID := e.gw.Peer().ID()
	cl := e.clients[0]
	officer, _ := st.CreateUser(store.NewUser{Email: "officer@example.org", Password: "a long password", Role: store.RoleComplianceOfficer})
	priv := e.privateDataset(t, "pima private", []string{"medical"})
	no := false
	if err := st.SetOverride(store.Override{DatasetID: priv.ID, UserID: e.users[0].ID, Train: &no}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Submit(ctx, gwID, priv.ID, e.plan); !p2p.IsCode(err, p2p.CodeForbidden) {
		t.Fatalf("submit while forbidden: %v", err)
	}
	if _, err := cl.Ask(ctx, gwID, wire.RequestCreate{Kind: wire.KindBudget, Epsilon: 1.5}); !p2p.IsCode(err, p2p.CodeBadRequest) {
		t.Fatalf("request without reason: %v", err)
	}
	br, err := cl.Ask(ctx, gwID, wire.RequestCreate{Kind: wire.KindBudget, Epsilon: 1.5, Reason: "cohort study"})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := cl.Ask(ctx, gwID, wire.RequestCreate{Kind: wire.KindPermission, Dataset: priv.ID, Permission: wire.AskTrain, Reason: "cohort study"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Decide(br.ID, true, officer.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Decide(pr.ID, true, officer.ID, "ok"); err != nil {
		t.Fatal(err)
	}
	if u, _ := st.User(e.users[0].ID); u.BudgetMicroEps != 1_500_000 {
		t.Fatalf("budget %d", u.BudgetMicroEps)
	}
	if _, err := cl.Submit(ctx, gwID, priv.ID, e.plan); err != nil {
		t.Fatalf("submit after permission: %v", err)
	}
	rs, err := cl.Requests(ctx, gwID, "", wire.RequestApproved)
	if err != nil || len(rs) != 2 || rs[0].DecidedBy != "officer" || rs[0].DecidedAt == nil {
		t.Fatalf("approved requests %+v %v", rs, err)
	}
}

// TestDPQuery (acceptance 3): the mean of a bounded column at epsilon 1 on
// 500 rows falls within the noise scale the mechanism promises; each query
// is charged, the same question twice costs twice, and a query beyond the
// budget is refused without a charge.
func TestDPQuery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := setup(t, ctx, 1)
	st := e.gw.Store()
	gwID := e.gw.Peer().ID()
	cl := e.clients[0]
	rng := rand.New(rand.NewPCG(7, 7))
	var buf bytes.Buffer
	buf.WriteString("age,score\n")
	var sum float64
	for range 500 {
		v := 20 + rng.Float64()*60 // within [0, 100]
		sum += v
		fmt.Fprintf(&buf, "%.6f,%d\n", v, rng.IntN(5))
	}
	trueMean := sum / 500
	tbl, err := dataset.ReadCSV(bytes.NewReader(buf.Bytes()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	d := &store.Dataset{Name: "ages", Visibility: store.VisibilityPrivate, Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := st.PutDataset(d, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GrantBudget(e.users[0].ID, 2_500_000, "", "test"); err != nil {
		t.Fatal(err)
	}
	q := wire.QueryRequest{Dataset: d.ID, Stat: wire.StatMean, Column: "age", Epsilon: 1, Lower: 0, Upper: 100}
	b := (q.Upper - q.Lower) / (500 * q.Epsilon) // Laplace scale: sensitivity (U-L)/n over epsilon
	var answers []float64
	for i := range 2 {
		r, err := cl.Query(ctx, gwID, q)
		if err != nil {
			t.Fatal(err)
		}
		// P(|Laplace(b)| > 25 b) = e^-25: a miscalibrated mechanism fails, a right one never does.
		if math.Abs(r.Value-trueMean) > 25*b {
			t.Fatalf("mean %v, true %v: outside 25 noise scales (b=%v)", r.Value, trueMean, b)
		}
		if math.Abs(r.Scale-math.Sqrt2*b) > 1e-12 || r.Rows != 500 || r.CI95[0] >= r.Value || r.CI95[1] <= r.Value {
			t.Fatalf("response %+v", r)
		}
		if u, _ := st.User(e.users[0].ID); u.BudgetMicroEps != 2_500_000-int64(i+1)*1_000_000 || u.SpentMicroEps != int64(i+1)*1_000_000 {
			t.Fatalf("after query %d: %+v", i+1, u)
		}
		answers = append(answers, r.Value)
	}
	if answers[0] == answers[1] || answers[0] == trueMean {
		t.Fatalf("answers %v carry no noise (true %v)", answers, trueMean)
	}
	// 0.5 left: a query at 1 is refused and charges nothing.
	if _, err := cl.Query(ctx, gwID, q); !p2p.IsCode(err, p2p.CodeInsufficientBudget) || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("query beyond budget: %v", err)
	}
	if u, _ := st.User(e.users[0].ID); u.BudgetMicroEps != 500_000 {
		t.Fatalf("refused query charged: %+v", u)
	}
	// Histogram, count and bad input.
	h, err := cl.Query(ctx, gwID, wire.QueryRequest{Dataset: d.ID, Stat: wire.StatHistogram, Column: "score", Epsilon: 0.25, Lower: 0, Upper: 5, Bins: 5})
	if err != nil || len(h.Counts) != 5 || len(h.Edges) != 6 {
		t.Fatalf("histogram %+v %v", h, err)
	}
	var total float64
	for _, c := range h.Counts {
		total += c
	}
	if math.Abs(total-500) > 5*25*math.Sqrt2*2/0.25 {
		t.Fatalf("histogram total %v", total)
	}
	if _, err := cl.Query(ctx, gwID, wire.QueryRequest{Dataset: d.ID, Stat: wire.StatSum, Column: "age", Epsilon: 0.1, Lower: 5, Upper: 5}); !p2p.IsCode(err, p2p.CodeBadRequest) {
		t.Fatalf("empty bounds: %v", err)
	}
	// A fraction of a micro-epsilon is charged as a whole one: the charge
	// is never less than what the noise spends.
	before, _ := st.User(e.users[0].ID)
	if r, err := cl.Query(ctx, gwID, wire.QueryRequest{Dataset: d.ID, Stat: wire.StatCount, Column: "age", Epsilon: 1.4999e-6, Lower: 0, Upper: 100}); err != nil || r.Epsilon != 2e-6 {
		t.Fatalf("query at 1.4999 micro-epsilon: %+v %v", r, err)
	}
	if after, _ := st.User(e.users[0].ID); after.SpentMicroEps-before.SpentMicroEps != 2 {
		t.Fatalf("charged %d micro-epsilon for 1.4999", after.SpentMicroEps-before.SpentMicroEps)
	}
	if _, err := cl.Query(ctx, gwID, wire.QueryRequest{Dataset: d.ID, Stat: wire.StatCount, Column: "age", Epsilon: 0.9e-6, Lower: 0, Upper: 100}); !p2p.IsCode(err, p2p.CodeBadRequest) {
		t.Fatalf("query under one micro-epsilon: %v", err)
	}
	qs, _ := st.Queries(e.users[0].ID)
	if len(qs) != 4 {
		t.Fatalf("%d queries recorded, want 4", len(qs))
	}
}
