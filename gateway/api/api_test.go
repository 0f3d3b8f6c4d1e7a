package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/gateway/sources"
	"github.com/fedgrid/fedgrid/gateway/store"
	resumable "github.com/fedgrid/fedgrid/gateway/upload"
	"github.com/fedgrid/fedgrid/internal/pgtest"
	"github.com/fedgrid/fedgrid/wire"
)

type hookLog struct {
	mu     sync.Mutex
	events []string
}

func (h *hookLog) add(s string) { h.mu.Lock(); h.events = append(h.events, s); h.mu.Unlock() }
func (h *hookLog) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

// testSetupToken is the test API's one-time setup token.
const testSetupToken = "test-setup-token"

type env struct {
	t     testing.TB
	st    *store.Store
	srv   *httptest.Server
	hooks *hookLog
	api   *API
	// pgpass is the password file the API's source manager reads; pg is
	// the PostgreSQL server source tests start on first use (sources_test.go).
	pgpass string
	pg     *pgtest.Server
}

func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	h := &hookLog{}
	ups, err := resumable.Open(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Store: st, Name: "test gateway",
		Uploads: ups,
		PeerID:  func() string { return "12D3KooWgateway" },
		Addrs:   func() []string { return []string{"/ip4/127.0.0.1/tcp/4001"} },
		Hooks: Hooks{
			DatasetAdded:   func(d *store.Dataset) { h.add("added " + d.ID) },
			DatasetRemoved: func(d *store.Dataset) { h.add("removed " + d.ID) },
			JobCancelled:   func(j *store.Job) { h.add("cancelled " + j.ID) },
			NodeRemoved:    func(p string) { h.add("node removed " + p) },
			Preview: func(id string, n int) (*wire.CatalogPreview, error) {
				return &wire.CatalogPreview{Synthetic: true, Columns: []string{"c"}, Rows: make([][]string, n)}, nil
			},
		},
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		MaxUploadBytes: 1 << 20,
		SetupToken:     testSetupToken,
	}
	if mod != nil {
		mod(&cfg)
	}
	pgpass := filepath.Join(t.TempDir(), "pgpass")
	if cfg.Sources == nil {
		cfg.Sources = sources.New(sources.Config{Store: st, Logger: cfg.Logger, PGPassFile: pgpass})
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	return &env{t: t, st: st, srv: srv, hooks: h, api: a, pgpass: pgpass}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errCode returns the error document's code, failing if the body is not one.
func (r resp) errCode(t testing.TB) string {
	t.Helper()
	var e Error
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("status %d: body %q is not an error document (%v)", r.status, r.body, err)
	}
	return e.Error.Code
}

func (e *env) do(method, path, token string, body any) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.send(req)
}

// chunk sends one chunk of a resumable upload at offset.
func (e *env) chunk(token, id string, offset int64, data []byte) resp {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPatch, fmt.Sprintf("%s/api/v1/uploads/%s?offset=%d", e.srv.URL, id, offset), bytes.NewReader(data))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.send(req)
}

func (e *env) send(req *http.Request) resp {
	e.t.Helper()
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode >= 400 && !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		e.t.Fatalf("%s %s: error %d with Content-Type %q", req.Method, req.URL.Path, res.StatusCode, res.Header.Get("Content-Type"))
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *env) want(r resp, status int) resp {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	return r
}

func (e *env) upload(token string, fields map[string]string, csv string) resp {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		_ = mw.WriteField(k, v)
	}
	if csv != "" {
		fw, _ := mw.CreateFormFile("file", "data.csv")
		_, _ = io.WriteString(fw, csv)
	}
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/datasets", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.send(req)
}

func (e *env) setup() string {
	e.t.Helper()
	e.want(e.do("POST", "/api/v1/setup", "", SetupRequest{Email: "owner@example.org", Password: "owner-password", Name: "Olive", SetupToken: testSetupToken}), 201)
	return e.login("owner@example.org", "owner-password")
}

