package e2e

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
)

// TestBadInvocationExits2: a peer started with bad input exits 2 at once,
// with one human-readable line on stderr and nothing else.
func TestBadInvocationExits2(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t, time.Minute)
	data := func(name string) string { return filepath.Join(h.Dir(), name) }
	const okPeer = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWLctmRK7H9FHLZ6XeHyJaQY48ESKfUH9q8ycZXhYTCic3"
	cases := map[string][]string{
		"network without --data":                 {"network", "--listen", harness.LoopbackListen},
		"gateway without --data":                 {"gateway", "--listen", harness.LoopbackListen, "--http", harness.LoopbackHTTP},
		"node without --data":                    {"node", "--listen", harness.LoopbackListen, "--gateway", okPeer, "--join-token", "x"},
		"network with malformed --bootstrap":     {"network", "--data", data("n"), "--listen", harness.LoopbackListen, "--bootstrap", "not-a-multiaddr"},
		"gateway with malformed --bootstrap":     {"gateway", "--data", data("g"), "--listen", harness.LoopbackListen, "--http", harness.LoopbackHTTP, "--bootstrap", "not-a-multiaddr"},
		"gateway with --bootstrap lacking /p2p/": {"gateway", "--data", data("g2"), "--listen", harness.LoopbackListen, "--http", harness.LoopbackHTTP, "--bootstrap", "/ip4/127.0.0.1/tcp/4001"},
		"node with malformed --bootstrap":        {"node", "--data", data("d"), "--listen", harness.LoopbackListen, "--gateway", okPeer, "--join-token", "x", "--bootstrap", "not-a-multiaddr"},
		"search with malformed --bootstrap":      {"search", "--bootstrap", "not-a-multiaddr", "medical"},
		"node with malformed --gateway":          {"node", "--data", data("d2"), "--listen", harness.LoopbackListen, "--gateway", "/ip4/127.0.0.1/tcp/4001", "--join-token", "x"},
		"gateway with an unknown flag":           {"gateway", "--data", data("g3"), "--no-such-flag"},
		"request withdraw without --id":          {"request", "--gateway", "12D3KooWLctmRK7H9FHLZ6XeHyJaQY48ESKfUH9q8ycZXhYTCic3", "withdraw"},
	}
	for name, args := range cases {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			res, err := h.Run(ctx, args...)
			if res == nil || res.ExitCode < 0 {
				t.Fatalf("fedgrid %s: %v", strings.Join(args, " "), err)
			}
			if res.ExitCode != 2 {
				t.Errorf("exit status %d, want 2 (bad usage); stderr: %s", res.ExitCode, res.Stderr)
			}
			msg := strings.TrimRight(string(res.Stderr), "\n")
			if msg == "" || strings.Contains(msg, "\n") {
				t.Errorf("stderr is not one line: %q", res.Stderr)
			}
			if strings.Contains(msg, "goroutine ") || strings.Contains(msg, "panic") {
				t.Errorf("stderr is not human-readable: %q", msg)
			}
			if strings.HasPrefix(string(res.Stdout), "ready ") {
				t.Errorf("printed a ready line: %q", res.Stdout)
			}
			t.Logf("stderr: %s", msg)
		})
	}
}

// TestMalformedUploadRefused: a CSV the gateway cannot use gets a 400 with
// the contract's error document, and the gateway keeps serving: a good
// upload right after works and the bad ones left nothing behind.
func TestMalformedUploadRefused(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t, time.Minute)
	site, err := h.StartSite(ctx, "gateway", "Hospital A", "owner@a.example", "owner password a", harness.PeerOptions{Network: networkName(t)})
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"header only":    "glucose,age,diabetes\n",
		"empty":          "",
		"ragged rows":    "glucose,age,diabetes\n148,50,1\n85,31\n",
		"duplicate name": "age,age,diabetes\n1,2,1\n3,4,0\n",
		"binary":         "\x00\x01\x02\xff\xfe\n\x00,\x00\n",
		"unclosed quote": "glucose,age,diabetes\n\"148,50,1\n85,31,0\n",
	}
	for name, body := range bad {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			_, err := site.Admin.UploadCSV(ctx, harness.Upload{Name: "bad", Tags: []string{"medical"}, Visibility: "public", CSV: []byte(body)})
			var ae *harness.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("upload of a CSV with %s: %v, want an HTTP 400", name, err)
			}
			if ae.Status != http.StatusBadRequest {
				t.Errorf("HTTP %d, want 400: %s", ae.Status, ae.Body)
			}
			if ae.Code == "" || ae.Message == "" {
				t.Errorf("answer is not the contract's error document: %s", ae.Body)
			}
			if strings.Contains(ae.Body, "goroutine") || strings.Contains(ae.Body, ".go:") {
				t.Errorf("answer leaks internals: %s", ae.Body)
			}
			t.Logf("%s: %s: %s", ae.Code, name, ae.Message)
		})
	}
	if err := site.Admin.Healthz(ctx); err != nil {
		t.Fatalf("gateway stopped serving after bad uploads: %v", err)
	}
	ds, err := site.Admin.UploadCSV(ctx, harness.Upload{Name: "good", Tags: []string{"medical"}, Visibility: "public",
		CSV: []byte("glucose,age,diabetes\n148,50,1\n85,31,0\n")})
	if err != nil {
		t.Fatalf("good upload after bad ones: %v", err)
	}
	if ds.Rows != 2 || len(ds.Columns) != 3 {
		t.Errorf("good upload: %+v", ds)
	}
	list, err := site.Admin.Datasets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != ds.ID {
		t.Errorf("datasets after 1 good and %d bad uploads: %+v", len(bad), list)
	}
	if site.Gateway.Exited() {
		t.Fatalf("gateway exited: %s", site.Gateway.State())
	}
	if err := site.Gateway.Stop(); err != nil {
		t.Fatal(err)
	}
}
