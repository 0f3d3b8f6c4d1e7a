package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestInvalidFlagsRefused: a flag whose value a peer cannot use is a usage
// error (exit 2) naming the flag, never silently replaced by a default
// (`--lease 0` once meant 15 s).
func TestInvalidFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"gateway", "--lease", "0"}, []string{"--lease must be positive"}},
		{[]string{"gateway", "--lease", "-1s", "--max-attempts", "0", "--job-timeout", "0"}, []string{"--lease must be positive", "--max-attempts must be at least 1", "--job-timeout must be positive"}},
		{[]string{"gateway", "--http", ""}, []string{"--http must not be empty"}},
		{[]string{"node", "--gateway", "/ip4/127.0.0.1/tcp/1"}, []string{"--gateway"}},
		{[]string{"node", "--gateway", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWJzBRxQaveGWeg4Frro9DJs5BDuDYCUhhkypH9qqaJuuz", "--slots", "0", "--engine", "torch"}, []string{"--slots must be between 1 and", "--engine must be native or gorgonia"}},
		{[]string{"network", "--max-searches", "0", "--gateway-timeout", "0"}, []string{"--max-searches must be at least 1", "--gateway-timeout must be positive"}},
		{[]string{"plan", "run", "--engine", "torch", "--plan", "p", "--data", "d", "--out", "o"}, []string{"--engine"}},
	} {
		var out, errOut bytes.Buffer
		args := append(tc.args[:len(tc.args):len(tc.args)], "--data", filepath.Join(t.TempDir(), "d"))
		if tc.args[0] == "plan" {
			args = tc.args
		}
		code := run(args, &out, &errOut)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2; stderr: %s", tc.args, code, errOut.String())
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut.String(), w) {
				t.Errorf("%v: stderr %q does not say %q", tc.args, errOut.String(), w)
			}
		}
		for _, field := range []string{"Lease", "MaxAttempts", "Slots", "PerGateway", "HTTPAddr"} {
			if strings.Contains(errOut.String(), field) {
				t.Errorf("%v: stderr %q names the Go field %s, not the flag", tc.args, errOut.String(), field)
			}
		}
	}
}
