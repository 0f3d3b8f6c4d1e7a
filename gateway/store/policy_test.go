package store

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/wire"
)

// contractRoles is CONTRACT.md's default role table, written out again here so
// that DefaultRoles is checked against the contract, not against itself.
var contractRoles = map[string][]Permission{
	RoleDataScientist:     {PermMakeDataRequests},
	RoleComplianceOfficer: {PermTriageRequests, PermManagePrivacyBudget},
	RoleAdministrator:     {PermMakeDataRequests, PermTriageRequests, PermManagePrivacyBudget, PermCreateUsers, PermUploadData, PermEditSettings},
	RoleOwner:             AllPermissions,
}

func TestDefaultRolesMatchContract(t *testing.T) {
	got := DefaultRoles()
	if len(got) != len(contractRoles) {
		t.Fatalf("%d default roles", len(got))
	}
	for _, r := range got {
		want := contractRoles[r.Name]
		if len(r.Permissions) != len(want) {
			t.Fatalf("%s: %v, want %v", r.Name, r.Permissions, want)
		}
		for _, p := range want {
			if !r.Has(p) {
				t.Fatalf("%s lacks %s", r.Name, p)
			}
		}
	}
}

// TestPeerPolicyTable walks every p2p protocol (its descriptor) against every default role, an
// enrolled node and an unregistered peer.
func TestPeerPolicyTable(t *testing.T) {
	s := openTest(t, t.TempDir())
	owner := setupTest(t, s)
	peers := map[string]string{} // role -> peer ID
	for _, r := range []string{RoleAdministrator, RoleComplianceOfficer, RoleDataScientist} {
		pid := "12D3KooW" + strings.ReplaceAll(r, " ", "")
		if _, err := s.CreateUser(NewUser{Email: strings.ReplaceAll(r, " ", "") + "@example.org", Password: "password1", Role: r, PeerID: pid}); err != nil {
			t.Fatal(err)
		}
		peers[r] = pid
	}
	ownerPeer := "12D3KooWOwner"
	if _, err := s.UpdateUser(owner.ID, UserUpdate{PeerID: &ownerPeer}); err != nil {
		t.Fatal(err)
	}
	peers[RoleOwner] = ownerPeer
	tok, _, _ := s.CreateJoinToken(time.Hour)
	if _, err := s.RedeemJoinToken(tok, "12D3KooWNode", 1, ""); err != nil {
		t.Fatal(err)
	}
	peers["node"] = "12D3KooWNode"
	peers["unregistered"] = "12D3KooWStranger"

	for _, d := range wire.Protocols() {
		proto := d.Name
		for who, pid := range peers {
			var allowed bool
			switch d.Caller {
			case wire.CallerAnyone:
				allowed = true
			case wire.CallerNode:
				allowed = who == "node"
			case wire.CallerScientist:
				allowed = slices.Contains(contractRoles[who], PermMakeDataRequests)
			default:
				t.Errorf("protocol %s has no caller policy (%v)", proto, d.Caller)
			}
			_, err := s.AuthorizeCaller(pid, d.Caller)
			if allowed != (err == nil) {
				t.Errorf("%s from %s: err %v, want allowed=%v", proto, who, err, allowed)
			}
			if !allowed && !errors.Is(err, ErrUnknownPeer) && !errors.Is(err, ErrForbidden) {
				t.Errorf("%s from %s: refusal %v is neither unknown peer nor forbidden", proto, who, err)
			}
			if who == "unregistered" && d.Caller != wire.CallerAnyone && !errors.Is(err, ErrUnknownPeer) {
				t.Errorf("%s from an unregistered peer: %v, want ErrUnknownPeer", proto, err)
			}
		}
	}
	if _, err := s.AuthorizeCaller(peers[RoleOwner], wire.Caller(0)); !errors.Is(err, ErrUnknownProtocol) {
		t.Fatalf("a protocol without a caller policy: %v", err)
	}
	// A role change applies to the very next p2p request.
	role := RoleComplianceOfficer
	ds, _ := s.UserByPeerID(peers[RoleDataScientist])
	if _, err := s.UpdateUser(ds.ID, UserUpdate{Role: &role}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthorizeCaller(peers[RoleDataScientist], wire.Submit().Caller); !errors.Is(err, ErrForbidden) {
		t.Fatalf("after role change: %v", err)
	}
}

func TestOverridesAndCanTrain(t *testing.T) {
	s := openTest(t, t.TempDir())
	owner := setupTest(t, s)
	u, err := s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1"})
	if err != nil {
		t.Fatal(err)
	}
	co, err := s.CreateUser(NewUser{Email: "co@example.org", Password: "password1", Role: RoleComplianceOfficer})
	if err != nil {
		t.Fatal(err)
	}
	pub := &Dataset{Name: "pub", Visibility: VisibilityPublic}
	priv := &Dataset{Name: "priv", Visibility: VisibilityPrivate}
	for _, d := range []*Dataset{pub, priv} {
		if err := s.PutDataset(d, []byte("a\n1\n")); err != nil {
			t.Fatal(err)
		}
	}
	yes, no := true, false
	check := func(user, ds string, allowed, review bool) {
		t.Helper()
		d, err := s.CanTrain(user, ds)
		if err != nil || d.Allowed != allowed || (allowed && d.Review != review) {
			t.Fatalf("CanTrain(%s, %s) = %+v, %v; want allowed=%v review=%v", user, ds, d, err, allowed, review)
		}
	}
	check(u.ID, pub.ID, true, false)
	check(u.ID, priv.ID, true, true)
	check(co.ID, pub.ID, false, false) // role lacks can_make_data_requests
	if err := s.SetOverride(Override{DatasetID: priv.ID, UserID: u.ID, AutoRelease: &yes}, owner.ID); err != nil {
		t.Fatal(err)
	}
	check(u.ID, priv.ID, true, false)
	if err := s.SetOverride(Override{DatasetID: pub.ID, UserID: u.ID, Train: &no}, owner.ID); err != nil {
		t.Fatal(err)
	}
	check(u.ID, pub.ID, false, false)
	if err := s.SetOverride(Override{DatasetID: pub.ID, UserID: u.ID, AutoRelease: &no}, owner.ID); err != nil {
		t.Fatal(err)
	}
	check(u.ID, pub.ID, true, true)
	if os, err := s.Overrides(priv.ID); err != nil || len(os) != 1 {
		t.Fatalf("overrides %v %v", os, err)
	}
	if err := s.SetOverride(Override{DatasetID: "nope", UserID: u.ID, Train: &no}, owner.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown dataset: %v", err)
	}
	// Deleting the dataset drops its overrides.
	if err := s.DeleteDataset(priv.ID); err != nil {
		t.Fatal(err)
	}
	if os, _ := s.Overrides(priv.ID); len(os) != 0 {
		t.Fatalf("overrides survive their dataset: %v", os)
	}
	if _, err := s.CanTrain(u.ID, priv.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted dataset: %v", err)
	}
}

func TestRolesCRUD(t *testing.T) {
	s := openTest(t, t.TempDir())
	owner := setupTest(t, s)
	if _, err := s.CreateRole(Role{Name: "Reviewer", Permissions: []Permission{PermTriageRequests, PermTriageRequests}}, owner.ID); err != nil {
		t.Fatal(err)
	}
	r, err := s.Role("Reviewer")
	if err != nil || len(r.Permissions) != 1 || r.Default {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := s.CreateRole(Role{Name: "Bad", Permissions: []Permission{"can_fly"}}, owner.ID); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad permission: %v", err)
	}
	if _, err := s.UpdateRole(RoleOwner, nil, owner.ID); !errors.Is(err, ErrProtected) {
		t.Fatalf("edit owner: %v", err)
	}
	if err := s.DeleteRole(RoleOwner, owner.ID); !errors.Is(err, ErrProtected) {
		t.Fatalf("delete owner: %v", err)
	}
	if _, err := s.UpdateRole(RoleDataScientist, []Permission{PermMakeDataRequests, PermUploadData}, owner.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRole("Reviewer", owner.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRole("Reviewer", owner.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	rs, _ := s.Roles()
	if len(rs) != 4 || rs[0].Name != RoleOwner {
		t.Fatalf("roles %v", rs)
	}
	// Administration policy: an Administrator cannot hand out a role with
	// permissions they lack, nor touch the Owner.
	admin, _ := s.CreateUser(NewUser{Email: "admin@example.org", Password: "password1", Role: RoleAdministrator})
	if _, err := s.CreateRole(Role{Name: "Infra", Permissions: []Permission{PermManageInfrastructure}}, owner.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.AuthorizeManageUser(admin.ID, "", "Infra"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("admin gives Infra: %v", err)
	}
	if err := s.AuthorizeManageUser(admin.ID, owner.ID, ""); !errors.Is(err, ErrForbidden) {
		t.Fatalf("admin edits owner: %v", err)
	}
	if err := s.AuthorizeManageUser(admin.ID, "", RoleDataScientist); err != nil {
		t.Fatalf("admin gives Data Scientist: %v", err)
	}
	if err := s.AuthorizeManageUser(owner.ID, admin.ID, "Infra"); err != nil {
		t.Fatalf("owner: %v", err)
	}
}
