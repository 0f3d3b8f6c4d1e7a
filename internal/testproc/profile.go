package testproc

import (
	"os"
	"runtime/pprof"
	"testing"
)

// CPUProfile starts this process's CPU profile into the file at path and
// returns what stops it and closes the file; with path empty it profiles
// nothing and returns a no-op. Benchmarks take path from an environment
// variable, so that a run is profiled only when asked.
func CPUProfile(t testing.TB, path string) (stop func()) {
	t.Helper()
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		t.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			t.Errorf("CPU profile %s: %v", path, err)
		}
	}
}
