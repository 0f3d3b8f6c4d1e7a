package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
	"github.com/fedgrid/fedgrid/internal/wait"
)

// thresholdPlan standardizes the salary with mean t and std 1e-6, then
// relu and six squarings: a salary above t overflows to +Inf and training
// fails; with every salary below t the features are all zero and training
// succeeds. Whether the job fails says whether some salary exceeds t.
func thresholdPlan(t float64) map[string]any {
	fwd := []any{
		map[string]any{"op": "matmul", "in": []string{"x", "w"}, "out": "z"},
		map[string]any{"op": "relu", "in": []string{"z"}, "out": "r"},
	}
	prev := "r"
	for k := range 6 {
		out := fmt.Sprintf("p%d", k)
		fwd = append(fwd, map[string]any{"op": "mul", "in": []string{prev, prev}, "out": out})
		prev = out
	}
	fwd = append(fwd, map[string]any{"op": "add", "in": []string{prev, "b"}, "out": "y_hat"})
	return map[string]any{
		"format": "fedgrid.plan/v1", "name": "threshold", "features": []string{"salary"}, "label": "label",
		"preprocess": []any{map[string]any{"op": "standardize", "mean": []float64{t}, "std": []float64{1e-6}}},
		"params":     map[string]any{"w": map[string]any{"shape": []int{1, 1}, "init": "ones"}, "b": map[string]any{"shape": []int{1}, "init": "zeros"}},
		"forward":    fwd,
		"loss":       map[string]any{"op": "mse", "in": []string{"y_hat", "y"}},
		"optimizer":  map[string]any{"name": "sgd", "learning_rate": 0.01},
		"train":      map[string]any{"epochs": 3, "batch_size": 8, "seed": 1, "validation_fraction": 0},
	}
}

// requesterView drops from a requester's JSON view of a job what differs
// between two jobs by construction: their IDs, their submission times and
// the plan each submitted (its own input, which differs in the threshold).
func requesterView(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, b)
	}
	for _, k := range []string{"id", "ref", "created_at", "queued_at", "deadline", "reservation_id", "plan", "plan_table", "requester"} {
		delete(m, k)
	}
	return m
}

