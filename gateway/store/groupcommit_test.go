package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/wire"
)

// TestCommitBatch runs one batch through the committer's logic directly: a
// write that fails (after writing part of its work) or panics is answered
// with its error and leaves nothing behind; the others commit. Writes too big
// to share one transaction are split over several.
func TestCommitBatch(t *testing.T) {
	s := openTest(t, t.TempDir())
	set := func(key string, val []byte) func(*badger.Txn) error {
		return func(txn *badger.Txn) error { return txn.Set([]byte(key), val) }
	}
	errBoom := errors.New("boom")
	big := bytes.Repeat([]byte{'x'}, 512<<10) // kept in the LSM tree; five exceed one transaction
	var ws []*write
	add := func(fn func(*badger.Txn) error) *write {
		w := &write{fn: fn, done: make(chan error, 1)}
		ws = append(ws, w)
		return w
	}
	ok1 := add(set("t/ok1", []byte("1")))
	failing := add(func(txn *badger.Txn) error {
		if err := txn.Set([]byte("t/partial"), []byte("p")); err != nil {
			return err
		}
		return errBoom
	})
	panicking := add(func(txn *badger.Txn) error {
		_ = txn.Set([]byte("t/panic"), []byte("p"))
		panic("a bug in a write function") // the panic is the point
	})
	// reads what ok1 wrote, as if ok1 had committed first
	sawOK1 := add(func(txn *badger.Txn) error {
		v, err := getBytes(txn, "t/ok1")
		if err != nil {
			return err
		}
		return txn.Set([]byte("t/saw"), v)
	})
	var bigs []*write
	for i := range 6 {
		bigs = append(bigs, add(set(fmt.Sprintf("t/big%d", i), big)))
	}
	s.commitBatch(ws)

	for _, w := range append([]*write{ok1, sawOK1}, bigs...) {
		if err := <-w.done; err != nil {
			t.Fatalf("a good write failed: %v", err)
		}
	}
	if err := <-failing.done; !errors.Is(err, errBoom) {
		t.Fatalf("failing write answered %v", err)
	}
	if err := <-panicking.done; err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("panicking write answered %v", err)
	}
	_ = s.view(func(txn *badger.Txn) error {
		for _, k := range []string{"t/partial", "t/panic"} {
			if ok, err := exists(txn, k); err != nil || ok {
				t.Errorf("%s left behind by a failed write (%v)", k, err)
			}
		}
		if v, err := getBytes(txn, "t/saw"); err != nil || string(v) != "1" {
			t.Errorf("t/saw = %q, %v", v, err)
		}
		for i := range bigs {
			if v, err := getBytes(txn, fmt.Sprintf("t/big%d", i)); err != nil || len(v) != len(big) {
				t.Errorf("big%d: %d bytes, %v", i, len(v), err)
			}
		}
		return nil
	})
	// A write alone too big for a transaction is refused, not retried forever.
	huge := add(func(txn *badger.Txn) error {
		for i := range 64 {
			if err := txn.Set(fmt.Appendf(nil, "t/huge%d", i), big); err != nil {
				return err
			}
		}
		return nil
	})
	s.commitBatch([]*write{huge})
	if err := <-huge.done; !errors.Is(err, badger.ErrTxnTooBig) {
		t.Fatalf("huge write answered %v", err)
	}
}

