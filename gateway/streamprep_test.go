package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/plan"
)

// prepFeatures are the columns of prepTable.
var prepFeatures = []string{"f0", "f1", "f2", "f3"}

// prepTable is rows rows of four features of different scales (one around
// 1000 with a spread of 5) and a 0/1 label from a logistic model of them:
// more rows than one batch of a streamed pass, so the gateway's fits and
// evaluations cross batch boundaries.
func prepTable(t *testing.T, rows int) *dataset.Table {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, 12))
	var b strings.Builder
	b.WriteString(strings.Join(prepFeatures, ",") + ",label\n")
	for range rows {
		z := [4]float64{rng.NormFloat64(), rng.NormFloat64(), rng.NormFloat64(), rng.NormFloat64()}
		v := []float64{50 + 10*z[0], 1e3 * z[1], 1000 + 5*z[2], math.Round(3*z[3]*1e3) / 1e3}
		label := 0
		if rng.Float64() < 1/(1+math.Exp(-(z[0]-z[1]+0.5*z[2]))) {
			label = 1
		}
		for _, x := range v {
			b.WriteString(dataset.FormatNumber(x) + ",")
		}
		fmt.Fprintf(&b, "%d\n", label)
	}
	tab, err := dataset.ReadCSV(strings.NewReader(b.String()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// prepPlan is a logistic regression over prepFeatures whose standardize
// leaves its statistics to fit.
func prepPlan(t *testing.T, workers, rounds int) (*plan.Plan, []byte) {
	t.Helper()
	p, err := plan.Parse(readFile(t, filepath.Join("..", "plan", "testdata", "logreg_pima.json")))
	if err != nil {
		t.Fatal(err)
	}
	p.Features, p.Label = prepFeatures, "label"
	p.Params["w"] = plan.ParamDef{Shape: []int{len(prepFeatures), 1}, Init: "zeros"}
	p.Train.Epochs, p.Train.BatchSize, p.Train.ValidationFraction = 1, 256, 0
	p.Train.Workers, p.Train.Rounds = workers, rounds
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

// inMemoryStandardize is standardize fitted on the whole table in memory,
// column by column: the mean and the population standard deviation by two
// passes over the column's values.
func inMemoryStandardize(t *testing.T, tab *dataset.Table) (mean, std []float64) {
	t.Helper()
	for _, f := range prepFeatures {
		v, err := tab.Numeric(f)
		if err != nil {
			t.Fatal(err)
		}
		m, sd := gateway.TwoPassMeanStd(v)
		mean, std = append(mean, m), append(std, sd)
	}
	return mean, std
}

func sameFit(t *testing.T, what string, st plan.PreprocessState, mean, std []float64, tol float64) {
	t.Helper()
	if st.Op != "standardize" || len(st.Mean) != len(mean) || len(st.Std) != len(std) {
		t.Fatalf("%s: %+v, want standardize over %d inputs", what, st, len(mean))
	}
	for j := range mean {
		if math.Abs(st.Mean[j]-mean[j]) > tol*max(1, math.Abs(mean[j])) || math.Abs(st.Std[j]-std[j]) > tol*max(1, std[j]) {
			t.Fatalf("%s: input %d mean %v std %v; the in-memory fit %v %v", what, j, st.Mean[j], st.Std[j], mean[j], std[j])
		}
	}
}

// The gateway prepares a data-parallel job, runs a federation's round 0
// and scores a federated evaluation by streamed passes over the dataset
// version: on rows over several batches, the fitted standardisation equals
// the in-memory fit of the whole table (1e-9 relative; the federation's
// through secure aggregation's fixed point), and the evaluation equals the
// model scored on the whole table in memory (accuracy exactly, loss to
// 1e-6). Later rounds take the statistics from round 1's shard plan.
func TestStreamedPrepMatchesInMemoryFit(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a data-parallel job and runs a federation")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tab := prepTable(t, 10_000)
	mean, std := inMemoryStandardize(t, tab)

	t.Run("data-parallel", func(t *testing.T) {
		e := setup(t, ctx, 1)
		for range 2 {
			e.startNode(t, ctx)
		}
		var buf bytes.Buffer
		if err := tab.WriteCSV(&buf); err != nil {
			t.Fatal(err)
		}
		ds := &store.Dataset{Name: "prep", Visibility: "public", Columns: tab.Columns(), Rows: tab.NumRows()}
		if err := e.gw.Store().PutDataset(ds, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		// The version's catalog summary is a scan of its own, made in the
		// background: wait for it so that only the job's passes count.
		if err := e.gw.WaitSummary(ctx, ds.ID); err != nil {
			t.Fatal(err)
		}
		scans := e.gw.DatasetScans()
		_, pj := prepPlan(t, 2, 2)
		m, j := e.trainModel(t, ctx, ds.ID, pj)
		sameFit(t, "the data-parallel model", m.Preprocess[0], mean, std, 1e-9)
		// Both rounds' shards trained with the plan fitted once.
		var plans [][]byte
		for r := 1; r <= 2; r++ {
			sj, err := e.gw.Store().Job(fmt.Sprintf("%s-r%d-s0", j.ID, r))
			if err != nil {
				t.Fatal(err)
			}
			plans = append(plans, sj.Plan)
		}
		if !bytes.Equal(plans[0], plans[1]) {
			t.Fatalf("round 2's shard plan differs from round 1's:\n%s\n%s", plans[0], plans[1])
		}
		if n := e.gw.DatasetScans() - scans; n != 1 {
			t.Fatalf("the job read the dataset %d times to fit, want once", n)
		}
	})

	t.Run("federation", func(t *testing.T) {
		var parts []*dataset.Table
		for k := range 2 {
			var rows []int
			for r := k; r < tab.NumRows(); r += 2 {
				rows = append(rows, r)
			}
			parts = append(parts, tab.Select(rows))
		}
		f := startFederation(t, ctx, parts)
		_, raw := prepPlan(t, 0, 0)
		o := f.options(raw, 1)
		o.MaxRows = tab.NumRows()
		s, err := client.NewFederation(o)
		if err != nil {
			t.Fatal(err)
		}
		scans := func() []int64 {
			var n []int64
			for _, gw := range f.gws {
				n = append(n, gw.DatasetScans())
			}
			return n
		}
		for i, gw := range f.gws {
			if err := gw.WaitSummary(ctx, f.ds[i].ID); err != nil {
				t.Fatal(err)
			}
		}
		before := scans()
		if s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 50 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		// One pass over each gateway's rows: round 0's (training rounds
		// declare every statistic, so their plans read no row).
		for i, n := range scans() {
			if n-before[i] != 1 {
				t.Fatalf("gateway %d read its dataset %d times in the federation, want once", i, n-before[i])
			}
		}
		if s.State != client.FedSucceeded || s.Fit == nil || s.Fit.Rows != float64(tab.NumRows()) {
			t.Fatalf("federation %s (%s): round 0 %+v", s.State, s.Error, s.Fit)
		}
		m, err := s.Model()
		if err != nil {
			t.Fatal(err)
		}
		sameFit(t, "round 0's fit", m.Preprocess[0], mean, std, 1e-9)

		res, err := f.cl.FedEvaluate(ctx, client.EvalOptions{Model: m, Participants: o.Participants}, client.FedRunOptions{Poll: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		for i, n := range scans() {
			if n-before[i] != 2 {
				t.Fatalf("gateway %d: %d passes over its dataset after the evaluation, want 2", i, n-before[i])
			}
		}
		want, err := plan.Evaluate(m, tab)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("federated evaluation: %d rows, accuracy %.4f, loss %.6f; in memory: accuracy %.4f, loss %.6f", res.Rows, res.Accuracy, res.Loss, want.Accuracy, want.Loss)
		if res.Rows != tab.NumRows() || res.Accuracy != want.Accuracy || math.Abs(res.Loss-want.Loss) > 1e-6 {
			t.Fatalf("federated evaluation: %d rows, accuracy %v, loss %v; in memory %d, %v, %v", res.Rows, res.Accuracy, res.Loss, want.Rows, want.Accuracy, want.Loss)
		}
	})
}
