package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
)

// TestTakenPortExits1: a second peer told to listen on a port another peer
// holds exits non-zero at once with a message naming the port, and never
// prints a ready line (TCP listeners do not share ports through SO_REUSEPORT).
func TestTakenPortExits1(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t, time.Minute)
	first, err := h.StartNetwork(ctx, "first", harness.PeerOptions{Network: networkName(t)})
	if err != nil {
		t.Fatal(err)
	}
	if first.Version == "" {
		t.Errorf("the ready line carries no version=")
	}
	m := regexp.MustCompile(`^(/ip4/127\.0\.0\.1/tcp/(\d+))/`).FindStringSubmatch(first.Addr())
	if m == nil {
		t.Fatalf("first peer's address %q is not a loopback TCP address", first.Addr())
	}
	taken, port := m[1], m[2]
	for _, cmd := range [][]string{
		{"network", "--data", h.Path("second-network"), "--listen", taken},
		{"gateway", "--data", h.Path("second-gateway"), "--listen", taken, "--http", harness.LoopbackHTTP},
	} {
		res, err := h.Run(ctx, cmd...)
		if res == nil || res.ExitCode < 0 {
			t.Fatalf("fedgrid %s: %v", strings.Join(cmd, " "), err)
		}
		if res.ExitCode != 1 {
			t.Errorf("%s on a taken port: exit status %d, want 1; stderr: %s", cmd[0], res.ExitCode, res.Stderr)
		}
		if strings.Contains(string(res.Stdout), "ready ") {
			t.Errorf("%s on a taken port printed a ready line: %s", cmd[0], res.Stdout)
		}
		if want := "port " + port + " is already in use"; !strings.Contains(string(res.Stderr), want) {
			t.Errorf("%s: stderr %q does not say %q", cmd[0], res.Stderr, want)
		}
	}
	if first.Exited() {
		t.Fatalf("the first peer ended: %s", first.State())
	}
}
