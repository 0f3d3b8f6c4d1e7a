package api

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// tinyModel is a valid fedgrid.model/v1 document: logistic regression on
// one feature, with a weight (0.123456789) no description may show.
const tinyModel = `{"format": "fedgrid.model/v1",
 "plan": {"format": "fedgrid.plan/v1", "name": "tiny-logreg", "features": ["x"], "label": "y",
  "params": {"w": {"shape": [1, 1]}, "b": {"shape": [1], "init": "zeros"}},
  "forward": [{"op": "matmul", "in": ["x", "w"], "out": "z"}, {"op": "add", "in": ["z", "b"], "out": "z"},
   {"op": "sigmoid", "in": ["z"], "out": "y_hat"}],
  "loss": {"op": "bce", "in": ["y_hat", "y"]},
  "optimizer": {"name": "sgd", "learning_rate": 0.1},
  "train": {"epochs": 1, "batch_size": 4}},
 "params": {"w": {"shape": [1, 1], "data": [0.123456789]}, "b": {"shape": [1], "data": [-0.5]}},
 "preprocess": [],
 "metrics": {"train_loss": [0.6], "epochs": 1, "train_rows": 4, "validation_rows": 0, "steps": 1}}`

const tinyWeight = "0.123456789"

// uploadModel posts a multipart form to POST /api/v1/models; the model goes
// in the file part unless it is empty.
func (e *env) uploadModel(token string, fields map[string]string, model string) resp {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		_ = mw.WriteField(k, v)
	}
	if model != "" {
		fw, _ := mw.CreateFormFile("file", "hosted.json")
		_, _ = io.WriteString(fw, model)
	}
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/models", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.send(req)
}

