package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
)

// TestModelVerifyCLI (acceptance 5): a model signed the way a gateway signs
// verifies with fedgrid model verify (exit 0); the same model with one weight
// changed fails (exit 1), as does one whose provenance names another gateway.
func TestModelVerifyCLI(t *testing.T) {
	dir := t.TempDir()
	modelPath := filepath.Join(dir, "model.json")
	var out, errOut bytes.Buffer
	if code := run([]string{"plan", "run", "--plan", filepath.Join("..", "..", "plan", "testdata", "logreg_pima.json"),
		"--data", filepath.Join("..", "..", "dataset", "testdata", "pima_diabetes.csv"), "--out", modelPath}, &out, &errOut); code != 0 {
		t.Fatalf("plan run: %d %s", code, errOut.String())
	}
	raw, err := os.ReadFile(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	m, err := plan.ParseModel(raw)
	if err != nil {
		t.Fatal(err)
	}
	sk, _ := p2p.GenerateIdentity()
	gw, _ := p2p.PeerIDOf(sk)
	m.Provenance = &plan.Provenance{Gateway: gw.String(), Dataset: "d1", Job: "j1"}
	body, err := m.SigningBytes()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := sk.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	m.Provenance.Signature = base64.StdEncoding.EncodeToString(sig)
	write := func(name string, m *plan.Model) string {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	verify := func(path string) (int, string) {
		var o, e bytes.Buffer
		code := run([]string{"model", "verify", "--model", path}, &o, &e)
		return code, o.String() + e.String()
	}
	if code, msg := verify(write("signed.json", m)); code != 0 || !strings.Contains(msg, "signature valid") {
		t.Fatalf("signed model: %d %s", code, msg)
	}
	// One weight changed.
	for name, p := range m.Params {
		p.Data[0] += 1e-9
		m.Params[name] = p
		break
	}
	if code, msg := verify(write("tampered.json", m)); code != 1 || !strings.Contains(msg, "signature does not match") {
		t.Fatalf("tampered model: %d %s", code, msg)
	}
	// Re-attributed to another gateway.
	other, _ := p2p.GenerateIdentity()
	oid, _ := p2p.PeerIDOf(other)
	m.Provenance.Gateway = oid.String()
	if code, _ := verify(write("other.json", m)); code != 1 {
		t.Fatalf("re-attributed model verified: %d", code)
	}
}
