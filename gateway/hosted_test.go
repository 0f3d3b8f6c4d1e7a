package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/testcluster"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// httpDo sends a request to the gateway's admin API and decodes the JSON answer into out.
func httpDo(t *testing.T, req *http.Request, token string, wantStatus int, out any) {
	t.Helper()
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != wantStatus {
		t.Fatalf("%s %s: %d %s, want %d", req.Method, req.URL.Path, res.StatusCode, b, wantStatus)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
	}
}

func httpLogin(t *testing.T, base, email, password string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/auth/login", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	var lr struct {
		Token string `json:"token"`
	}
	httpDo(t, req, "", http.StatusOK, &lr)
	return lr.Token
}

// The owner hosts a model trained on part of the data; a data scientist
// finds it, names it in a plan that carries only training settings, and gets
// back a released model that started from the hosted weights, carries the
// resolved plan and predicts well.
func TestHostedModelEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tc := testcluster.Start(t, ctx, testcluster.Options{Network: "gwtest", Gateway: func(cfg *gateway.Config) { cfg.HTTPAddr = "127.0.0.1:0" }})
	c := &cluster{Cluster: tc, net: tc.Net, gw: tc.GW}
	base, st, gwID := c.gw.HTTPURL(), c.gw.Store(), c.gw.Peer().ID()
	if _, err := st.Setup("owner@example.org", "correct horse battery", "Owner"); err != nil {
		t.Fatal(err)
	}
	owner := httpLogin(t, base, "owner@example.org", "correct horse battery")

	// The data: the owner trained the hosted model on one half and offers
	// the other half; a holdout of that half is kept for evaluation.
	all, err := dataset.ReadCSV(bytes.NewReader(readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	ownHalf, offered := all.Split(0.5, 11)
	trainT, holdout := offered.Split(0.25, 12)
	var buf bytes.Buffer
	if err := trainT.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	ds := &store.Dataset{Name: "pima-offered", Tags: []string{"medical"}, Visibility: "public", Columns: trainT.Columns(), Rows: trainT.NumRows()}
	if err := st.PutDataset(ds, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	ownerPlan, err := plan.Parse(readFile(t, filepath.Join("..", "plan", "testdata", "logreg_pima.json")))
	if err != nil {
		t.Fatal(err)
	}
	hosted, err := plan.Train(ctx, ownerPlan, ownHalf, plan.TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hostedEval, err := plan.Evaluate(hosted, holdout)
	if err != nil {
		t.Fatal(err)
	}
	hostedJSON, _ := json.Marshal(hosted)

	// Upload over HTTP.
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	_ = mw.WriteField("name", "screening-2023")
	_ = mw.WriteField("description", "logistic regression on our 2023 patients")
	fw, _ := mw.CreateFormFile("file", "screening.json")
	_, _ = fw.Write(hostedJSON)
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/models", &form)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var hm store.HostedModel
	httpDo(t, req, owner, http.StatusCreated, &hm)
	if hm.Params != 9 || hm.Plan.Label != "diabetes" {
		t.Fatalf("hosted model %+v", hm)
	}

	// A data scientist with an account finds it by name.
	sk, _ := p2p.GenerateIdentity()
	pid, _ := p2p.PeerIDOf(sk)
	if _, err := st.CreateUser(store.NewUser{Email: "ds@example.org", Password: "a long password", Name: "DS", Role: store.RoleDataScientist, PeerID: pid.String()}); err != nil {
		t.Fatal(err)
	}
	dsTok := httpLogin(t, base, "ds@example.org", "a long password")
	req, _ = http.NewRequest(http.MethodGet, base+"/api/v1/models", nil)
	var list struct {
		Models []store.HostedModel `json:"models"`
	}
	httpDo(t, req, dsTok, http.StatusOK, &list)
	if len(list.Models) != 1 || list.Models[0].Name != "screening-2023" {
		t.Fatalf("models seen by the data scientist: %+v", list)
	}
	modelID := list.Models[0].ID

	c.startNode(t, ctx)
	cl, err := client.New(ctx, client.Config{Network: "gwtest", Bootstrap: c.net.Addrs(), Identity: sk})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The catalog lists the hosted models beside the datasets.
	var found []client.Result
	wait.For(t, 30*time.Second, "the dataset in search", wait.Is(func() bool {
		found, err = cl.Search(ctx, []string{"medical"}, nil)
		return err == nil && len(found) > 0
	}))
	if ms := found[0].Models; len(ms) != 1 || ms[0].ID != modelID || ms[0].Name != "screening-2023" || ms[0].Label != "diabetes" ||
		ms[0].Task != "binary" || ms[0].Params != 9 || len(ms[0].Features) != 8 {
		t.Fatalf("hosted models in the catalog: %+v", ms)
	}
	if b, _ := json.Marshal(found); bytes.Contains(b, []byte(`"data"`)) {
		t.Fatalf("the catalog shows weights: %s", b)
	}

	run := func(settings string) (*plan.Model, *store.Job) {
		t.Helper()
		j, err := cl.Submit(ctx, gwID, ds.ID, []byte(settings))
		if err != nil {
			t.Fatal(err)
		}
		if j, err = cl.Wait(ctx, gwID, j.ID, nil); err != nil || j.State != wire.StateSucceeded {
			t.Fatalf("job %+v %v", j, err)
		}
		b, err := cl.Model(ctx, gwID, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		m, err := plan.ParseModel(b)
		if err != nil {
			t.Fatal(err)
		}
		sj, err := st.Job(j.ID)
		if err != nil {
			t.Fatal(err)
		}
		return m, sj
	}
	maxDiff := func(a, b map[string]plan.Tensor) float64 {
		d := 0.0
		for n, ta := range a {
			for i, v := range ta.Data {
				d = math.Max(d, math.Abs(v-b[n].Data[i]))
			}
		}
		return d
	}

	// 1. A learning rate too small to move anything: the released weights
	// are the hosted ones. The plan's own init is zeros, so a run that
	// ignored the hosted weights would return (almost) zeros.
	still := fmt.Sprintf(`{"format": "fedgrid.plan/v1", "model": %q, "train": {"epochs": 1, "batch_size": 32, "seed": 3, "validation_fraction": 0.2},
	 "optimizer": {"name": "sgd", "learning_rate": 1e-12}}`, modelID)
	m, sj := run(still)
	if d := maxDiff(hosted.Params, m.Params); d > 1e-9 {
		t.Fatalf("released weights differ from the hosted ones by %g: the job did not start from them", d)
	}
	if w := hosted.Params["w"].Data; math.Abs(w[1]) < 0.1 {
		t.Fatalf("hosted glucose weight %v is too small for this test to tell hosted weights from zeros", w[1])
	}
	// The released model carries the resolved plan: the hosted model's
	// operations with the request's settings, recomputable without fedgrid.
	if m.Plan.Model != "" || m.Plan.Label != "diabetes" || len(m.Plan.Forward) != 3 || m.Plan.Optimizer.Name != "sgd" || m.Plan.Train.Epochs != 1 || m.Plan.Train.Seed != 3 {
		t.Fatalf("released plan %+v", m.Plan)
	}
	init, err := st.JobInit(sj.ID)
	if err != nil || sj.HostedModel != modelID || strings.Contains(string(sj.Plan), `"model"`) || len(init) == 0 || sj.InitSize != len(init) {
		t.Fatalf("stored job: hosted_model %q plan %s init %d bytes (size %d) %v", sj.HostedModel, sj.Plan, len(init), sj.InitSize, err)
	}
	ev, err := plan.Evaluate(m, holdout)
	if err != nil {
		t.Fatal(err)
	}
	// Same weights; only the standardization is refitted on the offered rows.
	if ev.Accuracy < 0.7 || math.Abs(ev.Accuracy-hostedEval.Accuracy) > 0.05 {
		t.Fatalf("held-out accuracy %.3f (the hosted model's: %.3f)", ev.Accuracy, hostedEval.Accuracy)
	}
	t.Logf("unchanged hosted weights: held-out accuracy %.3f (hosted model %.3f)", ev.Accuracy, hostedEval.Accuracy)

	// 2. Real training from the hosted weights (the hosted model's own
	// optimizer, since the request names none): the weights move, and the
	// model still predicts well.
	m2, _ := run(fmt.Sprintf(`{"format": "fedgrid.plan/v1", "model": %q, "train": {"epochs": 5, "batch_size": 32, "seed": 4, "validation_fraction": 0.2}}`, modelID))
	if d := maxDiff(hosted.Params, m2.Params); d < 1e-4 {
		t.Fatalf("training moved the weights by only %g", d)
	}
	ev2, err := plan.Evaluate(m2, holdout)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Plan.Optimizer.Name != "adam" || ev2.Accuracy < 0.7 {
		t.Fatalf("trained from hosted weights: optimizer %+v, held-out accuracy %.3f", m2.Plan.Optimizer, ev2.Accuracy)
	}
	t.Logf("5 epochs from hosted weights: held-out accuracy %.3f", ev2.Accuracy)

	// 3. Data-parallel: round 1 starts from the hosted weights too.
	m3, _ := run(fmt.Sprintf(`{"format": "fedgrid.plan/v1", "model": %q, "train": {"epochs": 1, "batch_size": 32, "seed": 5, "workers": 2, "rounds": 1},
	 "optimizer": {"name": "sgd", "learning_rate": 1e-12}}`, modelID))
	if d := maxDiff(hosted.Params, m3.Params); d > 1e-9 {
		t.Fatalf("data-parallel: averaged weights differ from the hosted ones by %g", d)
	}

	// Refusals name the model: an unknown one, and settings the hosted
	// model cannot take (DP-SGD with statistics fitted on the rows).
	_, err = cl.Submit(ctx, gwID, ds.ID, []byte(`{"format": "fedgrid.plan/v1", "model": "no-such-model", "train": {"epochs": 1, "batch_size": 8}}`))
	if !p2p.IsCode(err, p2p.CodeBadRequest) || !strings.Contains(err.Error(), `"no-such-model" is not hosted`) {
		t.Fatalf("unknown hosted model: %v", err)
	}
	_, err = cl.Submit(ctx, gwID, ds.ID, []byte(fmt.Sprintf(`{"format": "fedgrid.plan/v1", "model": %q, "train": {"epochs": 1, "batch_size": 8},
	 "privacy": {"dp_sgd": {"noise_multiplier": 1.1, "max_grad_norm": 1}, "delta": 1e-5}}`, modelID)))
	if !p2p.IsCode(err, p2p.CodeBadRequest) || !strings.Contains(err.Error(), modelID) {
		t.Fatalf("DP-SGD on a hosted model that fits its scaling on the rows: %v", err)
	}
	// A plan naming a model also carries nothing else of a model.
	_, err = cl.Submit(ctx, gwID, ds.ID, []byte(fmt.Sprintf(`{"format": "fedgrid.plan/v1", "model": %q, "label": "age", "train": {"epochs": 1, "batch_size": 8}}`, modelID)))
	if !p2p.IsCode(err, p2p.CodeBadRequest) || !strings.Contains(err.Error(), "only training settings") {
		t.Fatalf("hosted model with a label: %v", err)
	}

	// Deleted: new jobs are refused; the weights never left in a view.
	req, _ = http.NewRequest(http.MethodDelete, base+"/api/v1/models/"+modelID, nil)
	httpDo(t, req, owner, http.StatusNoContent, nil)
	if _, err := cl.Submit(ctx, gwID, ds.ID, []byte(still)); !p2p.IsCode(err, p2p.CodeBadRequest) {
		t.Fatalf("after delete: %v", err)
	}
}
