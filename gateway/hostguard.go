package gateway

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// hostGuard refuses (403) requests whose Host is not one of the gateway's
// own names, and browser requests whose Origin is neither the gateway itself
// nor an allowed CORS origin. A Host that is an IP address or "localhost" is
// always the gateway's own (DNS rebinding needs a domain name the attacker
// controls); other names must be listed (--http-host, or the host of
// --http). So a page on another site can neither post to the gateway (no
// preflight needed for a no-cors fetch) nor read its answers through a
// rebound name.
func hostGuard(hosts, origins []string, next http.Handler) http.Handler {
	anyOrigin := slices.Contains(origins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ownHost(r.Host, hosts) {
			refuse(w, "host_refused", "this gateway does not answer to host "+quote(r.Host)+"; start it with --http-host NAME to allow a name")
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !anyOrigin && !sameOrigin(o, r.Host) && !slices.Contains(origins, strings.TrimRight(o, "/")) {
			refuse(w, "origin_refused", "requests from "+quote(o)+" are refused; start the gateway with --cors-origin to allow an admin app hosted there")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func quote(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return `"` + strings.Map(func(r rune) rune {
		if r < 0x20 || r == '"' || r == '\\' || r == 0x7f {
			return '?'
		}
		return r
	}, s) + `"`
}

func refuse(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusForbidden)
	b, _ := json.Marshal(map[string]map[string]string{"error": {"code": code, "message": msg}})
	_, _ = w.Write(b)
}

// hostName strips the port of a Host header.
func hostName(h string) string {
	if name, _, err := net.SplitHostPort(h); err == nil {
		return name
	}
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}

func ownHost(h string, hosts []string) bool {
	name := strings.ToLower(hostName(h))
	if name == "" {
		return false
	}
	if name == "localhost" || net.ParseIP(name) != nil {
		return true
	}
	return slices.ContainsFunc(hosts, func(x string) bool { return strings.EqualFold(x, name) })
}

// sameOrigin: the Origin names the host (and port) the request came to.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return strings.EqualFold(u.Host, host)
}