func (e *env) login(email, pw string) string {
	e.t.Helper()
	var lr LoginResponse
	e.want(e.do("POST", "/api/v1/auth/login", "", LoginRequest{Email: email, Password: pw}), 200).decode(e.t, &lr)
	if lr.Token == "" || lr.ExpiresAt.Before(time.Now()) {
		e.t.Fatalf("login response %+v", lr)
	}
	return lr.Token
}

// newUser creates a user with the role over the API and returns its ID and token.
func (e *env) newUser(owner, email, role, peerID string, budget float64) (string, string) {
	e.t.Helper()
	var u UserView
	e.want(e.do("POST", "/api/v1/users", owner, CreateUserRequest{Email: email, Password: "user-password", Name: email, Role: role, PeerID: peerID, BudgetEpsilon: &budget}), 201).decode(e.t, &u)
	return u.ID, e.login(email, "user-password")
}

func newPeerID(t testing.TB) string {
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

const pimaCSV = "glucose,mass,age,diabetes\n148,33.6,50,1\n85,26.6,31,0\n183,23.3,32,1\n"

func TestDemoFlow(t *testing.T) {
	e := newEnv(t, nil)
	e.want(e.do("GET", "/healthz", "", nil), 200)
	var st StatusResponse
	e.want(e.do("GET", "/api/v1/status", "", nil), 200).decode(t, &st)
	if st.SetupDone || st.Name != "test gateway" || st.PeerID != "12D3KooWgateway" || len(st.Addrs) != 1 {
		t.Fatalf("status %+v", st)
	}
	// Before setup everything else is refused with setup_required.
	for _, p := range []string{"/api/v1/users", "/api/v1/datasets", "/api/v1/jobs", "/api/v1/nodes"} {
		if r := e.want(e.do("GET", p, "", nil), 503); r.errCode(t) != "setup_required" {
			t.Fatalf("%s before setup: %s", p, r.body)
		}
	}
	if r := e.want(e.do("POST", "/api/v1/auth/login", "", LoginRequest{Email: "a@b.c", Password: "x"}), 503); r.errCode(t) != "setup_required" {
		t.Fatal("login before setup")
	}
	owner := e.setup()
	if r := e.want(e.do("POST", "/api/v1/setup", "", SetupRequest{Email: "x@example.org", Password: "password-2"}), 409); r.errCode(t) != "setup_done" {
		t.Fatal("second setup")
	}
	e.want(e.do("GET", "/api/v1/status", "", nil), 200).decode(t, &st)
	if !st.SetupDone {
		t.Fatal("setup_done false after setup")
	}

	// A data scientist with a registered peer ID and a budget.
	pid := newPeerID(t)
	dsID, dsTok := e.newUser(owner, "ds@example.org", "", pid, 1.5)
	var u UserView
	e.want(e.do("GET", "/api/v1/users/"+dsID, owner, nil), 200).decode(t, &u)
	if u.Role != store.RoleDataScientist || u.PeerID != pid || u.BudgetMicroEps != 1_500_000 || u.BudgetEpsilon != 1.5 {
		t.Fatalf("user %+v", u)
	}
	var ul UserList
	e.want(e.do("GET", "/api/v1/users", owner, nil), 200).decode(t, &ul)
	if len(ul.Users) != 2 {
		t.Fatalf("users %+v", ul)
	}

	// Upload a dataset.
	var d store.Dataset
	e.want(e.upload(owner, map[string]string{"name": "pima", "tags": "health, diabetes", "description": "Pima", "visibility": "private"}, pimaCSV), 201).decode(t, &d)
	if d.Rows != 3 || len(d.Columns) != 4 || d.Columns[0].Name != "glucose" || d.Columns[0].Type != "number" || d.Visibility != "private" || len(d.Tags) != 2 {
		t.Fatalf("dataset %+v", d)
	}
	var dl DatasetList
	e.want(e.do("GET", "/api/v1/datasets?tag=health", dsTok, nil), 200).decode(t, &dl)
	if len(dl.Datasets) != 1 || dl.Datasets[0].ID != d.ID {
		t.Fatalf("datasets %+v", dl)
	}
	e.want(e.do("GET", "/api/v1/datasets?tag=cancer", dsTok, nil), 200).decode(t, &dl)
	if len(dl.Datasets) != 0 {
		t.Fatalf("tag filter: %+v", dl)
	}
	var d2 store.Dataset
	e.want(e.do("PATCH", "/api/v1/datasets/"+d.ID, owner, map[string]any{"visibility": "public", "tags": []string{"health"}}), 200).decode(t, &d2)
	if d2.Visibility != "public" || len(d2.Tags) != 1 || d2.Rows != 3 {
		t.Fatalf("patched %+v", d2)
	}

	// Jobs: the DS sees their own; cancel fires the hook.
	j := &store.Job{DatasetID: d.ID, UserID: dsID, Requester: pid}
	if err := e.st.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	other := &store.Job{DatasetID: d.ID, UserID: "someone-else"}
	if err := e.st.CreateJob(other); err != nil {
		t.Fatal(err)
	}
	var jl JobList
	e.want(e.do("GET", "/api/v1/jobs", dsTok, nil), 200).decode(t, &jl)
	if len(jl.Jobs) != 1 || jl.Jobs[0].ID != j.ID {
		t.Fatalf("ds jobs %+v", jl)
	}
	e.want(e.do("GET", "/api/v1/jobs", owner, nil), 200).decode(t, &jl)
	if len(jl.Jobs) != 2 {
		t.Fatalf("owner jobs %+v", jl)
	}
	e.want(e.do("GET", "/api/v1/jobs/"+other.ID, dsTok, nil), 404)
	e.want(e.do("POST", "/api/v1/jobs/"+other.ID+"/cancel", dsTok, nil), 404)
	var cj store.Job
	e.want(e.do("POST", "/api/v1/jobs/"+j.ID+"/cancel", dsTok, nil), 200).decode(t, &cj)
	if cj.State != wire.StateCancelled {
		t.Fatalf("cancelled %+v", cj)
	}
	e.want(e.do("POST", "/api/v1/jobs/"+j.ID+"/cancel", dsTok, nil), 409)
	e.want(e.do("GET", "/api/v1/jobs?state=bogus", owner, nil), 400)

	// Nodes.
	var jt JoinTokenResponse
	e.want(e.do("POST", "/api/v1/nodes/join-tokens", owner, nil), 201).decode(t, &jt)
	if jt.Token == "" || jt.ExpiresAt.Before(time.Now()) {
		t.Fatalf("join token %+v", jt)
	}
	npid := newPeerID(t)
	if _, err := e.st.RedeemJoinToken(jt.Token, npid, 2, "test"); err != nil {
		t.Fatal(err)
	}
	var nl NodeList
	e.want(e.do("GET", "/api/v1/nodes", owner, nil), 200).decode(t, &nl)
	if len(nl.Nodes) != 1 || nl.Nodes[0].PeerID != npid {
		t.Fatalf("nodes %+v", nl)
	}
	e.want(e.do("DELETE", "/api/v1/nodes/"+npid, owner, nil), 204)
	e.want(e.do("DELETE", "/api/v1/nodes/"+npid, owner, nil), 404)

	// Delete the dataset.
	e.want(e.do("DELETE", "/api/v1/datasets/"+d.ID, owner, nil), 204)
	e.want(e.do("GET", "/api/v1/datasets/"+d.ID, owner, nil), 404)

	want := []string{"added " + d.ID, "added " + d.ID, "cancelled " + j.ID, "node removed " + npid, "removed " + d.ID}
	if got := e.hooks.list(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("hooks %v, want %v", got, want)
	}

	// Deleting the user revokes their token.
	e.want(e.do("DELETE", "/api/v1/users/"+dsID, owner, nil), 204)
	if r := e.want(e.do("GET", "/api/v1/datasets", dsTok, nil), 401); r.errCode(t) != "unauthorized" {
		t.Fatal("deleted user's token")
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"malformed json", "POST", "/api/v1/users", `{"email":`, 400, "bad_json"},
		{"not an object", "POST", "/api/v1/users", `[1,2]`, 400, "bad_json"},
		{"trailing data", "POST", "/api/v1/users", `{"email":"a@b.org","password":"password1"} {}`, 400, "bad_json"},
		{"unknown field", "POST", "/api/v1/users", `{"email":"a@b.org","password":"password1","admin":true}`, 400, "invalid_field"},
		{"wrong type", "POST", "/api/v1/users", `{"email":5}`, 400, "invalid_field"},
		{"wrong case", "POST", "/api/v1/users", `{"EMAIL":"a@b.org","password":"password1"}`, 400, "invalid_field"},
		{"duplicate key", "POST", "/api/v1/users", `{"email":"a@b.org","email":"c@d.org","password":"password1"}`, 400, "invalid_field"},
		{"trailing brace", "POST", "/api/v1/users", `{"email":"a@b.org","password":"password1"}}`, 400, "bad_json"},
		{"nested duplicate key", "POST", "/api/v1/roles", `{"name":"X","permissions":["can_upload_data"],"permissions":[]}`, 400, "invalid_field"},
		{"null body", "POST", "/api/v1/users", `null`, 400, "bad_json"},
		{"empty body", "POST", "/api/v1/users", ``, 400, "bad_json"},
		{"bad email", "POST", "/api/v1/users", CreateUserRequest{Email: "nope", Password: "password1"}, 400, "invalid_field"},
		{"short password", "POST", "/api/v1/users", CreateUserRequest{Email: "a@b.org", Password: "short"}, 400, "invalid_field"},
		{"bad peer id", "POST", "/api/v1/users", CreateUserRequest{Email: "a@b.org", Password: "password1", PeerID: "not-a-peer"}, 400, "invalid_field"},
		{"unknown role", "POST", "/api/v1/users", CreateUserRequest{Email: "a@b.org", Password: "password1", Role: "Wizard"}, 400, "invalid_field"},
		{"owner role", "POST", "/api/v1/users", CreateUserRequest{Email: "a@b.org", Password: "password1", Role: "Owner"}, 409, "protected"},
		{"negative budget", "POST", "/api/v1/users", `{"email":"a@b.org","password":"password1","budget_epsilon":-1}`, 400, "invalid_field"},
		{"oversized body", "POST", "/api/v1/users", `{"name":"` + strings.Repeat("x", maxJSONBody) + `"}`, 413, "too_large"},
		{"unknown route", "GET", "/api/v1/nothing", nil, 404, "not_found"},
		{"wrong method", "PUT", "/api/v1/users", nil, 405, "method_not_allowed"},
		{"unknown user", "GET", "/api/v1/users/nope", nil, 404, "not_found"},
		{"bad join ttl", "POST", "/api/v1/nodes/join-tokens", `{"ttl_seconds":-5}`, 400, "invalid_field"},
		{"bad audit limit", "GET", "/api/v1/audit?limit=0", nil, 400, "invalid_field"},
		{"unknown permission", "POST", "/api/v1/roles", `{"name":"X","permissions":["can_fly"]}`, 400, "invalid_field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, owner, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if c := r.errCode(t); c != tc.code {
				t.Fatalf("code %q, want %q: %s", c, tc.code, r.body)
			}
		})
	}
	// The 400 names the field at fault.
	var doc Error
	e.do("POST", "/api/v1/users", owner, `{"email":5}`).decode(t, &doc)
	if !strings.HasPrefix(doc.Error.Message, "email: ") {
		t.Fatalf("field not named: %+v", doc)
	}
	e.do("POST", "/api/v1/users", owner, `{"email":"a@b.org","password":"password1","admin":true}`).decode(t, &doc)
	if !strings.HasPrefix(doc.Error.Message, "admin: ") {
		t.Fatalf("unknown field not named: %+v", doc)
	}

	// Bad CSV: 400 with the parser's message; nothing stored.
	r := e.upload(owner, map[string]string{"name": "bad"}, "a,b\n1,2\n3\n")
	if r.status != 400 || r.errCode(t) != "bad_csv" {
		t.Fatalf("bad csv: %d %s", r.status, r.body)
	}
	var doc2 Error
	r.decode(t, &doc2)
	if !strings.Contains(doc2.Error.Message, "line") {
		t.Fatalf("parser message lost: %s", r.body)
	}
	if r := e.upload(owner, map[string]string{"name": "nofile"}, ""); r.status != 400 || r.errCode(t) != "invalid_field" {
		t.Fatalf("missing file: %d %s", r.status, r.body)
	}
	if r := e.upload(owner, map[string]string{"name": "x", "visibility": "secret"}, pimaCSV); r.status != 400 || r.errCode(t) != "invalid_field" {
		t.Fatalf("bad visibility: %d %s", r.status, r.body)
	}
	if r := e.upload(owner, map[string]string{"name": "x", "colour": "red"}, pimaCSV); r.status != 400 || r.errCode(t) != "invalid_field" {
		t.Fatalf("unknown form field: %d %s", r.status, r.body)
	}
	big := "a\n" + strings.Repeat("1\n", 1<<20)
	if r := e.upload(owner, map[string]string{"name": "big"}, big); r.status != 413 || r.errCode(t) != "too_large" {
		t.Fatalf("oversized upload: %d %s", r.status, r.body[:min(len(r.body), 200)])
	}
	if r := e.do("POST", "/api/v1/datasets", owner, `{"name":"json"}`); r.status != 415 {
		t.Fatalf("json upload: %d %s", r.status, r.body)
	}
	if dl, _ := e.st.Datasets(); len(dl) != 0 {
		t.Fatalf("refused uploads stored %d datasets", len(dl))
	}
	if r := e.do("GET", "/api/v1/openapi.json", "", nil); r.status != 200 {
		t.Fatalf("openapi %d", r.status)
	}
}

