package api

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/store"
)

// Fuzz targets for every JSON request decoder, each driven through the real
// handler: no input may panic, answer 5xx, or answer an error that is not the
// contract's error document.

type fuzzEnv struct {
	h     http.Handler
	st    *store.Store
	owner string
	user  *store.User
	ds    *store.Dataset
	role  string
}

func newFuzzEnv(f *testing.F, doSetup bool) *fuzzEnv {
	e := newEnv(f, nil)
	fe := &fuzzEnv{h: e.api.Handler(), st: e.st}
	if !doSetup {
		return fe
	}
	fe.owner = e.setup()
	id, _ := e.newUser(fe.owner, "ds@example.org", store.RoleDataScientist, "", 1)
	fe.user, _ = e.st.User(id)
	fe.ds = &store.Dataset{Name: "d", Visibility: store.VisibilityPrivate}
	if err := e.st.PutDataset(fe.ds, []byte("a\n1\n")); err != nil {
		f.Fatal(err)
	}
	r, err := e.st.CreateRole(store.Role{Name: "Fuzz"}, "")
	if err != nil {
		f.Fatal(err)
	}
	fe.role = r.Name
	return fe
}

func (fe *fuzzEnv) check(t *testing.T, method, path, contentType string, body []byte) {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if fe.owner != "" {
		req.Header.Set("Authorization", "Bearer "+fe.owner)
	}
	rec := httptest.NewRecorder()
	fe.h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %s %q: %d %s", method, path, body, rec.Code, rec.Body.Bytes())
	}
	if rec.Code >= 400 {
		var doc Error
		dec := json.NewDecoder(rec.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&doc); err != nil || doc.Error.Code == "" || doc.Error.Message == "" {
			t.Fatalf("%s %s %q: %d with a body that is not an error document: %v", method, path, body, rec.Code, err)
		}
	}
}

func fuzzJSON(f *testing.F, doSetup bool, method string, path func(*fuzzEnv) string, seeds ...string) {
	fe := newFuzzEnv(f, doSetup)
	for _, s := range append(seeds, "", "{}", "null", "[]", `{"a":1}`, "{", `{"x":"\u0000"}`, "1e999", `"str"`) {
		f.Add([]byte(s))
	}
	p := path(fe)
	f.Fuzz(func(t *testing.T, body []byte) {
		fe.check(t, method, p, "application/json", body)
	})
}

func fixed(p string) func(*fuzzEnv) string { return func(*fuzzEnv) string { return p } }

func FuzzSetupRequest(f *testing.F) {
	fuzzJSON(f, false, "POST", fixed("/api/v1/setup"), `{"email":"o@example.org","password":"password1","name":"O"}`, `{"email":5}`)
}

func FuzzLoginRequest(f *testing.F) {
	fuzzJSON(f, true, "POST", fixed("/api/v1/auth/login"), `{"email":"owner@example.org","password":"owner-password"}`, `{"email":"x","password":""}`)
}

func FuzzCreateUserRequest(f *testing.F) {
	fuzzJSON(f, true, "POST", fixed("/api/v1/users"),
		`{"email":"n@example.org","password":"password1","role":"Administrator","budget_epsilon":2.5}`,
		`{"email":"p@example.org","password":"password1","peer_id":"12D3KooWBmAwcd4PJNJvfV89HwE48nwkRmAgo8Vy3uQEyNNHBox2"}`,
		`{"email":"q@example.org","password":"password1","budget_epsilon":1e308}`)
}

func FuzzPatchUserRequest(f *testing.F) {
	fuzzJSON(f, true, "PATCH", func(fe *fuzzEnv) string { return "/api/v1/users/" + fe.user.ID },
		`{"name":"x"}`, `{"role":"Owner"}`, `{"budget_epsilon":-1}`, `{"password":"longer-password"}`, `{"peer_id":""}`, `{"email":null}`)
}

func FuzzBudgetRequest(f *testing.F) {
	fuzzJSON(f, true, "POST", func(fe *fuzzEnv) string { return "/api/v1/users/" + fe.user.ID + "/budget" },
		`{"delta_epsilon":0.5,"reason":"r"}`, `{"delta_epsilon":-100}`, `{"delta_epsilon":1e-7}`)
}

func FuzzCapRequest(f *testing.F) {
	fuzzJSON(f, true, "PUT", func(fe *fuzzEnv) string { return "/api/v1/users/" + fe.user.ID + "/caps/" + fe.ds.ID },
		`{"cap_epsilon":0.5}`, `{"cap_epsilon":-1}`, `{"cap_epsilon":1e400}`)
}

func FuzzRoleRequest(f *testing.F) {
	fuzzJSON(f, true, "POST", fixed("/api/v1/roles"), `{"name":"R","permissions":["can_upload_data"]}`, `{"name":"Owner"}`, `{"name":"a/b"}`)
}

func FuzzPatchRoleRequest(f *testing.F) {
	fuzzJSON(f, true, "PATCH", func(fe *fuzzEnv) string { return "/api/v1/roles/" + fe.role },
		`{"permissions":["can_edit_roles"]}`, `{"permissions":null}`, `{"permissions":[1]}`)
}

func FuzzPatchDatasetRequest(f *testing.F) {
	fuzzJSON(f, true, "PATCH", func(fe *fuzzEnv) string { return "/api/v1/datasets/" + fe.ds.ID },
		`{"name":"n","tags":["a","b"],"visibility":"public"}`, `{"visibility":""}`, `{"tags":["a/b"]}`, `{"name":""}`)
}

func FuzzOverrideRequest(f *testing.F) {
	fuzzJSON(f, true, "PUT", func(fe *fuzzEnv) string { return "/api/v1/datasets/" + fe.ds.ID + "/overrides/" + fe.user.ID },
		`{"train":false,"auto_release":true}`, `{"train":null}`, `{"train":"yes"}`)
}

func FuzzJoinTokenRequest(f *testing.F) {
	fuzzJSON(f, true, "POST", fixed("/api/v1/nodes/join-tokens"), `{"ttl_seconds":60}`, `{"ttl_seconds":-1}`, `{"ttl_seconds":9223372036854775807}`)
}

// FuzzUploadForm fuzzes the multipart upload: the fields and the CSV.
func FuzzUploadForm(f *testing.F) {
	fe := newFuzzEnv(f, true)
	f.Add("pima", "health,diabetes", "private", []byte(pimaCSV))
	f.Add("", "", "public", []byte("a,b\n1\n"))
	f.Add("x", ",,,", "secret", []byte("\"unterminated\n"))
	f.Add("x", "a/b", "public", []byte(""))
	f.Fuzz(func(t *testing.T, name, tags, vis string, csv []byte) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		_ = mw.WriteField("name", name)
		_ = mw.WriteField("tags", tags)
		_ = mw.WriteField("visibility", vis)
		fw, _ := mw.CreateFormFile("file", "f.csv")
		_, _ = fw.Write(csv)
		_ = mw.Close()
		fe.check(t, "POST", "/api/v1/datasets", mw.FormDataContentType(), buf.Bytes())
	})
}

// FuzzRawUpload sends arbitrary bytes as a multipart body.
func FuzzRawUpload(f *testing.F) {
	fe := newFuzzEnv(f, true)
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\na\n1\n\r\n--b--\r\n"))
	f.Add([]byte("--b\r\n\r\n"))
	f.Add([]byte(strings.Repeat("-", 100)))
	f.Fuzz(func(t *testing.T, body []byte) {
		fe.check(t, "POST", "/api/v1/datasets", "multipart/form-data; boundary=b", body)
	})
}
