package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad federation usage is exit 2 with one line saying what is wrong, before
// anything is contacted; fedgrid job fed:ID reads the saved state offline.
func TestFederationUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "--dataset", "a/b", "--dataset", "c/d"}, "--plan PLAN.json is required"},
		{[]string{"train", "--resume", "fed:x", "--dataset", "a/b", "--plan", "p.json"}, "--resume takes no --dataset or --plan"},
		{[]string{"train", "--resume", "not-a-ref"}, "is not a federation reference"},
		{[]string{"train", "--resume", "fed:../etc"}, "is not a federation reference"},
		{[]string{"job", "fed:a/b", "--federations", dir}, "is not a federation reference"},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut.String(), tc.want)
		}
	}
	// A saved federation shows offline.
	state := `{"format":"fedgrid.federation/v1","options":{"ID":"abc","Plan":{},"Participants":[{"gateway":"g1","name":"Hospital A","dataset":"d1"},{"gateway":"g2","name":"Hospital B","dataset":"d2"}],"Rounds":3},` +
		`"jobs":{"g1":"fed-abc","g2":"fed-abc"},"active":["g1","g2"],"round":2,"weights":{},"history":[{"round":1,"participants":["g1","g2"],"rows":10,"loss":0.7},{"round":2,"participants":["g1","g2"],"rows":10,"loss":0.5}],` +
		`"fit":{"round":0,"participants":["g1","g2"],"rows":10},"state":"running"}`
	if err := os.WriteFile(filepath.Join(dir, "abc.json"), []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"job", "fed:abc", "--federations", dir}, &out, &errOut); code != 0 {
		t.Fatalf("job fed:abc: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"fed:abc", "running", "2/3", "Hospital A", "g2/fed-abc", "0.5000", "fitted across 2 gateways, 10 rows"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("fedgrid job fed:abc does not show %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "secure aggregation OFF") {
		t.Errorf("a federation with secure aggregation shows it off:\n%s", out.String())
	}
	// A federation with plain updates says so.
	plain := strings.Replace(strings.Replace(state, `"Rounds":3`, `"Rounds":3,"PlainUpdates":true`, 1), `"ID":"abc"`, `"ID":"plain"`, 1)
	if err := os.WriteFile(filepath.Join(dir, "plain.json"), []byte(plain), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"job", "fed:plain", "--federations", dir}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "secure aggregation OFF") {
		t.Fatalf("job fed:plain: exit %d, %q: %s", code, out.String(), errOut.String())
	}
}
