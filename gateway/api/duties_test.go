package api

import (
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// TestSeparationOfDuties (issue 13, acceptance 5): only the Owner creates,
// changes or deletes Administrators and Compliance Officers; nobody decides
// their own request, nor one whose requester could change their account.
func TestSeparationOfDuties(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	adminID, admin := e.newUser(owner, "admin@example.org", store.RoleAdministrator, "", 0)
	coID, _ := e.newUser(owner, "co@example.org", store.RoleComplianceOfficer, "", 0)
	_, co2 := e.newUser(owner, "co2@example.org", store.RoleComplianceOfficer, "", 0)

	// An Administrator: 403 on a Compliance Officer's password, role, peer
	// ID, deletion, and on making Administrators or Compliance Officers.
	for _, body := range []map[string]any{{"password": "a new password!"}, {"role": store.RoleDataScientist}, {"peer_id": newPeerID(t)}, {"name": "Mallory"}} {
		if r := e.want(e.do("PATCH", "/api/v1/users/"+coID, admin, body), 403); r.errCode(t) != "forbidden" {
			t.Fatalf("PATCH %v: %s", body, r.body)
		}
	}
	e.want(e.do("DELETE", "/api/v1/users/"+coID, admin, nil), 403)
	for _, role := range []string{store.RoleAdministrator, store.RoleComplianceOfficer} {
		e.want(e.do("POST", "/api/v1/users", admin, CreateUserRequest{Email: "new-" + role[:3] + "@example.org", Password: "user-password", Role: role}), 403)
	}
	dsID, _ := e.newUser(admin, "ds@example.org", store.RoleDataScientist, "", 0) // still allowed
	e.want(e.do("PATCH", "/api/v1/users/"+dsID, admin, map[string]any{"role": store.RoleComplianceOfficer}), 403)
	e.want(e.do("PATCH", "/api/v1/users/"+dsID, admin, map[string]any{"name": "Dana"}), 200)
	e.want(e.do("PATCH", "/api/v1/users/"+adminID, admin, map[string]any{"password": "my own new password"}), 200)
	admin = e.login("admin@example.org", "my own new password")
	// The Owner can do each.
	e.want(e.do("PATCH", "/api/v1/users/"+coID, owner, map[string]any{"password": "owner set this one"}), 200)
	e.want(e.do("POST", "/api/v1/users", owner, CreateUserRequest{Email: "admin2@example.org", Password: "user-password", Role: store.RoleAdministrator}), 201)
	co := e.login("co@example.org", "owner set this one")

	// Nobody approves their own budget or release request.
	budget, err := e.st.CreateRequest(store.NewRequest{Kind: wire.KindBudget, UserID: coID, AmountMicroEps: 1_000_000, Reason: "more"})
	if err != nil {
		t.Fatal(err)
	}
	e.want(e.do("POST", "/api/v1/requests/"+budget.ID+"/approve", co, nil), 403)
	d := &store.Dataset{Name: "ward", Visibility: store.VisibilityPrivate}
	if err := e.st.PutDataset(d, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	e.want(e.do("POST", "/api/v1/requests/"+budget.ID+"/approve", co2, nil), 200)
	j := &store.Job{DatasetID: d.ID, UserID: coID, EpsilonMicroEps: 500_000, DP: true, Delta: 1e-5, Review: true}
	if err := e.st.CreateJobReserving(j, j.EpsilonMicroEps); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Grant(j.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Complete(j.ID, 1, "node", []byte(`{}`), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	rel, err := e.st.Requests(store.RequestFilter{JobID: j.ID})
	if err != nil || len(rel) != 1 {
		t.Fatalf("release requests %+v %v", rel, err)
	}
	e.want(e.do("POST", "/api/v1/requests/"+rel[0].ID+"/approve", co, nil), 403)
	e.want(e.do("POST", "/api/v1/requests/"+rel[0].ID+"/deny", co, DecideRequest{Reason: "mine"}), 403)

	// A requester who could change the reviewer's account (the Owner can
	// change everyone's) has their requests decided by nobody but themselves,
	// which is refused too; an Administrator's request is decided by an
	// officer the Administrator cannot touch.
	ownerUser, err := e.st.UserByEmail("owner@example.org")
	if err != nil {
		t.Fatal(err)
	}
	ob, err := e.st.CreateRequest(store.NewRequest{Kind: wire.KindBudget, UserID: ownerUser.ID, AmountMicroEps: 1, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.want(e.do("POST", "/api/v1/requests/"+ob.ID+"/approve", co2, nil), 403); r.errCode(t) != "forbidden" {
		t.Fatalf("officer deciding the Owner's request: %s", r.body)
	} else if !strings.Contains(string(r.body), "can change your account") {
		t.Fatalf("refusal does not say why: %s", r.body)
	}
	ab, err := e.st.CreateRequest(store.NewRequest{Kind: wire.KindBudget, UserID: adminID, AmountMicroEps: 1, Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	e.want(e.do("POST", "/api/v1/requests/"+ab.ID+"/approve", admin, nil), 403)
	e.want(e.do("POST", "/api/v1/requests/"+ab.ID+"/approve", co2, nil), 200)
}
