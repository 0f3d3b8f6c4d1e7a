package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
	"github.com/fedgrid/fedgrid/internal/procstat"
)

// TestLoginFloodBounded: 150 concurrent wrong-password logins for the Owner
// of a real gateway process. The throttle counts each attempt before any
// password is hashed, so at most 10 are evaluated (answered 401 and audited
// as auth.login_failed), the rest get 429, and the gateway's peak RSS
// (VmHWM of its process) stays under 400 MB. The lockout window's end is
// tested in gateway/api (TestLoginFlood) with an injected clock.
func TestLoginFloodBounded(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t, 2*time.Minute)
	site, err := h.StartSite(ctx, "gateway", "Hospital A", "owner@a.example", "owner password a", harness.PeerOptions{Network: networkName(t)})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"email": "owner@a.example", "password": "wrong password"})
	const n = 150
	codes := make([]int, n)
	var wg sync.WaitGroup
	client := &http.Client{Timeout: time.Minute}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, site.Gateway.HTTP+"/api/v1/auth/login", bytes.NewReader(body))
			if err != nil {
				return
			}
			req.Header.Set("Content-Type", "application/json")
			res, err := client.Do(req)
			if err != nil {
				return
			}
			res.Body.Close()
			codes[i] = res.StatusCode
		}()
	}
	wg.Wait()
	got := map[int]int{}
	for _, c := range codes {
		got[c]++
	}
	var audit struct {
		Entries []json.RawMessage `json:"entries"`
	}
	if err := site.Admin.DoJSON(ctx, "GET", "/api/v1/audit?action=auth.login_failed&limit=1000", nil, &audit); err != nil {
		t.Fatal(err)
	}
	peak := vmHWM(t, site.Gateway.PID())
	t.Logf("answers %v; %d failures audited; gateway peak RSS %d MiB", got, len(audit.Entries), peak>>20)
	if ev := got[http.StatusUnauthorized]; ev < 1 || ev > 10 || ev+got[http.StatusTooManyRequests] != n || len(audit.Entries) != ev {
		t.Fatalf("answers %v, %d audited: want at most 10 evaluated (401, audited), the rest 429", got, len(audit.Entries))
	}
	if peak >= 400<<20 {
		t.Fatalf("gateway peak RSS %d MiB, want under 400 MiB", peak>>20)
	}
	if err := site.Admin.Healthz(ctx); err != nil {
		t.Fatal(err)
	}
}

// vmHWM is the peak resident set of process pid, in bytes.
func vmHWM(t testing.TB, pid int) int64 {
	n, err := procstat.Bytes(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	return n
}
