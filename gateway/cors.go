package gateway

import (
	"net/http"
	"slices"
	"strings"
)

// cors lets the origins in allow call the HTTP API from a browser: the admin
// web app hosted somewhere other than the gateway's own /admin/. An empty
// list adds nothing (same-origin only). "*" allows any origin; tokens travel
// in the Authorization header, never in cookies, so no credentials mode is
// granted either way.
func cors(allow []string, next http.Handler) http.Handler {
	if len(allow) == 0 {
		return next
	}
	anyOrigin := slices.Contains(allow, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" || !(anyOrigin || slices.Contains(allow, strings.TrimRight(origin, "/"))) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", "Retry-After, WWW-Authenticate")
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
