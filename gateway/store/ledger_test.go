package store

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// TestBudgetNeverOverspent: 64 goroutines each make 200 spends of 1
// micro-epsilon against one budget of 5,000, mixing one-step spends with
// reserve-then-commit and reserve-then-refund. The budget is never exceeded,
// never negative, and the ledger adds up to what was granted.
func TestBudgetNeverOverspent(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	s := openTest(t, t.TempDir())
	owner := setupTest(t, s)
	const budget = 5_000
	u, err := s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1", BudgetMicroEps: budget, Actor: owner.ID})
	if err != nil {
		t.Fatal(err)
	}
	d := &Dataset{Name: "d"}
	if err := s.PutDataset(d, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	var spent, refused, refunded atomic.Int64
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				var err error
				switch (g + i) % 3 {
				case 0:
					err = s.Spend(u.ID, d.ID, 1, "", "query")
				case 1, 2:
					var r *Reservation
					r, err = s.Reserve(u.ID, d.ID, 1, "", "job")
					if err == nil {
						if (g+i)%3 == 1 {
							_, err = s.Commit(r.ID, "", "released")
						} else {
							_, err = s.Refund(r.ID, "", "denied")
							if err == nil {
								refunded.Add(1)
								continue
							}
						}
					}
				}
				switch {
				case err == nil:
					spent.Add(1)
				case errors.Is(err, ErrInsufficientBudget):
					refused.Add(1)
				default:
					t.Errorf("spend: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got, err := s.User(u.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("spent %d, refused %d, refunded %d; user %+v", spent.Load(), refused.Load(), refunded.Load(), got)
	if got.SpentMicroEps != spent.Load() || got.SpentMicroEps > budget {
		t.Fatalf("spent %d (counted %d), budget %d", got.SpentMicroEps, spent.Load(), budget)
	}
	if got.BudgetMicroEps < 0 || got.ReservedMicroEps != 0 {
		t.Fatalf("available %d, reserved %d", got.BudgetMicroEps, got.ReservedMicroEps)
	}
	if got.BudgetMicroEps+got.SpentMicroEps != budget {
		t.Fatalf("available %d + spent %d != granted %d", got.BudgetMicroEps, got.SpentMicroEps, budget)
	}
	if spent.Load()+refused.Load()+refunded.Load() != 64*200 {
		t.Fatalf("outcomes %d", spent.Load()+refused.Load()+refunded.Load())
	}
	checkLedger(t, s, u.ID, budget)
	if _, err := s.VerifyAudit(); err != nil {
		t.Fatal(err)
	}
}

// checkLedger replays a user's movements and compares with the account.
func checkLedger(t *testing.T, s *Store, userID string, granted int64) {
	t.Helper()
	ms, err := s.Ledger(userID)
	if err != nil {
		t.Fatal(err)
	}
	var grant, avail, reserved, spent int64
	for _, m := range ms {
		switch m.Kind {
		case MoveGrant:
			grant += m.AmountMicroEps
			avail += m.AmountMicroEps
		case MoveReserve:
			avail -= m.AmountMicroEps
			reserved += m.AmountMicroEps
		case MoveCommit:
			reserved -= m.AmountMicroEps
			spent += m.AmountMicroEps
		case MoveRefund:
			reserved -= m.AmountMicroEps
			avail += m.AmountMicroEps
		case MoveSpend:
			avail -= m.AmountMicroEps
			spent += m.AmountMicroEps
		default:
			t.Fatalf("unknown movement %+v", m)
		}
		if avail < 0 {
			t.Fatalf("ledger goes negative at %+v", m)
		}
	}
	u, err := s.User(userID)
	if err != nil {
		t.Fatal(err)
	}
	if grant != granted || avail != u.BudgetMicroEps || reserved != u.ReservedMicroEps || spent != u.SpentMicroEps {
		t.Fatalf("ledger grant %d avail %d reserved %d spent %d; account %+v; granted %d", grant, avail, reserved, spent, u, granted)
	}
}

func TestReservationLifecycleAndCaps(t *testing.T) {
	s := openTest(t, t.TempDir())
	owner := setupTest(t, s)
	u, err := s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1", BudgetMicroEps: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	d := &Dataset{Name: "d"}
	if err := s.PutDataset(d, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	r, err := s.Reserve(u.ID, d.ID, 400_000, owner.ID, "job 1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reserve(u.ID, d.ID, 700_000, owner.ID, "too much"); !errors.Is(err, ErrInsufficientBudget) {
		t.Fatalf("overdraft: %v", err)
	}
	if _, err := s.Commit(r.ID, owner.ID, "released"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(r.ID, owner.ID, "again"); !errors.Is(err, ErrConflictState) {
		t.Fatalf("double commit: %v", err)
	}
	if _, err := s.Refund(r.ID, owner.ID, "after commit"); !errors.Is(err, ErrConflictState) {
		t.Fatalf("refund after commit: %v", err)
	}
	// A per-dataset cap below the remaining budget.
	if err := s.SetDatasetCap(u.ID, d.ID, 500_000, owner.ID); err != nil {
		t.Fatal(err)
	}
	r2, err := s.Reserve(u.ID, d.ID, 100_000, owner.ID, "job 2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reserve(u.ID, d.ID, 100_000, owner.ID, "over cap"); !errors.Is(err, ErrInsufficientBudget) {
		t.Fatalf("cap: %v", err)
	}
	if _, err := s.Refund(r2.ID, owner.ID, "denied"); err != nil {
		t.Fatal(err)
	}
	// The refund freed cap room.
	if err := s.Spend(u.ID, d.ID, 100_000, owner.ID, "query"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GrantBudget(u.ID, -10_000_000, owner.ID, "too much taken"); !errors.Is(err, ErrInsufficientBudget) {
		t.Fatalf("negative grant: %v", err)
	}
	if _, err := s.GrantBudget(u.ID, 250_000, owner.ID, "more"); err != nil {
		t.Fatal(err)
	}
	got, _ := s.User(u.ID)
	if got.BudgetMicroEps != 750_000 || got.SpentMicroEps != 500_000 || got.ReservedMicroEps != 0 {
		t.Fatalf("account %+v", got)
	}
	checkLedger(t, s, u.ID, 1_250_000)
	ms, _ := s.Ledger(u.ID)
	for _, m := range ms {
		if m.Time.IsZero() || m.Kind == "" || (m.Kind != MoveGrant && m.Reason == "") {
			t.Fatalf("movement without who/what/when/why: %+v", m)
		}
	}
	es, err := s.Audit(AuditFilter{Action: "budget."})
	if err != nil || len(es) != len(ms)+1 { // + the cap
		t.Fatalf("audited budget events %d, movements %d: %v", len(es), len(ms), err)
	}
}

// BenchmarkBudgetSpend64 measures one-step budget spends per second with 64
// concurrent spenders on one account (the worst case: every spend conflicts).
func BenchmarkBudgetSpend64(b *testing.B) { benchSpend(b, 64) }

// BenchmarkBudgetSpend1 is the peer of BenchmarkBudgetSpend64 in the same
// run: one spender, so every spend has its own fsync (no group to share it).
func BenchmarkBudgetSpend1(b *testing.B) { benchSpend(b, 1) }

func benchSpend(b *testing.B, spenders int) {
	s := openTest(b, b.TempDir())
	setupTest(b, s)
	u, err := s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1", BudgetMicroEps: 1 << 50})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range spenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := s.Spend(u.ID, "", 1, "", "bench"); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "spends/s")
}

// BenchmarkBudgetReserveCommit64 is the job path: reserve, then commit, 64 spenders.
func BenchmarkBudgetReserveCommit64(b *testing.B) {
	s := openTest(b, b.TempDir())
	setupTest(b, s)
	u, err := s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1", BudgetMicroEps: 1 << 50})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				r, err := s.Reserve(u.ID, "", 1, "", "bench")
				if err == nil {
					_, err = s.Commit(r.ID, "", "bench")
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "spends/s")
}
