package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/fedgrid/fedgrid/crypto/receipt"
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

// TestModelVerifyFederation: a federated model's receipts and weights chain
// verify with fedgrid model verify MODEL.json; each kind of tampering gives
// its own message (exit 1), even when the outer signature is made again.
func TestModelVerifyFederation(t *testing.T) {
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
	var sks []crypto.PrivKey
	var ids []string
	for range 3 {
		sk, _ := p2p.GenerateIdentity()
		id, _ := p2p.PeerIDOf(sk)
		sks, ids = append(sks, sk), append(ids, id.String())
	}
	// build returns the model with a federation record of two rounds from
	// the plan's initial weights to the trained ones; tamper changes it
	// before the gateway signs (resign) or after.
	build := func(tamper func(m *plan.Model), resign bool) *plan.Model {
		m, err := plan.ParseModel(raw)
		if err != nil {
			t.Fatal(err)
		}
		init, err := plan.InitialParams(m.Plan)
		if err != nil {
			t.Fatal(err)
		}
		mid := map[string]plan.Tensor{}
		for name, p := range m.Params {
			mid[name] = plan.Tensor{Shape: p.Shape, Data: make([]float64, len(p.Data))}
			for i := range p.Data {
				mid[name].Data[i] = (p.Data[i] + init[name].Data[i]) / 2
			}
		}
		fed := &receipt.Federation{ID: "f1"}
		for i, id := range ids[:2] {
			fed.Gateways = append(fed.Gateways, receipt.Gateway{PeerID: id, Name: fmt.Sprintf("hospital-%c", 'a'+i), Dataset: "d1"})
		}
		hashes := []string{plan.WeightsSHA256(init), plan.WeightsSHA256(mid), plan.WeightsSHA256(m.Params)}
		for r := 1; r <= 2; r++ {
			rd := receipt.Round{Round: r, StartSHA256: hashes[r-1], ResultSHA256: hashes[r], Participants: ids[:2]}
			for i, id := range ids[:2] {
				rc := receipt.Receipt{Federation: "f1", Round: r, Gateway: id, StartSHA256: hashes[r-1],
					UpdateSHA256: receipt.UpdateSHA256([]uint32{uint32(r), uint32(i)}), Time: time.Now().UTC()}
				if err := rc.Sign(sks[i]); err != nil {
					t.Fatal(err)
				}
				rd.Receipts = append(rd.Receipts, rc)
			}
			fed.Rounds = append(fed.Rounds, rd)
		}
		m.Provenance = &plan.Provenance{Gateway: ids[0], Dataset: "d1", Job: "fed-f1", Federation: fed}
		sign := func() {
			m.Provenance.Signature = ""
			body, err := m.SigningBytes()
			if err != nil {
				t.Fatal(err)
			}
			sig, err := sks[0].Sign(body)
			if err != nil {
				t.Fatal(err)
			}
			m.Provenance.Signature = base64.StdEncoding.EncodeToString(sig)
		}
		if !resign {
			sign()
		}
		if tamper != nil {
			tamper(m)
		}
		if resign {
			sign()
		}
		return m
	}
	verify := func(name string, m *plan.Model) (int, string) {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".json")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		var o, e bytes.Buffer
		code := run([]string{"model", "verify", p}, &o, &e)
		return code, o.String() + e.String()
	}
	if code, msg := verify("intact", build(nil, false)); code != 0 || !strings.Contains(msg, "federation f1: 2 rounds, 4 receipts verified") || !strings.Contains(msg, "gateway hospital-b ("+ids[1]+"): in 2 of 2 rounds") {
		t.Fatalf("intact federated model: %d %s", code, msg)
	}
	cases := []struct {
		name   string
		tamper func(m *plan.Model)
		want   string
	}{
		{"changed-weights", func(m *plan.Model) {
			for name, p := range m.Params {
				p.Data[0] += 1e-9
				m.Params[name] = p
				break
			}
		}, "are not the last round's result"},
		{"dropped-receipt", func(m *plan.Model) {
			r := &m.Provenance.Federation.Rounds[1]
			r.Receipts = r.Receipts[:1]
		}, "round 2: no receipt from gateway " + ids[1]},
		{"forged-signature", func(m *plan.Model) {
			rc := &m.Provenance.Federation.Rounds[0].Receipts[1]
			rc.UpdateSHA256 = receipt.UpdateSHA256([]uint32{9})
			if err := rc.Sign(sks[2]); err != nil {
				t.Fatal(err)
			}
		}, "round 1: receipt of gateway " + ids[1] + ": its signature does not verify"},
		{"reordered-rounds", func(m *plan.Model) {
			r := m.Provenance.Federation.Rounds
			r[0], r[1] = r[1], r[0]
		}, "rounds out of order: entry 1 of the record is round 2"},
	}
	seen := map[string]bool{}
	for _, tc := range cases {
		for _, resign := range []bool{false, true} {
			code, msg := verify(tc.name, build(tc.tamper, resign))
			if code != 1 || !strings.Contains(msg, tc.want) {
				t.Fatalf("%s (signed again %v): exit %d, %s; want %q", tc.name, resign, code, msg, tc.want)
			}
			if gotSig := strings.Contains(msg, "signature does not match"); gotSig == resign {
				t.Fatalf("%s (signed again %v): outer signature reported %v: %s", tc.name, resign, gotSig, msg)
			}
			for _, other := range cases {
				if other.name != tc.name && strings.Contains(msg, other.want) {
					t.Fatalf("%s reads like %s: %s", tc.name, other.name, msg)
				}
			}
			seen[tc.name] = true
		}
	}
	if len(seen) != 4 {
		t.Fatal(seen)
	}
}