// TestOutcomeUnderReview (issue 13, acceptance 1): two jobs on a private
// dataset whose plans differ only in a threshold around a secret cell (one
// overflows, one trains) look the same to their requester until an
// officer decides: `train --wait` exit code and JSON, `job --json`, the
// HTTP job view and the `result` refusal, from submission on, before and
// after both jobs ended. After approval, each shows its outcome.
func TestOutcomeUnderReview(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t, 4*time.Minute)
	network := networkName(t)

	// The secret cell: heidi's salary, 123456; everyone else earns less than 90,000.
	rng := rand.New(rand.NewPCG(3, 4))
	var csv strings.Builder
	csv.WriteString("name,salary,label\n")
	for i := range 40 {
		s := 30000 + rng.IntN(60000)
		fmt.Fprintf(&csv, "p%d,%d,%.3f\n", i, s, float64(s)/100000)
	}
	csv.WriteString("heidi,123456,1.2\n")

	netPeer, err := h.StartNetwork(ctx, "network", harness.PeerOptions{Network: network})
	if err != nil {
		t.Fatal(err)
	}
	opts := harness.PeerOptions{Network: network, Bootstrap: []string{netPeer.Addr()}}
	site, err := h.StartSite(ctx, "gateway", "Payroll", "owner@payroll.example", "owner password payroll", opts)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := site.Admin.UploadCSV(ctx, harness.Upload{Name: "salaries", Tags: []string{"hr"}, Visibility: "private", CSV: []byte(csv.String())})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := site.StartNode(ctx, "node"); err != nil {
		t.Fatal(err)
	}
	sci, err := h.NewScientist(ctx, h.Path("scientist.key"), network, []string{netPeer.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := site.RegisterScientist(ctx, "sci@lab.example", "scientist password", "Data Scientist", sci.PeerID); err != nil {
		t.Fatal(err)
	}
	sciHTTP := harness.NewAdmin(site.Gateway.HTTP)
	if err := sciHTTP.Login(ctx, "sci@lab.example", "scientist password"); err != nil {
		t.Fatal(err)
	}
	ref := site.Gateway.PeerID + "/" + ds.ID

	type run struct {
		name  string
		plan  string
		job   string // job ref
		id    string
		exit  int
		train map[string]any
		fails bool
	}
	runs := []*run{{name: "overflows", fails: true}, {name: "trains"}}
	for i, r := range runs {
		thr := 123000.0 // below heidi's salary: the job overflows
		if !r.fails {
			thr = 124000 // above every salary: the job trains
		}
		b, _ := json.Marshal(thresholdPlan(thr))
		r.plan = h.Path(fmt.Sprintf("plan-%d.json", i))
		if err := os.WriteFile(r.plan, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// train --wait --json: both return at once, under review, exit 0.
	for _, r := range runs {
		res, err := h.Run(ctx, sciArgs(sci, "train", "--dataset", ref, "--plan", r.plan, "--wait", "--json")...)
		if res == nil {
			t.Fatal(err)
		}
		r.exit = res.ExitCode
		r.train = requesterView(t, res.Stdout)
		var j struct{ ID, Ref string }
		_ = json.Unmarshal(res.Stdout, &j)
		r.id, r.job = j.ID, j.Ref
		if r.id == "" {
			t.Fatalf("%s: train printed no job: %s %s", r.name, res.Stdout, res.Stderr)
		}
		if !strings.Contains(string(res.Stderr), "under review") {
			t.Errorf("%s: train --wait does not say the job is under review: %s", r.name, res.Stderr)
		}
	}
	if runs[0].exit != 0 || runs[0].exit != runs[1].exit || !reflect.DeepEqual(runs[0].train, runs[1].train) {
		t.Fatalf("train --wait differs:\n%d %v\n%d %v", runs[0].exit, runs[0].train, runs[1].exit, runs[1].train)
	}
	if runs[0].train["state"] != "under_review" {
		t.Fatalf("train --wait: %v", runs[0].train)
	}

	// What the requester sees, by every route, for both jobs.
	type seen struct {
		job, http      map[string]any
		resultExit     int
		resultRefusal  string
		requestsListed int
	}
	look := func(r *run) seen {
		t.Helper()
		var s seen
		res, err := h.Run(ctx, sciArgs(sci, "job", "--json", r.job)...)
		if err != nil {
			t.Fatalf("%s: job: %v", r.name, err)
		}
		s.job = requesterView(t, res.Stdout)
		var raw json.RawMessage
		if err := sciHTTP.DoJSON(ctx, http.MethodGet, "/api/v1/jobs/"+r.id, nil, &raw); err != nil {
			t.Fatalf("%s: HTTP job: %v", r.name, err)
		}
		s.http = requesterView(t, raw)
		res, _ = h.Run(ctx, sciArgs(sci, "result", "--out", h.Path(r.name+".model.json"), r.job)...)
		s.resultExit = res.ExitCode
		s.resultRefusal = strings.NewReplacer(r.job, "JOB", r.id, "ID").Replace(strings.TrimSpace(string(res.Stderr)))
		var list struct {
			Requests []json.RawMessage `json:"requests"`
		}
		if err := sciHTTP.DoJSON(ctx, http.MethodGet, "/api/v1/requests?job="+r.id, nil, &list); err != nil {
			t.Fatalf("%s: HTTP requests: %v", r.name, err)
		}
		s.requestsListed = len(list.Requests)
		return s
	}
	same := func(when string) {
		t.Helper()
		a, b := look(runs[0]), look(runs[1])
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s, the requester tells the jobs apart:\n%s: %+v\n%s: %+v", when, runs[0].name, a, runs[1].name, b)
		}
		if a.job["state"] != "under_review" || a.http["state"] != "under_review" || a.resultExit != 1 || !strings.Contains(a.resultRefusal, "under review") || a.requestsListed != 0 {
			t.Fatalf("%s: the requester sees %+v", when, a)
		}
	}
	same("right after submission")

	// The officer (the Owner) sees the truth: wait until both jobs ended and
	// their outcomes are in the review queue.
	pending := map[string]string{} // job ID -> release request ID
	wait.For(t, 2*time.Minute, "both outcomes in the review queue", func() error {
		for _, r := range runs {
			var list struct {
				Requests []struct {
					ID, State string
					Error     string `json:"error"`
				} `json:"requests"`
			}
			if err := site.Admin.DoJSON(ctx, http.MethodGet, "/api/v1/requests?kind=release&job="+r.id, nil, &list); err != nil {
				return err
			}
			if len(list.Requests) != 1 || list.Requests[0].State != "pending" {
				return fmt.Errorf("%s: %+v", r.name, list.Requests)
			}
			if r.fails != (list.Requests[0].Error != "") {
				t.Fatalf("%s: the officer sees %+v", r.name, list.Requests[0])
			}
			pending[r.id] = list.Requests[0].ID
		}
		return nil
	})
	var officerView []harness.AdminJob
	if officerView, err = site.Admin.Jobs(ctx); err != nil {
		t.Fatal(err)
	}
	for _, j := range officerView {
		for _, r := range runs {
			if j.ID == r.id && (j.State == "failed") != r.fails {
				t.Fatalf("%s: the officer sees state %s", r.name, j.State)
			}
		}
	}
	same("after both jobs ended")

	// The officer releases both outcomes: each shows its own.
	for _, r := range runs {
		if err := site.Admin.DoJSON(ctx, http.MethodPost, "/api/v1/requests/"+pending[r.id]+"/approve", map[string]string{"reason": "reviewed"}, nil); err != nil {
			t.Fatalf("%s: approve: %v", r.name, err)
		}
	}
	for _, r := range runs {
		j, err := sci.Job(ctx, r.job)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r.fails && (j.State != "failed" || !strings.Contains(j.Error, "infinite")):
			t.Errorf("%s after approval: %+v", r.name, j)
		case !r.fails && (j.State != "succeeded" || len(j.Metrics) == 0):
			t.Errorf("%s after approval: %+v", r.name, j)
		}
		err = sci.Result(ctx, r.job, h.Path(r.name+".model.json"))
		if r.fails != (err != nil) {
			t.Errorf("%s: result after approval: %v", r.name, err)
		}
	}
}

func sciArgs(s *harness.Scientist, cmd string, rest ...string) []string {
	args := []string{cmd, "--network", s.Network}
	for _, b := range s.Bootstrap {
		args = append(args, "--bootstrap", b)
	}
	return append(append(args, "--key", s.Key), rest...)
}
