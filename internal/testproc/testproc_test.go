package testproc

import (
	"fmt"
	"os"
	"testing"
	"time"
)

const helperEnv = "TESTPROC_HELPER"

// TestHelper is the child of TestStartExpectStop: it prints a line to be
// skipped, then READY with its argument, and serves until stopped.
func TestHelper(t *testing.T) {
	arg := os.Getenv(helperEnv)
	if arg == "" {
		t.Skip("helper process for TestStartExpectStop")
	}
	fmt.Println("HELLO from the child")
	fmt.Println("READY", arg, os.Getpid())
	Wait()
	fmt.Println("BYE")
}

func TestStartExpectStop(t *testing.T) {
	p := Start(t, "TestHelper", helperEnv+"=42")
	defer p.Stop()
	f := p.Expect(t, time.Minute, "READY")
	if len(f) != 2 || f[0] != "42" || f[1] != fmt.Sprint(p.Pid()) {
		t.Fatalf("READY line fields %q, want [42 %d]", f, p.Pid())
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("the child did not exit cleanly: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("a second Stop: %v", err)
	}
}
