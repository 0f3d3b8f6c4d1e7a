package api

import (
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/store"
)

func TestBudgetLedgerOverridesAudit(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	dsID, dsTok := e.newUser(owner, "ds@example.org", "", newPeerID(t), 1)
	_, coTok := e.newUser(owner, "co@example.org", store.RoleComplianceOfficer, "", 0)

	var me UserView
	e.want(e.do("GET", "/api/v1/auth/me", dsTok, nil), 200).decode(t, &me)
	if me.ID != dsID || len(me.Permissions) != 1 || me.Permissions[0] != string(store.PermMakeDataRequests) {
		t.Fatalf("me %+v", me)
	}

	// The compliance officer adds budget; it is recorded in the ledger.
	var u UserView
	e.want(e.do("POST", "/api/v1/users/"+dsID+"/budget", coTok, BudgetRequest{DeltaEpsilon: 0.25, Reason: "second study"}), 200).decode(t, &u)
	if u.BudgetMicroEps != 1_250_000 {
		t.Fatalf("budget %+v", u)
	}
	if r := e.do("POST", "/api/v1/users/"+dsID+"/budget", coTok, BudgetRequest{DeltaEpsilon: -5}); r.status != 409 || r.errCode(t) != "insufficient_budget" {
		t.Fatalf("overdraw: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/api/v1/users/"+dsID+"/budget", coTok, BudgetRequest{DeltaEpsilon: 0}); r.status != 400 || r.errCode(t) != "invalid_field" {
		t.Fatalf("zero: %d %s", r.status, r.body)
	}
	// Spend through the store, as the gateway does on release.
	res, err := e.st.Reserve(dsID, "", 500_000, "", "job x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Commit(res.ID, "", "released"); err != nil {
		t.Fatal(err)
	}
	var led LedgerResponse
	e.want(e.do("GET", "/api/v1/users/"+dsID+"/ledger", coTok, nil), 200).decode(t, &led)
	if len(led.Movements) != 4 || led.User.SpentMicroEps != 500_000 || led.User.BudgetMicroEps != 750_000 {
		t.Fatalf("ledger %+v", led)
	}
	kinds := []string{}
	for _, m := range led.Movements {
		kinds = append(kinds, m.Kind)
	}
	if strings.Join(kinds, ",") != "grant,grant,reserve,commit" {
		t.Fatalf("movements %v", kinds)
	}
	// Setting budget_epsilon over PATCH is a recorded grant too.
	e.want(e.do("PATCH", "/api/v1/users/"+dsID, owner, map[string]any{"budget_epsilon": 2}), 200).decode(t, &u)
	if u.BudgetMicroEps != 2_000_000 || u.SpentMicroEps != 500_000 {
		t.Fatalf("patched budget %+v", u)
	}

	// Per-dataset, per-user overrides.
	var d struct{ ID string }
	e.want(e.upload(owner, map[string]string{"name": "p", "visibility": "private"}, pimaCSV), 201).decode(t, &d)
	no := false
	var o store.Override
	e.want(e.do("PUT", "/api/v1/datasets/"+d.ID+"/overrides/"+dsID, owner, OverrideRequest{Train: &no}), 200).decode(t, &o)
	if o.Train == nil || *o.Train {
		t.Fatalf("override %+v", o)
	}
	dec, err := e.st.CanTrain(dsID, d.ID)
	if err != nil || dec.Allowed {
		t.Fatalf("CanTrain after override: %+v %v", dec, err)
	}
	var ol OverrideList
	e.want(e.do("GET", "/api/v1/datasets/"+d.ID+"/overrides", owner, nil), 200).decode(t, &ol)
	if len(ol.Overrides) != 1 {
		t.Fatalf("overrides %+v", ol)
	}
	e.want(e.do("PUT", "/api/v1/datasets/"+d.ID+"/overrides/nobody", owner, OverrideRequest{Train: &no}), 404)

	// A per-dataset cap counts what was already used there.
	if _, err := e.st.Reserve(dsID, d.ID, 300_000, "", "job y"); err != nil {
		t.Fatal(err)
	}
	var cp store.DatasetCap
	e.want(e.do("PUT", "/api/v1/users/"+dsID+"/caps/"+d.ID, coTok, CapRequest{CapEpsilon: 0.4}), 200).decode(t, &cp)
	if cp.CapMicroEps != 400_000 || cp.UsedMicroEps != 300_000 {
		t.Fatalf("cap %+v", cp)
	}
	if _, err := e.st.Reserve(dsID, d.ID, 200_000, "", "over the cap"); err == nil {
		t.Fatal("reservation over the dataset cap accepted")
	}
	e.want(e.do("PUT", "/api/v1/users/"+dsID+"/caps/"+d.ID, coTok, CapRequest{CapEpsilon: -1}), 200).decode(t, &cp)
	if cp.CapMicroEps != -1 {
		t.Fatalf("uncapped %+v", cp)
	}
	e.want(e.do("PUT", "/api/v1/users/"+dsID+"/caps/nope", coTok, CapRequest{CapEpsilon: 1}), 404)

	// The audit log lists all of it, in chain order, and verifies.
	var al AuditList
	e.want(e.do("GET", "/api/v1/audit?limit=1000", owner, nil), 200).decode(t, &al)
	var actions []string
	for i, en := range al.Entries {
		if en.Seq != uint64(i+1) || en.Hash == "" {
			t.Fatalf("entry %d: %+v", i, en)
		}
		actions = append(actions, en.Action)
	}
	joined := strings.Join(actions, " ")
	for _, a := range []string{"setup", "auth.login", "user.create", "budget.grant", "budget.reserve", "budget.commit", "user.update", "dataset.put", "dataset.override"} {
		if !strings.Contains(joined, a) {
			t.Errorf("audit lacks %s: %s", a, joined)
		}
	}
	e.want(e.do("GET", "/api/v1/audit?action=budget.&limit=2", owner, nil), 200).decode(t, &al)
	if len(al.Entries) != 2 || !strings.HasPrefix(al.Entries[0].Action, "budget.") {
		t.Fatalf("filtered audit %+v", al)
	}
	var v AuditVerifyResponse
	e.want(e.do("GET", "/api/v1/audit/verify", owner, nil), 200).decode(t, &v)
	if !v.OK || v.Entries < 10 {
		t.Fatalf("verify %+v", v)
	}

	// Logout revokes the caller's tokens.
	e.want(e.do("POST", "/api/v1/auth/logout", dsTok, nil), 204)
	e.want(e.do("GET", "/api/v1/auth/me", dsTok, nil), 401)
}
