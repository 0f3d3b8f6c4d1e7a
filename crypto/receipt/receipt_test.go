package receipt_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/fedgrid/fedgrid/crypto/receipt"
	"github.com/fedgrid/fedgrid/p2p"
)

func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

type gw struct {
	id string
	sk crypto.PrivKey
}

func newGateways(t *testing.T, n int) []gw {
	t.Helper()
	out := make([]gw, n)
	for i := range out {
		sk, err := p2p.GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		id, err := p2p.PeerIDOf(sk)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = gw{id.String(), sk}
	}
	return out
}

// chain builds a federation of rounds over gws whose weights go
// initial -> w1 -> ... -> final, every receipt signed by its gateway.
func chain(t *testing.T, gws []gw, rounds int) (f *receipt.Federation, initial, final string) {
	t.Helper()
	f = &receipt.Federation{ID: "f1"}
	for i, g := range gws {
		f.Gateways = append(f.Gateways, receipt.Gateway{PeerID: g.id, Name: fmt.Sprintf("hospital-%d", i)})
	}
	initial = hash("w0")
	start := initial
	for r := 1; r <= rounds; r++ {
		rd := receipt.Round{Round: r, StartSHA256: start, ResultSHA256: hash(fmt.Sprintf("w%d", r))}
		for _, g := range gws {
			rc := receipt.Receipt{Federation: f.ID, Round: r, Gateway: g.id, StartSHA256: start,
				UpdateSHA256: receipt.UpdateSHA256([]uint32{uint32(r), 7}), Time: time.Date(2026, 12, 1, 10, r, 0, 0, time.UTC)}
			if err := rc.Sign(g.sk); err != nil {
				t.Fatal(err)
			}
			rd.Participants = append(rd.Participants, g.id)
			rd.Receipts = append(rd.Receipts, rc)
		}
		f.Rounds = append(f.Rounds, rd)
		start = rd.ResultSHA256
	}
	return f, initial, start
}

// Every kind of tampering gives its own message; the intact record verifies.
func TestVerifyTampering(t *testing.T) {
	gws := newGateways(t, 3)
	intruder := newGateways(t, 1)[0]
	f, initial, final := chain(t, gws, 3)
	if err := receipt.Verify(f, initial, final, p2p.VerifyPeerSignature); err != nil {
		t.Fatalf("intact record: %v", err)
	}
	for _, tc := range []struct {
		name   string
		tamper func(f *receipt.Federation) (initial, final string)
		want   string
	}{
		{"changed weights", func(*receipt.Federation) (string, string) { return initial, hash("other weights") },
			"the model's weights (sha256 "},
		{"dropped receipt", func(f *receipt.Federation) (string, string) {
			f.Rounds[1].Receipts = f.Rounds[1].Receipts[1:]
			return initial, final
		}, "round 2: no receipt from gateway " + gws[0].id + ", whose update was summed (a receipt was dropped)"},
		{"forged signature", func(f *receipt.Federation) (string, string) {
			rc := &f.Rounds[2].Receipts[1]
			if err := rc.Sign(intruder.sk); err != nil {
				t.Fatal(err)
			}
			return initial, final
		}, "round 3: receipt of gateway " + gws[1].id + ": its signature does not verify"},
		{"altered receipt", func(f *receipt.Federation) (string, string) {
			f.Rounds[0].Receipts[2].UpdateSHA256 = hash("another update")
			return initial, final
		}, "round 1: receipt of gateway " + gws[2].id + ": its signature does not verify"},
		{"reordered rounds", func(f *receipt.Federation) (string, string) {
			f.Rounds[1], f.Rounds[2] = f.Rounds[2], f.Rounds[1]
			return initial, final
		}, "rounds out of order: entry 2 of the record is round 3"},
		{"renumbered rounds", func(f *receipt.Federation) (string, string) {
			f.Rounds[1], f.Rounds[2] = f.Rounds[2], f.Rounds[1]
			f.Rounds[1].Round, f.Rounds[2].Round = 2, 3
			return initial, final
		}, "is signed for round 3 (rounds reordered or renumbered)"},
		{"broken chain", func(f *receipt.Federation) (string, string) {
			f.Rounds[0].ResultSHA256 = hash("not what round 2 started from")
			return initial, final
		}, "round 2: the chain of weights is broken"},
		{"other start", func(*receipt.Federation) (string, string) { return hash("other init"), final },
			"round 1: it did not start from the plan's initial weights"},
		{"start not signed", func(f *receipt.Federation) (string, string) {
			// The round claims other start weights than its receipts.
			f.Rounds[0].StartSHA256 = hash("claimed start")
			return hash("claimed start"), final
		}, "signed that it started from weights"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _, _ := chain(t, gws, 3)
			in, fin := tc.tamper(f)
			err := receipt.Verify(f, in, fin, p2p.VerifyPeerSignature)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a message with %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// Receipts bind every field: the signed bytes change with each.
func TestSigningBytesBindEveryField(t *testing.T) {
	base := receipt.Receipt{Federation: "f", Round: 1, Attempt: 0, Gateway: "g", StartSHA256: "a", UpdateSHA256: "b", Time: time.Unix(1, 0)}
	seen := map[string]bool{string(base.SigningBytes()): true}
	for _, change := range []func(r *receipt.Receipt){
		func(r *receipt.Receipt) { r.Federation = "f2" }, func(r *receipt.Receipt) { r.Round = 2 },
		func(r *receipt.Receipt) { r.Attempt = 1 }, func(r *receipt.Receipt) { r.Gateway = "h" },
		func(r *receipt.Receipt) { r.StartSHA256 = "c" }, func(r *receipt.Receipt) { r.UpdateSHA256 = "c" },
		func(r *receipt.Receipt) { r.RowsCommitment = "c" }, func(r *receipt.Receipt) { r.Time = time.Unix(2, 0) },
	} {
		r := base
		change(&r)
		b := string(r.SigningBytes())
		if seen[b] || !strings.HasPrefix(b, receipt.Domain+"\n") {
			t.Fatalf("signed bytes do not bind a field or lack the domain: %q", b)
		}
		seen[b] = true
	}
	if receipt.UpdateSHA256([]uint32{1, 2}) == receipt.UpdateSHA256([]uint32{2, 1}) {
		t.Fatal("update hash ignores order")
	}
}

// A missing record, or one with nothing in it, is a clear error, not a pass.
func TestVerifyEmpty(t *testing.T) {
	if err := receipt.Verify(nil, "", "", p2p.VerifyPeerSignature); err == nil || !strings.Contains(err.Error(), "no federation provenance") {
		t.Fatal(err)
	}
	if err := receipt.Verify(&receipt.Federation{ID: "x"}, "", hash("w"), p2p.VerifyPeerSignature); err == nil || !strings.Contains(err.Error(), "lists no rounds") {
		t.Fatal(err)
	}
}
