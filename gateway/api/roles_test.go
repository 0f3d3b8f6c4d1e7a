package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/wire"

	"github.com/fedgrid/fedgrid/gateway/sources"
	"github.com/fedgrid/fedgrid/gateway/store"
	resumable "github.com/fedgrid/fedgrid/gateway/upload"
)

// contractRoles is CONTRACT.md's role table, written out independently of the
// store's DefaultRoles.
var contractRoles = map[string][]store.Permission{
	store.RoleDataScientist:     {store.PermMakeDataRequests},
	store.RoleComplianceOfficer: {store.PermTriageRequests, store.PermManagePrivacyBudget},
	store.RoleAdministrator: {store.PermMakeDataRequests, store.PermTriageRequests, store.PermManagePrivacyBudget,
		store.PermCreateUsers, store.PermUploadData, store.PermEditSettings},
	store.RoleOwner: store.AllPermissions,
}

// Who may call each route, from CONTRACT.md's route table (and, for routes
// the contract does not list, the permission that governs the data they touch).
const (
	anyone  = "anyone"  // no token needed
	anyUser = "anyUser" // any valid token
)

var contractRoutes = map[string]string{
	"GET /healthz":                                  anyone,
	"GET /api/v1/status":                            anyone,
	"GET /api/v1/openapi.json":                      anyone,
	"POST /api/v1/setup":                            anyone,
	"POST /api/v1/auth/login":                       anyone,
	"GET /api/v1/auth/me":                           anyUser,
	"POST /api/v1/auth/logout":                      anyUser,
	"GET /api/v1/users":                             string(store.PermCreateUsers),
	"POST /api/v1/users":                            string(store.PermCreateUsers),
	"GET /api/v1/users/{id}":                        string(store.PermCreateUsers),
	"PATCH /api/v1/users/{id}":                      string(store.PermCreateUsers),
	"DELETE /api/v1/users/{id}":                     string(store.PermCreateUsers),
	"POST /api/v1/users/{id}/budget":                string(store.PermManagePrivacyBudget),
	"PUT /api/v1/users/{id}/caps/{dataset_id}":      string(store.PermManagePrivacyBudget),
	"GET /api/v1/users/{id}/ledger":                 string(store.PermManagePrivacyBudget),
	"GET /api/v1/roles":                             string(store.PermEditRoles),
	"POST /api/v1/roles":                            string(store.PermEditRoles),
	"PATCH /api/v1/roles/{name}":                    string(store.PermEditRoles),
	"DELETE /api/v1/roles/{name}":                   string(store.PermEditRoles),
	"GET /api/v1/datasets":                          anyUser,
	"POST /api/v1/datasets":                         string(store.PermUploadData),
	"GET /api/v1/datasets/{id}":                     anyUser,
	"GET /api/v1/datasets/{id}/preview":             anyUser,
	"PATCH /api/v1/datasets/{id}":                   string(store.PermUploadData),
	"DELETE /api/v1/datasets/{id}":                  string(store.PermUploadData),
	"GET /api/v1/datasets/{id}/overrides":           string(store.PermUploadData),
	"PUT /api/v1/datasets/{id}/overrides/{user_id}": string(store.PermUploadData),
	"POST /api/v1/uploads":                          string(store.PermUploadData),
	"GET /api/v1/uploads":                           string(store.PermUploadData), // own sessions only
	"GET /api/v1/uploads/{id}":                      string(store.PermUploadData), // own sessions only
	"PATCH /api/v1/uploads/{id}":                    string(store.PermUploadData),
	"POST /api/v1/uploads/{id}/finish":              string(store.PermUploadData),
	"DELETE /api/v1/uploads/{id}":                   string(store.PermUploadData),
	"GET /api/v1/sources":                           string(store.PermUploadData),
	"POST /api/v1/sources":                          string(store.PermUploadData),
	"GET /api/v1/datasets/{id}/source":              string(store.PermUploadData),
	"PATCH /api/v1/datasets/{id}/source":            string(store.PermUploadData),
	"POST /api/v1/datasets/{id}/snapshot":           string(store.PermUploadData),
	"GET /api/v1/models":                            anyUser, // descriptions, never weights
	"POST /api/v1/models":                           string(store.PermUploadData),
	"GET /api/v1/models/{id}":                       anyUser,
	"DELETE /api/v1/models/{id}":                    string(store.PermUploadData),
	"GET /api/v1/jobs":                              anyUser, // own jobs; all with triage
	"GET /api/v1/jobs/{id}":                         anyUser, // own job here; others' below
	"POST /api/v1/jobs/{id}/cancel":                 anyUser,
	"GET /api/v1/requests":                          anyUser, // own requests; all with triage
	"GET /api/v1/requests/{id}":                     anyUser, // own request here
	"POST /api/v1/requests/{id}/approve":            string(store.PermTriageRequests),
	"POST /api/v1/requests/{id}/deny":               string(store.PermTriageRequests),
	"GET /api/v1/rules":                             string(store.PermEditSettings),
	"POST /api/v1/rules":                            string(store.PermEditSettings),
	"GET /api/v1/rules/{id}":                        string(store.PermEditSettings),
	"PATCH /api/v1/rules/{id}":                      string(store.PermEditSettings),
	"DELETE /api/v1/rules/{id}":                     string(store.PermEditSettings),
	"GET /api/v1/nodes":                             string(store.PermManageInfrastructure),
	"POST /api/v1/nodes/join-tokens":                string(store.PermManageInfrastructure),
	"DELETE /api/v1/nodes/{peer_id}":                string(store.PermManageInfrastructure),
	"GET /api/v1/audit":                             string(store.PermEditSettings),
	"GET /api/v1/audit/verify":                      string(store.PermEditSettings),
	"GET /api/v1/settings":                          anyone,
	"PUT /api/v1/settings":                          string(store.PermEditSettings),
	"GET /api/v1/settings/federation":               string(store.PermEditSettings),
	"PUT /api/v1/settings/federation":               string(store.PermEditSettings),
	"GET /api/v1/settings/sources":                  string(store.PermUploadData),
	"PUT /api/v1/settings/sources":                  string(store.PermManageInfrastructure),
}

