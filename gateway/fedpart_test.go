package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/crypto/secagg"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/testcluster"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/network"
	"github.com/fedgrid/fedgrid/node"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// federation is one network with several gateways, each its own
// organisation (its own store, Owner and node), and one data scientist
// registered at each of them.
type federation struct {
	net      *network.Network
	gws      []*gateway.Gateway
	ds       []*store.Dataset
	cl       *client.Client
	sci      []*store.User // the data scientist's account at each gateway
	officers []*store.User
	cfgs     []gateway.Config // to restart a gateway on its data
}

func startFederation(t testing.TB, ctx context.Context, parts []*dataset.Table) *federation {
	return startFederationWith(t, ctx, parts, store.VisibilityPublic)
}

func startFederationWith(t testing.TB, ctx context.Context, parts []*dataset.Table, visibility string) *federation {
	return startFederationCfg(t, ctx, parts, visibility, func(*gateway.Config) {})
}

// startFederationCfg is startFederationWith with cfg applied to every gateway's config.
func startFederationCfg(t testing.TB, ctx context.Context, parts []*dataset.Table, visibility string, cfg func(*gateway.Config)) *federation {
	t.Helper()
	f := &federation{}
	var first gateway.Config
	tc := testcluster.Start(t, ctx, testcluster.Options{Network: "gwtest", Gateway: func(c *gateway.Config) { c.Name = "hospital-0"; cfg(c); first = *c }})
	f.net = tc.Net
	sk, _ := p2p.GenerateIdentity()
	pid, _ := p2p.PeerIDOf(sk)
	for i, part := range parts {
		gw := tc.GW
		if i > 0 {
			gw = tc.StartGateway(t, ctx, func(c *gateway.Config) {
				c.Name, c.Lease = fmt.Sprintf("hospital-%d", i), 3*time.Second
				cfg(c)
				first = *c
			})
		}
		f.cfgs = append(f.cfgs, first)
		st := gw.Store()
		if _, err := st.Setup(fmt.Sprintf("owner%d@example.org", i), "correct horse battery", "Owner"); err != nil {
			t.Fatal(err)
		}
		u, err := st.CreateUser(store.NewUser{Email: "ds@example.org", Password: "a long password", Name: "DS", Role: store.RoleDataScientist, PeerID: pid.String(), BudgetMicroEps: 50_000_000})
		if err != nil {
			t.Fatal(err)
		}
		off, err := st.CreateUser(store.NewUser{Email: "officer@example.org", Password: "a long password", Name: "Officer", Role: store.RoleComplianceOfficer})
		if err != nil {
			t.Fatal(err)
		}
		f.sci, f.officers = append(f.sci, u), append(f.officers, off)
		var buf bytes.Buffer
		if err := part.WriteCSV(&buf); err != nil {
			t.Fatal(err)
		}
		ds := &store.Dataset{Name: fmt.Sprintf("pima-%d", i), Tags: []string{"medical"}, Visibility: visibility, Columns: part.Columns(), Rows: part.NumRows()}
		if err := st.PutDataset(ds, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		// Each organisation's own node, enrolled by its own gateway.
		tok, _, err := st.CreateJoinToken(time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		cfg := tc.NodeConfig(t, tok)
		cfg.Gateway = gw.Addrs()[0]
		nd, err := node.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nd.Close() })
		f.gws = append(f.gws, gw)
		f.ds = append(f.ds, ds)
	}
	f.cl = tc.Client(t, ctx, sk)
	return f
}

