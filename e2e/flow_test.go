package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/internal/harness"
)

// owner is one gateway of the flow and what the test expects of it.
type owner struct {
	site, display string
	csv, plan     string
	name          string
	tags          []string
	minAccuracy   float64

	upload, holdout string
	uploadRows      int
	gw              *harness.Site
	ds              *harness.Dataset
	job             *harness.Job
	model           string
}

// splitCSV writes the upload (80 %) and held-out (20 %) parts of a CSV of
// examples/data into dir, the same deterministic split the demo makes.
func splitCSV(t *testing.T, o *owner, dir string) {
	t.Helper()
	f, err := os.Open(filepath.Join(dataDir(), o.csv))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl, err := dataset.ReadCSV(f, dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	up, ho := tbl.Split(0.2, 1)
	o.uploadRows = up.NumRows()
	base := strings.TrimSuffix(o.csv, ".csv")
	o.upload = filepath.Join(dir, base+".upload.csv")
	o.holdout = filepath.Join(dir, base+".holdout.csv")
	for path, part := range map[string]*dataset.Table{o.upload: up, o.holdout: ho} {
		b, err := part.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMultiProcessFlow runs the demo's flow with every peer a separate
// process: a network peer, gateways A (diabetes) and B (breast cancer) with
// one node each, and a data scientist who searches, trains on both datasets,
// fetches the released models and scores them on held-out rows. Every peer
// must then exit 0 on SIGTERM.
func TestMultiProcessFlow(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t, 4*time.Minute)
	network := networkName(t)

	owners := []*owner{
		{site: "gateway-a", display: "Hospital A", csv: "pima_diabetes.csv", plan: "logreg_pima.json", name: "pima-diabetes", tags: []string{"medical", "public", "diabetes"}, minAccuracy: 0.74},
		{site: "gateway-b", display: "Hospital B", csv: "wdbc_breast_cancer.csv", plan: "logreg_wdbc.json", name: "wdbc-breast-cancer", tags: []string{"medical", "public", "oncology"}, minAccuracy: 0.95},
	}
	dataOut := h.Path("data")
	if err := os.MkdirAll(dataOut, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, o := range owners {
		splitCSV(t, o, dataOut)
	}

	netPeer, err := h.StartNetwork(ctx, "network", harness.PeerOptions{Network: network})
	if err != nil {
		t.Fatal(err)
	}
	opts := harness.PeerOptions{Network: network, Bootstrap: []string{netPeer.Addr()}}
	for _, o := range owners {
		o.gw, err = h.StartSite(ctx, o.site, o.display, "owner@"+o.site+".example", "owner password "+o.site, opts)
		if err != nil {
			t.Fatal(err)
		}
		csv, err := os.ReadFile(o.upload)
		if err != nil {
			t.Fatal(err)
		}
		o.ds, err = o.gw.Admin.UploadCSV(ctx, harness.Upload{Name: o.name, Tags: o.tags, Visibility: "public", FileName: o.csv, CSV: csv})
		if err != nil {
			t.Fatal(err)
		}
		if o.ds.Rows != o.uploadRows || o.ds.ID == "" {
			t.Fatalf("%s: upload answered %+v, want %d rows and an id", o.site, o.ds, o.uploadRows)
		}
		if _, err := o.gw.StartNode(ctx, o.site+"-node"); err != nil {
			t.Fatal(err)
		}
	}

	sci, err := h.NewScientist(ctx, h.Path("scientist.key"), network, []string{netPeer.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range owners {
		u, err := o.gw.RegisterScientist(ctx, "scientist@lab.example", "scientist password", "Data Scientist", sci.PeerID)
		if err != nil {
			t.Fatal(err)
		}
		if u.PeerID != sci.PeerID || u.Role != harness.RoleDataScientist {
			t.Fatalf("%s: user created as %+v", o.site, u)
		}
	}

	t.Run("search", func(t *testing.T) {
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		found, err := sci.WaitSearch(sctx, 2, 300*time.Millisecond, "medical")
		if err != nil {
			t.Fatal(err)
		}
		if len(found) != 2 {
			t.Fatalf("search medical found %d datasets, want exactly 2: %+v", len(found), found)
		}
		for _, o := range owners {
			var hit *harness.SearchResult
			for i := range found {
				if found[i].Gateway == o.gw.Gateway.PeerID {
					if hit != nil {
						t.Fatalf("%s appears twice in the results", o.site)
					}
					hit = &found[i]
				}
			}
			if hit == nil {
				t.Fatalf("search medical did not find %s's dataset: %+v", o.site, found)
			}
			d := hit.Dataset
			if d.ID != o.ds.ID || d.Name != o.name || d.Rows != o.uploadRows || d.Visibility != "public" || hit.GatewayName != o.display {
				t.Errorf("%s: search shows %+v (gateway name %q), want id %s, name %s, %d rows, public, %q", o.site, d, hit.GatewayName, o.ds.ID, o.name, o.uploadRows, o.display)
			}
			if want := o.gw.Gateway.PeerID + "/" + o.ds.ID; hit.Ref != want {
				t.Errorf("%s: ref %q, want %q", o.site, hit.Ref, want)
			}
			tags := slices.Clone(o.tags)
			slices.Sort(tags)
			got := slices.Clone(d.Tags)
			slices.Sort(got)
			if !slices.Equal(got, tags) {
				t.Errorf("%s: tags %v, want %v", o.site, got, tags)
			}
		}
		// All tags must match: only the cancer set carries oncology.
		onc, err := sci.Search(ctx, "medical", "oncology")
		if err != nil {
			t.Fatal(err)
		}
		if len(onc) != 1 || onc[0].Dataset.ID != owners[1].ds.ID {
			t.Errorf("search medical oncology: %+v, want only %s", onc, owners[1].name)
		}
		none, err := sci.Search(ctx, "no-such-tag")
		if err != nil {
			t.Fatal(err)
		}
		if len(none) != 0 {
			t.Errorf("search no-such-tag: %+v, want nothing", none)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("train", func(t *testing.T) {
		for _, o := range owners {
			ref := o.gw.Gateway.PeerID + "/" + o.ds.ID
			j, err := sci.Train(ctx, ref, filepath.Join(planDir(), o.plan))
			if err != nil {
				t.Fatalf("%s: %v", o.site, err)
			}
			if !j.Succeeded() || j.Gateway != o.gw.Gateway.PeerID || j.Dataset != o.ds.ID || j.Attempt < 1 {
				t.Fatalf("%s: train --wait ended with %+v", o.site, j)
			}
			// One node per gateway, nothing failing: the first lease must do.
			if j.Attempt != 1 {
				t.Errorf("%s: job succeeded on attempt %d, want 1 (a lease was lost)", o.site, j.Attempt)
			}
			if j.Ref != o.gw.Gateway.PeerID+"/"+j.ID {
				t.Errorf("%s: job ref %q is not GATEWAY_PEER_ID/JOB_ID", o.site, j.Ref)
			}
			o.job = j
			// The job, seen again by the data scientist and by the gateway's admin.
			again, err := sci.Job(ctx, j.Ref)
			if err != nil {
				t.Fatal(err)
			}
			if again.State != "succeeded" || again.ID != j.ID {
				t.Errorf("%s: fedgrid job shows %+v", o.site, again)
			}
			jobs, err := o.gw.Admin.Jobs(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(jobs) != 1 || jobs[0].ID != j.ID || jobs[0].State != "succeeded" || jobs[0].Requester != sci.PeerID || jobs[0].DatasetID != o.ds.ID {
				t.Errorf("%s: GET /api/v1/jobs shows %+v, want the one succeeded job of %s", o.site, jobs, sci.PeerID)
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("held_out_accuracy", func(t *testing.T) {
		for _, o := range owners {
			o.model = h.Path(o.name + ".model.json")
			if err := sci.Result(ctx, o.job.Ref, o.model); err != nil {
				t.Fatal(err)
			}
			ev, err := h.ModelEval(ctx, o.model, o.holdout)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: held-out accuracy %.4f on %d rows (loss %.4f, AUC %.4f)", o.name, ev.Accuracy, ev.Rows, ev.Loss, ev.AUC)
			if ev.Rows == 0 || ev.Rows+o.uploadRows != map[string]int{"pima_diabetes.csv": 768, "wdbc_breast_cancer.csv": 569}[o.csv] {
				t.Errorf("%s: evaluated %d rows; with %d uploaded that is not the whole file", o.name, ev.Rows, o.uploadRows)
			}
			if ev.Accuracy < o.minAccuracy {
				t.Errorf("%s: held-out accuracy %.4f < %.2f", o.name, ev.Accuracy, o.minAccuracy)
			}
		}
	})

	t.Run("recompute_without_fedgrid", func(t *testing.T) {
		for _, o := range owners {
			if o.model == "" {
				t.Skip("no model fetched")
			}
			checkRecompute(t, ctx, h, o.model, o.holdout, o.gw.Gateway.PeerID, o.ds.ID, o.job.ID)
		}
	})

	t.Run("sigterm_exit_0", func(t *testing.T) {
		procs := h.Procs()
		if len(procs) != 5 {
			t.Fatalf("%d peers running, want 5 (network, 2 gateways, 2 nodes)", len(procs))
		}
		for _, p := range procs {
			if p.Exited() {
				t.Errorf("%s exited before SIGTERM: %s", p.Name, p.State())
			}
		}
		if err := h.StopAll(); err != nil {
			t.Fatal(err)
		}
		for _, p := range procs {
			if p.ExitCode() != 0 {
				t.Errorf("%s: %s after SIGTERM, want exit status 0", p.Name, p.State())
			}
		}
	})
}
