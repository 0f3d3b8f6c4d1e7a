package harness

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const peerID = "12D3KooWLctmRK7H9FHLZ6XeHyJaQY48ESKfUH9q8ycZXhYTCic3"

func TestParseReady(t *testing.T) {
	r, err := ParseReady("ready peer=" + peerID + " addrs=/ip4/127.0.0.1/tcp/1/p2p/" + peerID + ",/ip6/::1/tcp/2/p2p/" + peerID + " http=http://127.0.0.1:8420 version=0.1.0+abc\n")
	if err != nil {
		t.Fatal(err)
	}
	if r.PeerID != peerID || len(r.Addrs) != 2 || r.HTTP != "http://127.0.0.1:8420" || r.Version != "0.1.0+abc" {
		t.Fatalf("%+v", r)
	}
	r, err = ParseReady("ready peer=" + peerID + " addrs=/ip4/127.0.0.1/tcp/1/p2p/" + peerID + " http=127.0.0.1:9")
	if err != nil || r.HTTP != "http://127.0.0.1:9" {
		t.Fatalf("bare host:port: %+v %v", r, err)
	}
	for _, bad := range []string{
		"",
		"readyish peer=x addrs=/a/p2p/x",
		"ready addrs=/ip4/127.0.0.1/tcp/1/p2p/" + peerID,
		"ready peer=" + peerID,
		"ready peer=" + peerID + " addrs=/ip4/127.0.0.1/tcp/1",                   // no /p2p/
		"ready peer=" + peerID + " addrs=/ip4/127.0.0.1/tcp/1/p2p/12D3KooWOther", // another peer's
		"ready peer=" + peerID + " addrs",
	} {
		if r, err := ParseReady(bad); err == nil {
			t.Errorf("%q parsed as %+v", bad, r)
		}
	}
}

// script writes an executable shell script standing in for the fedgrid
// binary, to test the harness's own process handling.
func script(t *testing.T, body string) *Harness {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "fake-peer")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Bin: bin, Dir: filepath.Join(dir, "work"), ReadyTimeout: 5 * time.Second, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.KillAll(); _ = h.Close() })
	return h
}

const readyLine = `echo "ready peer=` + peerID + ` addrs=/ip4/127.0.0.1/tcp/1/p2p/` + peerID + `"`

// waitLoop keeps a script alive until a signal, without a fixed sleep in the test.
const waitLoop = `while :; do sleep 0.05; done`

func TestStartStopExit0(t *testing.T) {
	h := script(t, `trap 'echo bye >&2; exit 0' TERM
echo starting >&2
`+readyLine+`
`+waitLoop)
	p, err := h.Start(context.Background(), "peer one", "--flag")
	if err != nil {
		t.Fatal(err)
	}
	if p.PeerID != peerID || p.Addr() != "/ip4/127.0.0.1/tcp/1/p2p/"+peerID || p.Exited() {
		t.Fatalf("%+v", p.Ready)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if p.ExitCode() != 0 || !strings.Contains(string(p.Stderr()), "bye") {
		t.Fatalf("exit %d, stderr %q", p.ExitCode(), p.Stderr())
	}
	// Output went to the log files too.
	_, errFile := p.LogFiles()
	b, err := os.ReadFile(errFile)
	if err != nil || !strings.Contains(string(b), "starting") || !strings.Contains(filepath.Base(errFile), "peer_one") {
		t.Fatalf("log file %s: %q %v", errFile, b, err)
	}
	// Stopped peers are not stopped again.
	if err := h.StopAll(); err != nil {
		t.Fatal(err)
	}
}

func TestStopReportsBadExit(t *testing.T) {
	h := script(t, `trap 'echo "cannot flush" >&2; exit 3' TERM
`+readyLine+`
`+waitLoop)
	p, err := h.Start(context.Background(), "p")
	if err != nil {
		t.Fatal(err)
	}
	err = h.Close()
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "cannot flush") {
		t.Fatalf("Close: %v", err)
	}
	if p.ExitCode() != 3 {
		t.Fatalf("exit %d", p.ExitCode())
	}
}