func TestPermissionRefusals(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	_, dsTok := e.newUser(owner, "ds@example.org", store.RoleDataScientist, "", 0)
	adminID, adminTok := e.newUser(owner, "admin@example.org", store.RoleAdministrator, "", 0)
	_, coTok := e.newUser(owner, "co@example.org", store.RoleComplianceOfficer, "", 0)
	ownerUser, _ := e.st.UserByEmail("owner@example.org")

	for _, tc := range []struct {
		tok, method, path string
		body              any
		status            int
	}{
		{"", "GET", "/api/v1/users", nil, 401},
		{"garbage", "GET", "/api/v1/users", nil, 401},
		{dsTok, "GET", "/api/v1/users", nil, 403},
		{coTok, "POST", "/api/v1/users", CreateUserRequest{Email: "x@example.org", Password: "password1"}, 403},
		{dsTok, "POST", "/api/v1/nodes/join-tokens", nil, 403},
		{adminTok, "POST", "/api/v1/nodes/join-tokens", nil, 403},
		{adminTok, "GET", "/api/v1/roles", nil, 403},
		{dsTok, "GET", "/api/v1/audit", nil, 403},
		// An administrator cannot give a role with permissions they lack, nor touch the Owner.
		{adminTok, "POST", "/api/v1/users", CreateUserRequest{Email: "x@example.org", Password: "password1", Role: store.RoleOwner}, 409},
		{adminTok, "PATCH", "/api/v1/users/" + ownerUser.ID, map[string]string{"password": "hijacked-password"}, 403},
		{adminTok, "DELETE", "/api/v1/users/" + ownerUser.ID, nil, 403},
		{owner, "DELETE", "/api/v1/users/" + ownerUser.ID, nil, 409},
		{owner, "PATCH", "/api/v1/users/" + adminID, map[string]string{"role": store.RoleOwner}, 409},
	} {
		r := e.do(tc.method, tc.path, tc.tok, tc.body)
		if r.status != tc.status {
			t.Fatalf("%s %s: status %d, want %d: %s", tc.method, tc.path, r.status, tc.status, r.body)
		}
		r.errCode(t)
	}
	// Role editor: custom roles, Owner protected, changes apply on the next request.
	e.want(e.do("POST", "/api/v1/roles", owner, RoleRequest{Name: "Uploader", Permissions: []store.Permission{store.PermUploadData}}), 201)
	e.want(e.do("POST", "/api/v1/roles", owner, RoleRequest{Name: "Uploader"}), 409)
	e.want(e.do("PATCH", "/api/v1/roles/Owner", owner, map[string]any{"permissions": []string{}}), 409)
	e.want(e.do("DELETE", "/api/v1/roles/Owner", owner, nil), 409)
	upID, upTok := e.newUser(owner, "up@example.org", "Uploader", "", 0)
	e.want(e.upload(upTok, map[string]string{"name": "d"}, pimaCSV), 201)
	e.want(e.do("DELETE", "/api/v1/roles/Uploader", owner, nil), 409) // still held
	e.want(e.do("PATCH", "/api/v1/roles/Uploader", owner, map[string]any{"permissions": []string{}}), 200)
	e.want(e.upload(upTok, map[string]string{"name": "d"}, pimaCSV), 403)
	e.want(e.do("DELETE", "/api/v1/users/"+upID, owner, nil), 204)
	e.want(e.do("DELETE", "/api/v1/roles/Uploader", owner, nil), 204)
	var rl RoleList
	e.want(e.do("GET", "/api/v1/roles", owner, nil), 200).decode(t, &rl)
	if len(rl.Roles) != 4 {
		t.Fatalf("roles %+v", rl)
	}
}

