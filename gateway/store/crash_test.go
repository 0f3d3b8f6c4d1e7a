package store

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

const crashDirEnv = "FEDGRID_STORE_CRASH_DIR"

// TestCrashHelper is not a test on its own: TestSurvivesKill runs it in a
// child process, which writes until it is killed.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestSurvivesKill")
	}
	s, err := Open(dir, nil)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	owner, err := s.Setup("owner@example.org", "owner-password", "Owner")
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	if _, err := s.CreateRole(Role{Name: "Auditor", Permissions: []Permission{PermEditSettings}}, owner.ID); err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	u, err := s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1", Role: "Auditor", BudgetMicroEps: 1 << 40, Actor: owner.ID})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	fmt.Println("READY", u.ID)
	for i := 1; ; i++ {
		select {
		case <-term:
			err := s.Close()
			fmt.Println("CLOSED", err)
			os.Exit(0)
		default:
		}
		if err := s.Spend(u.ID, "", 1, owner.ID, "crash test"); err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		// Printed only after the commit returned: this spend must survive.
		fmt.Println("SPENT", i)
	}
}

func TestSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			var userID string
			acked := 0
			deadline := time.Now().Add(60 * time.Second)
			for sc.Scan() {
				line := sc.Text()
				if id, ok := strings.CutPrefix(line, "READY "); ok {
					userID = id
				}
				if n, ok := strings.CutPrefix(line, "SPENT "); ok {
					acked, _ = strconv.Atoi(n)
					if acked == 200 {
						if err := cmd.Process.Signal(sig); err != nil {
							t.Fatal(err)
						}
					}
				}
				if strings.HasPrefix(line, "ERR") {
					t.Fatalf("helper: %s", line)
				}
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					t.Fatal("helper too slow")
				}
			}
			werr := cmd.Wait()
			if sig == syscall.SIGTERM && werr != nil {
				t.Fatalf("clean shutdown exited with %v", werr)
			}
			if userID == "" || acked < 200 {
				t.Fatalf("helper did not get going: user %q, %d spends", userID, acked)
			}

			// audit verify straight after the crash, before any restart.
			if n, err := VerifyAuditDir(dir); err != nil || n < acked {
				t.Fatalf("VerifyAuditDir after %s: %d entries, %v", sig, n, err)
			}
			s := openTest(t, dir)
			u, err := s.User(userID)
			if err != nil {
				t.Fatalf("user lost: %v", err)
			}
			if u.Role != "Auditor" {
				t.Fatalf("role assignment lost: %+v", u)
			}
			if r, err := s.Role("Auditor"); err != nil || !r.Has(PermEditSettings) {
				t.Fatalf("custom role lost: %v %v", r, err)
			}
			// Every acknowledged spend survived; at most the one in flight is extra.
			if u.SpentMicroEps < int64(acked) || u.SpentMicroEps > int64(acked)+1 {
				t.Fatalf("spent %d, acknowledged %d", u.SpentMicroEps, acked)
			}
			checkLedger(t, s, userID, 1<<40)
			n, err := s.VerifyAudit()
			if err != nil {
				t.Fatalf("audit after %s: %v", sig, err)
			}
			t.Logf("%s after %d acknowledged spends: spent %d, %d audit entries verified", sig, acked, u.SpentMicroEps, n)
		})
	}
}

func TestAuditDetectsTampering(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	owner := setupTest(t, s)
	for i := range 5 {
		if _, err := s.GrantBudget(owner.ID, int64(i+1), owner.ID, "seed"); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.VerifyAudit()
	if err != nil || n != 6 {
		t.Fatalf("clean chain: %d %v", n, err)
	}
	key := []byte(auditKey(3))
	var orig []byte
	if err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		orig, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	set := func(k, v []byte) {
		t.Helper()
		if err := s.db.Update(func(txn *badger.Txn) error {
			if v == nil {
				return txn.Delete(k)
			}
			return txn.Set(k, v)
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Flip each byte of the stored entry in turn: every single flip is caught.
	for i := range orig {
		b := append([]byte(nil), orig...)
		b[i] ^= 0x01
		set(key, b)
		if _, err := s.VerifyAudit(); !errors.Is(err, ErrAuditBroken) {
			t.Fatalf("flip of byte %d (%q) not detected: %v", i, orig[i], err)
		}
	}
	set(key, orig)
	if _, err := s.VerifyAudit(); err != nil {
		t.Fatalf("restored: %v", err)
	}
	// A missing entry in the middle, and a missing last entry.
	set(key, nil)
	if _, err := s.VerifyAudit(); !errors.Is(err, ErrAuditBroken) {
		t.Fatalf("missing entry not detected: %v", err)
	}
	set(key, orig)
	last := []byte(auditKey(6))
	var lastVal []byte
	_ = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(last)
		if err == nil {
			lastVal, err = item.ValueCopy(nil)
		}
		return err
	})
	set(last, nil)
	if _, err := s.VerifyAudit(); !errors.Is(err, ErrAuditBroken) {
		t.Fatalf("truncated chain not detected: %v", err)
	}
	set(last, lastVal)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := VerifyAuditDir(dir); err != nil || n != 6 {
		t.Fatalf("VerifyAuditDir: %d %v", n, err)
	}
	// Tampering is caught through VerifyAuditDir too.
	s2 := openTest(t, dir)
	b := append([]byte(nil), orig...)
	b[len(b)/2] ^= 0x01
	if err := s2.db.Update(func(txn *badger.Txn) error { return txn.Set(key, b) }); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyAuditDir(dir); !errors.Is(err, ErrAuditBroken) {
		t.Fatalf("VerifyAuditDir on a tampered store: %v", err)
	}
	// A directory without a store is an error, and is left without one.
	empty := t.TempDir()
	if _, err := VerifyAuditDir(empty); err == nil {
		t.Fatal("VerifyAuditDir on an empty directory succeeded")
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Fatalf("VerifyAuditDir created %d files in an empty directory", len(ents))
	}
}

// TestVerifyAuditDirInUse: a store a running gateway holds open is reported
// as in use, not as a broken chain.
func TestVerifyAuditDirInUse(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	setupTest(t, s)
	_, err := VerifyAuditDir(dir)
	if !errors.Is(err, ErrInUse) || errors.Is(err, ErrAuditBroken) {
		t.Fatalf("VerifyAuditDir of an open store: %v, want ErrInUse", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyAuditDir(dir); err != nil {
		t.Fatalf("after Close: %v", err)
	}
}