func TestStopKillsAPeerThatIgnoresSIGTERM(t *testing.T) {
	h := script(t, `trap '' TERM
`+readyLine+`
`+waitLoop)
	p, err := h.Start(context.Background(), "stubborn")
	if err != nil {
		t.Fatal(err)
	}
	err = p.StopWithin(300 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Stop: %v", err)
	}
	if !p.Exited() {
		t.Fatal("still running")
	}
}

func TestStartFailures(t *testing.T) {
	t.Run("exits before ready", func(t *testing.T) {
		h := script(t, `echo "fedgrid: --data DIR is required" >&2; exit 2`)
		_, err := h.Start(context.Background(), "p")
		if err == nil || !strings.Contains(err.Error(), "exit status 2") || !strings.Contains(err.Error(), "--data DIR is required") {
			t.Fatalf("%v", err)
		}
	})
	t.Run("never ready", func(t *testing.T) {
		h := script(t, waitLoop)
		h.cfg.ReadyTimeout = 200 * time.Millisecond
		_, err := h.Start(context.Background(), "p")
		if err == nil || !strings.Contains(err.Error(), "no ready line") {
			t.Fatalf("%v", err)
		}
		if p := h.Procs()[0]; !p.Exited() {
			t.Fatal("a peer that never got ready is still running")
		}
	})
	t.Run("context ends", func(t *testing.T) {
		h := script(t, waitLoop)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := h.Start(ctx, "p"); !errors.Is(err, context.Canceled) {
			t.Fatalf("%v", err)
		}
	})
	t.Run("bad ready line", func(t *testing.T) {
		h := script(t, `echo "ready peer=x addrs=/nope"; `+waitLoop)
		if _, err := h.Start(context.Background(), "p"); err == nil || !strings.Contains(err.Error(), "/p2p/x") {
			t.Fatalf("%v", err)
		}
	})
}

func TestRun(t *testing.T) {
	h := script(t, `case "$1" in
ok) echo '{"rows": 3, "accuracy": 0.5}' ;;
two) echo '{}'; echo '{}' ;;
fail) echo '{"id": "j1", "state": "failed"}'; echo "first" >&2; echo "fedgrid: job failed" >&2; exit 1 ;;
usage) echo "fedgrid: bad usage" >&2; exit 2 ;;
esac`)
	ctx := context.Background()
	var ev Evaluation
	if err := h.RunJSON(ctx, &ev, "ok"); err != nil || ev.Rows != 3 || ev.Accuracy != 0.5 {
		t.Fatalf("%+v %v", ev, err)
	}
	if err := h.RunJSON(ctx, &ev, "two"); err == nil {
		t.Fatal("two documents accepted")
	}
	var j Job
	err := h.RunJSON(ctx, &j, "fail")
	if j.ID != "j1" || ExitCode(err) != 1 || !strings.HasSuffix(err.Error(), "exit status 1: fedgrid: job failed") {
		t.Fatalf("%+v %v", j, err)
	}
	res, err := h.Run(ctx, "usage")
	if ExitCode(err) != 2 || res.ExitCode != 2 || string(res.Stderr) != "fedgrid: bad usage\n" {
		t.Fatalf("%+v %v", res, err)
	}
	if err := h.RunJSON(ctx, &ev, "usage"); ExitCode(err) != 2 {
		t.Fatalf("%v", err)
	}
}

func TestChildEnvironmentDropsFedgridVariables(t *testing.T) {
	t.Setenv("FEDGRID_DATA", "/somewhere/else")
	h := script(t, `env`)
	h.cfg.Env = []string{"FEDGRID_LOG_LEVEL=debug"}
	res, err := h.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(res.Stdout), "FEDGRID_DATA") || !strings.Contains(string(res.Stdout), "FEDGRID_LOG_LEVEL=debug") {
		t.Fatalf("child environment:\n%s", res.Stdout)
	}
}