func TestHostedModelRoutes(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxUploadBytes = 4 << 10 })
	owner := e.setup()
	_, dsTok := e.newUser(owner, "ds@example.org", store.RoleDataScientist, newPeerID(t), 0)

	// Upload: the name defaults to the plan's; the description says what
	// a data scientist needs to train it.
	var m store.HostedModel
	e.want(e.uploadModel(owner, map[string]string{"description": "the 2023 screening model"}, tinyModel), 201).decode(t, &m)
	if m.ID == "" || m.Name != "tiny-logreg" || m.Description != "the 2023 screening model" || m.Params != 2 || m.Size != int64(len(tinyModel)) || m.CreatedBy == "" {
		t.Fatalf("uploaded %+v", m)
	}
	if s := m.Plan; s.Label != "y" || len(s.Features) != 1 || s.Features[0] != "x" || s.Task != "binary" || s.Loss != "bce" || s.Optimizer != "sgd" || s.Ops != 3 || !strings.Contains(s.Layers, "sigmoid") {
		t.Fatalf("plan summary %+v", s)
	}
	var named store.HostedModel
	e.want(e.uploadModel(owner, map[string]string{"name": "renamed"}, tinyModel), 201).decode(t, &named)
	if named.Name != "renamed" {
		t.Fatalf("name field ignored: %+v", named)
	}

	// Any user lists and reads descriptions; never the weights.
	r := e.want(e.do("GET", "/api/v1/models", dsTok, nil), 200)
	var ml ModelList
	r.decode(t, &ml)
	if len(ml.Models) != 2 || ml.Models[0].ID != named.ID || ml.Models[1].ID != m.ID {
		t.Fatalf("list %+v", ml)
	}
	if strings.Contains(string(r.body), tinyWeight) {
		t.Fatalf("the list shows weights: %s", r.body)
	}
	r = e.want(e.do("GET", "/api/v1/models/"+m.ID, dsTok, nil), 200)
	var got store.HostedModel
	r.decode(t, &got)
	if got.ID != m.ID || got.Plan.Label != "y" || strings.Contains(string(r.body), tinyWeight) {
		t.Fatalf("get: %s", r.body)
	}
	if r := e.do("GET", "/api/v1/models/nope", dsTok, nil); r.status != 404 || r.errCode(t) != "not_found" {
		t.Fatalf("unknown model: %d %s", r.status, r.body)
	}

	// A data scientist may not host or delete models.
	if r := e.uploadModel(dsTok, nil, tinyModel); r.status != 403 || r.errCode(t) != "forbidden" {
		t.Fatalf("upload as data scientist: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/api/v1/models/"+m.ID, dsTok, nil); r.status != 403 {
		t.Fatalf("delete as data scientist: %d %s", r.status, r.body)
	}

	// Bad models are refused with the error document, and nothing is stored.
	var wrongShape, hostedRef, shellOp map[string]any
	_ = json.Unmarshal([]byte(tinyModel), &wrongShape)
	wrongShape["params"].(map[string]any)["w"] = map[string]any{"shape": []int{2, 1}, "data": []float64{1, 2}}
	_ = json.Unmarshal([]byte(tinyModel), &hostedRef)
	hostedRef["plan"] = map[string]any{"format": "fedgrid.plan/v1", "model": m.ID, "train": map[string]any{"epochs": 1, "batch_size": 1}}
	_ = json.Unmarshal([]byte(tinyModel), &shellOp)
	shellOp["plan"].(map[string]any)["forward"].([]any)[2].(map[string]any)["op"] = "exec_shell"
	enc := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	for _, c := range []struct {
		name, model, code, says string
		status                  int
	}{
		{"not JSON", "w,b\n1,2\n", "bad_model", "file: ", 400},
		{"a plan, not a model", `{"format": "fedgrid.plan/v1", "train": {"epochs": 1, "batch_size": 1}}`, "bad_model", "file: ", 400},
		{"unknown field", strings.Replace(tinyModel, `"preprocess"`, `"weights": 1, "preprocess"`, 1), "bad_model", "weights", 400},
		{"weights of the wrong shape", enc(wrongShape), "bad_model", `"w" has shape [2 1]`, 400},
		{"a plan naming a hosted model", enc(hostedRef), "bad_model", "hosted model", 400},
		{"an op outside the list", enc(shellOp), "bad_model", "exec_shell", 400},
		{"larger than the upload limit", tinyModel + strings.Repeat(" ", 5<<10), "too_large", "at most", 413},
	} {
		r := e.uploadModel(owner, map[string]string{"name": "bad"}, c.model)
		var doc Error
		_ = json.Unmarshal(r.body, &doc)
		if r.status != c.status || r.errCode(t) != c.code || !strings.Contains(doc.Error.Message, c.says) {
			t.Errorf("%s: %d %s, want %d %s saying %q", c.name, r.status, r.body, c.status, c.code, c.says)
		}
	}
	if r := e.uploadModel(owner, map[string]string{"name": "no file"}, ""); r.status != 400 || r.errCode(t) != "invalid_field" || !strings.Contains(string(r.body), "file: required") {
		t.Errorf("no file: %d %s", r.status, r.body)
	}
	if r := e.uploadModel(owner, map[string]string{"color": "red"}, tinyModel); r.status != 400 || !strings.Contains(string(r.body), "color: unknown form field") {
		t.Errorf("unknown field: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/api/v1/models", owner, map[string]any{"name": "json", "model": json.RawMessage(tinyModel)}); r.status != 415 || r.errCode(t) != "unsupported_media_type" {
		t.Errorf("JSON body: %d %s", r.status, r.body)
	}
	if all, _ := e.st.HostedModels(); len(all) != 2 {
		t.Fatalf("refused uploads stored models: %d", len(all))
	}

	// Delete: gone from get and list; audited with the actor.
	e.want(e.do("DELETE", "/api/v1/models/"+m.ID, owner, nil), 204)
	e.want(e.do("GET", "/api/v1/models/"+m.ID, dsTok, nil), 404)
	e.want(e.do("DELETE", "/api/v1/models/"+m.ID, owner, nil), 404)
	e.want(e.do("GET", "/api/v1/models", dsTok, nil), 200).decode(t, &ml)
	if len(ml.Models) != 1 || ml.Models[0].ID != named.ID {
		t.Fatalf("after delete: %+v", ml)
	}
	var al AuditList
	e.want(e.do("GET", "/api/v1/audit?action=model.", owner, nil), 200).decode(t, &al)
	if len(al.Entries) != 3 || al.Entries[2].Action != "model.delete" || al.Entries[2].Target != "model/"+m.ID || al.Entries[2].Actor != m.CreatedBy {
		t.Fatalf("audit %+v", al.Entries)
	}
}

// A job's starting weights (a hosted model's) are for the node: no job view
// over HTTP shows them, to its owner or to a reviewer.
func TestJobViewsHideStartingWeights(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	ownerUser, _ := e.st.UserByEmail("owner@example.org")
	j := &store.Job{DatasetID: "d", UserID: ownerUser.ID, Init: json.RawMessage(`{"w":{"shape":[1],"data":[` + tinyWeight + `]}}`)}
	if err := e.st.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	for _, r := range []resp{
		e.want(e.do("GET", "/api/v1/jobs", owner, nil), 200),
		e.want(e.do("GET", "/api/v1/jobs/"+j.ID, owner, nil), 200),
		e.want(e.do("POST", "/api/v1/jobs/"+j.ID+"/cancel", owner, nil), 200),
	} {
		if strings.Contains(string(r.body), tinyWeight) || strings.Contains(string(r.body), `"init"`) {
			t.Errorf("a job view shows the starting weights: %s", r.body)
		}
		if !strings.Contains(string(r.body), j.ID) {
			t.Errorf("the job is missing: %s", r.body)
		}
	}
}

// The training loss of a job under review is computed on the data: its
// requester sees neither it nor its metrics over HTTP until release; a
// compliance officer sees both.
func TestJobViewsWithholdLossUnderReview(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	dsID, dsTok := e.newUser(owner, "ds@example.org", store.RoleDataScientist, "", 0)
	_, coTok := e.newUser(owner, "co@example.org", store.RoleComplianceOfficer, "", 0)
	j := &store.Job{DatasetID: "d", UserID: dsID, Review: true}
	if err := e.st.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Grant(j.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Heartbeat(j.ID, 1, "node", wire.Progress{Epoch: 2, Epochs: 5, Loss: 0.4321}, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		who, token string
		shown      bool
	}{{"requester", dsTok, false}, {"officer", coTok, true}} {
		var one store.Job
		e.want(e.do("GET", "/api/v1/jobs/"+j.ID, c.token, nil), 200).decode(t, &one)
		var list JobList
		e.want(e.do("GET", "/api/v1/jobs?user_id="+dsID, c.token, nil), 200).decode(t, &list)
		if len(list.Jobs) != 1 {
			t.Fatalf("%s: %d jobs listed", c.who, len(list.Jobs))
		}
		for _, got := range []wire.Progress{one.Progress, list.Jobs[0].Progress} {
			// Under review the requester sees no progress at all (not even the epoch).
			wantEpoch := 0
			if c.shown {
				wantEpoch = 2
			}
			if shown := got.Loss == 0.4321 && !got.LossWithheld; shown != c.shown || (!c.shown && (got.Loss != 0 || !got.LossWithheld)) || got.Epoch != wantEpoch {
				t.Errorf("%s sees progress %+v; loss shown %v, want %v", c.who, got, shown, c.shown)
			}
		}
	}
}

// The shard jobs of a data-parallel job are the gateway's: their plans carry
// statistics fitted on every row (min, max, mean, std) and their metrics are
// computed on the data. The requester sees only the parent, over every
// route; a reviewer sees the shards.
func TestShardJobsHiddenFromRequester(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	dsID, dsTok := e.newUser(owner, "ds@example.org", store.RoleDataScientist, "", 0)
	_, coTok := e.newUser(owner, "co@example.org", store.RoleComplianceOfficer, "", 0)
	parent := &store.Job{DatasetID: "d", UserID: dsID, Shards: 2, Rounds: 1, Review: true}
	if err := e.st.CreateJob(parent); err != nil {
		t.Fatal(err)
	}
	shard := &store.Job{ID: parent.ID + "-r1-s0", DatasetID: "d", UserID: dsID, ParentID: parent.ID, Round: 1,
		Plan: json.RawMessage(`{"preprocess":[{"op":"min_max","min":[0],"max":[846]}]}`)}
	if err := e.st.CreateJob(shard); err != nil {
		t.Fatal(err)
	}
	var list JobList
	e.want(e.do("GET", "/api/v1/jobs", dsTok, nil), 200).decode(t, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != parent.ID {
		t.Fatalf("the requester's list: %+v", list.Jobs)
	}
	e.want(e.do("GET", "/api/v1/jobs/"+shard.ID, dsTok, nil), 404)
	e.want(e.do("POST", "/api/v1/jobs/"+shard.ID+"/cancel", dsTok, nil), 404)
	e.want(e.do("GET", "/api/v1/jobs/"+shard.ID, coTok, nil), 200)
	e.want(e.do("GET", "/api/v1/jobs?user_id="+dsID, coTok, nil), 200).decode(t, &list)
	if len(list.Jobs) != 2 {
		t.Fatalf("the reviewer's list: %d jobs, want parent and shard", len(list.Jobs))
	}
}

// A reviewer's own job is redacted like any requester's: holding
// can_triage_requests does not let anyone read their own pending results.
func TestOwnJobRedactedForReviewer(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	coID, coTok := e.newUser(owner, "co@example.org", store.RoleComplianceOfficer, "", 0)
	j := &store.Job{DatasetID: "d", UserID: coID, Review: true}
	if err := e.st.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Grant(j.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Heartbeat(j.ID, 1, "node", wire.Progress{Epoch: 1, Epochs: 3, Loss: 0.777}, time.Minute); err != nil {
		t.Fatal(err)
	}
	var one store.Job
	e.want(e.do("GET", "/api/v1/jobs/"+j.ID, coTok, nil), 200).decode(t, &one)
	var list JobList
	e.want(e.do("GET", "/api/v1/jobs", coTok, nil), 200).decode(t, &list)
	if one.Progress.Loss != 0 || !one.Progress.LossWithheld || len(list.Jobs) != 1 || list.Jobs[0].Progress.Loss != 0 {
		t.Fatalf("a reviewer sees the loss of their own job under review: %+v / %+v", one.Progress, list.Jobs)
	}
	// Nor the shards of their own data-parallel job.
	parent := &store.Job{DatasetID: "d", UserID: coID, Shards: 2, Rounds: 1, Review: true}
	if err := e.st.CreateJob(parent); err != nil {
		t.Fatal(err)
	}
	shard := &store.Job{ID: store.ShardJobID(parent.ID, 1, 0), DatasetID: "d", UserID: coID, ParentID: parent.ID, Round: 1}
	if err := e.st.CreateJob(shard); err != nil {
		t.Fatal(err)
	}
	e.want(e.do("GET", "/api/v1/jobs/"+shard.ID, coTok, nil), 404)
	e.want(e.do("GET", "/api/v1/jobs?user_id="+coID, coTok, nil), 200).decode(t, &list)
	for _, lj := range list.Jobs {
		if lj.ParentID != "" {
			t.Fatalf("a reviewer lists a shard of their own job: %s", lj.ID)
		}
	}
}
