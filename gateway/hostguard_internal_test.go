package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHostGuard: a request to a Host that is not the gateway's (DNS
// rebinding) or from another site's Origin gets 403; IP hosts, localhost,
// listed names, the same origin and allowed CORS origins pass.
func TestHostGuard(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) })
	h := hostGuard([]string{"gw.example.org"}, []string{"https://admin.example.org"}, ok)
	for _, c := range []struct {
		host, origin string
		want         int
	}{
		{"127.0.0.1:8420", "", 204},
		{"[::1]:8420", "", 204},
		{"localhost:8420", "http://localhost:8420", 204},
		{"gw.example.org", "https://gw.example.org", 204},
		{"GW.example.org:443", "", 204},
		{"10.0.0.5:8420", "https://admin.example.org", 204},
		{"evil.example.com:8420", "", 403},              // a rebound name
		{"127.0.0.1:8420", "https://evil.example", 403}, // a cross-site post
		{"127.0.0.1:8420", "null", 403},
		{"127.0.0.1:8420", "http://127.0.0.1:9999", 403},
		{"", "", 403},
	} {
		r := httptest.NewRequest("POST", "/api/v1/setup", nil)
		r.Host = c.host
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("Host %q Origin %q: %d, want %d (%s)", c.host, c.origin, w.Code, c.want, w.Body)
		}
	}
	wild := hostGuard(nil, []string{"*"}, ok)
	r := httptest.NewRequest("GET", "/api/v1/status", nil)
	r.Host = "127.0.0.1:1"
	r.Header.Set("Origin", "https://anywhere.example")
	w := httptest.NewRecorder()
	wild.ServeHTTP(w, r)
	if w.Code != 204 {
		t.Errorf("--cors-origin '*' refused an origin: %d", w.Code)
	}
}
