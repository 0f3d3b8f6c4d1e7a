package api

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/wire"

	"github.com/fedgrid/fedgrid/gateway/store"
)

const modelMarker = "MODEL-WEIGHTS-9d2e"

// TestReviewQueueHTTP: the queue shows a private result with everything
// needed to decide; no HTTP route serves the result or leaks its metrics to
// the requester before approval; requesters see only their own requests;
// a denial needs a reason; two officers approving at once charge once.
func TestReviewQueueHTTP(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	aliceID, alice := e.newUser(owner, "alice@example.org", store.RoleDataScientist, newPeerID(t), 3)
	_, bob := e.newUser(owner, "bob@example.org", store.RoleDataScientist, newPeerID(t), 3)
	o1ID, o1 := e.newUser(owner, "o1@example.org", store.RoleComplianceOfficer, "", 0)
	o2ID, o2 := e.newUser(owner, "o2@example.org", store.RoleComplianceOfficer, "", 0)
	d := &store.Dataset{Name: "ward", Visibility: store.VisibilityPrivate, Tags: []string{"medical"}}
	if err := e.st.PutDataset(d, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	j := &store.Job{DatasetID: d.ID, UserID: aliceID, EpsilonMicroEps: 1_250_000, DP: true, Delta: 1e-5, PlanTable: "param  shape  count", Review: true}
	if err := e.st.CreateJobReserving(j, j.EpsilonMicroEps); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Grant(j.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Complete(j.ID, 1, "node", []byte(`{"params":"`+modelMarker+`"}`), []byte(`{"validation_accuracy":0.81}`)); err != nil {
		t.Fatal(err)
	}
	var q RequestList
	e.want(e.do("GET", "/api/v1/requests?state=pending", o1, nil), 200).decode(t, &q)
	if len(q.Requests) != 1 {
		t.Fatalf("queue %+v", q)
	}
	r := q.Requests[0]
	if r.Kind != wire.KindRelease || r.JobID != j.ID || r.Epsilon != 1.25 || !r.DP || !r.AutoApprovable || r.PlanTable == "" || !strings.Contains(string(r.Metrics), "0.81") ||
		r.Dataset == nil || r.Dataset.Name != "ward" || r.History == nil || r.History.ReservedEpsilon != 1.25 || r.History.Releases[wire.RequestPending] != 1 || r.UserEmail != "alice@example.org" {
		t.Fatalf("queue entry %+v", r)
	}
	// Requesters: their own only, and no metrics before release.
	var mine RequestList
	e.want(e.do("GET", "/api/v1/requests", bob, nil), 200).decode(t, &mine)
	if len(mine.Requests) != 0 {
		t.Fatalf("bob sees %+v", mine)
	}
	e.want(e.do("GET", "/api/v1/requests/"+r.ID, bob, nil), 404)
	e.want(e.do("GET", "/api/v1/requests?user="+aliceID, bob, nil), 403)
	e.want(e.do("GET", "/api/v1/jobs/"+j.ID, bob, nil), 404)
	// Her pending release request is not shown to her at all (it was filed
	// when the job ended; its appearing would say when): her job reads
	// under review until the decision.
	e.want(e.do("GET", "/api/v1/requests/"+r.ID, alice, nil), 404)
	var aliceJob store.Job
	e.want(e.do("GET", "/api/v1/jobs/"+j.ID, alice, nil), 200).decode(t, &aliceJob)
	if aliceJob.State != wire.StateUnderReview || aliceJob.RequestID != "" || !aliceJob.FinishedAt.IsZero() {
		t.Fatalf("the requester's view of a job under review: %+v", aliceJob)
	}
	for _, path := range []string{"/api/v1/requests", "/api/v1/jobs/" + j.ID, "/api/v1/jobs"} {
		res := e.want(e.do("GET", path, alice, nil), 200)
		if strings.Contains(string(res.body), r.ID) {
			t.Fatalf("%s shows the requester her pending release request: %s", path, res.body)
		}
		if strings.Contains(string(res.body), "0.81") || strings.Contains(string(res.body), modelMarker) {
			t.Fatalf("%s shows the requester metrics or weights before release: %s", path, res.body)
		}
	}
	// No route serves the weights to anyone.
	for _, tok := range []string{owner, o1, alice} {
		for _, path := range []string{"/api/v1/jobs/" + j.ID, "/api/v1/jobs", "/api/v1/requests", "/api/v1/requests/" + r.ID} {
			if res := e.do("GET", path, tok, nil); strings.Contains(string(res.body), modelMarker) {
				t.Fatalf("%s served the model", path)
			}
		}
	}
	// Deciding: the requester cannot; a denial needs a reason.
	e.want(e.do("POST", "/api/v1/requests/"+r.ID+"/approve", alice, nil), 403)
	if res := e.want(e.do("POST", "/api/v1/requests/"+r.ID+"/deny", o1, DecideRequest{}), 400); !strings.Contains(string(res.body), "reason") {
		t.Fatalf("deny without reason: %s", res.body)
	}
	// Two officers at the same moment.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	start := make(chan struct{})
	for i, tok := range []string{o1, o2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/requests/"+r.ID+"/approve", strings.NewReader(`{"reason":"ok"}`))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			<-start
			res, err := e.srv.Client().Do(req)
			if err != nil {
				return
			}
			codes[i] = res.StatusCode
			res.Body.Close()
		}()
	}
	close(start)
	wg.Wait()
	if !(codes[0] == 200 && codes[1] == 409 || codes[0] == 409 && codes[1] == 200) {
		t.Fatalf("concurrent approvals answered %v, want one 200 and one 409", codes)
	}
	u, _ := e.st.User(aliceID)
	if u.SpentMicroEps != 1_250_000 || u.ReservedMicroEps != 0 || u.BudgetMicroEps != 3_000_000-1_250_000 {
		t.Fatalf("after approvals: %+v", u)
	}
	// History by state and user, with reviewer and time.
	var hist RequestList
	e.want(e.do("GET", "/api/v1/requests?state=approved&user="+aliceID, o2, nil), 200).decode(t, &hist)
	if len(hist.Requests) != 1 || hist.Requests[0].Decision == nil || (hist.Requests[0].Decision.Reviewer != o1ID && hist.Requests[0].Decision.Reviewer != o2ID) ||
		hist.Requests[0].Decision.ChargedMicroEps != 1_250_000 || hist.Requests[0].Decision.At.IsZero() {
		t.Fatalf("history %+v", hist)
	}
	e.want(e.do("GET", "/api/v1/requests?state=bogus", o1, nil), 400)
	// Once released, the requester sees the metrics (never the reviewer).
	var own RequestView
	e.want(e.do("GET", "/api/v1/requests/"+r.ID, alice, nil), 200).decode(t, &own)
	if !strings.Contains(string(own.Metrics), "0.81") || own.Decision == nil || own.Decision.Reviewer != "" {
		t.Fatalf("requester's view after approval %+v", own)
	}
}

func TestRulesHTTP(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	_, ds := e.newUser(owner, "ds@example.org", store.RoleDataScientist, newPeerID(t), 0)
	e.want(e.do("GET", "/api/v1/rules", ds, nil), 403)
	e.want(e.do("POST", "/api/v1/rules", owner, RuleRequest{MaxEpsilon: 1, Quota: 1}), 400)
	e.want(e.do("POST", "/api/v1/rules", owner, RuleRequest{Tags: []string{"x"}, Roles: []string{"Nope"}, MaxEpsilon: 1, Quota: 1}), 400)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	var r RuleView
	e.want(e.do("POST", "/api/v1/rules", owner, RuleRequest{Tags: []string{"Medical"}, Roles: []string{store.RoleDataScientist}, MaxEpsilon: 0.5, Quota: 3, ExpiresAt: &exp}), 201).decode(t, &r)
	if r.ID == "" || r.MaxEpsilon != 0.5 || r.MaxEpsilonMicroEps != 500_000 || r.Tags[0] != "medical" || !r.ExpiresAt.Equal(exp) || r.Expired {
		t.Fatalf("rule %+v", r)
	}
	q := 7
	var p RuleView
	e.want(e.do("PATCH", "/api/v1/rules/"+r.ID, owner, PatchRuleRequest{Quota: &q, NoExpiry: true}), 200).decode(t, &p)
	if p.Quota != 7 || !p.ExpiresAt.IsZero() || p.MaxEpsilonMicroEps != 500_000 {
		t.Fatalf("patched %+v", p)
	}
	var l RuleList
	e.want(e.do("GET", "/api/v1/rules", owner, nil), 200).decode(t, &l)
	if len(l.Rules) != 1 {
		t.Fatalf("rules %+v", l)
	}
	e.want(e.do("DELETE", "/api/v1/rules/"+r.ID, owner, nil), 204)
	e.want(e.do("GET", "/api/v1/rules/"+r.ID, owner, nil), 404)
	audit, _ := e.st.Audit(store.AuditFilter{Action: "rule."})
	if len(audit) != 3 {
		t.Fatalf("audit %d rule entries, want 3: %v", len(audit), fmt.Sprint(audit))
	}
}
