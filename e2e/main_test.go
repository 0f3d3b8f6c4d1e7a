// Package e2e runs the real fedgrid binary as separate processes on loopback
// and checks what its users see: the demo flow across two gateways, models
// recomputed without fedgrid code, exit codes and the admin API's errors.
//
// The binary is $FEDGRID_BIN (the Makefile exports it); without it, the
// tests build one into a temporary directory. `go test -short` skips them.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	buildTo string // temporary directory of a binary built here
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if buildTo != "" {
		_ = os.RemoveAll(buildTo)
	}
	os.Exit(code)
}

// fedgridBin returns the binary under test, building it once if
// FEDGRID_BIN is not set. It skips the test under -short.
func fedgridBin(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process test: skipped with -short")
	}
	binOnce.Do(func() {
		if p := os.Getenv("FEDGRID_BIN"); p != "" {
			if _, err := os.Stat(p); err != nil {
				binErr = fmt.Errorf("FEDGRID_BIN=%s: %w (run make build)", p, err)
				return
			}
			binPath = p
			return
		}
		dir, err := os.MkdirTemp("", "fedgrid-e2e-bin-")
		if err != nil {
			binErr = err
			return
		}
		buildTo = dir
		out := filepath.Join(dir, "fedgrid")
		cmd := exec.Command("go", "build", "-o", out, "github.com/fedgrid/fedgrid/cmd/fedgrid")
		if b, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/fedgrid: %v\n%s", err, b)
			return
		}
		binPath = out
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// newHarness returns a harness in a test temp directory. At the end of the
// test every peer still running is stopped (and killed if it will not stop);
// the logs of a failed test are printed.
func newHarness(t *testing.T) *harness.Harness {
	t.Helper()
	h, err := harness.New(harness.Config{Bin: fedgridBin(t), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := h.Close()
		if t.Failed() {
			t.Logf("peer logs (last lines):\n%s", h.LogTails(40))
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return h
}

// testContext is a context that ends before the test's own deadline.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	if dl, ok := t.Deadline(); ok && time.Until(dl)-10*time.Second < d {
		d = time.Until(dl) - 10*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// networkName is a fresh network name, so that concurrent runs never meet.
func networkName(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "e2e-" + hex.EncodeToString(b)
}

// dataDir is examples/data, relative to this package.
func dataDir() string { return filepath.Join("..", "examples", "data") }

// planDir is examples/plans.
func planDir() string { return filepath.Join("..", "examples", "plans") }
