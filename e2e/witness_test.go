package e2e

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/crypto"
	"github.com/fedgrid/fedgrid/internal/harness"
)

// TestWitnessedAuditLog (issue 13, acceptance 6): a gateway publishes signed
// checkpoints of its audit chain to its network peer. Stopped, its audit log
// is cut and rehashed on disk, which plain `audit verify` cannot tell; it is
// restarted (its next checkpoint is refused by the witness) and stopped again:
// `audit verify --witness` names the first witnessed checkpoint that no
// longer matches. The --audit-log export holds every entry as a JSON line.
func TestWitnessedAuditLog(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t, 3*time.Minute)
	network := networkName(t)
	netPeer, err := h.StartNetwork(ctx, "network", harness.PeerOptions{Network: network})
	if err != nil {
		t.Fatal(err)
	}
	exported := filepath.Join(h.Dir(), "audit.jsonl")
	opts := harness.PeerOptions{Network: network, Bootstrap: []string{netPeer.Addr()}, Extra: []string{"--witness-interval", "200ms", "--audit-log", exported}}
	site, err := h.StartSite(ctx, "gateway", "Hospital A", "owner@a.example", "owner password a", opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := site.Admin.CreateUser(ctx, harness.NewUser{Email: fmt.Sprintf("ds%d@a.example", i), Password: "a long ds password", Role: harness.RoleDataScientist}); err != nil {
			t.Fatal(err)
		}
	}
	var head struct {
		Entries int `json:"entries"`
	}
	if err := site.Admin.DoJSON(ctx, "GET", "/api/v1/audit/verify", nil, &head); err != nil {
		t.Fatal(err)
	}
	witnessed := regexp.MustCompile(`audit checkpoint witnessed.*seq=(\d+)`)
	waitFor(t, ctx, "the witness to hold the head", func() bool {
		for _, m := range witnessed.FindAllStringSubmatch(string(site.Gateway.Stderr()), -1) {
			if n, _ := strconv.Atoi(m[1]); n >= head.Entries {
				return true
			}
		}
		return false
	})
	if err := site.Gateway.StopWithin(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	lines := jsonLines(t, exported)
	if len(lines) < head.Entries || lines[0] != 1 {
		t.Fatalf("audit log export has seqs %v, want 1..%d at least", lines, head.Entries)
	}

	dataDir := h.Path("peers", "gateway")
	dropped := dropAndRehash(t, filepath.Join(dataDir, "db"), 3)
	t.Logf("dropped entry 3 (%s) and rehashed %d entries", dropped, head.Entries-3)
	res, err := h.Run(ctx, "audit", "verify", "--data", dataDir)
	if err != nil || !strings.Contains(string(res.Stdout), "intact") {
		t.Fatalf("the rehashed chain should pass on its own (that is the attack): %v %s", err, res.Stderr)
	}

	gw, err := h.StartGateway(ctx, "gateway", "Hospital A", opts) // same data directory
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the witness to refuse the rewritten head", func() bool {
		return strings.Contains(string(gw.Stderr()), "the audit witness refused")
	})
	if err := gw.StopWithin(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	res, _ = h.Run(ctx, "audit", "verify", "--data", dataDir, "--witness", netPeer.Addr(), "--network", network)
	msg := string(res.Stderr)
	t.Logf("audit verify --witness: exit %d: %s", res.ExitCode, msg)
	if res.ExitCode != 1 || !strings.Contains(msg, "checkpoint ") || !strings.Contains(msg, "no longer matches") && !strings.Contains(msg, "truncated") {
		t.Fatalf("audit verify --witness did not name the checkpoint: exit %d, %s %s", res.ExitCode, res.Stdout, msg)
	}
}

// waitFor polls cond every 50 ms until it holds or ctx ends.
func waitFor(t *testing.T, ctx interface {
	Done() <-chan struct{}
	Err() error
}, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func jsonLines(t *testing.T, path string) []uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var seqs []uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct {
			Seq  uint64 `json:"seq"`
			Hash string `json:"hash"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Hash == "" {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// dropAndRehash is the attacker with write access to a stopped gateway's
// data directory: it removes audit entry drop, renumbers the entries after
// it and recomputes every hash and the head, so that the chain verifies.
func dropAndRehash(t *testing.T, dir string, drop uint64) string {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	type stored struct {
		Payload json.RawMessage `json:"payload"`
		Hash    string          `json:"hash"`
	}
	key := func(seq uint64) []byte { return []byte(fmt.Sprintf("audit/%020d", seq)) }
	var action string
	err = db.Update(func(txn *badger.Txn) error {
		var entries []map[string]any
		var hashes []string
		for seq := uint64(1); ; seq++ {
			item, err := txn.Get(key(seq))
			if err == badger.ErrKeyNotFound {
				break
			}
			if err != nil {
				return err
			}
			var st stored
			if err := item.Value(func(b []byte) error { return json.Unmarshal(b, &st) }); err != nil {
				return err
			}
			var p map[string]any
			if err := json.Unmarshal(st.Payload, &p); err != nil {
				return err
			}
			entries, hashes = append(entries, p), append(hashes, st.Hash)
		}
		action, _ = entries[drop-1]["action"].(string)
		// The entries before drop stay as they are; the rest move up one.
		prev := crypto.ChainGenesis
		if drop > 1 {
			prev, _ = hex.DecodeString(hashes[drop-2])
		}
		rest := entries[drop:]
		for i, p := range rest {
			seq := drop + uint64(i)
			p["seq"], p["prev"] = seq, hex.EncodeToString(prev)
			payload, err := json.Marshal(p)
			if err != nil {
				return err
			}
			prev = crypto.ChainHash(prev, seq, payload)
			b, _ := json.Marshal(stored{Payload: payload, Hash: hex.EncodeToString(prev)})
			if err := txn.Set(key(seq), b); err != nil {
				return err
			}
		}
		if err := txn.Delete(key(uint64(len(entries)))); err != nil {
			return err
		}
		entries = entries[:len(entries)-1]
		hb, _ := json.Marshal(map[string]any{"seq": len(entries), "hash": hex.EncodeToString(prev)})
		return txn.Set([]byte("meta/audit-head"), hb)
	})
	if err != nil {
		t.Fatal(err)
	}
	return action
}
