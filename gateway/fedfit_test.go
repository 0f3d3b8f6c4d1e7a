package gateway_test

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// rawPlan is a test plan as written, its standardize/min_max undeclared.
func rawPlan(t *testing.T, name string, epochs int, opt plan.Optimizer, ops []plan.PreprocessOp) (*plan.Plan, []byte) {
	t.Helper()
	p, err := plan.Parse(readFile(t, filepath.Join("..", "plan", "testdata", name)))
	if err != nil {
		t.Fatal(err)
	}
	p.Train.ValidationFraction, p.Train.Epochs, p.Optimizer = 0, epochs, &opt
	if ops != nil {
		p.Preprocess = ops
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

// sameStates fails unless got's statistics equal want's within tol (relative).
func sameStates(t *testing.T, what string, got, want []plan.PreprocessState, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d steps, want %d", what, len(got), len(want))
	}
	for i := range want {
		for _, pair := range [][2][]float64{{got[i].Mean, want[i].Mean}, {got[i].Std, want[i].Std}, {got[i].Min, want[i].Min}, {got[i].Max, want[i].Max}} {
			if len(pair[0]) != len(pair[1]) {
				t.Fatalf("%s: step %d has %d values, want %d", what, i, len(pair[0]), len(pair[1]))
			}
			for j := range pair[0] {
				if math.Abs(pair[0][j]-pair[1][j]) > tol*max(1, math.Abs(pair[1][j])) {
					t.Fatalf("%s: step %d (%s) input %d is %v, the pooled fit %v", what, i, want[i].Op, j, pair[0][j], pair[1][j])
				}
			}
		}
	}
}

// A federation whose plan leaves standardize undeclared fits it in round 0
// across the three gateways: the statistics equal those of all their rows
// pooled, every gateway trains with them and its released model carries
// them, and the model reaches the accuracy of the same federation with the
// statistics declared up front.
func TestFederationFitsStandardize(t *testing.T) {
	if testing.Short() {
		t.Skip("trains across three gateways twice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	train, holdout, parts := pimaParts(t, 3, false)
	f := startFederation(t, ctx, parts)
	const rounds, local = 4, 5
	raw, rawJSON := rawPlan(t, "logreg_pima.json", local, adam, nil)
	_, declaredJSON := fedPlan(t, "logreg_pima.json", train, local, adam)
	_, pooled, err := plan.Declare(context.Background(), raw, train)
	if err != nil {
		t.Fatal(err)
	}
	var models []*plan.Model
	for _, pj := range [][]byte{declaredJSON, rawJSON} {
		s, err := client.NewFederation(f.options(pj, rounds))
		if err != nil {
			t.Fatal(err)
		}
		var fits []client.FedRound
		s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 50 * time.Millisecond, Progress: func(r client.FedRound) {
			if r.Round == wire.FitRound {
				fits = append(fits, r)
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		if s.State != client.FedSucceeded || s.Error != "" {
			t.Fatalf("federation %s: %s", s.State, s.Error)
		}
		m, err := s.Model()
		if err != nil {
			t.Fatal(err)
		}
		models = append(models, m)
		if string(pj) == string(declaredJSON) {
			if s.Fit != nil || len(fits) != 0 {
				t.Fatal("a plan with declared statistics ran round 0")
			}
			continue
		}
		if s.Fit == nil || len(fits) != 1 || len(s.Fit.Participants) != 3 || s.Fit.Rows != float64(train.NumRows()) {
			t.Fatalf("round 0: %+v (progress %d), want 3 gateways and %d rows", s.Fit, len(fits), train.NumRows())
		}
		// Secure aggregation's fixed point is within 1e-9 of the pooled fit on these sums.
		sameStates(t, "the coordinator's model", m.Preprocess, pooled, 1e-9)
		for i, gw := range f.gws {
			j, err := gw.Store().Job(gateway.FedJobID(s.Options.ID))
			if err != nil {
				t.Fatal(err)
			}
			jp, err := plan.Parse(j.Plan)
			if err != nil {
				t.Fatal(err)
			}
			if spec, _ := plan.FitNeeds(jp); !spec.Empty() {
				t.Fatalf("gateway %d trained with a plan that leaves statistics to fit", i)
			}
			b, err := f.cl.Model(ctx, gw.Peer().ID(), s.Final[gw.ID()].ID)
			if err != nil {
				t.Fatal(err)
			}
			released, err := plan.ParseModel(b)
			if err != nil {
				t.Fatal(err)
			}
			sameStates(t, "gateway "+gw.ID()+"'s released model", released.Preprocess, pooled, 1e-9)
		}
	}
	var acc []float64
	for _, m := range models {
		ev, err := plan.Evaluate(m, holdout)
		if err != nil {
			t.Fatal(err)
		}
		acc = append(acc, ev.Accuracy)
	}
	t.Logf("held-out accuracy: declared statistics %.4f, fitted in round 0 %.4f", acc[0], acc[1])
	if math.Abs(acc[0]-acc[1]) > 0.02 {
		t.Fatalf("fitted in round 0: accuracy %.4f, declared: %.4f", acc[1], acc[0])
	}
}

// On review-gated data a min_max left undeclared is fitted from each
// gateway's extremes, released only after its officer approved a request
// that says which columns' extremes leave in the clear; the fitted minima
// and maxima are those of all the rows pooled, exactly.
func TestFederationFitsMinMaxAfterApproval(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a federation across three gateways")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	train, _, parts := pimaParts(t, 3, false)
	f := startFederationWith(t, ctx, parts, store.VisibilityPrivate)
	ops := []plan.PreprocessOp{{Op: "min_max", Columns: []string{"glucose", "mass"}}, {Op: "standardize"}}
	raw, rawJSON := rawPlan(t, "logreg_pima.json", 1, adam, ops)
	_, pooled, err := plan.Declare(context.Background(), raw, train)
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.NewFederation(f.options(rawJSON, 1))
	if err != nil {
		t.Fatal(err)
	}
	pending, wait := awaitOfficers(t, ctx, func(waiting func(map[string]string)) (err error) {
		s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 50 * time.Millisecond, Waiting: waiting})
		return err
	})
	for i, gw := range f.gws {
		r, err := gw.Store().GetRequest(pending[gw.ID()])
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Round 0", "minimum and maximum of glucose, mass leave IN THE CLEAR", "sums of squares of pregnant, glucose, pressure"} {
			if !strings.Contains(r.Detail, want) {
				t.Fatalf("gateway %d: the officer's request does not say %q: %s", i, want, r.Detail)
			}
		}
	}
	for i, gw := range f.gws {
		if _, err := gw.Store().Decide(pending[gw.ID()], true, f.officers[i].ID, "the extremes may leave"); err != nil {
			t.Fatal(err)
		}
	}
	wait()
	m, err := s.Model()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Preprocess[0].Min, pooled[0].Min) || !slices.Equal(m.Preprocess[0].Max, pooled[0].Max) {
		t.Fatalf("fitted min/max %v %v, pooled %v %v", m.Preprocess[0].Min, m.Preprocess[0].Max, pooled[0].Min, pooled[0].Max)
	}
	sameStates(t, "the coordinator's model", m.Preprocess, pooled, 1e-9)
}

// awaitOfficers runs fn (a federation or an evaluation, given the Waiting
// hook to pass on) in the background and returns the approvals it first
// waits for, and a function that waits for fn to end and fails on its error.
func awaitOfficers(t *testing.T, ctx context.Context, fn func(waiting func(map[string]string)) error) (map[string]string, func()) {
	t.Helper()
	waiting := make(chan map[string]string, 100)
	done := make(chan error, 1)
	go func() { done <- fn(func(p map[string]string) { waiting <- p }) }()
	select {
	case pending := <-waiting:
		return pending, func() {
			t.Helper()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
	case err := <-done:
		t.Fatalf("ended before any approval: %v", err)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	return nil, nil
}
