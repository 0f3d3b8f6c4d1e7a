package api

import (
	"net/http"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/store"
)

func TestSettings(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	var got store.Settings
	e.want(e.do("GET", "/api/v1/settings", "", nil), 200).decode(t, &got)
	if got != (store.Settings{}) {
		t.Fatalf("fresh settings %+v, want zero", got)
	}
	want := store.Settings{Name: "Hospital A", LogoURL: "data:image/png;base64,AAAA", Color: "#12abEF"}
	e.want(e.do("PUT", "/api/v1/settings", owner, want), 200)
	e.want(e.do("GET", "/api/v1/settings", "", nil), 200).decode(t, &got)
	if got != want {
		t.Fatalf("settings %+v, want %+v", got, want)
	}
	for _, bad := range []store.Settings{{Color: "red"}, {LogoURL: "javascript:alert(1)"}, {LogoURL: "http://plain.example/logo.png"}} {
		if r := e.do("PUT", "/api/v1/settings", owner, bad); r.status != http.StatusBadRequest {
			t.Errorf("PUT %+v: %d %s, want 400", bad, r.status, r.body)
		}
	}
	_, sci := e.newUser(owner, "sci@example.org", store.RoleDataScientist, "", 0)
	if r := e.do("PUT", "/api/v1/settings", sci, want); r.status != http.StatusForbidden {
		t.Errorf("PUT as a data scientist: %d, want 403", r.status)
	}
	var al AuditList
	e.want(e.do("GET", "/api/v1/audit?action=settings.", owner, nil), 200).decode(t, &al)
	if len(al.Entries) != 1 {
		t.Errorf("audit has %d settings entries, want 1", len(al.Entries))
	}
}

// The federation rules: plain (unmasked) updates are refused until someone
// with can_edit_settings allows them; the change is audited.
func TestFederationSettings(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	var got store.FederationSettings
	e.want(e.do("GET", "/api/v1/settings/federation", owner, nil), 200).decode(t, &got)
	if got.AllowPlainUpdates {
		t.Fatal("plain updates allowed on a fresh gateway")
	}
	_, sci := e.newUser(owner, "sci@example.org", store.RoleDataScientist, "", 0)
	if r := e.do("PUT", "/api/v1/settings/federation", sci, store.FederationSettings{AllowPlainUpdates: true}); r.status != http.StatusForbidden {
		t.Errorf("PUT as a data scientist: %d, want 403", r.status)
	}
	if r := e.do("GET", "/api/v1/settings/federation", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("GET without a token: %d, want 401", r.status)
	}
	e.want(e.do("PUT", "/api/v1/settings/federation", owner, store.FederationSettings{AllowPlainUpdates: true}), 200)
	e.want(e.do("GET", "/api/v1/settings/federation", owner, nil), 200).decode(t, &got)
	if !got.AllowPlainUpdates || got.Schema != store.FederationSettingsSchema {
		t.Fatalf("settings %+v after allowing plain updates", got)
	}
	var al AuditList
	e.want(e.do("GET", "/api/v1/audit?action=settings.federation", owner, nil), 200).decode(t, &al)
	if len(al.Entries) != 1 {
		t.Errorf("audit has %d settings.federation entries, want 1", len(al.Entries))
	}
}
