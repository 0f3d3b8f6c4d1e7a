// Command demo runs fedgrid end to end on this machine, every peer a real
// process on loopback: a network peer, two hospitals' gateways (A hosts the
// diabetes data, B the breast cancer data), one worker node per gateway, and
// a data scientist who finds both datasets, trains a logistic regression on
// each without ever seeing a row, and scores the released models on rows the
// hospitals never uploaded. Then both hospitals hold half of the diabetes
// rows each: the data scientist trains one federated model across both
// gateways (secure aggregation: neither hospital's update is seen alone) and
// scores it on the held-out rows beside each hospital's own model. `make
// demo` runs it:
//
//	go run ./examples/demo --bin bin/fedgrid --data examples/data
//
// It exits 0 when every step worked, both models reach their accuracy bar
// and every peer stopped cleanly; 1 otherwise.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/internal/harness"
)

// hospital is one data owner of the demo.
type hospital struct {
	site, display string // peer name, gateway display name
	csv, plan     string // file names under --data and --plans
	name          string // dataset name
	tags          []string
	minAccuracy   float64

	upload, holdout string // the split CSVs
	gw              *harness.Site
	ref             string // GATEWAY_PEER_ID/DATASET_ID
	job             *harness.Job
	model           string
	eval            *harness.Evaluation
}

func main() { os.Exit(run()) }