const secretCell = "SECRET-ROW-7f3a9c"

// walkCSV is what the walk's resumable uploads send.
const walkCSV = "x,y\n1,2\n3,4\n"

type roleWalk struct {
	*env
	owner   string
	users   map[string]*store.User // role -> user
	tokens  map[string]string      // role -> token
	privDS  *store.Dataset
	counter atomic.Int64
}

// allowLoopbackSources puts the test server's address on the allowed
// source hosts: the walk's callers are not all the Owner.
func (w *roleWalk) allowLoopbackSources() {
	if _, err := w.st.PutSourceSettings(store.SourceSettings{AllowedHosts: []string{"127.0.0.1"}}, ""); err != nil {
		w.t.Fatal(err)
	}
}

func (w *roleWalk) uniq(prefix string) string {
	return fmt.Sprintf("%s%d", prefix, w.counter.Add(1))
}

// fixture returns a path with its parameters filled and a valid body, making
// throwaway objects so that every allowed call can succeed.
func (w *roleWalk) fixture(rt *route, caller *store.User) (string, any) {
	t := w.t
	mkUser := func() *store.User {
		u, err := w.st.CreateUser(store.NewUser{Email: w.uniq("tmp") + "@example.org", Password: "password1"})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	mkDataset := func() *store.Dataset {
		d := &store.Dataset{Name: w.uniq("ds"), Visibility: store.VisibilityPublic}
		if err := w.st.PutDataset(d, []byte("a\n1\n")); err != nil {
			t.Fatal(err)
		}
		return d
	}
	mkRole := func() string {
		r, err := w.st.CreateRole(store.Role{Name: w.uniq("Role")}, "")
		if err != nil {
			t.Fatal(err)
		}
		return r.Name
	}
	mkJob := func() *store.Job {
		j := &store.Job{DatasetID: w.privDS.ID}
		if caller != nil {
			j.UserID = caller.ID
		}
		if err := w.st.CreateJob(j); err != nil {
			t.Fatal(err)
		}
		return j
	}
	p := rt.path
	key := rt.method + " " + rt.path
	switch key {
	case "PUT /api/v1/settings":
		return p, store.Settings{Name: "Hospital A", Color: "#123456"}
	case "PUT /api/v1/settings/federation":
		return p, store.FederationSettings{}
	case "PUT /api/v1/settings/sources":
		return p, store.SourceSettings{AllowedHosts: []string{"127.0.0.1"}}
	case "POST /api/v1/setup":
		return p, SetupRequest{Email: "again@example.org", Password: "password1"}
	case "POST /api/v1/auth/login":
		return p, LoginRequest{Email: w.users[store.RoleDataScientist].Email, Password: "user-password"}
	case "POST /api/v1/users":
		return p, CreateUserRequest{Email: w.uniq("new") + "@example.org", Password: "password1"}
	case "GET /api/v1/users/{id}", "DELETE /api/v1/users/{id}", "GET /api/v1/users/{id}/ledger":
		return strings.Replace(p, "{id}", mkUser().ID, 1), nil
	case "PATCH /api/v1/users/{id}":
		name := "renamed"
		return strings.Replace(p, "{id}", mkUser().ID, 1), PatchUserRequest{Name: &name}
	case "POST /api/v1/users/{id}/budget":
		return strings.Replace(p, "{id}", mkUser().ID, 1), BudgetRequest{DeltaEpsilon: 0.5, Reason: "walk"}
	case "PUT /api/v1/users/{id}/caps/{dataset_id}":
		return strings.NewReplacer("{id}", mkUser().ID, "{dataset_id}", mkDataset().ID).Replace(p), CapRequest{CapEpsilon: 0.5}
	case "POST /api/v1/roles":
		return p, RoleRequest{Name: w.uniq("New"), Permissions: []store.Permission{store.PermMakeDataRequests}}
	case "PATCH /api/v1/roles/{name}":
		perms := []store.Permission{store.PermUploadData}
		return strings.Replace(p, "{name}", mkRole(), 1), PatchRoleRequest{Permissions: &perms}
	case "DELETE /api/v1/roles/{name}":
		return strings.Replace(p, "{name}", mkRole(), 1), nil
	case "GET /api/v1/datasets/{id}", "DELETE /api/v1/datasets/{id}", "GET /api/v1/datasets/{id}/overrides", "GET /api/v1/datasets/{id}/preview":
		return strings.Replace(p, "{id}", mkDataset().ID, 1), nil
	case "PATCH /api/v1/datasets/{id}":
		desc := "changed"
		return strings.Replace(p, "{id}", mkDataset().ID, 1), PatchDatasetRequest{Description: &desc}
	case "PUT /api/v1/datasets/{id}/overrides/{user_id}":
		yes := true
		return strings.NewReplacer("{id}", mkDataset().ID, "{user_id}", w.users[store.RoleDataScientist].ID).Replace(p), OverrideRequest{AutoRelease: &yes}
	case "POST /api/v1/uploads":
		return p, CreateUploadRequest{Size: int64(len(walkCSV)), Name: w.uniq("up"), Visibility: store.VisibilityPrivate}
	case "GET /api/v1/uploads/{id}", "PATCH /api/v1/uploads/{id}", "DELETE /api/v1/uploads/{id}", "POST /api/v1/uploads/{id}/finish":
		owner := "nobody"
		if caller != nil {
			owner = caller.ID
		}
		sess, err := w.api.cfg.Uploads.Create(resumable.Session{Owner: owner, Size: int64(len(walkCSV)), Format: FormatCSV, Name: w.uniq("up"), Visibility: store.VisibilityPrivate})
		if err != nil {
			t.Fatal(err)
		}
		if rt.method == http.MethodPost {
			if _, err := w.api.cfg.Uploads.Append(sess.ID, 0, strings.NewReader(walkCSV), 1<<20); err != nil {
				t.Fatal(err)
			}
		}
		return strings.Replace(p, "{id}", sess.ID, 1), nil
	case "POST /api/v1/sources":
		w.allowLoopbackSources()
		return p, SourceRequest{Kind: store.SourcePostgres, URL: w.pgURL(t), Table: "patients", Name: w.uniq("pg")}
	case "GET /api/v1/datasets/{id}/source", "PATCH /api/v1/datasets/{id}/source":
		d := mkDataset()
		// A stored record is enough here: nothing connects.
		if err := w.st.PutDatasetSource(&store.DatasetSource{DatasetID: d.ID, Kind: store.SourcePostgres, URL: "postgres://reader@127.0.0.1:1/clinic", Table: "patients"}, ""); err != nil {
			t.Fatal(err)
		}
		hour := int64(3600)
		return strings.Replace(p, "{id}", d.ID, 1), PatchSourceRequest{IntervalSeconds: &hour}
	case "POST /api/v1/datasets/{id}/snapshot":
		w.allowLoopbackSources()
		d, _, err := w.api.cfg.Sources.Register(context.Background(), sources.Registration{Kind: store.SourcePostgres, URL: w.pgURL(t), Table: "patients", Name: w.uniq("pg")}, "")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Replace(p, "{id}", d.ID, 1), nil
	case "GET /api/v1/models/{id}", "DELETE /api/v1/models/{id}":
		m := &store.HostedModel{Name: w.uniq("model")}
		if err := w.st.PutHostedModel(m, []byte(tinyModel)); err != nil {
			t.Fatal(err)
		}
		return strings.Replace(p, "{id}", m.ID, 1), nil
	case "GET /api/v1/jobs/{id}", "POST /api/v1/jobs/{id}/cancel":
		return strings.Replace(p, "{id}", mkJob().ID, 1), nil
	case "GET /api/v1/requests/{id}":
		owner := mkUser()
		if caller != nil {
			owner = caller
		}
		r, err := w.st.CreateRequest(store.NewRequest{Kind: wire.KindBudget, UserID: owner.ID, AmountMicroEps: 1, Reason: "walk"})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Replace(p, "{id}", r.ID, 1), nil
	case "POST /api/v1/requests/{id}/approve", "POST /api/v1/requests/{id}/deny":
		r, err := w.st.CreateRequest(store.NewRequest{Kind: wire.KindPermission, UserID: mkUser().ID, DatasetID: mkDataset().ID, Permission: wire.AskTrain, Reason: "walk"})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Replace(p, "{id}", r.ID, 1), DecideRequest{Reason: "walk"}
	case "POST /api/v1/rules":
		return p, RuleRequest{Tags: []string{"walk"}, MaxEpsilon: 1, Quota: 1}
	case "GET /api/v1/rules/{id}", "PATCH /api/v1/rules/{id}", "DELETE /api/v1/rules/{id}":
		r, err := w.st.CreateRule(store.Rule{Tags: []string{"walk"}, MaxEpsilonMicroEps: 1, Quota: 1}, "")
		if err != nil {
			t.Fatal(err)
		}
		q := 2
		return strings.Replace(p, "{id}", r.ID, 1), PatchRuleRequest{Quota: &q}
	case "DELETE /api/v1/nodes/{peer_id}":
		tok, _, err := w.st.CreateJoinToken(time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		n, err := w.st.RedeemJoinToken(tok, newPeerID(t), 1, "")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Replace(p, "{peer_id}", n.PeerID, 1), nil
	}
	if strings.Contains(p, "{") {
		t.Fatalf("no fixture for %s", key)
	}
	return p, nil
}

func (w *roleWalk) call(rt *route, token string, caller *store.User) resp {
	path, body := w.fixture(rt, caller)
	if rt.chunk {
		id := strings.TrimPrefix(path, "/api/v1/uploads/")
		return w.chunk(token, id, 0, []byte(walkCSV))
	}
	if rt.multipart && rt.path == "/api/v1/models" {
		return w.uploadModel(token, map[string]string{"name": w.uniq("up")}, tinyModel)
	}
	if rt.multipart {
		return w.upload(token, map[string]string{"name": w.uniq("up"), "visibility": "private"}, "x,y\n1,"+secretCell+"\n")
	}
	return w.do(rt.method, path, token, body)
}

// TestRoleRouteTable walks every route of the route table with every default
// role and with no token, and checks the outcome against the contract.
func TestRoleRouteTable(t *testing.T) {
	e := newEnv(t, nil)
	w := &roleWalk{env: e, users: map[string]*store.User{}, tokens: map[string]string{}}

	// Before setup: only the anyone routes answer; the rest say setup_required.
	for _, rt := range e.api.routes {
		if contractRoutes[rt.method+" "+rt.path] == anyone {
			continue
		}
		path := strings.NewReplacer("{id}", "x", "{name}", "x", "{user_id}", "x", "{peer_id}", "x", "{dataset_id}", "x").Replace(rt.path)
		r := e.do(rt.method, path, "", nil)
		if r.status != http.StatusServiceUnavailable || r.errCode(t) != "setup_required" {
			t.Errorf("%s %s before setup: %d %s", rt.method, rt.path, r.status, r.body)
		}
	}

	w.owner = e.setup()
	owner, _ := e.st.UserByEmail("owner@example.org")
	w.users[store.RoleOwner], w.tokens[store.RoleOwner] = owner, w.owner
	for _, role := range []string{store.RoleAdministrator, store.RoleComplianceOfficer, store.RoleDataScientist} {
		email := strings.ToLower(strings.ReplaceAll(role, " ", "")) + "@example.org"
		id, tok := e.newUser(w.owner, email, role, newPeerID(t), 0)
		u, _ := e.st.User(id)
		w.users[role], w.tokens[role] = u, tok
	}
	w.privDS = &store.Dataset{Name: "private", Visibility: store.VisibilityPrivate}
	if err := e.st.PutDataset(w.privDS, []byte("x,y\n1,"+secretCell+"\n")); err != nil {
		t.Fatal(err)
	}

	seen := map[string]bool{}
	for _, rt := range e.api.routes {
		key := rt.method + " " + rt.path
		seen[key] = true
		need, ok := contractRoutes[key]
		if !ok {
			t.Errorf("route %s is not in the contract table of this test", key)
			continue
		}
		callers := []string{"", store.RoleOwner, store.RoleAdministrator, store.RoleComplianceOfficer, store.RoleDataScientist}
		for _, role := range callers {
			var allowed bool
			switch {
			case need == anyone:
				allowed = true
			case role == "":
				allowed = false
			case need == anyUser:
				allowed = true
			default:
				allowed = slices.Contains(contractRoles[role], store.Permission(need))
			}
			r := w.call(rt, w.tokens[role], w.users[role])
			if key == "POST /api/v1/auth/logout" && role != "" {
				if r.status == http.StatusNoContent {
					if e.do("GET", "/api/v1/auth/me", w.tokens[role], nil).status != http.StatusUnauthorized {
						t.Errorf("token of %s still good after logout", role)
					}
				}
				pw := "user-password"
				if role == store.RoleOwner {
					pw = "owner-password"
				}
				w.tokens[role] = e.login(w.users[role].Email, pw)
			}
			name := role
			if name == "" {
				name = "no token"
			}
			if r.status >= 500 {
				t.Errorf("%s as %s: %d %s", key, name, r.status, r.body)
				continue
			}
			if strings.Contains(string(r.body), secretCell) {
				t.Errorf("%s as %s served a private row: %s", key, name, r.body)
			}
			switch {
			case !allowed && role == "":
				if r.status != http.StatusUnauthorized || r.errCode(t) != "unauthorized" {
					t.Errorf("%s with no token: %d %s, want 401", key, r.status, r.body)
				}
			case !allowed:
				if r.status != http.StatusForbidden || r.errCode(t) != "forbidden" {
					t.Errorf("%s as %s: %d %s, want 403", key, name, r.status, r.body)
				}
			case key == "POST /api/v1/setup":
				if r.status != http.StatusConflict {
					t.Errorf("setup as %s: %d, want 409", name, r.status)
				}
			default:
				if r.status != rt.status {
					t.Errorf("%s as %s: %d %s, want %d", key, name, r.status, r.body, rt.status)
				}
			}
		}
	}
	for key := range contractRoutes {
		if !seen[key] {
			t.Errorf("contract route %s is not served", key)
		}
	}

	// Others' jobs: visible to triage roles only; 404 to the rest.
	j := &store.Job{DatasetID: w.privDS.ID, UserID: "someone-else"}
	if err := e.st.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	for role, tok := range w.tokens {
		want := http.StatusNotFound
		if slices.Contains(contractRoles[role], store.PermTriageRequests) {
			want = http.StatusOK
		}
		if r := e.do("GET", "/api/v1/jobs/"+j.ID, tok, nil); r.status != want {
			t.Errorf("others' job as %s: %d, want %d", role, r.status, want)
		}
		var jl JobList
		e.want(e.do("GET", "/api/v1/jobs", tok, nil), 200).decode(t, &jl)
		sawOther := slices.ContainsFunc(jl.Jobs, func(x JobView) bool { return x.ID == j.ID })
		if sawOther != (want == http.StatusOK) {
			t.Errorf("job list as %s shows others' job: %v", role, sawOther)
		}
	}
}