// pimaParts splits the diabetes rows into training and held-out rows and
// deals the training rows into n disjoint parts (label-skewed: sorted by label first).
func pimaParts(t testing.TB, n int, skewed bool) (train, holdout *dataset.Table, parts []*dataset.Table) {
	t.Helper()
	all, err := dataset.ReadCSV(bytes.NewReader(readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	train, holdout = all.Split(0.2, 1)
	idx := make([][]int, n)
	order := make([]int, train.NumRows())
	for i := range order {
		order[i] = i
	}
	if skewed {
		// Sorted by label, then cut in contiguous parts: each gateway holds mostly one class.
		y, err := train.Numeric("diabetes")
		if err != nil {
			t.Fatal(err)
		}
		slices.SortStableFunc(order, func(a, b int) int { return int(y[a] - y[b]) })
		for i, r := range order {
			idx[i*n/len(order)] = append(idx[i*n/len(order)], r)
		}
	} else {
		for i, r := range order {
			idx[i%n] = append(idx[i%n], r)
		}
	}
	for _, rows := range idx {
		parts = append(parts, train.Select(rows))
	}
	return train, holdout, parts
}

var adam = plan.Optimizer{Name: "adam", LearningRate: 0.01}

// fedPlan is the logistic regression plan with its standardisation
// declared (fitted on all training rows, as a round 0 would).
func fedPlan(t *testing.T, name string, train *dataset.Table, epochs int, opt plan.Optimizer) (*plan.Plan, []byte) {
	t.Helper()
	p, err := plan.Parse(readFile(t, filepath.Join("..", "plan", "testdata", name)))
	if err != nil {
		t.Fatal(err)
	}
	p.Train.ValidationFraction = 0
	p.Train.Epochs = epochs
	p.Optimizer = &opt
	q, _, err := plan.Declare(context.Background(), p, train)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(q)
	if err != nil {
		t.Fatal(err)
	}
	return q, b
}

func (f *federation) options(planJSON []byte, rounds int) client.FedOptions {
	o := client.FedOptions{Plan: planJSON, Rounds: rounds, MaxRows: 1000}
	for i, gw := range f.gws {
		o.Participants = append(o.Participants, wire.FedParticipant{Gateway: gw.ID(), Name: fmt.Sprintf("hospital-%d", i), Dataset: f.ds[i].ID})
	}
	return o
}

// Three gateways, disjoint thirds of the rows: federated logistic regression
// reaches the held-out accuracy of the central model within 0.02, and each
// gateway's job holds the same final model, signed, released under its rules.
func TestFederationAcrossGateways(t *testing.T) {
	if testing.Short() {
		t.Skip("trains across three gateways")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	train, holdout, parts := pimaParts(t, 3, false)
	f := startFederation(t, ctx, parts)
	const rounds, local = 8, 5
	central, planJSON := fedPlan(t, "logreg_pima.json", train, local*rounds, adam)
	s, err := client.NewFederation(f.options(planJSON, rounds))
	if err != nil {
		t.Fatal(err)
	}
	var seen []client.FedRound
	s, err = f.cl.Federate(ctx, s, client.FedRunOptions{StatePath: filepath.Join(t.TempDir(), "fed.json"), Poll: 50 * time.Millisecond,
		Progress: func(r client.FedRound) { seen = append(seen, r) }})
	if err != nil {
		t.Fatal(err)
	}
	if s.State != client.FedSucceeded || len(seen) != rounds || s.Error != "" {
		t.Fatalf("federation %s after %d rounds: %s", s.State, len(seen), s.Error)
	}
	for _, r := range seen {
		if len(r.Participants) != 3 || r.Rows != float64(train.NumRows()) {
			t.Fatalf("round %d: %d participants, %v rows (want 3, %d)", r.Round, len(r.Participants), r.Rows, train.NumRows())
		}
	}
	if seen[len(seen)-1].Loss >= seen[0].Loss {
		t.Errorf("loss did not fall: %v -> %v", seen[0].Loss, seen[len(seen)-1].Loss)
	}
	fed, err := s.Model()
	if err != nil {
		t.Fatal(err)
	}
	cm, err := plan.Train(ctx, central, train, plan.TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ef, err := plan.Evaluate(fed, holdout)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := plan.Evaluate(cm, holdout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("held-out accuracy: central %.4f, federated (3 gateways x %d rounds x %d epochs) %.4f", ec.Accuracy, rounds, local, ef.Accuracy)
	if ef.Accuracy < ec.Accuracy-0.02 {
		t.Fatalf("federated %.4f falls short of central %.4f by more than 0.02", ef.Accuracy, ec.Accuracy)
	}
	// Every gateway holds the final model, signed by itself, released at once (public data).
	for i, gw := range f.gws {
		info, ok := s.Final[gw.ID()]
		if !ok || info.State != wire.StateSucceeded {
			t.Fatalf("gateway %d: final job %+v", i, info)
		}
		b, err := f.cl.Model(ctx, gw.Peer().ID(), info.ID)
		if err != nil {
			t.Fatal(err)
		}
		m, err := plan.ParseModel(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := gateway.VerifyModel(m); err != nil || m.Provenance.Gateway != gw.ID() {
			t.Fatalf("gateway %d: model provenance: %v", i, err)
		}
		// The federation record: three gateways, one receipt each per round,
		// the chain from the plan's initial weights to the final ones.
		fp := m.Provenance.Federation
		if fp == nil || fp.ID != s.Options.ID || len(fp.Gateways) != 3 || len(fp.Rounds) != rounds || fp.Count() != 3*rounds {
			t.Fatalf("gateway %d: federation provenance %+v", i, fp)
		}
		for _, r := range fp.Rounds {
			for _, rc := range r.Receipts {
				if rc.StartSHA256 != r.StartSHA256 || rc.UpdateSHA256 == "" || rc.Time.IsZero() {
					t.Fatalf("gateway %d: round %d receipt %+v", i, r.Round, rc)
				}
			}
		}
		if fp.Rounds[rounds-1].ResultSHA256 != plan.WeightsSHA256(fed.Params) {
			t.Fatalf("gateway %d: the last round's result is not the federated weights", i)
		}
		for name, p := range fed.Params {
			if !slices.Equal(p.Data, m.Params[name].Data) {
				t.Fatalf("gateway %d holds other weights for %s", i, name)
			}
		}
	}
}

// A gateway lost in round 3, once after sharing its keys but before sending
// its masked update and once after: the federation completes with the
// others, and round 3's sum is the plain row-weighted mean of the updates
// in it (the survivors'; with the late loss, the lost gateway's too), to
// quantisation error.
func TestFederationGatewayLost(t *testing.T) {
	if testing.Short() {
		t.Skip("trains across three gateways")
	}
	for _, stage := range []string{"training", "update"} {
		t.Run("after "+stage, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			train, _, parts := pimaParts(t, 3, false)
			f := startFederation(t, ctx, parts)
			_, planJSON := fedPlan(t, "logreg_pima.json", train, 3, adam)
			o := f.options(planJSON, 4)
			o.MinGateways = 2
			s, err := client.NewFederation(o)
			if err != nil {
				t.Fatal(err)
			}
			statePath := filepath.Join(t.TempDir(), "fed.json")
			victim := f.gws[1]
			jobID := gateway.FedJobID(s.Options.ID)
			locals := map[string]*plan.Model{} // round 3's local models
			localOf := func(gw *gateway.Gateway) {
				b, err := gw.Store().Result(store.ShardJobID(jobID, 3, 0))
				if err != nil {
					t.Errorf("round 3 result at %s: %v", gw.ID(), err)
					return
				}
				m, err := plan.ParseModel(b)
				if err != nil {
					t.Error(err)
					return
				}
				locals[gw.ID()] = m
			}
			var before, after map[string]plan.Tensor
			var r3 client.FedRound
			s, err = f.cl.Federate(ctx, s, client.FedRunOptions{StatePath: statePath, Poll: 50 * time.Millisecond,
				Stage: func(round int, gw, st string) {
					if round == 3 && gw == victim.ID() && st == stage {
						if st == "update" {
							localOf(victim)
						}
						_ = victim.Close()
					}
				},
				Progress: func(r client.FedRound) {
					saved, err := client.LoadFederation(statePath)
					if err != nil {
						t.Error(err)
						return
					}
					switch r.Round {
					case 2:
						before = saved.Weights
					case 3:
						after, r3 = saved.Weights, r
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			if s.State != client.FedSucceeded || s.Round != 4 {
				t.Fatalf("federation %s at round %d: %s", s.State, s.Round, s.Error)
			}
			want := []string{f.gws[0].ID(), f.gws[2].ID()}
			if stage == "update" {
				want = append(want, victim.ID())
			}
			slices.Sort(want)
			if !slices.Equal(r3.Participants, want) {
				t.Fatalf("round 3 summed %v, want %v", r3.Participants, want)
			}
			if !slices.Contains(r3.Dropped, victim.ID()) || slices.Contains(s.Active, victim.ID()) {
				t.Fatalf("the lost gateway is not reported dropped: %+v, active %v", r3, s.Active)
			}
			// One receipt per gateway in the sum: the victim's too when its update was in it.
			if len(r3.Receipts) != len(want) {
				t.Fatalf("round 3 has %d receipts for %d gateways summed", len(r3.Receipts), len(want))
			}
			for i, rc := range r3.Receipts {
				if rc.Gateway != want[i] {
					t.Fatalf("round 3 receipt %d is %s's, want %s's", i, rc.Gateway, want[i])
				}
			}
			for _, gw := range []*gateway.Gateway{f.gws[0], f.gws[2]} {
				localOf(gw)
			}
			// The plain row-weighted mean of the summed updates, computed here.
			var rows float64
			for _, id := range r3.Participants {
				rows += float64(locals[id].Metrics.TrainRows)
			}
			if rows != r3.Rows {
				t.Fatalf("round 3 rows %v, the summed gateways have %v", r3.Rows, rows)
			}
			var worst float64
			for name, b := range before {
				for i := range b.Data {
					var plain float64
					for _, id := range r3.Participants {
						m := locals[id]
						plain += float64(m.Metrics.TrainRows) * (m.Params[name].Data[i] - b.Data[i])
					}
					plain /= rows
					got := after[name].Data[i] - b.Data[i]
					worst = max(worst, math.Abs(got-plain))
				}
			}
			t.Logf("round 3: %d gateways summed, largest difference from the plain weighted mean %.3g", len(r3.Participants), worst)
			if worst > 1e-6 {
				t.Fatalf("secure sum differs from the plain weighted mean by %v", worst)
			}
		})
	}
}

// Label-skewed parts (each gateway mostly one class): FedAvg and FedProx
// stay within 0.05 of the central model, FedProx at least as good as FedAvg.
func TestFederationLabelSkew(t *testing.T) {
	if testing.Short() {
		t.Skip("trains across three gateways")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	train, holdout, parts := pimaParts(t, 3, true)
	for i, p := range parts {
		y, _ := p.Numeric("diabetes")
		var pos float64
		for _, v := range y {
			pos += v
		}
		t.Logf("gateway %d: %d rows, %.0f%% positive", i, p.NumRows(), 100*pos/float64(len(y)))
	}
	f := startFederation(t, ctx, parts)
	// Plain SGD: Adam moves every parameter by about its learning rate
	// whatever the gradient's size, so two gateways holding one class
	// outvote the one holding the other, however weak their gradients.
	const rounds, local = 10, 2
	central, planJSON := fedPlan(t, "logreg_pima.json", train, local*rounds, plan.Optimizer{Name: "sgd", LearningRate: 0.1})
	cm, err := plan.Train(ctx, central, train, plan.TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := plan.Evaluate(cm, holdout)
	acc := map[string]float64{}
	for _, st := range []wire.FedStrategy{{Name: wire.StrategyFedAvg}, {Name: wire.StrategyFedProx, Mu: 1}} {
		o := f.options(planJSON, rounds)
		o.Strategy = st
		s, err := client.NewFederation(o)
		if err != nil {
			t.Fatal(err)
		}
		if s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 50 * time.Millisecond}); err != nil || s.State != client.FedSucceeded {
			t.Fatalf("%s: %v %s", st.Name, err, s.Error)
		}
		fed, err := s.Model()
		if err != nil {
			t.Fatal(err)
		}
		ef, _ := plan.Evaluate(fed, holdout)
		acc[st.Name] = ef.Accuracy
	}
	t.Logf("label skew, held-out accuracy: central %.4f, fedavg %.4f, fedprox (mu 1) %.4f", ec.Accuracy, acc["fedavg"], acc["fedprox"])
	for name, a := range acc {
		if a < ec.Accuracy-0.05 {
			t.Errorf("%s %.4f falls short of central %.4f by more than 0.05", name, a, ec.Accuracy)
		}
	}
	if acc["fedprox"] < acc["fedavg"] {
		t.Errorf("fedprox %.4f < fedavg %.4f", acc["fedprox"], acc["fedavg"])
	}
}

// On review-gated (private) data no round starts at a gateway before its
// compliance officer approves the federation; an officer who denies drops
// that gateway out (its reservation refunded). With DP-SGD each gateway's
// ledger is charged exactly the accountant's epsilon for all its rounds,
// when the final model is released.
func TestFederationPrivateApprovalAndDP(t *testing.T) {
	if testing.Short() {
		t.Skip("trains across three gateways")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	train, _, parts := pimaParts(t, 3, false)
	f := startFederationWith(t, ctx, parts, store.VisibilityPrivate)
	const rounds, local = 3, 2
	p, _ := fedPlan(t, "logreg_pima.json", train, local, plan.Optimizer{Name: "sgd", LearningRate: 0.1})
	p.Privacy = &plan.PrivacyPlan{DPSGD: &plan.DPSGD{NoiseMultiplier: 1.1, MaxGradNorm: 1}, Delta: 1e-5}
	planJSON, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	o := f.options(planJSON, rounds)
	o.MinGateways = 2
	s, err := client.NewFederation(o)
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan map[string]string, 100)
	done := make(chan error, 1)
	go func() {
		var err error
		s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 50 * time.Millisecond, Waiting: func(p map[string]string) { waiting <- p }})
		done <- err
	}()
	var pending map[string]string
	select {
	case pending = <-waiting:
	case err := <-done:
		t.Fatalf("federation ended before any approval: %v", err)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if len(pending) != 3 {
		t.Fatalf("waiting for %d approvals, want 3", len(pending))
	}
	jobID := gateway.FedJobID(s.Options.ID)
	for i, gw := range f.gws {
		st := gw.Store()
		j, err := st.Job(jobID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Job(store.ShardJobID(jobID, 1, 0)); !errors.Is(err, store.ErrNotFound) || j.Progress.Epoch != 0 {
			t.Fatalf("gateway %d started round 1 before its officer approved (%v, progress %+v)", i, err, j.Progress)
		}
		r, err := st.GetRequest(pending[gw.ID()])
		if err != nil {
			t.Fatal(err)
		}
		if r.Kind != wire.KindFederation || r.State != wire.RequestPending || !r.DP || r.EpsilonMicroEps == 0 {
			t.Fatalf("gateway %d: request %+v", i, r)
		}
		for k, other := range f.gws {
			if !strings.Contains(r.Detail, other.ID()) || !strings.Contains(r.Detail, fmt.Sprintf("hospital-%d", k)) {
				t.Fatalf("gateway %d: the request does not name participant %d: %s", i, k, r.Detail)
			}
		}
		if !strings.Contains(r.Detail, "3 rounds") {
			t.Fatalf("gateway %d: the request does not state the rounds: %s", i, r.Detail)
		}
	}
	// Hospitals 0 and 1 approve, hospital 2 denies.
	for i, gw := range f.gws {
		approve := i < 2
		reason := "approved for the study"
		if !approve {
			reason = "not this year"
		}
		if _, err := gw.Store().Decide(pending[gw.ID()], approve, f.officers[i].ID, reason); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if s.State != client.FedSucceeded || s.Round != rounds {
		t.Fatalf("federation %s at round %d: %s", s.State, s.Round, s.Error)
	}
	if _, ok := s.Refused[f.gws[2].ID()]; !ok || slices.Contains(s.Active, f.gws[2].ID()) {
		t.Fatalf("the denied gateway still takes part: refused %v, active %v", s.Refused, s.Active)
	}
	for _, r := range s.History {
		if len(r.Participants) != 2 {
			t.Fatalf("round %d summed %d gateways, want 2", r.Round, len(r.Participants))
		}
	}
	for i, gw := range f.gws {
		st := gw.Store()
		j, err := st.Job(jobID)
		if err != nil {
			t.Fatal(err)
		}
		// The accountant's epsilon for all rounds on this gateway's training rows.
		all := *p
		all.Train.Epochs = local * rounds
		eps, err := all.Epsilon(parts[i].NumRows())
		if err != nil {
			t.Fatal(err)
		}
		want := int64(math.Ceil(eps*1e6 - 1e-6))
		if j.EpsilonMicroEps != want {
			t.Fatalf("gateway %d reserved %d micro-epsilon, the accountant says %d", i, j.EpsilonMicroEps, want)
		}
		if i == 2 {
			u, _ := st.User(f.sci[i].ID)
			if j.State != wire.StateCancelled || u.ReservedMicroEps != 0 || u.SpentMicroEps != 0 {
				t.Fatalf("denied gateway: job %s, reserved %d, spent %d", j.State, u.ReservedMicroEps, u.SpentMicroEps)
			}
			continue
		}
		if j.State != wire.StateSucceeded || j.Release != wire.ReleasePending {
			t.Fatalf("gateway %d: job %s, release %q", i, j.State, j.Release)
		}
		u, _ := st.User(f.sci[i].ID)
		if u.SpentMicroEps != 0 || u.ReservedMicroEps != want {
			t.Fatalf("gateway %d before release: spent %d, reserved %d", i, u.SpentMicroEps, u.ReservedMicroEps)
		}
		if _, err := st.Decide(j.RequestID, true, f.officers[i].ID, "the model may leave"); err != nil {
			t.Fatal(err)
		}
		u, _ = st.User(f.sci[i].ID)
		t.Logf("gateway %d: charged %d micro-epsilon for %d rounds x %d epochs of DP-SGD", i, u.SpentMicroEps, rounds, local)
		if u.SpentMicroEps != want || u.ReservedMicroEps != 0 {
			t.Fatalf("gateway %d after release: spent %d, reserved %d; want %d spent", i, u.SpentMicroEps, u.ReservedMicroEps, want)
		}
	}
}

// A coordinator stopped after round 2 resumes from its saved state and
// finishes; the rounds already done are not run again.
func TestFederationResume(t *testing.T) {
	if testing.Short() {
		t.Skip("trains across three gateways")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	train, _, parts := pimaParts(t, 3, false)
	f := startFederation(t, ctx, parts)
	_, planJSON := fedPlan(t, "logreg_pima.json", train, 2, adam)
	s, err := client.NewFederation(f.options(planJSON, 4))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "fed.json")
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	_, err = f.cl.Federate(stopCtx, s, client.FedRunOptions{StatePath: path, Poll: 50 * time.Millisecond,
		Progress: func(r client.FedRound) {
			if r.Round == 2 {
				stop()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped federation: %v", err)
	}
	saved, err := client.LoadFederation(path)
	if err != nil {
		t.Fatal(err)
	}
	if saved.State != client.FedRunning || saved.Round != 2 || len(saved.History) != 2 {
		t.Fatalf("saved state %s at round %d with %d rounds of history", saved.State, saved.Round, len(saved.History))
	}
	var rounds []int
	done, err := f.cl.Federate(ctx, saved, client.FedRunOptions{StatePath: path, Poll: 50 * time.Millisecond,
		Progress: func(r client.FedRound) { rounds = append(rounds, r.Round) }})
	if err != nil || done.State != client.FedSucceeded {
		t.Fatalf("resumed federation: %v %s", err, done.Error)
	}
	if !slices.Equal(rounds, []int{3, 4}) || len(done.History) != 4 {
		t.Fatalf("resumed with rounds %v, history %d", rounds, len(done.History))
	}
	for i, gw := range f.gws {
		j, err := gw.Store().Job(gateway.FedJobID(done.Options.ID))
		if err != nil || j.State != wire.StateSucceeded {
			t.Fatalf("gateway %d: %+v %v", i, j, err)
		}
	}
}

// A round that cannot complete (a gateway lost while every gateway is
// required) leaves the federation running at the last completed round;
// once the gateway is back (restarted on its data, its round keys lost),
// the resumed federation retries the round with fresh keys and finishes.
func TestFederationRoundRetried(t *testing.T) {
	if testing.Short() {
		t.Skip("trains across three gateways")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	train, _, parts := pimaParts(t, 3, false)
	f := startFederation(t, ctx, parts)
	_, planJSON := fedPlan(t, "logreg_pima.json", train, 2, adam)
	s, err := client.NewFederation(f.options(planJSON, 3)) // all three gateways required
	if err != nil {
		t.Fatal(err)
	}
	victim := f.gws[1]
	s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 50 * time.Millisecond, Retries: -1,
		Stage: func(round int, gw, stage string) {
			if round == 2 && gw == victim.ID() && stage == "training" {
				_ = victim.Close()
			}
		}})
	if !errors.Is(err, client.ErrRoundFailed) || !errors.Is(err, secagg.ErrBelowThreshold) {
		t.Fatalf("round 2 without a required gateway: %v", err)
	}
	if s.State != client.FedRunning || s.Round != 1 || s.Attempt != 1 {
		t.Fatalf("after the failed round: %s at round %d, attempt %d", s.State, s.Round, s.Attempt)
	}
	back, err := gateway.Start(ctx, f.cfgs[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = back.Close() })
	if back.ID() != victim.ID() {
		t.Fatalf("restarted gateway has another identity")
	}
	// The client finds the gateway again once it is back in the DHT.
	wait.For(t, time.Minute, "the restarted gateway reachable", func() error {
		_, _, err := f.cl.Dataset(ctx, back.Peer().ID(), f.ds[1].ID)
		return err
	})
	s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 50 * time.Millisecond})
	if err != nil || s.State != client.FedSucceeded || s.Round != 3 {
		t.Fatalf("retried federation: %v, %s at round %d: %s", err, s.State, s.Round, s.Error)
	}
	for _, r := range s.History {
		if len(r.Participants) != 3 {
			t.Fatalf("round %d summed %d gateways, want 3", r.Round, len(r.Participants))
		}
	}
}

// Plain updates (secure aggregation off): a gateway whose owner does not
// allow them refuses to join; each officer's request says that secure
// aggregation is off; and one round gives the aggregate of a secure round
// over the same gateways from the same weights, to quantisation error.
func TestFederationPlainUpdates(t *testing.T) {
	if testing.Short() {
		t.Skip("trains across three gateways")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	train, _, parts := pimaParts(t, 3, false)
	f := startFederationWith(t, ctx, parts, store.VisibilityPrivate)
	for i := range 2 {
		if _, err := f.gws[i].Store().PutFederationSettings(store.FederationSettings{AllowPlainUpdates: true}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	_, planJSON := fedPlan(t, "logreg_pima.json", train, 2, adam)
	// Every officer approves, after checking what the request says.
	approveAll := func(plain bool) func(map[string]string) {
		return func(pending map[string]string) {
			for i, gw := range f.gws {
				id, ok := pending[gw.ID()]
				if !ok {
					continue
				}
				r, err := gw.Store().GetRequest(id)
				if err != nil {
					t.Error(err)
					return
				}
				if off := strings.Contains(r.Detail, "SECURE AGGREGATION IS OFF"); off != plain {
					t.Errorf("gateway %d: the officer's request for a federation with plain updates %v says: %s", i, plain, r.Detail)
				}
				if r.State == wire.RequestPending {
					if _, err := gw.Store().Decide(id, true, f.officers[i].ID, "fine"); err != nil {
						t.Error(err)
					}
				}
			}
		}
	}
	run := func(o client.FedOptions) *client.FedState {
		t.Helper()
		s, err := client.NewFederation(o)
		if err != nil {
			t.Fatal(err)
		}
		s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 20 * time.Millisecond, Waiting: approveAll(o.PlainUpdates)})
		if err != nil || s.State != client.FedSucceeded {
			t.Fatalf("federation (plain %v): %v %s", o.PlainUpdates, err, s.Error)
		}
		return s
	}
	o := f.options(planJSON, 1)
	o.PlainUpdates, o.MinGateways = true, 2
	plainS := run(o)
	why, refused := plainS.Refused[f.gws[2].ID()]
	if !refused || !strings.Contains(why, "secure aggregation only") {
		t.Fatalf("the gateway that does not allow plain updates was not refused for it: %v", plainS.Refused)
	}
	if len(plainS.History) != 1 || len(plainS.History[0].Participants) != 2 {
		t.Fatalf("plain round: %+v", plainS.History)
	}
	o = f.options(planJSON, 1)
	o.Participants, o.MinGateways = o.Participants[:2], 2
	secureS := run(o)
	ps, ss := plainS.History[0], secureS.History[0]
	if ps.Rows != ss.Rows || ps.Rows != float64(parts[0].NumRows()+parts[1].NumRows()) || math.Abs(ps.Loss-ss.Loss) > 1e-4 {
		t.Fatalf("plain round: %v rows, loss %v; secure: %v rows, loss %v", ps.Rows, ps.Loss, ss.Rows, ss.Loss)
	}
	q, err := secagg.NewQuantizer(float64(o.MaxRows)*10, 2) // the default clip
	if err != nil {
		t.Fatal(err)
	}
	tol := q.Error(2) / ss.Rows
	worst := 0.0
	for name, w := range secureS.Weights {
		for i, v := range w.Data {
			worst = max(worst, math.Abs(v-plainS.Weights[name].Data[i]))
		}
	}
	t.Logf("largest difference between the plain and the secure aggregate: %.3g (quantisation error bound %.3g)", worst, tol)
	if worst > tol {
		t.Fatalf("plain and secure aggregates differ by %g, more than the quantisation error %g", worst, tol)
	}
	// An owner who withdraws the permission stops the next round at that
	// gateway. The plan leaves its statistics to fit: round 0 runs with
	// secure aggregation even here, round 1 with plain updates.
	p, err := plan.Parse(readFile(t, filepath.Join("..", "plan", "testdata", "logreg_pima.json")))
	if err != nil {
		t.Fatal(err)
	}
	p.Train.Epochs, p.Train.ValidationFraction = 1, 0
	if planJSON, err = json.Marshal(p); err != nil {
		t.Fatal(err)
	}
	o = f.options(planJSON, 2)
	o.Participants, o.MinGateways, o.PlainUpdates = o.Participants[:2], 2, true
	s, err := client.NewFederation(o)
	if err != nil {
		t.Fatal(err)
	}
	withdraw := func(r client.FedRound) {
		if r.Round != 1 {
			return // round 0 reports too
		}
		if _, err := f.gws[1].Store().PutFederationSettings(store.FederationSettings{}, "test"); err != nil {
			t.Error(err)
		}
	}
	s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 20 * time.Millisecond, Waiting: approveAll(true), Progress: withdraw, Retries: -1})
	if !errors.Is(err, client.ErrRoundFailed) || s.Round != 1 || !strings.Contains(err.Error(), "secure aggregation only") {
		t.Fatalf("after the owner withdrew plain updates: round %d, %v; want round 2 refused", s.Round, err)
	}
	if s.Fit == nil || len(s.Fit.Participants) != 2 || s.Fitted == nil {
		t.Fatalf("round 0 of a federation with plain updates: %+v", s.Fit)
	}
}

// A coordinator that never comes back: each gateway's part expires after
// FederationTimeout without a call. One federation stops while waiting for
// the officers (refunded, approval requests withdrawn), one after a round
// whose masked updates left (charged); both audited.
func TestFederationCoordinatorGone(t *testing.T) {
	if testing.Short() {
		t.Skip("trains across two gateways")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	train, _, parts := pimaParts(t, 2, false)
	const timeout = 5 * time.Second // calls come every 50 ms while the coordinator runs
	f := startFederationCfg(t, ctx, parts, store.VisibilityPrivate, func(c *gateway.Config) { c.FederationTimeout = timeout })
	p, _ := fedPlan(t, "logreg_pima.json", train, 1, plan.Optimizer{Name: "sgd", LearningRate: 0.1})
	p.Privacy = &plan.PrivacyPlan{DPSGD: &plan.DPSGD{NoiseMultiplier: 1.1, MaxGradNorm: 1}, Delta: 1e-5}
	planJSON, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	ledger := func(i int) (spent, reserved int64) {
		u, err := f.gws[i].Store().User(f.sci[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		return u.SpentMicroEps, u.ReservedMicroEps
	}
	// run starts a federation and stops its coordinator (as a killed
	// client would: no fed/finish) once stop says so.
	run := func(stop func(waiting bool, r *client.FedRound) bool, approve bool) *client.FedState {
		s, err := client.NewFederation(f.options(planJSON, 3))
		if err != nil {
			t.Fatal(err)
		}
		cctx, quit := context.WithCancel(ctx)
		defer quit()
		_, _ = f.cl.Federate(cctx, s, client.FedRunOptions{Poll: 50 * time.Millisecond,
			Waiting: func(pending map[string]string) {
				if stop(true, nil) {
					quit()
					return
				}
				if approve {
					for i, gw := range f.gws {
						if id, ok := pending[gw.ID()]; ok {
							if _, err := gw.Store().Decide(id, true, f.officers[i].ID, "go ahead"); err != nil {
								t.Error(err)
							}
						}
					}
				}
			},
			Progress: func(r client.FedRound) {
				if stop(false, &r) {
					quit()
				}
			}})
		return s
	}
	expired := func(s *client.FedState) []*store.Job {
		jobID := gateway.FedJobID(s.Options.ID)
		var out []*store.Job
		for i, gw := range f.gws {
			wait.For(t, time.Minute, fmt.Sprintf("gateway %d's part expired", i), func() error {
				j, err := gw.Store().Job(jobID)
				if err != nil {
					return err
				}
				if j.State != wire.StateCancelled {
					return fmt.Errorf("job is %s", j.State)
				}
				out = append(out, j)
				return nil
			})
		}
		for i, j := range out {
			if !strings.Contains(j.Error, "not heard from for "+timeout.String()) {
				t.Fatalf("gateway %d: expired job's error %q", i, j.Error)
			}
			if !j.FinishedAt.After(j.FedLastHeard().Add(timeout)) {
				t.Fatalf("gateway %d: expired at %s, last heard %s", i, j.FinishedAt, j.FedLastHeard())
			}
			entries, err := f.gws[i].Store().Audit(store.AuditFilter{Action: "federation.expire"})
			if err != nil || !slices.ContainsFunc(entries, func(e *store.AuditEntry) bool { return e.Target == "job/"+j.ID }) {
				t.Fatalf("gateway %d: no federation.expire audit entry for %s (%v)", i, j.ID, err)
			}
		}
		return out
	}

	// Gone while the officers decide.
	s := run(func(waiting bool, _ *client.FedRound) bool { return waiting }, false)
	for i, j := range expired(s) {
		if sp, res := ledger(i); sp != 0 || res != 0 {
			t.Fatalf("gateway %d: spent %d, reserved %d after the expiry; want the reservation refunded", i, sp, res)
		}
		if r, err := f.gws[i].Store().GetRequest(j.FedRequestID); err != nil || r.State != wire.RequestWithdrawn {
			t.Fatalf("gateway %d: approval request %+v %v", i, r, err)
		}
	}

	// Gone after round 1: every gateway's masked update left, so the
	// federation's epsilon is spent.
	s = run(func(_ bool, r *client.FedRound) bool { return r != nil && r.Round == 1 }, true)
	if s.Round != 1 {
		t.Fatalf("the coordinator stopped at round %d", s.Round)
	}
	for i, j := range expired(s) {
		if j.FedSent != 1 {
			t.Fatalf("gateway %d released %d rounds", i, j.FedSent)
		}
		if sp, res := ledger(i); sp != j.EpsilonMicroEps || res != 0 || sp == 0 {
			t.Fatalf("gateway %d: spent %d, reserved %d after the expiry; want %d charged", i, sp, res, j.EpsilonMicroEps)
		}
	}
}

// A gateway restarted in the middle of round 2 (on its data, with its peer
// key) lost its round keys, which are never stored. It refuses to go on with
// that attempt of the round (wire.CodeRoundLost) rather than make a second
// set of keys for it. When every gateway is required the coordinator tries
// the round again at once, with fresh keys, and the restarted gateway takes
// part; with two of three required the round completes without it and it is
// back in round 3. Either way the federation finishes with all three.
func TestFederationGatewayRestartedMidRound(t *testing.T) {
	if testing.Short() {
		t.Skip("trains across three gateways")
	}
	for _, tc := range []struct {
		stage string
		min   int
	}{{"training", 3}, {"update", 3}, {"training", 2}} {
		t.Run(fmt.Sprintf("after %s, %d required", tc.stage, tc.min), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			train, _, parts := pimaParts(t, 3, false)
			f := startFederation(t, ctx, parts)
			_, planJSON := fedPlan(t, "logreg_pima.json", train, 2, adam)
			o := f.options(planJSON, 3)
			o.MinGateways = tc.min
			s, err := client.NewFederation(o)
			if err != nil {
				t.Fatal(err)
			}
			victim := f.gws[1]
			restarted := false
			var back *gateway.Gateway
			var retried []string
			s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 50 * time.Millisecond, RetryWait: 50 * time.Millisecond,
				Retry: func(round, attempt int, cause error) {
					retried = append(retried, fmt.Sprintf("%d/%d: %v", round, attempt, cause))
				},
				Stage: func(round int, gw, stage string) {
					if round != 2 || gw != victim.ID() || stage != tc.stage || restarted {
						return
					}
					restarted = true
					if err := victim.Close(); err != nil {
						t.Error(err)
					}
					var err error
					if back, err = gateway.Start(ctx, f.cfgs[1]); err != nil {
						t.Error(err)
						return
					}
					t.Cleanup(func() { _ = back.Close() })
					if back.ID() != victim.ID() {
						t.Error("the restarted gateway has another identity")
					}
					wait.For(t, time.Minute, "the restarted gateway reachable", func() error {
						_, _, err := f.cl.Dataset(ctx, back.Peer().ID(), f.ds[1].ID)
						return err
					})
				}})
			if err != nil || s.State != client.FedSucceeded || s.Round != 3 {
				t.Fatalf("federation: %v, %s at round %d: %s", err, s.State, s.Round, s.Error)
			}
			if !restarted {
				t.Fatal("the gateway was never restarted")
			}
			r2, r3 := s.History[1], s.History[2]
			t.Logf("round 2: summed %d, dropped %v; retries %q", len(r2.Participants), r2.Dropped, retried)
			if tc.min == 3 {
				// The first attempt could not complete; the retry did, with all three.
				if len(retried) != 1 || !strings.Contains(retried[0], "2/1: ") || len(r2.Participants) != 3 {
					t.Fatalf("round 2: retries %q, summed %v", retried, r2.Participants)
				}
			} else if len(retried) != 0 || len(r2.Participants) != 2 || !slices.Contains(r2.Dropped, victim.ID()) {
				t.Fatalf("round 2: retries %q, summed %v, dropped %v", retried, r2.Participants, r2.Dropped)
			}
			if len(r3.Participants) != 3 || !slices.Contains(s.Active, victim.ID()) {
				t.Fatalf("round 3 summed %v (active %v): the restarted gateway is not back", r3.Participants, s.Active)
			}
			// What the restarted gateway stored: the last round and attempt it made keys for, never the keys.
			j, err := back.Store().Job(gateway.FedJobID(s.Options.ID))
			if err != nil || j.State != wire.StateSucceeded || j.FedKeys == nil || *j.FedKeys != (store.FedRoundMark{Round: 3}) {
				t.Fatalf("restarted gateway's part: %+v %v", j, err)
			}
			for _, r := range s.History {
				if len(r.Receipts) != len(r.Participants) {
					t.Fatalf("round %d: %d receipts for %d gateways", r.Round, len(r.Receipts), len(r.Participants))
				}
			}
		})
	}
}