func TestPasswordChangeRevokesAndLoginThrottle(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, func(c *Config) { c.Now = clock; c.LoginMaxFailures = 3; c.LoginWindow = time.Minute })
	owner := e.setup()
	id, tok := e.newUser(owner, "ds@example.org", "", "", 0)
	e.want(e.do("GET", "/api/v1/datasets", tok, nil), 200)
	e.want(e.do("PATCH", "/api/v1/users/"+id, owner, map[string]string{"password": "another-password"}), 200)
	e.want(e.do("GET", "/api/v1/datasets", tok, nil), 401)
	tok = e.login("ds@example.org", "another-password")
	e.want(e.do("GET", "/api/v1/datasets", tok, nil), 200)

	for range 3 {
		if r := e.do("POST", "/api/v1/auth/login", "", LoginRequest{Email: "ds@example.org", Password: "wrong-password"}); r.status != 401 || r.errCode(t) != "invalid_credentials" {
			t.Fatalf("wrong password: %d %s", r.status, r.body)
		}
	}
	// Throttled now, even with the right password.
	r := e.do("POST", "/api/v1/auth/login", "", LoginRequest{Email: "ds@example.org", Password: "another-password"})
	if r.status != 429 || r.errCode(t) != "too_many_attempts" || r.header.Get("Retry-After") == "" {
		t.Fatalf("throttle: %d %s", r.status, r.body)
	}
	// Another account from the same client is not affected.
	e.login("owner@example.org", "owner-password")
	mu.Lock()
	now = now.Add(61 * time.Second)
	mu.Unlock()
	e.login("ds@example.org", "another-password")
	// Spraying many emails from one client is throttled too (10 x 3 failures).
	for i := range 30 {
		e.do("POST", "/api/v1/auth/login", "", LoginRequest{Email: fmt.Sprintf("nobody%d@example.org", i), Password: "wrong-password"})
	}
	if r := e.do("POST", "/api/v1/auth/login", "", LoginRequest{Email: "owner@example.org", Password: "owner-password"}); r.status != 429 {
		t.Fatalf("spray not throttled: %d %s", r.status, r.body)
	}
	mu.Lock()
	now = now.Add(61 * time.Second)
	mu.Unlock()
	e.login("owner@example.org", "owner-password")
	// Failed logins are audited.
	es, err := e.st.Audit(store.AuditFilter{Action: "auth.login_failed"})
	if err != nil || len(es) != 33 {
		t.Fatalf("audited failures: %d %v", len(es), err)
	}
}