func run() int {
	bin := flag.String("bin", "bin/fedgrid", "the fedgrid binary (make build)")
	data := flag.String("data", "examples/data", "directory with pima_diabetes.csv and wdbc_breast_cancer.csv")
	plans := flag.String("plans", "examples/plans", "directory with logreg_pima.json, logreg_wdbc.json and logreg_pima_federated.json")
	work := flag.String("work", "", "work directory for peers' data and logs (default: a new temporary directory, removed on success)")
	holdout := flag.Float64("holdout", 0.2, "fraction of each CSV kept back from upload to score the models")
	seed := flag.Int64("seed", 1, "seed of the upload/held-out split")
	timeout := flag.Duration("timeout", 4*time.Minute, "give up after this long")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Printf("[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	dir := *work
	removeDir := false
	if dir == "" {
		d, err := os.MkdirTemp("", "fedgrid-demo-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 1
		}
		dir, removeDir = d, true
	}
	h, err := harness.New(harness.Config{Bin: *bin, Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}

	hospitals := []*hospital{
		{site: "gateway-a", display: "Hospital A", csv: "pima_diabetes.csv", plan: "logreg_pima.json", name: "pima-diabetes", tags: []string{"medical", "public", "diabetes"}, minAccuracy: 0.74},
		{site: "gateway-b", display: "Hospital B", csv: "wdbc_breast_cancer.csv", plan: "logreg_wdbc.json", name: "wdbc-breast-cancer", tags: []string{"medical", "public", "oncology"}, minAccuracy: 0.95},
	}
	fed := &federated{}
	sci, flowErr := flow(ctx, h, say, hospitals, *data, *plans, *holdout, *seed)
	if flowErr == nil {
		flowErr = federate(ctx, h, say, sci, hospitals, fed, *plans)
	}

	say("stopping every peer with SIGTERM; each must exit 0")
	stopErr := h.Close()
	if stopErr == nil {
		for _, p := range h.Procs() {
			say("  %-15s %s", p.Name, p.State())
		}
	}

	if flowErr != nil && errors.Is(context.Cause(ctx), context.Canceled) {
		if stopErr != nil {
			fmt.Fprintln(os.Stderr, "demo: interrupted; a peer did not stop cleanly:", stopErr)
			return 1
		}
		fmt.Fprintln(os.Stderr, "demo: interrupted; every peer it started has stopped")
		if removeDir {
			_ = os.RemoveAll(dir)
		}
		return 130
	}
	failed := false
	if flowErr != nil {
		failed = true
		fmt.Fprintln(os.Stderr, "demo: FAILED:", flowErr)
	}
	if stopErr != nil {
		failed = true
		fmt.Fprintln(os.Stderr, "demo: a peer did not stop cleanly:", stopErr)
	}
	if flowErr == nil {
		fmt.Println()
		fmt.Println("Held-out accuracy of the released models (rows never uploaded to any gateway):")
		for _, hp := range hospitals {
			verdict := "ok"
			if hp.eval.Accuracy < hp.minAccuracy {
				verdict = "TOO LOW"
				failed = true
			}
			fmt.Printf("  %-20s %-11s accuracy %.4f on %d rows  (need >= %.2f: %s)\n", hp.name, hp.display, hp.eval.Accuracy, hp.eval.Rows, hp.minAccuracy, verdict)
		}
		fmt.Println()
		fmt.Printf("Diabetes, each hospital holding half of the rows (held-out: the same %d rows):\n", fed.federated.Rows)
		for i, hp := range hospitals {
			fmt.Printf("  %-11s own half only             accuracy %.4f\n", hp.display, fed.own[i].Accuracy)
		}
		verdict := "ok"
		if fed.federated.Accuracy < minFederatedAccuracy {
			verdict = "TOO LOW"
			failed = true
		}
		fmt.Printf("  federated   both halves, %d rounds   accuracy %.4f  (need >= %.2f: %s)\n", fedRounds, fed.federated.Accuracy, minFederatedAccuracy, verdict)
	}
	if failed {
		fmt.Fprintf(os.Stderr, "\nlast lines of each peer's log (all logs in %s):\n%s", h.LogDir(), h.LogTails(15))
		return 1
	}
	if removeDir {
		_ = os.RemoveAll(dir)
	}
	say("done: every process this demo started has exited 0")
	return 0
}

func flow(ctx context.Context, h *harness.Harness, say func(string, ...any), hospitals []*hospital, dataDir, planDir string, holdout float64, seed int64) (*harness.Scientist, error) {
	network := "fedgrid-demo"
	say("fedgrid demo: every peer is a separate %s process on 127.0.0.1; logs in %s", filepath.Base(h.Bin()), h.LogDir())

	// 1. Each hospital keeps some rows back; only the rest is uploaded.
	for _, hp := range hospitals {
		n, k, err := split(filepath.Join(dataDir, hp.csv), h.Path("data"), holdout, seed, hp)
		if err != nil {
			return nil, err
		}
		say("split %s: %d rows to upload to %s, %d rows held out to score the model later", hp.csv, n, hp.display, k)
	}

	// 2. The network peer: the address everyone bootstraps from, and the DHT.
	netPeer, err := h.StartNetwork(ctx, "network", harness.PeerOptions{Network: network})
	if err != nil {
		return nil, err
	}
	say("network peer up: %s", netPeer.Addr())
	peerOpts := harness.PeerOptions{Network: network, Bootstrap: []string{netPeer.Addr()}}

	// 3. Each hospital runs a gateway, sets up its Owner account, uploads its
	//    data and enrols a worker node with a join token.
	for _, hp := range hospitals {
		hp.gw, err = h.StartSite(ctx, hp.site, hp.display, "owner@"+hp.site+".example", "owner password "+hp.site, peerOpts)
		if err != nil {
			return nil, err
		}
		say("%s gateway up: peer %s, admin API %s; Owner set up and logged in", hp.display, short(hp.gw.Gateway.PeerID), hp.gw.Gateway.HTTP)
		csv, err := os.ReadFile(hp.upload)
		if err != nil {
			return nil, err
		}
		ds, err := hp.gw.Admin.UploadCSV(ctx, harness.Upload{Name: hp.name, Tags: hp.tags, Visibility: "public",
			Description: "demo copy of " + hp.csv + " (see examples/data/README.md)", FileName: hp.csv, CSV: csv})
		if err != nil {
			return nil, err
		}
		say("%s uploaded %q over HTTP: %d rows, %d columns, tags %s", hp.display, ds.Name, ds.Rows, len(ds.Columns), strings.Join(ds.Tags, ","))
		nd, err := hp.gw.StartNode(ctx, hp.site+"-node")
		if err != nil {
			return nil, err
		}
		say("%s node up and enrolled with a join token: peer %s", hp.display, short(nd.PeerID))
	}

	// 4. The data scientist makes a key; each hospital registers its peer ID.
	sci, err := h.NewScientist(ctx, h.Path("scientist.key"), network, []string{netPeer.Addr()})
	if err != nil {
		return nil, err
	}
	say("data scientist ran fedgrid keygen: peer ID %s", short(sci.PeerID))
	for _, hp := range hospitals {
		if _, err := hp.gw.RegisterScientist(ctx, "scientist@lab.example", "scientist password", "Data Scientist", sci.PeerID); err != nil {
			return nil, err
		}
		say("%s admin registered the data scientist (role Data Scientist, bound to that peer ID)", hp.display)
	}

	// 5. Search: the DHT says which gateways carry the tag, their catalogs say which datasets.
	say("fedgrid search medical (gateways announce their tags in the background; retrying until both answer)")
	sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
	found, err := sci.WaitSearch(sctx, len(hospitals), 500*time.Millisecond, "medical")
	scancel()
	if err != nil {
		return nil, err
	}
	if len(found) != len(hospitals) {
		return nil, fmt.Errorf("search medical found %d datasets, want %d", len(found), len(hospitals))
	}
	table, err := sci.SearchTable(ctx, "medical")
	if err != nil {
		return nil, err
	}
	fmt.Print(indent(table))
	for _, hp := range hospitals {
		for _, r := range found {
			if r.Gateway == hp.gw.Gateway.PeerID && r.Dataset.Name == hp.name {
				hp.ref = r.Ref
			}
		}
		if hp.ref == "" {
			return nil, fmt.Errorf("search medical did not find %s's dataset %q", hp.display, hp.name)
		}
	}

	// 6. Train: the plan goes to the gateway, which hands it with the rows to its node.
	for _, hp := range hospitals {
		say("fedgrid train --wait --dataset %s --plan %s", short(hp.ref), hp.plan)
		t0 := time.Now()
		hp.job, err = sci.Train(ctx, hp.ref, filepath.Join(planDir, hp.plan))
		if err != nil {
			return nil, err
		}
		if !hp.job.Succeeded() {
			return nil, fmt.Errorf("job %s ended %s: %s", hp.job.Ref, hp.job.State, hp.job.Error)
		}
		va, _ := hp.job.Metric("validation_accuracy")
		say("job %s succeeded in %.1fs on %s's node (attempt %d); validation accuracy on the node: %.4f", short(hp.job.Ref), time.Since(t0).Seconds(), hp.display, hp.job.Attempt, va)
	}

	// 7. Result and evaluation: the signed model comes back; the held-out rows score it offline.
	for _, hp := range hospitals {
		hp.model = h.Path("models", hp.name+".model.json")
		if err := os.MkdirAll(filepath.Dir(hp.model), 0o755); err != nil {
			return nil, err
		}
		if err := sci.Result(ctx, hp.job.Ref, hp.model); err != nil {
			return nil, err
		}
		say("fedgrid result %s -> %s", short(hp.job.Ref), hp.model)
		hp.eval, err = h.ModelEval(ctx, hp.model, hp.holdout)
		if err != nil {
			return nil, err
		}
		say("fedgrid model eval on %d held-out rows of %s: accuracy %.4f, loss %.4f, AUC %.4f", hp.eval.Rows, hp.csv, hp.eval.Accuracy, hp.eval.Loss, hp.eval.AUC)
	}
	return sci, nil
}

// split writes the upload and held-out parts of a CSV under dir and returns their row counts.
func split(src, dir string, holdout float64, seed int64, hp *hospital) (int, int, error) {
	f, err := os.Open(src)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	t, err := dataset.ReadCSV(f, dataset.Limits{})
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", src, err)
	}
	up, ho := t.Split(holdout, seed)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, 0, err
	}
	base := strings.TrimSuffix(filepath.Base(src), ".csv")
	hp.upload = filepath.Join(dir, base+".upload.csv")
	hp.holdout = filepath.Join(dir, base+".holdout.csv")
	for path, part := range map[string]*dataset.Table{hp.upload: up, hp.holdout: ho} {
		b, err := part.Bytes()
		if err != nil {
			return 0, 0, err
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return 0, 0, err
		}
	}
	return up.NumRows(), ho.NumRows(), nil
}

