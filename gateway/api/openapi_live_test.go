package api

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/fedgrid/fedgrid/gateway/store"
)

// liveValidator checks every answer the test client gets against the
// OpenAPI document the API serves: the operation is found by method and
// path, the schema by status (exact, then 4XX/5XX), and the body must be
// valid JSON Schema (draft 2020-12, as OpenAPI 3.1 says) for it.
type liveValidator struct {
	t        *testing.T
	base     http.RoundTripper
	doc      map[string]any
	compiler *jsonschema.Compiler
	ops      []liveOp

	mu       sync.Mutex
	schemas  map[string]*jsonschema.Schema
	success  map[string]int // "METHOD path" -> 2xx answers validated
	statuses map[string]bool
}

type liveOp struct {
	method, path string
	re           *regexp.Regexp
}

const docURL = "mem:///openapi.json"

func newLiveValidator(t *testing.T, e *env) *liveValidator {
	t.Helper()
	r := e.want(e.do("GET", "/api/v1/openapi.json", "", nil), 200)
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	doc := inst.(map[string]any)
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(docURL, doc); err != nil {
		t.Fatal(err)
	}
	v := &liveValidator{t: t, doc: doc, compiler: c, schemas: map[string]*jsonschema.Schema{}, success: map[string]int{}, statuses: map[string]bool{}}
	// QuoteMeta escapes the braces of {param}: match them escaped.
	param := regexp.MustCompile(`\\\{[a-z_]+\\\}`)
	for path, item := range doc["paths"].(map[string]any) {
		re := regexp.MustCompile("^" + param.ReplaceAllString(regexp.QuoteMeta(path), `[^/]+`) + "$")
		for method := range item.(map[string]any) {
			v.ops = append(v.ops, liveOp{method: strings.ToUpper(method), path: path, re: re})
		}
	}
	// Literal paths before templated ones (/nodes/join-tokens before /nodes/{peer_id}).
	sort.Slice(v.ops, func(i, j int) bool {
		return strings.Count(v.ops[i].path, "{") < strings.Count(v.ops[j].path, "{")
	})
	client := e.srv.Client()
	v.base = client.Transport
	client.Transport = v
	t.Cleanup(func() { client.Transport = v.base })
	return v
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// schemaFor returns the schema of the answer with status to op (nil: no body).
func (v *liveValidator) schemaFor(op liveOp, status int) (*jsonschema.Schema, error) {
	ptr := "#/paths/" + pointerEscape(op.path) + "/" + strings.ToLower(op.method) + "/responses"
	responses := v.doc["paths"].(map[string]any)[op.path].(map[string]any)[strings.ToLower(op.method)].(map[string]any)["responses"].(map[string]any)
	code := strconv.Itoa(status)
	resp, ok := responses[code]
	if !ok {
		code = code[:1] + "XX"
		if resp, ok = responses[code]; !ok {
			return nil, fmt.Errorf("status %d is not documented", status)
		}
	}
	ptr += "/" + code
	if ref, ok := resp.(map[string]any)["$ref"].(string); ok {
		ptr = ref
		name := strings.TrimPrefix(ref, "#/components/responses/")
		resp = v.doc["components"].(map[string]any)["responses"].(map[string]any)[name]
	}
	content, ok := resp.(map[string]any)["content"].(map[string]any)
	if !ok {
		return nil, nil
	}
	if _, ok := content["application/json"]; !ok {
		return nil, fmt.Errorf("status %d has no application/json content", status)
	}
	loc := docURL + ptr + "/content/application~1json/schema"
	v.mu.Lock()
	defer v.mu.Unlock()
	if s, ok := v.schemas[loc]; ok {
		return s, nil
	}
	s, err := v.compiler.Compile(loc)
	if err != nil {
		return nil, err
	}
	v.schemas[loc] = s
	return s, nil
}

func (v *liveValidator) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := v.base.RoundTrip(req)
	if err != nil {
		return res, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	path := req.URL.Path
	if !strings.HasPrefix(path, "/api/") && path != "/healthz" {
		return res, nil
	}
	var op *liveOp
	for i := range v.ops {
		if v.ops[i].method == req.Method && v.ops[i].re.MatchString(path) {
			op = &v.ops[i]
			break
		}
	}
	if op == nil {
		if res.StatusCode < 400 {
			v.t.Errorf("%s %s answered %d but is not in the document", req.Method, path, res.StatusCode)
		}
		return res, nil
	}
	key := op.method + " " + op.path
	sch, err := v.schemaFor(*op, res.StatusCode)
	switch {
	case err != nil:
		v.t.Errorf("%s (%s): %v", key, path, err)
	case sch == nil:
		if len(bytes.TrimSpace(body)) != 0 {
			v.t.Errorf("%s answered %d with a body the document does not describe: %.200s", key, res.StatusCode, body)
		}
	default:
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
		if err != nil {
			v.t.Errorf("%s answered %d with a body that is not JSON: %v", key, res.StatusCode, err)
			break
		}
		if err := sch.Validate(inst); err != nil {
			v.t.Errorf("%s answered %d with a body its schema refuses: %v\nbody: %.400s", key, res.StatusCode, err, body)
		}
	}
	v.mu.Lock()
	if res.StatusCode < 300 {
		v.success[key]++
	}
	v.statuses[key+" "+strconv.Itoa(res.StatusCode)] = true
	v.mu.Unlock()
	return res, nil
}

// TestLiveResponsesMatchOpenAPI (acceptance 2): every route is called, as
// the Owner, as a data scientist and without a token, on fixtures that let
// each succeed; every answer, successes and errors alike, must validate
// against the schema the gateway serves, and every route must have
// answered with success at least once.
func TestLiveResponsesMatchOpenAPI(t *testing.T) {
	e := newEnv(t, nil)
	v := newLiveValidator(t, e)
	w := &roleWalk{env: e, users: map[string]*store.User{}, tokens: map[string]string{}}

	// Before setup: every route answers (setup_required for most).
	for _, rt := range e.api.routes {
		if rt.method == http.MethodPost && rt.path == "/api/v1/setup" {
			continue
		}
		path := strings.NewReplacer("{id}", "x", "{name}", "x", "{user_id}", "x", "{peer_id}", "x", "{dataset_id}", "x").Replace(rt.path)
		e.do(rt.method, path, "", nil)
	}
	w.owner = e.setup()
	owner, _ := e.st.UserByEmail("owner@example.org")
	w.users[store.RoleOwner], w.tokens[store.RoleOwner] = owner, w.owner
	id, tok := e.newUser(w.owner, "scientist@example.org", store.RoleDataScientist, newPeerID(t), 1)
	sci, _ := e.st.User(id)
	w.users[store.RoleDataScientist], w.tokens[store.RoleDataScientist] = sci, tok
	w.privDS = &store.Dataset{Name: "private", Visibility: store.VisibilityPrivate, Tags: []string{"medical"}}
	if err := e.st.PutDataset(w.privDS, []byte("x,y\n1,"+secretCell+"\n")); err != nil {
		t.Fatal(err)
	}
	// A job and a release request, so that the lists are not empty.
	j := &store.Job{DatasetID: w.privDS.ID, UserID: sci.ID, Requester: sci.PeerID, EpsilonMicroEps: 500_000, DP: true, Review: true, AttemptTimeout: 90e9}
	if err := e.st.CreateJobReserving(j, j.EpsilonMicroEps); err != nil {
		t.Fatal(err)
	}

	for _, rt := range e.api.routes {
		for _, role := range []string{store.RoleOwner, store.RoleDataScientist, ""} {
			r := w.call(rt, w.tokens[role], w.users[role])
			if rt.path == "/api/v1/auth/logout" && role != "" && r.status == http.StatusNoContent {
				pw := "user-password"
				if role == store.RoleOwner {
					pw = "owner-password"
				}
				w.tokens[role] = e.login(w.users[role].Email, pw)
			}
		}
	}
	// Query parameters, repeated ones included.
	w.owner = w.tokens[store.RoleOwner]
	e.want(e.do("GET", "/api/v1/datasets?tag=medical&tag=private", w.owner, nil), 200)
	e.want(e.do("GET", "/api/v1/jobs?state=queued", w.owner, nil), 200)
	var first JobList
	e.want(e.do("GET", "/api/v1/jobs?limit=1", w.owner, nil), 200).decode(t, &first)
	if first.NextCursor == "" {
		t.Fatal("?limit=1 of several jobs: no next_cursor")
	}
	e.want(e.do("GET", "/api/v1/jobs?limit=1&cursor="+first.NextCursor, w.owner, nil), 200)
	e.want(e.do("GET", "/api/v1/jobs?limit=0", w.owner, nil), 400)
	var one JobView
	e.want(e.do("GET", "/api/v1/jobs/"+j.ID, w.owner, nil), 200).decode(t, &one)
	if one.AttemptTimeout != 90 {
		t.Errorf("attempt_timeout %v, want 90 (seconds)", one.AttemptTimeout)
	}

	for _, rt := range e.api.routes {
		key := rt.method + " " + rt.path
		if v.success[key] == 0 {
			t.Errorf("%s never answered with success: its answer was not checked", key)
		}
	}
	if len(v.success) < len(e.api.routes) {
		t.Errorf("%d routes answered with success, %d in the table", len(v.success), len(e.api.routes))
	}
}
