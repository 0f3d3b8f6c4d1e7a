package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// parityActor is one subject of TestTransportParity: how it reaches the
// gateway over p2p (a peer, bound to its account or to none) and over HTTP
// (a token, or none).
type parityActor struct {
	name  string
	peer  *p2p.Peer
	token string
}

// jobSeen is what a job view says, in one shape for both transports.
type jobSeen struct {
	State, Error, Release, ReleaseReason, Request string
	Attempt                                       int
	Progress                                      wire.Progress
	Metrics                                       string
	Started, Finished                             bool
}

// requestSeen is what a request view says that both transports carry.
type requestSeen struct {
	Kind, State, Job, DecisionReason string
	Decided                          bool
}

// TestTransportParity (issue 12, acceptance 1): for every actor x resource
// x state, HTTP and p2p return the same view and the same error kind. The
// actors: the requester, another data scientist, an Administrator (a
// reviewer who is also a requester, with a job and a release request of
// their own) and a stranger. The resources: jobs in every state (queued,
// running, pending, approved, denied, failed, cancelled, succeeded and
// failed on public data), a shard job, requests (release pending/approved/denied, budget), a dataset
// and a hosted model (the ledger has no p2p view: GET /api/v1/users/{id}/ledger
// is for budget managers alone, and no data scientist's protocol reads it).
func TestTransportParity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gw, err := gateway.Start(ctx, gateway.Config{DataDir: t.TempDir(), Network: "gwtest", Listen: []string{loopback},
		HTTPAddr: "127.0.0.1:0", Name: "parity", Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	st := gw.Store()
	base := gw.HTTPURL()
	if _, err := st.Setup("owner@example.org", "correct horse battery", "Owner"); err != nil {
		t.Fatal(err)
	}
	csv := readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))
	tbl, _ := dataset.ReadCSV(bytesReader(csv), dataset.Limits{})
	priv := &store.Dataset{Name: "private pima", Tags: []string{"medical"}, Visibility: store.VisibilityPrivate, Columns: tbl.Columns(), Rows: tbl.NumRows()}
	pub := &store.Dataset{Name: "public pima", Tags: []string{"medical"}, Visibility: store.VisibilityPublic, Columns: tbl.Columns(), Rows: tbl.NumRows()}
	for _, d := range []*store.Dataset{priv, pub} {
		if err := st.PutDataset(d, csv); err != nil {
			t.Fatal(err)
		}
	}
	hosted := &store.HostedModel{Name: "hosted", Description: "a model", Params: 9, Plan: store.ModelSummary{Name: "m"}}
	if err := st.PutHostedModel(hosted, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	officer, err := st.CreateUser(store.NewUser{Email: "co@example.org", Password: "a long password", Role: store.RoleComplianceOfficer})
	if err != nil {
		t.Fatal(err)
	}
	gwAddr, _ := peer.AddrInfoFromString(gw.Addrs()[0])
	newPeer := func(sk crypto.PrivKey) *p2p.Peer {
		p, err := p2p.New(ctx, p2p.Config{Identity: sk, Network: "gwtest", NoListen: true, DHTMode: p2p.DHTClient})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		if err := p.Connect(ctx, *gwAddr); err != nil {
			t.Fatal(err)
		}
		return p
	}
	users := map[string]*store.User{}
	account := func(name, role string) parityActor {
		sk, _ := p2p.GenerateIdentity()
		pid, _ := p2p.PeerIDOf(sk)
		u, err := st.CreateUser(store.NewUser{Email: name + "@example.org", Password: "a long password", Role: role, PeerID: pid.String()})
		if err != nil {
			t.Fatal(err)
		}
		users[name] = u
		return parityActor{name: name, peer: newPeer(sk), token: httpLogin(t, base, name+"@example.org", "a long password")}
	}
	requester := account("requester", store.RoleDataScientist)
	other := account("other", store.RoleDataScientist)
	admin := account("admin", store.RoleAdministrator) // can_triage_requests and can_make_data_requests
	strangerKey, _ := p2p.GenerateIdentity()
	stranger := parityActor{name: "stranger", peer: newPeer(strangerKey)}
	actors := []parityActor{requester, other, admin, stranger}

	// Jobs in every state, made through the store as a node would drive them.
	metrics := json.RawMessage(`{"accuracy":0.75,"train_loss":[0.7,0.6]}`)
	job := func(owner string, ds *store.Dataset, to string) string {
		t.Helper()
		j := &store.Job{DatasetID: ds.ID, UserID: users[owner].ID, Requester: users[owner].PeerID, Plan: json.RawMessage(`{}`),
			Review: ds.Visibility == store.VisibilityPrivate}
		if err := st.CreateJob(j); err != nil {
			t.Fatal(err)
		}
		if to == wire.StateQueued {
			return j.ID
		}
		if _, err := st.Grant(j.ID, "12D3KooWnode", time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Heartbeat(j.ID, 1, "12D3KooWnode", wire.Progress{Epoch: 1, Epochs: 2, Loss: 0.6}, time.Hour); err != nil {
			t.Fatal(err)
		}
		switch to {
		case wire.StateFailed:
			if err := st.Fail(j.ID, 1, "12D3KooWnode", "loss became +Inf in epoch 1"); err != nil {
				t.Fatal(err)
			}
		case wire.StateSucceeded:
			if err := st.Complete(j.ID, 1, "12D3KooWnode", []byte(`{"model":true}`), metrics); err != nil {
				t.Fatal(err)
			}
		}
		return j.ID
	}
	decide := func(jobID string, approve bool) {
		t.Helper()
		j, _ := st.Job(jobID)
		if _, err := st.Decide(j.RequestID, approve, officer.ID, "decided in a test"); err != nil {
			t.Fatal(err)
		}
	}
	jobs := map[string]string{
		"queued":           job("requester", priv, wire.StateQueued),
		"running":          job("requester", priv, wire.StateRunning),
		"pending":          job("requester", priv, wire.StateSucceeded),
		"approved":         job("requester", priv, wire.StateSucceeded),
		"denied":           job("requester", priv, wire.StateSucceeded),
		"failed":           job("requester", priv, wire.StateFailed),
		"public succeeded": job("requester", pub, wire.StateSucceeded),
		"public failed":    job("requester", pub, wire.StateFailed),
		"cancelled":        job("requester", priv, wire.StateQueued),
		"admin's pending":  job("admin", priv, wire.StateSucceeded),
	}
	if _, err := st.CancelBy(jobs["cancelled"], users["requester"].ID); err != nil {
		t.Fatal(err)
	}
	decide(jobs["approved"], true)
	decide(jobs["denied"], false)
	shard := &store.Job{ID: store.ShardJobID(jobs["queued"], 0, 0), DatasetID: priv.ID, UserID: users["requester"].ID, ParentID: jobs["queued"], Plan: json.RawMessage(`{}`)}
	if err := st.CreateJob(shard); err != nil {
		t.Fatal(err)
	}
	jobs["shard"] = shard.ID
	jobs["nonexistent"] = "no-such-job"

	budgetReq, err := st.CreateRequest(store.NewRequest{Kind: wire.KindBudget, UserID: users["requester"].ID, AmountMicroEps: 1_000_000, Reason: "more"})
	if err != nil {
		t.Fatal(err)
	}
	requests := map[string]string{"budget pending": budgetReq.ID, "nonexistent": "no-such-request"}
	for _, name := range []string{"pending", "approved", "denied", "admin's pending"} {
		if j, _ := st.Job(jobs[name]); j.RequestID != "" {
			requests["release "+name] = j.RequestID
		}
	}
	gwID := gw.Peer().ID()

	httpGet := func(a parityActor, path string, out any) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if a.token != "" {
			req.Header.Set("Authorization", "Bearer "+a.token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			var doc struct {
				Error struct{ Code string } `json:"error"`
			}
			_ = json.Unmarshal(b, &doc)
			return kindOfCode(doc.Error.Code)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, b)
		}
		return ""
	}
	p2pKind := func(err error) string {
		if err == nil {
			return ""
		}
		var pe *p2p.Error
		if !errors.As(err, &pe) {
			t.Fatalf("transport failure: %v", err)
		}
		return kindOfCode(pe.Code)
	}

	for _, a := range actors {
		for name, id := range jobs {
			t.Run(fmt.Sprintf("%s/job %s", a.name, name), func(t *testing.T) {
				var hj store.Job
				hKind := httpGet(a, "/api/v1/jobs/"+id, &hj)
				pj, err := p2p.Request(ctx, a.peer, gwID, wire.Job(), &wire.JobRequest{Job: id})
				pKind := p2pKind(err)
				if hKind != pKind {
					t.Fatalf("error kind: HTTP %q, p2p %q", hKind, pKind)
				}
				if hKind != "" {
					return
				}
				hs := jobSeen{State: hj.State, Error: hj.Error, Release: hj.Release, ReleaseReason: hj.ReleaseReason, Request: hj.RequestID,
					Attempt: hj.Attempt, Progress: hj.Progress, Metrics: compact(hj.Metrics), Started: !hj.StartedAt.IsZero(), Finished: !hj.FinishedAt.IsZero()}
				ps := jobSeen{State: pj.State, Error: pj.Error, Release: pj.Release, ReleaseReason: pj.ReleaseReason, Request: pj.Request,
					Attempt: pj.Attempt, Progress: pj.Progress, Metrics: compact(pj.Metrics), Started: pj.StartedAt != nil, Finished: pj.FinishedAt != nil}
				if !reflect.DeepEqual(hs, ps) {
					t.Fatalf("views differ:\nHTTP %+v\np2p  %+v", hs, ps)
				}
			})
		}
		for name, id := range requests {
			t.Run(fmt.Sprintf("%s/request %s", a.name, name), func(t *testing.T) {
				var hr struct {
					Kind, State string
					JobID       string `json:"job_id"`
					Metrics     json.RawMessage
					Decision    *struct{ Reason string }
				}
				hKind := httpGet(a, "/api/v1/requests/"+id, &hr)
				pl, err := p2p.Request(ctx, a.peer, gwID, wire.Requests(), &wire.RequestsQuery{ID: id})
				pKind := p2pKind(err)
				if hKind != pKind {
					t.Fatalf("error kind: HTTP %q, p2p %q", hKind, pKind)
				}
				if hKind != "" {
					return
				}
				hs := requestSeen{Kind: hr.Kind, State: hr.State, Job: hr.JobID, Decided: hr.Decision != nil}
				if hr.Decision != nil {
					hs.DecisionReason = hr.Decision.Reason
				}
				pr := pl.Requests[0]
				ps := requestSeen{Kind: pr.Kind, State: pr.State, Job: pr.Job, DecisionReason: pr.DecisionReason, Decided: pr.DecidedAt != nil}
				if !reflect.DeepEqual(hs, ps) {
					t.Fatalf("views differ:\nHTTP %+v\np2p  %+v", hs, ps)
				}
			})
		}
	}

	// The reviewer who is also the requester: their own unreleased metrics
	// stay hidden on every route, the request list by job included (a
	// pending release request is not listed to its requester at all), and
	// the same holds for the requester; a reviewer sees someone else's.
	for _, c := range []struct {
		who    parityActor
		job    string
		hidden bool
	}{
		{admin, jobs["admin's pending"], true},
		{requester, jobs["pending"], true},
		{admin, jobs["pending"], false},
		{requester, jobs["approved"], false},
	} {
		var hj store.Job
		if k := httpGet(c.who, "/api/v1/jobs/"+c.job, &hj); k != "" {
			t.Fatalf("%s: GET job: %s", c.who.name, k)
		}
		var list struct {
			Requests []struct{ Metrics json.RawMessage } `json:"requests"`
		}
		if k := httpGet(c.who, "/api/v1/requests?job="+c.job, &list); k != "" || len(list.Requests) > 1 {
			t.Fatalf("%s: GET requests?job: %s %+v", c.who.name, k, list)
		}
		listed := len(list.Requests) == 1 && list.Requests[0].Metrics != nil
		if (hj.Metrics == nil) != c.hidden || listed == c.hidden {
			t.Errorf("%s on job %s: metrics in job view %s, in request list %+v; hidden should be %v",
				c.who.name, c.job, hj.Metrics, list.Requests, c.hidden)
		}
	}

	// Dataset and hosted model: the catalog (p2p, open to anyone) and the
	// HTTP routes describe them alike to every account.
	cat, err := p2p.Request(ctx, requester.peer, gwID, wire.Catalog(), &wire.CatalogRequest{PreviewRows: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []parityActor{requester, other, admin} {
		for _, e := range cat.Datasets {
			var hd store.Dataset
			if k := httpGet(a, "/api/v1/datasets/"+e.ID, &hd); k != "" {
				t.Fatalf("%s: GET dataset: %s", a.name, k)
			}
			if hd.Name != e.Name || hd.Rows != e.Rows || hd.Visibility != e.Visibility || !reflect.DeepEqual(hd.Columns, e.Columns) {
				t.Errorf("%s: dataset %s: HTTP %+v, catalog %+v", a.name, e.ID, hd, e)
			}
		}
		if len(cat.Models) != 1 {
			t.Fatalf("catalog models %+v", cat.Models)
		}
		var hm store.HostedModel
		if k := httpGet(a, "/api/v1/models/"+cat.Models[0].ID, &hm); k != "" {
			t.Fatalf("%s: GET model: %s", a.name, k)
		}
		if hm.Name != cat.Models[0].Name || hm.Params != cat.Models[0].Params {
			t.Errorf("%s: model: HTTP %+v, catalog %+v", a.name, hm, cat.Models[0])
		}
	}
}

// kindOfCode maps an HTTP error code and a p2p code onto one vocabulary.
func kindOfCode(code string) string {
	switch code {
	case "invalid", "invalid_field", "bad_json", p2p.CodeBadRequest:
		return "invalid"
	}
	return code
}

func compact(b json.RawMessage) string {
	if len(b) == 0 {
		return ""
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}
