package gateway_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// A model scored on three gateways' held-out rows: the federated figures
// equal those of the pooled rows (accuracy exactly, loss to the fixed
// point's error, AUC within the histograms' bin error); each gateway's part
// is a job that succeeds with nothing to release and spends no epsilon; on
// review-gated data the officer approves first; a gateway where the user may
// not use the dataset, or whose schema the model does not fit, refuses
// with a clear reason.
func TestFederatedEvaluation(t *testing.T) {
	if testing.Short() {
		t.Skip("evaluates across three gateways")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	train, holdout, _ := pimaParts(t, 1, false)
	var parts []*dataset.Table
	for k := range 3 {
		var rows []int
		for r := k; r < holdout.NumRows(); r += 3 {
			rows = append(rows, r)
		}
		parts = append(parts, holdout.Select(rows))
	}
	f := startFederation(t, ctx, parts)
	p, _ := rawPlan(t, "logreg_pima.json", 20, adam, nil)
	m, err := plan.Train(ctx, p, train, plan.TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	participants := f.options(nil, 1).Participants
	run := client.FedRunOptions{Poll: 50 * time.Millisecond}

	res, err := f.cl.FedEvaluate(ctx, client.EvalOptions{Model: m, Participants: participants}, run)
	if err != nil {
		t.Fatal(err)
	}
	want, err := plan.Evaluate(m, holdout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("federated: rows %d, accuracy %.4f, loss %.6f, AUC %.4f (bin error %.2g); pooled: accuracy %.4f, loss %.6f, AUC %.4f",
		res.Rows, res.Accuracy, res.Loss, res.AUC, res.AUCError, want.Accuracy, want.Loss, want.AUC)
	if res.Rows != holdout.NumRows() || res.Accuracy != want.Accuracy || len(res.Gateways) != 3 {
		t.Fatalf("federated: %d rows from %d gateways, accuracy %v; pooled: %d rows, accuracy %v", res.Rows, len(res.Gateways), res.Accuracy, want.Rows, want.Accuracy)
	}
	if math.Abs(res.Loss-want.Loss) > 1e-6 || res.AUCError <= 0 || math.Abs(res.AUC-want.AUC) > res.AUCError {
		t.Fatalf("federated loss %v AUC %v (bin error %v); pooled %v, %v", res.Loss, res.AUC, res.AUCError, want.Loss, want.AUC)
	}
	for i, gw := range f.gws {
		st := gw.Store()
		j, err := st.Job(gateway.FedJobID(res.Federation))
		if err != nil {
			t.Fatal(err)
		}
		if j.State != wire.StateSucceeded || !j.Evaluation || j.Release != "" || j.EpsilonMicroEps != 0 {
			t.Fatalf("gateway %d: job %s, evaluation %v, release %q, epsilon %d", i, j.State, j.Evaluation, j.Release, j.EpsilonMicroEps)
		}
		if _, err := st.Result(j.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("gateway %d holds a result for an evaluation: %v", i, err)
		}
		if u, _ := st.User(f.sci[i].ID); u.SpentMicroEps != 0 || u.ReservedMicroEps != 0 {
			t.Fatalf("gateway %d: an evaluation spent %d, reserved %d", i, u.SpentMicroEps, u.ReservedMicroEps)
		}
	}

	t.Run("review", func(t *testing.T) {
		st := f.gws[0].Store()
		no := false
		if err := st.SetOverride(store.Override{DatasetID: f.ds[0].ID, UserID: f.sci[0].ID, AutoRelease: &no}, "test"); err != nil {
			t.Fatal(err)
		}
		defer st.SetOverride(store.Override{DatasetID: f.ds[0].ID, UserID: f.sci[0].ID}, "test")
		var res *client.EvalResult
		pending, wait := awaitOfficers(t, ctx, func(waiting func(map[string]string)) (err error) {
			run := run
			run.Waiting = waiting
			res, err = f.cl.FedEvaluate(ctx, client.EvalOptions{Model: m, Participants: participants}, run)
			return err
		})
		r, err := st.GetRequest(pending[f.gws[0].ID()])
		if err != nil || len(pending) != 1 {
			t.Fatalf("pending %v: %v", pending, err)
		}
		if r.Kind != wire.KindFederation || !strings.Contains(r.Detail, "Federated evaluation") || !strings.Contains(r.Detail, "histogram of the model's scores over 1000 bins") {
			t.Fatalf("request %s: %s", r.Kind, r.Detail)
		}
		if j, err := st.Job(r.JobID); err != nil || j.State != wire.StateRunning || !j.Evaluation {
			t.Fatalf("the evaluation's job before approval: %+v, %v", j, err)
		}
		if _, err := st.Decide(r.ID, true, f.officers[0].ID, "figures may leave"); err != nil {
			t.Fatal(err)
		}
		wait()
		if res.Accuracy != want.Accuracy || len(res.Gateways) != 3 {
			t.Fatalf("after approval: accuracy %v from %d gateways", res.Accuracy, len(res.Gateways))
		}
	})

	t.Run("no permission", func(t *testing.T) {
		st := f.gws[2].Store()
		no := false
		if err := st.SetOverride(store.Override{DatasetID: f.ds[2].ID, UserID: f.sci[2].ID, Train: &no}, "test"); err != nil {
			t.Fatal(err)
		}
		defer st.SetOverride(store.Override{DatasetID: f.ds[2].ID, UserID: f.sci[2].ID}, "test")
		res, err := f.cl.FedEvaluate(ctx, client.EvalOptions{Model: m, Participants: participants}, run)
		if err == nil || !strings.Contains(err.Error(), "only 2 of 3 gateways joined") || !strings.Contains(res.Refused[f.gws[2].ID()], "you may not use dataset") {
			t.Fatalf("err %v, refused %v", err, res.Refused)
		}
		// With --min-gateways 2 the others' figures come out.
		res, err = f.cl.FedEvaluate(ctx, client.EvalOptions{Model: m, Participants: participants, MinGateways: 2}, run)
		if err != nil || len(res.Gateways) != 2 || res.Rows != parts[0].NumRows()+parts[1].NumRows() {
			t.Fatalf("two gateways: %+v, %v", res, err)
		}
	})

	t.Run("schema mismatch", func(t *testing.T) {
		other := *m
		op := *m.Plan
		op.Features = append([]string{"cholesterol"}, op.Features[1:]...)
		other.Plan = &op
		_, err := f.cl.FedEvaluate(ctx, client.EvalOptions{Model: &other, Participants: participants}, run)
		if err == nil || !strings.Contains(err.Error(), "the model does not fit dataset") || !strings.Contains(err.Error(), "cholesterol") {
			t.Fatalf("err %v", err)
		}
	})
}
