package api

import (
	"net/http"
	"strings"
	"testing"
)

// TestSetupNeedsTokenAndJSON (issue 13, acceptance 7): setup without the
// printed token, with a wrong one, or with a body that is not declared
// application/json gets 4xx and creates nothing; with both it works once.
func TestSetupNeedsTokenAndJSON(t *testing.T) {
	e := newEnv(t, nil)
	body := `{"email":"owner@example.org","password":"owner-password","name":"O"}`
	for _, c := range []struct {
		body, ct string
		status   int
		code     string
	}{
		{body, "application/json", 403, "bad_setup_token"},
		{strings.Replace(body, `}`, `,"setup_token":"guess"}`, 1), "application/json", 403, "bad_setup_token"},
		{strings.Replace(body, `}`, `,"setup_token":"`+testSetupToken+`"}`, 1), "", 415, "unsupported_media_type"},
		{strings.Replace(body, `}`, `,"setup_token":"`+testSetupToken+`"}`, 1), "text/plain", 415, "unsupported_media_type"},
	} {
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/setup", strings.NewReader(c.body))
		if c.ct != "" {
			req.Header.Set("Content-Type", c.ct)
		}
		if r := e.send(req); r.status != c.status || r.errCode(t) != c.code {
			t.Fatalf("setup with %q as %q: %d %s, want %d %s", c.body, c.ct, r.status, r.body, c.status, c.code)
		}
	}
	if done, err := e.st.SetupDone(); err != nil || done {
		t.Fatalf("a refused setup created the Owner: %v %v", done, err)
	}
	e.setup()
	// Other JSON routes need the Content-Type too; an optional body may be absent.
	owner := e.login("owner@example.org", "owner-password")
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/auth/login", strings.NewReader(`{"email":"owner@example.org","password":"owner-password"}`))
	if r := e.send(req); r.status != 415 {
		t.Fatalf("login without Content-Type: %d %s", r.status, r.body)
	}
	req, _ = http.NewRequest("POST", e.srv.URL+"/api/v1/auth/logout", nil)
	req.Header.Set("Authorization", "Bearer "+owner)
	if r := e.send(req); r.status >= 400 {
		t.Fatalf("logout without a body: %d %s", r.status, r.body)
	}
}