// TestWritesAfterClose: a write to a closed store is refused, and Close
// returns once the committer has stopped.
func TestWritesAfterClose(t *testing.T) {
	s, err := Open(t.TempDir(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Setup("owner@example.org", "owner-password", "Owner"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.update(func(txn *badger.Txn) error { return txn.Set([]byte("t/late"), []byte("x")) }); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

const burstDirEnv = "FEDGRID_STORE_BURST_DIR"

// burstBudget is the budget the burst exhausts; burstSpenders spend at once.
const (
	burstBudget   = 3000
	burstSpenders = 32
)

// TestBurstHelper is not a test on its own: TestBurstSurvivesKill runs it in
// a child process, which spends from many goroutines until it is killed.
func TestBurstHelper(t *testing.T) {
	dir := os.Getenv(burstDirEnv)
	if dir == "" {
		t.Skip("helper process for TestBurstSurvivesKill")
	}
	fail := func(err error) {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	s, err := Open(dir, nil)
	if err != nil {
		fail(err)
	}
	owner, err := s.Setup("owner@example.org", "owner-password", "Owner")
	if err != nil {
		fail(err)
	}
	u, err := s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1", BudgetMicroEps: burstBudget, Actor: owner.ID})
	if err != nil {
		fail(err)
	}
	fmt.Println("READY", u.ID)
	var wg sync.WaitGroup
	for g := range burstSpenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				reason := fmt.Sprintf("burst-%d-%d", g, i)
				err := s.Spend(u.ID, "", 1, owner.ID, reason)
				switch {
				case err == nil:
					// Printed only after the spend was acknowledged: it must survive.
					fmt.Println("SPENT", reason)
				case errors.Is(err, ErrInsufficientBudget):
					fmt.Println("REFUSED", reason)
				default:
					fail(err)
				}
			}
		}()
	}
	wg.Wait() // never returns: the parent kills this process
}

// TestBurstSurvivesKill kills (SIGKILL) a process while 32 goroutines spend
// from one budget through the group-committed ledger, once in the middle of
// the burst and once as the budget runs out, then checks the ledger against
// what the process had acknowledged: every acknowledged spend is there, at
// most one unacknowledged spend per spender is, the budget is never
// exceeded, and the ledger and the audit chain add up.
func TestBurstSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	for _, tc := range []struct {
		name   string
		killAt func(acked, refused int) bool
	}{
		{"mid-burst", func(acked, _ int) bool { return acked >= burstBudget/3 }},
		{"budget-exhausted", func(_, refused int) bool { return refused >= burstSpenders }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestBurstHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), burstDirEnv+"="+dir)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The process is killed either way; a deadline makes a stuck one fail.
			timer := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
			defer timer.Stop()
			var userID string
			acked := map[string]bool{}
			refused, killed := 0, false
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				line := sc.Text()
				if id, ok := strings.CutPrefix(line, "READY "); ok {
					userID = id
				}
				// A line read after the kill was sent was still written before the
				// process died (stdout is unbuffered): its spend was acknowledged
				// and counts, or the bound below would miss what sat in the pipe.
				if r, ok := strings.CutPrefix(line, "SPENT "); ok {
					acked[r] = true
				}
				if killed {
					continue
				}
				if strings.HasPrefix(line, "REFUSED ") {
					refused++
				}
				if strings.HasPrefix(line, "ERR") {
					_ = cmd.Process.Kill()
					t.Fatalf("helper: %s", line)
				}
				if tc.killAt(len(acked), refused) {
					if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
						t.Fatal(err)
					}
					killed = true
				}
			}
			_ = cmd.Wait()
			if !killed || userID == "" {
				t.Fatalf("helper stopped before the kill point: user %q, %d acknowledged, %d refused", userID, len(acked), refused)
			}

			s := openTest(t, dir)
			u, err := s.User(userID)
			if err != nil {
				t.Fatalf("user lost: %v", err)
			}
			ms, err := s.Ledger(userID)
			if err != nil {
				t.Fatal(err)
			}
			inLedger := map[string]bool{}
			for _, m := range ms {
				if m.Kind == MoveSpend {
					if inLedger[m.Reason] {
						t.Fatalf("spend %s recorded twice", m.Reason)
					}
					inLedger[m.Reason] = true
				}
			}
			for r := range acked {
				if !inLedger[r] {
					t.Fatalf("acknowledged spend %s lost", r)
				}
			}
			if u.SpentMicroEps != int64(len(inLedger)) {
				t.Fatalf("account spent %d, ledger has %d spends", u.SpentMicroEps, len(inLedger))
			}
			if u.SpentMicroEps > burstBudget || u.SpentMicroEps > int64(len(acked)+burstSpenders) {
				t.Fatalf("spent %d: budget %d, acknowledged %d", u.SpentMicroEps, burstBudget, len(acked))
			}
			if tc.name == "budget-exhausted" && u.SpentMicroEps != burstBudget {
				t.Fatalf("budget refused before it ran out: spent %d of %d", u.SpentMicroEps, burstBudget)
			}
			checkLedger(t, s, userID, burstBudget)
			n, err := s.VerifyAudit()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("killed after %d acknowledged, %d refused: %d spends in the ledger, %d audit entries verified",
				len(acked), refused, len(inLedger), n)
		})
	}
}

// TestCountJobs: the count from the state index agrees with the jobs listed.
func TestCountJobs(t *testing.T) {
	s := openTest(t, t.TempDir())
	var ids []string
	for range 3 {
		j := &Job{DatasetID: "d1", UserID: "u1", Requester: "peer"}
		if err := s.CreateJob(j); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	if _, err := s.Grant(ids[0], "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	for state, want := range map[string]int{wire.StateQueued: 2, wire.StateRunning: 1, wire.StateSucceeded: 0} {
		n, err := s.CountJobs(state)
		if err != nil || n != want {
			t.Fatalf("%s: %d jobs (%v), want %d", state, n, err, want)
		}
	}
	running, err := s.RunningJobs()
	if err != nil || len(running) != 1 || running[0].ID != ids[0] {
		t.Fatalf("running %v %v", running, err)
	}
}
