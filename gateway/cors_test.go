package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCORS(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	h := cors([]string{"https://admin.example"}, ok)
	do := func(method, origin string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "/api/v1/status", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if method == http.MethodOptions {
			r.Header.Set("Access-Control-Request-Method", "POST")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do("GET", "https://admin.example"); w.Header().Get("Access-Control-Allow-Origin") != "https://admin.example" {
		t.Errorf("allowed origin: %v", w.Header())
	}
	if w := do("GET", "https://evil.example"); w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("other origin got %v", w.Header())
	}
	if w := do("OPTIONS", "https://admin.example"); w.Code != 204 || w.Header().Get("Access-Control-Allow-Headers") == "" {
		t.Errorf("preflight: %d %v", w.Code, w.Header())
	}
	if w := do("OPTIONS", "https://evil.example"); w.Header().Get("Access-Control-Allow-Methods") != "" {
		t.Errorf("preflight of another origin answered: %v", w.Header())
	}
	if got := cors(nil, ok); got == nil {
		t.Fatal("nil handler")
	}
}
