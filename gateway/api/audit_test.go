package api

import (
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/gateway/store"
)

// TestAuditWithholdsOutcomeUnderReview: an Administrator reads the audit
// log (can_edit_settings) and requests jobs. From the submission of their
// job on review-gated data to an officer's decision, what they read of the
// log (entries and the chain check's count) does not change, whatever the
// job does: no grant, failure, error text or release request, nor any
// later entry whose number or time would say when it ended. After the
// approval they read it whole; a denied job's outcome stays withheld.
func TestAuditWithholdsOutcomeUnderReview(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	admID, adm := e.newUser(owner, "adm@example.org", store.RoleAdministrator, newPeerID(t), 5)
	_, officer := e.newUser(owner, "o@example.org", store.RoleComplianceOfficer, "", 0)
	d := &store.Dataset{Name: "payroll", Visibility: store.VisibilityPrivate, Tags: []string{"hr"}}
	if err := e.st.PutDataset(d, []byte("name,salary\nheidi,1\n")); err != nil {
		t.Fatal(err)
	}
	submit := func() *store.Job {
		t.Helper()
		j := &store.Job{DatasetID: d.ID, UserID: admID, EpsilonMicroEps: 1_000_000, DP: true, Delta: 1e-5, Review: true}
		if err := e.st.CreateJobReserving(j, j.EpsilonMicroEps); err != nil {
			t.Fatal(err)
		}
		return j
	}
	read := func(token string) (AuditList, AuditVerifyResponse) {
		t.Helper()
		var l AuditList
		var v AuditVerifyResponse
		e.want(e.do("GET", "/api/v1/audit?limit=1000", token, nil), 200).decode(t, &l)
		e.want(e.do("GET", "/api/v1/audit/verify", token, nil), 200).decode(t, &v)
		return l, v
	}
	const secret = "the loss became +Inf: salary of heidi above the threshold"

	j := submit()
	atSubmit, vAtSubmit := read(adm)
	if atSubmit.Withheld == "" || !strings.Contains(atSubmit.Withheld, j.ID) {
		t.Fatalf("nothing says what is withheld: %q", atSubmit.Withheld)
	}
	if _, err := e.st.Grant(j.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Fail(j.ID, 1, "node", secret); err != nil {
		t.Fatal(err)
	}
	e.login("o@example.org", "user-password") // more entries by someone else
	afterEnd, vAfterEnd := read(adm)
	if len(afterEnd.Entries) != len(atSubmit.Entries) || vAfterEnd != vAtSubmit || afterEnd.Withheld != atSubmit.Withheld {
		t.Fatalf("the requester's audit log changed while the outcome was under review: %d entries (check %+v), at submit %d (check %+v)",
			len(afterEnd.Entries), vAfterEnd, len(atSubmit.Entries), vAtSubmit)
	}
	for i, en := range afterEnd.Entries {
		if en.Hash != atSubmit.Entries[i].Hash || strings.Contains(en.Target, j.ID) {
			t.Fatalf("entry %d: %+v", i, en)
		}
	}
	// An officer reads everything.
	if l, _ := read(officerAdmin(t, e, owner)); !auditHas(l, "job.fail", j.ID) {
		t.Fatal("the audit log hides the failure from an auditor who did not request the job")
	}
	// The decision: approved, the requester reads the whole log.
	var q RequestList
	e.want(e.do("GET", "/api/v1/requests?state=pending", officer, nil), 200).decode(t, &q)
	if len(q.Requests) != 1 || q.Requests[0].JobID != j.ID {
		t.Fatalf("queue %+v", q.Requests)
	}
	e.want(e.do("POST", "/api/v1/requests/"+q.Requests[0].ID+"/approve", officer, DecideRequest{Reason: "ok"}), 200)
	approved, vApproved := read(adm)
	if approved.Withheld != "" || !auditHas(approved, "job.fail", j.ID) || vApproved.Entries <= vAtSubmit.Entries {
		t.Fatalf("after approval: withheld %q, %d entries, failure shown %v", approved.Withheld, vApproved.Entries, auditHas(approved, "job.fail", j.ID))
	}

	// A denied job: its outcome stays with the gateway.
	k := submit()
	if _, err := e.st.Grant(k.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Complete(k.ID, 1, "node", []byte(`{}`), []byte(`{"validation_accuracy":0.9}`)); err != nil {
		t.Fatal(err)
	}
	e.want(e.do("GET", "/api/v1/requests?state=pending", officer, nil), 200).decode(t, &q)
	e.want(e.do("POST", "/api/v1/requests/"+q.Requests[0].ID+"/deny", officer, DecideRequest{Reason: "too close to a person"}), 200)
	denied, _ := read(adm)
	if denied.Withheld != "" || !auditHas(denied, "job.create", k.ID) || !auditHas(denied, "request.deny", q.Requests[0].ID) {
		t.Fatalf("after denial: withheld %q; creation or decision missing", denied.Withheld)
	}
	for _, a := range []string{"job.grant", "job.complete", "request.create"} {
		if auditHas(denied, a, k.ID) || auditHas(denied, a, q.Requests[0].ID) {
			t.Fatalf("after denial the requester reads %s of the denied job", a)
		}
	}
}

// officerAdmin is a second Administrator, who requested nothing.
func officerAdmin(t *testing.T, e *env, owner string) string {
	t.Helper()
	_, tok := e.newUser(owner, "adm2@example.org", store.RoleAdministrator, "", 0)
	return tok
}

func auditHas(l AuditList, action, id string) bool {
	for _, en := range l.Entries {
		if en.Action == action && strings.HasSuffix(en.Target, "/"+id) {
			return true
		}
	}
	return false
}
