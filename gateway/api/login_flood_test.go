package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/procstat"
)

// peakRSS returns this process's peak resident set (VmHWM) in bytes.
func peakRSS(t *testing.T) int64 {
	n, err := procstat.Bytes(0, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLoginFlood sends 150 concurrent wrong-password logins for the Owner's
// account, each from a different client address: the per-account limit is
// checked and counted before any hash, so at most 2 x LoginMaxFailures = 10
// passwords are evaluated, and at most MaxConcurrentPasswordHashes hashes run
// at once. The API runs in this test process, so the process's peak RSS
// (VmHWM, reset through /proc/self/clear_refs before the burst) bounds the
// gateway's (ordinary builds; see e2e TestLoginFloodBounded). After the lockout window the Owner logs in.
func TestLoginFlood(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, func(c *Config) { c.Now = clock; c.LoginWindow = 15 * time.Minute })
	e.setup()
	evaluated := e.st.PasswordEvaluations()

	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Fatalf("reset the peak RSS: %v", err)
	}
	before := peakRSS(t)
	body, _ := json.Marshal(LoginRequest{Email: "owner@example.org", Password: "wrong-password"})
	h := e.api.Handler()
	const n = 150
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := httptest.NewRequest(http.MethodPost, "/api/v1/auth/login", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			r.RemoteAddr = fmt.Sprintf("10.%d.%d.1:40000", i/200, i%200)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			codes[i] = w.Code
		}()
	}
	wg.Wait()
	peak := peakRSS(t)
	got := map[int]int{}
	for _, c := range codes {
		got[c]++
	}
	ran := e.st.PasswordEvaluations() - evaluated
	t.Logf("answers %v; %d passwords evaluated; peak RSS %d MiB (%d MiB before the burst)", got, ran, peak>>20, before>>20)
	if ran > 10 || ran < 1 || got[http.StatusUnauthorized] != int(ran) || got[http.StatusUnauthorized]+got[http.StatusTooManyRequests] != n {
		t.Fatalf("answers %v with %d evaluations: want at most 10 evaluated (401), the rest 429", got, ran)
	}
	if es, err := e.st.Audit(store.AuditFilter{Action: "auth.login_failed"}); err != nil || int64(len(es)) != ran {
		t.Fatalf("audited failures %d (%v), want %d", len(es), err, ran)
	}
	// The race detector's shadow memory multiplies every allocation, so the
	// bound is checked in ordinary builds only; e2e TestLoginFloodBounded
	// checks it on the real gateway process in every run.
	if !raceEnabled && peak > 400<<20 {
		t.Fatalf("peak RSS %d MiB during the burst, want under 400 MiB", peak>>20)
	}

	// An attempt that found every hash slot taken (429 busy, on a loaded
	// machine) is not counted: more wrong guesses reach the limit, exactly.
	for extra := 0; ; extra++ {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/auth/login", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = fmt.Sprintf("10.250.%d.1:40000", extra) // another address each time
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		r := resp{status: w.Code, header: w.Header(), body: w.Body.Bytes()}
		if r.status == http.StatusTooManyRequests && r.errCode(t) == "too_many_attempts" {
			if ran+int64(extra) != 10 {
				t.Fatalf("locked out after %d evaluated guesses, want 10", ran+int64(extra))
			}
			break
		}
		if r.status != http.StatusUnauthorized && r.status != http.StatusTooManyRequests || extra > 10 {
			t.Fatalf("guess %d after the burst: %d %s", extra, r.status, r.body)
		}
	}
	// Locked out, even with the right password, until the window has passed.
	e.want(e.do("POST", "/api/v1/auth/login", "", LoginRequest{Email: "owner@example.org", Password: "owner-password"}), 429)
	mu.Lock()
	now = now.Add(15*time.Minute + time.Second)
	mu.Unlock()
	e.login("owner@example.org", "owner-password")
}