// short abbreviates the peer IDs in s (12D3KooW...) for narration.
func short(s string) string {
	parts := strings.Split(s, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, "12D3KooW") && len(p) > 16 {
			parts[i] = p[:12] + "…" + p[len(p)-4:]
		}
	}
	return strings.Join(parts, "/")
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("          " + l + "\n")
	}
	return b.String()
}

// The federated part of the demo.
const (
	fedRounds            = 10
	minFederatedAccuracy = 0.74
)

// federated holds the federated step's evaluations: each hospital's own
// model on its half, and the federated model over both halves.
type federated struct {
	own       []*harness.Evaluation
	federated *harness.Evaluation
}

// federate: hospital A and hospital B each upload half of the diabetes
// rows (A's upload dealt in two); the data scientist trains a model on each
// half alone and one federated model across both gateways, and scores all
// three on the held-out diabetes rows.
func federate(ctx context.Context, h *harness.Harness, say func(string, ...any), sci *harness.Scientist, hospitals []*hospital, fed *federated, planDir string) error {
	diabetes := hospitals[0]
	f, err := os.Open(diabetes.upload)
	if err != nil {
		return err
	}
	t, err := dataset.ReadCSV(f, dataset.Limits{})
	_ = f.Close()
	if err != nil {
		return err
	}
	halves := [2][]int{}
	for i := 0; i < t.NumRows(); i++ {
		halves[i%2] = append(halves[i%2], i)
	}
	planFile := filepath.Join(planDir, "logreg_pima_federated.json")
	say("federated training: %s and %s each hold half of the %d uploaded diabetes rows", hospitals[0].display, hospitals[1].display, t.NumRows())
	var refs []string
	for i, hp := range hospitals {
		csv, err := t.Select(halves[i]).Bytes()
		if err != nil {
			return err
		}
		ds, err := hp.gw.Admin.UploadCSV(ctx, harness.Upload{Name: fmt.Sprintf("pima-diabetes-half-%c", 'a'+i), Tags: []string{"medical", "diabetes", "half"}, Visibility: "public",
			Description: "half of the demo's diabetes rows", FileName: "pima_half.csv", CSV: csv})
		if err != nil {
			return err
		}
		ref := hp.gw.Gateway.PeerID + "/" + ds.ID
		refs = append(refs, ref)
		say("%s uploaded %q: %d rows", hp.display, ds.Name, ds.Rows)
		// The hospital's own model: its half alone, the same local epochs in all.
		own, err := sci.Train(ctx, ref, ownPlan(h, planFile))
		if err != nil {
			return err
		}
		if !own.Succeeded() {
			return fmt.Errorf("job %s ended %s: %s", own.Ref, own.State, own.Error)
		}
		model := h.Path("models", fmt.Sprintf("pima-half-%c.model.json", 'a'+i))
		if err := sci.Result(ctx, own.Ref, model); err != nil {
			return err
		}
		ev, err := h.ModelEval(ctx, model, diabetes.holdout)
		if err != nil {
			return err
		}
		fed.own = append(fed.own, ev)
		say("%s's own model (its half only): held-out accuracy %.4f", hp.display, ev.Accuracy)
	}
	dir := h.Path("federations")
	say("fedgrid train --dataset %s --dataset %s --plan %s --rounds %d", short(refs[0]), short(refs[1]), filepath.Base(planFile), fedRounds)
	t0 := time.Now()
	fr, err := sci.TrainFederated(ctx, dir, refs, planFile, "--rounds", fmt.Sprint(fedRounds))
	if err != nil {
		return err
	}
	if fr.State != "succeeded" {
		return fmt.Errorf("federation %s ended %s: %s", fr.Ref, fr.State, fr.Error)
	}
	last := fr.History[len(fr.History)-1]
	say("federation %s: %d rounds in %.1fs over %d gateways, %0.f rows in each round's secure sum, final loss %.4f", fr.Ref, fr.CompletedRounds, time.Since(t0).Seconds(), len(last.Participants), last.Rows, last.Loss)
	model := h.Path("models", "pima-federated.model.json")
	if err := sci.FederationResult(ctx, dir, fr.Ref, model); err != nil {
		return err
	}
	fed.federated, err = h.ModelEval(ctx, model, diabetes.holdout)
	if err != nil {
		return err
	}
	say("fedgrid result %s -> %s (signed by a participating gateway): held-out accuracy %.4f", fr.Ref, model, fed.federated.Accuracy)
	// Scored on both hospitals' rows, of which only their secure sums leave.
	say("fedgrid eval --model %s --dataset %s --dataset %s", filepath.Base(model), short(refs[0]), short(refs[1]))
	fe, err := sci.EvalFederated(ctx, model, refs)
	if err != nil {
		return err
	}
	say("federated evaluation on the %d rows of both hospitals (only secure sums left them): accuracy %.4f, loss %.4f, AUC %.4f (within %.2g)", fe.Rows, fe.Accuracy, fe.Loss, fe.AUC, fe.AUCError)
	return nil
}

// ownPlan writes the federated plan with all rounds' epochs for one
// hospital's own model (same total training as the federation).
func ownPlan(h *harness.Harness, planFile string) string {
	out := h.Path("data", "logreg_pima_own.json")
	b, err := os.ReadFile(planFile)
	if err != nil {
		return planFile
	}
	var p map[string]any
	if json.Unmarshal(b, &p) != nil {
		return planFile
	}
	if tr, ok := p["train"].(map[string]any); ok {
		tr["epochs"] = 5 * fedRounds
	}
	if b, err = json.Marshal(p); err != nil || os.WriteFile(out, b, 0o644) != nil {
		return planFile
	}
	return out
}
