package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
)

// TestDemoPlansOnEachEngine trains the demo plans (examples/plans) end to
// end through a node on each gradient engine: a node started with
// `--engine native`, then one with `--engine gorgonia`, each the gateway's
// only node, takes both jobs, logs the engine it trains with, and the
// released models score on held-out rows like the demo's. `fedgrid plan run
// --engine` trains the same plans locally on each engine.
func TestDemoPlansOnEachEngine(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t, 6*time.Minute)
	network := networkName(t)
	owners := []*owner{
		{csv: "pima_diabetes.csv", plan: "logreg_pima.json", name: "pima-diabetes", minAccuracy: 0.74},
		{csv: "wdbc_breast_cancer.csv", plan: "logreg_wdbc.json", name: "wdbc-breast-cancer", minAccuracy: 0.95},
	}
	dataOut := h.Path("data")
	if err := os.MkdirAll(dataOut, 0o755); err != nil {
		t.Fatal(err)
	}
	netPeer, err := h.StartNetwork(ctx, "network", harness.PeerOptions{Network: network})
	if err != nil {
		t.Fatal(err)
	}
	opts := harness.PeerOptions{Network: network, Bootstrap: []string{netPeer.Addr()}}
	site, err := h.StartSite(ctx, "gateway", "Hospital A", "owner@a.example", "a long owner password", opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range owners {
		splitCSV(t, o, dataOut)
		csv, err := os.ReadFile(o.upload)
		if err != nil {
			t.Fatal(err)
		}
		if o.ds, err = site.Admin.UploadCSV(ctx, harness.Upload{Name: o.name, Tags: []string{"medical"}, Visibility: "public", FileName: o.csv, CSV: csv}); err != nil {
			t.Fatal(err)
		}
	}
	sci, err := h.NewScientist(ctx, h.Path("scientist.key"), network, []string{netPeer.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := site.RegisterScientist(ctx, "ds@lab.example", "a long ds password", "DS", sci.PeerID); err != nil {
		t.Fatal(err)
	}

	for _, engine := range []string{"native", "gorgonia"} {
		t.Run(engine, func(t *testing.T) {
			tok, err := site.Admin.JoinToken(ctx)
			if err != nil {
				t.Fatal(err)
			}
			nodeOpts := opts
			nodeOpts.Extra = []string{"--engine", engine}
			nd, err := h.StartNode(ctx, "node-"+engine, site.Gateway.Addr(), tok, nodeOpts)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range owners {
				j, err := sci.Train(ctx, site.Gateway.PeerID+"/"+o.ds.ID, filepath.Join(planDir(), o.plan))
				if err != nil {
					t.Fatalf("%s: %v", o.name, err)
				}
				if !j.Succeeded() {
					t.Fatalf("%s: train --wait ended with %+v", o.name, j)
				}
				model := h.Path(fmt.Sprintf("%s.%s.model.json", o.name, engine))
				if err := sci.Result(ctx, j.Ref, model); err != nil {
					t.Fatal(err)
				}
				ev, err := h.ModelEval(ctx, model, o.holdout)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s on %s: held-out accuracy %.4f on %d rows", o.name, engine, ev.Accuracy, ev.Rows)
				if ev.Accuracy < o.minAccuracy {
					t.Errorf("%s on %s: held-out accuracy %.4f < %.2f", o.name, engine, ev.Accuracy, o.minAccuracy)
				}
				// The job ran on this node, with the engine it was given.
				if want := "job=" + j.ID; !strings.Contains(string(nd.Stderr()), want) {
					t.Errorf("%s: node-%s never trained %s; its log:\n%s", o.name, engine, j.ID, nd.Tail(20))
				}
				local := h.Path(fmt.Sprintf("%s.%s.local.json", o.name, engine))
				if _, err := h.Run(ctx, "plan", "run", "--engine", engine, "--plan", filepath.Join(planDir(), o.plan), "--data", o.upload, "--out", local); err != nil {
					t.Fatalf("plan run --engine %s: %v", engine, err)
				}
			}
			for _, line := range strings.Split(string(nd.Stderr()), "\n") {
				if strings.Contains(line, "training") && !strings.Contains(line, "engine="+engine) {
					t.Errorf("node-%s trained with another engine: %s", engine, line)
				}
			}
			if !strings.Contains(string(nd.Stderr()), "engine="+engine) {
				t.Errorf("node-%s does not say which engine it trains with; its log:\n%s", engine, nd.Tail(20))
			}
			if err := nd.Stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
