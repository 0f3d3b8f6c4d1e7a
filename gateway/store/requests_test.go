package store

import (
	"errors"
	"github.com/fedgrid/fedgrid/wire"
	"sync"
	"testing"
	"time"
)

type complianceEnv struct {
	s       *Store
	owner   *User
	officer [2]*User
	ds      *User
	priv    *Dataset
}

func newComplianceEnv(t *testing.T, budget int64) *complianceEnv {
	t.Helper()
	s := openTest(t, t.TempDir())
	e := &complianceEnv{s: s, owner: setupTest(t, s)}
	var err error
	for i := range e.officer {
		if e.officer[i], err = s.CreateUser(NewUser{Email: string(rune('p'+i)) + "@example.org", Password: "password1", Role: RoleComplianceOfficer}); err != nil {
			t.Fatal(err)
		}
	}
	if e.ds, err = s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1", Role: RoleDataScientist, BudgetMicroEps: budget, Actor: e.owner.ID}); err != nil {
		t.Fatal(err)
	}
	e.priv = &Dataset{Name: "priv", Visibility: VisibilityPrivate, Tags: []string{"medical", "cohort-a"}}
	if err := s.PutDataset(e.priv, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	return e
}

// succeed runs a job through grant and completion.
func (e *complianceEnv) succeed(t *testing.T, eps int64, dp bool) *Job {
	t.Helper()
	j := &Job{DatasetID: e.priv.ID, UserID: e.ds.ID, EpsilonMicroEps: eps, DP: dp, Delta: 1e-5, PlanTable: "param  shape", Review: true}
	var err error
	if eps > 0 {
		err = e.s.CreateJobReserving(j, eps)
	} else {
		err = e.s.CreateJob(j)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Grant(j.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Complete(j.ID, 1, "node", []byte(`{"model":1}`), []byte(`{"train_loss":[0.5]}`)); err != nil {
		t.Fatal(err)
	}
	out, err := e.s.Job(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *complianceEnv) user(t *testing.T) *User {
	t.Helper()
	u, err := e.s.User(e.ds.ID)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestReleaseApproveChargesOnce: the job's epsilon is reserved at submit;
// the result waits in a pending request; two officers approving at the same
// moment charge it exactly once.
func TestReleaseApproveChargesOnce(t *testing.T) {
	e := newComplianceEnv(t, 2_000_000)
	j := e.succeed(t, 734_512, true)
	if j.Release != wire.ReleasePending || released(j) || j.RequestID == "" {
		t.Fatalf("private result not pending: %+v", j)
	}
	if u := e.user(t); u.BudgetMicroEps != 2_000_000-734_512 || u.ReservedMicroEps != 734_512 || u.SpentMicroEps != 0 {
		t.Fatalf("after submit: %+v", u)
	}
	r, err := e.s.GetRequest(j.RequestID)
	if err != nil || r.State != wire.RequestPending || r.EpsilonMicroEps != 734_512 || r.PlanTable == "" || string(r.Metrics) == "" {
		t.Fatalf("request %+v, %v", r, err)
	}
	// The requester cannot decide their own request.
	if _, err := e.s.Decide(r.ID, true, e.ds.ID, ""); !errors.Is(err, ErrForbidden) {
		t.Fatalf("self-approval: %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(e.officer))
	start := make(chan struct{})
	for i, o := range e.officer {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = e.s.Decide(r.ID, true, o.ID, "fine")
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrConflictState):
		default:
			t.Fatal(err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d approvals succeeded, want 1: %v", ok, errs)
	}
	u := e.user(t)
	if u.SpentMicroEps != 734_512 || u.ReservedMicroEps != 0 || u.BudgetMicroEps != 2_000_000-734_512 {
		t.Fatalf("after approval: %+v", u)
	}
	j, _ = e.s.Job(j.ID)
	r, _ = e.s.GetRequest(r.ID)
	if !released(j) || r.State != wire.RequestApproved || r.Decision == nil || r.Decision.ChargedMicroEps != 734_512 || r.Decision.At.IsZero() ||
		(r.Decision.Reviewer != e.officer[0].ID && r.Decision.Reviewer != e.officer[1].ID) {
		t.Fatalf("after approval: job %+v request %+v", j, r.Decision)
	}
	// Denying it now is too late.
	if _, err := e.s.Decide(r.ID, false, e.officer[0].ID, "changed my mind"); !errors.Is(err, ErrConflictState) {
		t.Fatalf("deny after approve: %v", err)
	}
	// Ledger: one reserve, one commit.
	moves, _ := e.s.Ledger(e.ds.ID)
	kinds := map[string]int{}
	for _, m := range moves {
		kinds[m.Kind]++
	}
	if kinds[MoveCommit] != 1 || kinds[MoveReserve] != 1 || kinds[MoveRefund] != 0 {
		t.Fatalf("ledger %v", kinds)
	}
}

// TestReleaseDenyRefunds: a denial needs a reason and charges nothing; a
// failed or cancelled job gets its reservation back; a job the budget cannot
// cover is not created.
func TestReleaseDenyRefunds(t *testing.T) {
	e := newComplianceEnv(t, 1_000_000)
	j := e.succeed(t, 600_000, true)
	if _, err := e.s.Decide(j.RequestID, false, e.officer[0].ID, "  "); !errors.Is(err, ErrInvalid) {
		t.Fatalf("deny without reason: %v", err)
	}
	if _, err := e.s.Decide(j.RequestID, false, e.officer[0].ID, "too close to re-identification"); err != nil {
		t.Fatal(err)
	}
	if u := e.user(t); u.BudgetMicroEps != 1_000_000 || u.ReservedMicroEps != 0 || u.SpentMicroEps != 0 {
		t.Fatalf("after deny: %+v", u)
	}
	j, _ = e.s.Job(j.ID)
	if released(j) || j.Release != wire.ReleaseDenied || j.ReleaseReason != "too close to re-identification" {
		t.Fatalf("denied job %+v", j)
	}
	// Beyond the budget: no job.
	big := &Job{DatasetID: e.priv.ID, UserID: e.ds.ID, EpsilonMicroEps: 1_000_001, DP: true}
	if err := e.s.CreateJobReserving(big, 1_000_001); !errors.Is(err, ErrInsufficientBudget) {
		t.Fatalf("over budget: %v", err)
	}
	if js, _ := e.s.Jobs(JobFilter{UserID: e.ds.ID}); len(js) != 1 {
		t.Fatalf("%d jobs, want 1 (the refused one must not exist)", len(js))
	}
	// Failure and cancellation refund.
	f := &Job{DatasetID: e.priv.ID, UserID: e.ds.ID, EpsilonMicroEps: 400_000, DP: true}
	if err := e.s.CreateJobReserving(f, 400_000); err != nil {
		t.Fatal(err)
	}
	c := &Job{DatasetID: e.priv.ID, UserID: e.ds.ID, EpsilonMicroEps: 500_000, DP: true}
	if err := e.s.CreateJobReserving(c, 500_000); err != nil {
		t.Fatal(err)
	}
	if u := e.user(t); u.BudgetMicroEps != 100_000 || u.ReservedMicroEps != 900_000 {
		t.Fatalf("two held: %+v", u)
	}
	if _, err := e.s.Grant(f.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Fail(f.ID, 1, "node", "boom"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.CancelBy(c.ID, e.ds.ID); err != nil {
		t.Fatal(err)
	}
	if u := e.user(t); u.BudgetMicroEps != 1_000_000 || u.ReservedMicroEps != 0 || u.SpentMicroEps != 0 {
		t.Fatalf("after fail and cancel: %+v", u)
	}
}

// TestApprovalRules: a rule approves a DP release on a dataset carrying its
// tags, within its epsilon, quota and expiry, and the decision is audited
// with the rule's ID; a non-DP plan is never approved by a rule; an
// override asking for review wins.
func TestApprovalRules(t *testing.T) {
	e := newComplianceEnv(t, 10_000_000)
	now := time.Now()
	expired, err := e.s.CreateRule(Rule{Tags: []string{"medical"}, MaxEpsilonMicroEps: 5_000_000, Quota: 10, ExpiresAt: now.Add(-time.Minute)}, e.owner.ID)
	if err != nil {
		t.Fatal(err)
	}
	otherTag, _ := e.s.CreateRule(Rule{Tags: []string{"medical", "oncology"}, MaxEpsilonMicroEps: 5_000_000, Quota: 10}, e.owner.ID)
	otherRole, _ := e.s.CreateRule(Rule{Tags: []string{"medical"}, Roles: []string{RoleAdministrator}, MaxEpsilonMicroEps: 5_000_000, Quota: 10}, e.owner.ID)
	rule, err := e.s.CreateRule(Rule{Tags: []string{"cohort-a"}, Roles: []string{RoleDataScientist}, MaxEpsilonMicroEps: 1_000_000, Quota: 1, ExpiresAt: now.Add(time.Hour)}, e.owner.ID)
	if err != nil {
		t.Fatal(err)
	}
	_ = expired
	_ = otherTag
	_ = otherRole
	if _, err := e.s.CreateRule(Rule{MaxEpsilonMicroEps: 1, Quota: 1}, e.owner.ID); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rule without tags: %v", err)
	}

	over := e.succeed(t, 1_000_001, true) // above the rule's epsilon
	if over.Release != wire.ReleasePending {
		t.Fatalf("over max epsilon: %s", over.Release)
	}
	nodp := e.succeed(t, 0, false)
	if nodp.Release != wire.ReleasePending {
		t.Fatalf("non-DP result auto-released: %s", nodp.Release)
	}
	r, _ := e.s.GetRequest(nodp.RequestID)
	if r.DP || r.Guarantee == "" {
		t.Fatalf("non-DP request does not say it has no guarantee: %+v", r)
	}
	ok := e.succeed(t, 1_000_000, true)
	if ok.Release != wire.ReleaseApproved || !released(ok) {
		t.Fatalf("matching rule did not approve: %+v", ok)
	}
	r, _ = e.s.GetRequest(ok.RequestID)
	if r.State != wire.RequestApproved || r.Decision.RuleID != rule.ID || r.Decision.Reviewer != ReviewerRulePrefix+rule.ID || r.Decision.ChargedMicroEps != 1_000_000 {
		t.Fatalf("rule decision %+v", r.Decision)
	}
	audit, _ := e.s.Audit(AuditFilter{Action: "request.approve"})
	if len(audit) != 1 || audit[0].Detail["rule_id"] != rule.ID || audit[0].Actor != ReviewerRulePrefix+rule.ID {
		t.Fatalf("audit %+v", audit)
	}
	// Quota used up.
	if again := e.succeed(t, 1, true); again.Release != wire.ReleasePending {
		t.Fatalf("rule approved past its quota: %s", again.Release)
	}
	if got, _ := e.s.GetRule(rule.ID); got.Used != 1 {
		t.Fatalf("used %d", got.Used)
	}
	// An override asking for review beats a fresh rule; one allowing auto-release releases.
	if _, err := e.s.UpdateRule(rule.ID, e.owner.ID, func(r *Rule) { r.Quota = 5 }); err != nil {
		t.Fatal(err)
	}
	no, yes := false, true
	if err := e.s.SetOverride(Override{DatasetID: e.priv.ID, UserID: e.ds.ID, AutoRelease: &no}, e.owner.ID); err != nil {
		t.Fatal(err)
	}
	if j := e.succeed(t, 1, true); j.Release != wire.ReleasePending {
		t.Fatalf("override review: %s", j.Release)
	}
	if err := e.s.SetOverride(Override{DatasetID: e.priv.ID, UserID: e.ds.ID, AutoRelease: &yes}, e.owner.ID); err != nil {
		t.Fatal(err)
	}
	before := e.user(t).SpentMicroEps
	j := e.succeed(t, 300, true)
	if j.Release != wire.ReleaseReleased || !released(j) {
		t.Fatalf("override auto-release: %+v", j)
	}
	if got := e.user(t).SpentMicroEps - before; got != 300 {
		t.Fatalf("auto-release charged %d, want 300", got)
	}
	// History is queryable by state and user.
	pend, _ := e.s.Requests(RequestFilter{State: wire.RequestPending, UserID: e.ds.ID})
	if len(pend) != 4 {
		t.Fatalf("%d pending, want 4", len(pend))
	}
	h, err := e.s.UserHistory(e.ds.ID, e.priv.ID)
	if err != nil || h.Releases[wire.RequestPending] != 4 || h.Releases[wire.RequestApproved] != 2 || h.SpentMicroEps != 1_000_300 {
		t.Fatalf("history %+v %v", h, err)
	}
}

// TestBudgetAndPermissionRequests: approving changes the budget or the override.
func TestBudgetAndPermissionRequests(t *testing.T) {
	e := newComplianceEnv(t, 0)
	no := false
	if err := e.s.SetOverride(Override{DatasetID: e.priv.ID, UserID: e.ds.ID, Train: &no}, e.owner.ID); err != nil {
		t.Fatal(err)
	}
	if d, _ := e.s.CanTrain(e.ds.ID, e.priv.ID); d.Allowed {
		t.Fatal("override ignored")
	}
	b, err := e.s.CreateRequest(NewRequest{Kind: wire.KindBudget, UserID: e.ds.ID, AmountMicroEps: 2_500_000, Reason: "cohort study"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.s.CreateRequest(NewRequest{Kind: wire.KindPermission, UserID: e.ds.ID, DatasetID: e.priv.ID, Permission: wire.AskTrain, Reason: "cohort study"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.CreateRequest(NewRequest{Kind: wire.KindBudget, UserID: e.ds.ID, AmountMicroEps: 1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no reason: %v", err)
	}
	if _, err := e.s.Decide(b.ID, true, e.officer[0].ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Decide(p.ID, true, e.officer[1].ID, "ok"); err != nil {
		t.Fatal(err)
	}
	if u := e.user(t); u.BudgetMicroEps != 2_500_000 {
		t.Fatalf("budget %d", u.BudgetMicroEps)
	}
	if d, _ := e.s.CanTrain(e.ds.ID, e.priv.ID); !d.Allowed {
		t.Fatalf("permission not granted: %+v", d)
	}
}

// TestWithdraw: the requester takes back a pending release request: the
// reservation is refunded, nothing is charged, the result is never
// releasable, and no officer can decide it afterwards. Someone else cannot
// withdraw it (it does not exist for them). A withdrawal racing an approval:
// exactly one wins and the budget adds up either way.
func TestWithdraw(t *testing.T) {
	e := newComplianceEnv(t, 2_000_000)
	j := e.succeed(t, 500_000, true)
	if _, err := e.s.Withdraw(j.RequestID, e.officer[0].ID, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("someone else's withdrawal: %v", err)
	}
	if _, err := e.s.Withdraw("no-such-request", e.ds.ID, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown request: %v", err)
	}
	r, err := e.s.Withdraw(j.RequestID, e.ds.ID, "  wrong feature set  ")
	if err != nil {
		t.Fatal(err)
	}
	if r.State != wire.RequestWithdrawn || r.Decision == nil || r.Decision.Reviewer != ReviewerRequester || r.Decision.Reason != "wrong feature set" || r.Decision.ChargedMicroEps != 0 {
		t.Fatalf("withdrawn request %+v %+v", r, r.Decision)
	}
	if u := e.user(t); u.BudgetMicroEps != 2_000_000 || u.ReservedMicroEps != 0 || u.SpentMicroEps != 0 {
		t.Fatalf("after withdrawal: %+v", u)
	}
	j, _ = e.s.Job(j.ID)
	if released(j) || j.Release != wire.ReleaseWithdrawn {
		t.Fatalf("withdrawn job %+v", j)
	}
	if _, err := e.s.Decide(r.ID, true, e.officer[0].ID, "fine"); !errors.Is(err, ErrConflictState) {
		t.Fatalf("approval after withdrawal: %v", err)
	}
	if _, err := e.s.Withdraw(r.ID, e.ds.ID, ""); !errors.Is(err, ErrConflictState) {
		t.Fatalf("second withdrawal: %v", err)
	}
	if evs, err := e.s.Audit(AuditFilter{Action: "request.withdraw"}); err != nil || len(evs) != 1 || evs[0].Actor != e.ds.ID || evs[0].Target != "request/"+r.ID {
		t.Fatalf("audit %v %v", evs, err)
	}

	// A budget request can be withdrawn too; it grants nothing.
	b, err := e.s.CreateRequest(NewRequest{Kind: wire.KindBudget, UserID: e.ds.ID, AmountMicroEps: 1_000_000, Reason: "more"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Withdraw(b.ID, e.ds.ID, ""); err != nil {
		t.Fatal(err)
	}
	if u := e.user(t); u.BudgetMicroEps != 2_000_000 {
		t.Fatalf("withdrawn budget request granted: %+v", u)
	}

	// Withdrawal against approval, many times: one wins, the ledger agrees.
	for range 20 {
		j := e.succeed(t, 100_000, true)
		before := e.user(t)
		var wg sync.WaitGroup
		var wErr, aErr error
		start := make(chan struct{})
		wg.Add(2)
		go func() { defer wg.Done(); <-start; _, wErr = e.s.Withdraw(j.RequestID, e.ds.ID, "") }()
		go func() { defer wg.Done(); <-start; _, aErr = e.s.Decide(j.RequestID, true, e.officer[1].ID, "") }()
		close(start)
		wg.Wait()
		if (wErr == nil) == (aErr == nil) || !(errors.Is(wErr, ErrConflictState) || errors.Is(aErr, ErrConflictState)) {
			t.Fatalf("withdraw %v, approve %v: want exactly one to win", wErr, aErr)
		}
		u := e.user(t)
		spent := u.SpentMicroEps - before.SpentMicroEps
		if u.ReservedMicroEps != before.ReservedMicroEps-100_000 || (aErr == nil) != (spent == 100_000) || (wErr == nil) != (spent == 0) {
			t.Fatalf("withdraw %v approve %v: before %+v after %+v", wErr, aErr, before, u)
		}
	}
}

// TestDeleteUserSettles: deleting an account cancels its unfinished jobs and
// withdraws its pending requests in the same transaction, so no reservation
// is left held for a user who no longer exists and nothing waits in the
// review queue for them. Other users' jobs are untouched.
func TestDeleteUserSettles(t *testing.T) {
	e := newComplianceEnv(t, 3_000_000)
	pending := e.succeed(t, 500_000, true) // a release waiting for review
	queued := &Job{DatasetID: e.priv.ID, UserID: e.ds.ID, EpsilonMicroEps: 400_000, DP: true}
	if err := e.s.CreateJobReserving(queued, 400_000); err != nil {
		t.Fatal(err)
	}
	running := &Job{DatasetID: e.priv.ID, UserID: e.ds.ID, EpsilonMicroEps: 300_000, DP: true}
	if err := e.s.CreateJobReserving(running, 300_000); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Grant(running.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	budget, err := e.s.CreateRequest(NewRequest{Kind: wire.KindBudget, UserID: e.ds.ID, AmountMicroEps: 1_000_000, Reason: "more"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.s.CreateUser(NewUser{Email: "other@example.org", Password: "password1", Role: RoleDataScientist})
	if err != nil {
		t.Fatal(err)
	}
	theirs := &Job{DatasetID: e.priv.ID, UserID: other.ID}
	if err := e.s.CreateJob(theirs); err != nil {
		t.Fatal(err)
	}
	if u := e.user(t); u.ReservedMicroEps != 1_200_000 {
		t.Fatalf("before: %+v", u)
	}

	if err := e.s.DeleteUser(e.ds.ID, e.owner.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{queued.ID, running.ID} {
		if j, _ := e.s.Job(id); j.State != wire.StateCancelled || j.Error == "" {
			t.Fatalf("job of a deleted user: %+v", j)
		}
	}
	if j, _ := e.s.Job(pending.ID); j.Release != wire.ReleaseWithdrawn || released(j) {
		t.Fatalf("pending release of a deleted user: %+v", j)
	}
	for _, id := range []string{pending.RequestID, budget.ID} {
		if r, _ := e.s.GetRequest(id); r.State != wire.RequestWithdrawn || r.Decision == nil || r.Decision.Reviewer != e.owner.ID {
			t.Fatalf("request of a deleted user: %+v", r)
		}
	}
	if rs, _ := e.s.Requests(RequestFilter{State: wire.RequestPending}); len(rs) != 0 {
		t.Fatalf("review queue still holds %d requests", len(rs))
	}
	moves, _ := e.s.Ledger(e.ds.ID)
	var reserved, refunded int64
	for _, m := range moves {
		switch m.Kind {
		case MoveReserve:
			reserved += m.AmountMicroEps
		case MoveRefund:
			refunded += m.AmountMicroEps
		case MoveCommit:
			t.Fatalf("a deleted user's reservation was charged: %+v", m)
		}
	}
	if reserved != 1_200_000 || refunded != reserved {
		t.Fatalf("ledger: reserved %d, refunded %d", reserved, refunded)
	}
	if j, _ := e.s.Job(theirs.ID); j.State != wire.StateQueued {
		t.Fatalf("another user's job: %+v", j)
	}
	if _, err := e.s.User(e.ds.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("user after delete: %v", err)
	}
}

// TestShardsEndWithTheirParent: a coordinated job that ends - cancelled,
// failed, or with its user deleted - cancels its unfinished shard jobs in
// the same transaction, and no shard can be created for it afterwards (a
// round started from a stale view of the parent).
func TestShardsEndWithTheirParent(t *testing.T) {
	e := newComplianceEnv(t, 0)
	newParent := func() (*Job, []*Job) {
		p := &Job{DatasetID: e.priv.ID, UserID: e.ds.ID, Shards: 2, Rounds: 3}
		if err := e.s.CreateJob(p); err != nil {
			t.Fatal(err)
		}
		var shards []*Job
		for s := range 2 {
			c := &Job{ID: ShardJobID(p.ID, 1, s), DatasetID: e.priv.ID, UserID: e.ds.ID, ParentID: p.ID, Shard: s, Round: 1}
			if err := e.s.CreateJob(c); err != nil {
				t.Fatal(err)
			}
			shards = append(shards, c)
		}
		if _, err := e.s.Grant(shards[0].ID, "node", time.Minute); err != nil { // one running, one queued
			t.Fatal(err)
		}
		return p, shards
	}
	check := func(how string, shards []*Job) {
		t.Helper()
		for _, c := range shards {
			if got, _ := e.s.Job(c.ID); got.State != wire.StateCancelled {
				t.Errorf("%s: shard %s is %s", how, c.ID, got.State)
			}
		}
	}

	p, shards := newParent()
	if _, err := e.s.CancelBy(p.ID, e.ds.ID); err != nil {
		t.Fatal(err)
	}
	check("parent cancelled", shards)
	late := &Job{ID: ShardJobID(p.ID, 2, 0), DatasetID: e.priv.ID, UserID: e.ds.ID, ParentID: p.ID, Round: 2}
	if err := e.s.CreateJob(late); !errors.Is(err, ErrConflictState) {
		t.Fatalf("shard created for a cancelled parent: %v", err)
	}

	p, shards = newParent()
	if err := e.s.FinishCoordinated(p.ID, nil, nil, "shard 2 of round 1 failed"); err != nil {
		t.Fatal(err)
	}
	check("parent failed", shards)

	_, shards = newParent()
	if err := e.s.DeleteUser(e.ds.ID, e.owner.ID); err != nil {
		t.Fatal(err)
	}
	check("user deleted", shards)
}

// TestNoSelfDealing: nobody raises their own budget or sets their own
// permissions on a dataset (as nobody decides their own request): another
// administrator must. The Owner, whose data it is, is exempt.
func TestNoSelfDealing(t *testing.T) {
	e := newComplianceEnv(t, 0)
	admin, err := e.s.CreateUser(NewUser{Email: "admin@example.org", Password: "password1", Role: RoleAdministrator})
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	for what, err := range map[string]error{
		"grant": func() error { _, err := e.s.GrantBudget(admin.ID, 1_000_000, admin.ID, "me"); return err }(),
		"set": func() error {
			m := int64(5_000_000)
			_, err := e.s.UpdateUser(admin.ID, UserUpdate{BudgetMicroEps: &m, Actor: admin.ID})
			return err
		}(),
		"override": e.s.SetOverride(Override{DatasetID: e.priv.ID, UserID: admin.ID, AutoRelease: &yes}, admin.ID),
	} {
		if !errors.Is(err, ErrForbidden) {
			t.Errorf("%s for oneself: %v", what, err)
		}
	}
	if u, _ := e.s.User(admin.ID); u.BudgetMicroEps != 0 {
		t.Fatalf("budget moved: %+v", u)
	}
	// Another administrator may; lowering one's own budget is fine; the Owner may.
	if _, err := e.s.GrantBudget(admin.ID, 1_000_000, e.owner.ID, "for the study"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.GrantBudget(admin.ID, -500_000, admin.ID, "too much"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.GrantBudget(e.owner.ID, 1_000_000, e.owner.ID, "own data"); err != nil {
		t.Fatal(err)
	}
	if err := e.s.SetOverride(Override{DatasetID: e.priv.ID, UserID: e.owner.ID, AutoRelease: &yes}, e.owner.ID); err != nil {
		t.Fatal(err)
	}
	// Restricting oneself is fine; lifting that restriction again is not.
	no := false
	if err := e.s.SetOverride(Override{DatasetID: e.priv.ID, UserID: admin.ID, Train: &no}, admin.ID); err != nil {
		t.Fatalf("refusing oneself training: %v", err)
	}
	if err := e.s.SetOverride(Override{DatasetID: e.priv.ID, UserID: admin.ID}, admin.ID); !errors.Is(err, ErrForbidden) {
		t.Fatalf("lifting one's own refusal: %v", err)
	}
	if err := e.s.SetDatasetCap(admin.ID, e.priv.ID, 100, admin.ID); err != nil {
		t.Fatalf("capping oneself: %v", err)
	}
	if err := e.s.SetDatasetCap(admin.ID, e.priv.ID, 50, admin.ID); err != nil {
		t.Fatalf("lowering one's own cap: %v", err)
	}
	if err := e.s.SetDatasetCap(admin.ID, e.priv.ID, 60, admin.ID); !errors.Is(err, ErrForbidden) {
		t.Fatalf("raising one's own cap: %v", err)
	}
}

// released: the job's result may leave to its requester (the service layer
// decides what a requester sees; this is the store's half of it).
func released(j *Job) bool {
	return j.Release == wire.ReleaseReleased || j.Release == wire.ReleaseApproved
}

// fail runs a job through grant and a failure reported by its node.
func (e *complianceEnv) fail(t *testing.T, eps int64, review bool) *Job {
	t.Helper()
	j := &Job{DatasetID: e.priv.ID, UserID: e.ds.ID, EpsilonMicroEps: eps, DP: true, Delta: 1e-5, Review: review}
	if err := e.s.CreateJobReserving(j, eps); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Grant(j.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.s.Fail(j.ID, 1, "node", "loss became +Inf"); err != nil {
		t.Fatal(err)
	}
	out, err := e.s.Job(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFailedOutcomeIsReviewed: a failed job whose result was due for
// review goes to the review queue like a model (its error, not metrics),
// and its reservation stays held until the decision: approval charges it
// as for a model, denial refunds it. A failed job not due for review is
// refunded at once, as before.
func TestFailedOutcomeIsReviewed(t *testing.T) {
	e := newComplianceEnv(t, 2_000_000)
	j := e.fail(t, 300_000, true)
	if j.State != wire.StateFailed || j.Release != wire.ReleasePending || j.RequestID == "" {
		t.Fatalf("failed job %+v", j)
	}
	r, err := e.s.GetRequest(j.RequestID)
	if err != nil || r.Kind != wire.KindRelease || r.State != wire.RequestPending || r.Error != "loss became +Inf" || r.Metrics != nil {
		t.Fatalf("release request of a failure: %+v %v", r, err)
	}
	if u := e.user(t); u.ReservedMicroEps != 300_000 {
		t.Fatalf("reservation not held until the decision: %+v", u)
	}
	if _, err := e.s.Decide(r.ID, true, e.officer[0].ID, "the error says nothing of the data"); err != nil {
		t.Fatal(err)
	}
	if u := e.user(t); u.ReservedMicroEps != 0 || u.SpentMicroEps != 300_000 {
		t.Fatalf("approved failure not charged like a model: %+v", u)
	}
	if j, _ := e.s.Job(j.ID); j.Release != wire.ReleaseApproved {
		t.Fatalf("approved failure: %+v", j)
	}

	denied := e.fail(t, 200_000, true)
	if _, err := e.s.Decide(denied.RequestID, false, e.officer[1].ID, "the error is the secret"); err != nil {
		t.Fatal(err)
	}
	if u := e.user(t); u.ReservedMicroEps != 0 || u.SpentMicroEps != 300_000 {
		t.Fatalf("denied failure charged: %+v", u)
	}

	plain := e.fail(t, 100_000, false)
	if plain.Release != "" || plain.RequestID != "" {
		t.Fatalf("a failure not due for review went to review: %+v", plain)
	}
	if u := e.user(t); u.ReservedMicroEps != 0 || u.SpentMicroEps != 300_000 {
		t.Fatalf("failure not due for review not refunded: %+v", u)
	}
}

// TestRuleDecidesWhateverTheOutcome: an approval rule covering a job
// decides its outcome at the job's end whether it is a model or an error:
// both released, both charged, both counted against the rule's quota, so
// neither the decision nor its timing tells the requester how the job
// ended. A failure no rule covers waits for an officer, like a model.
func TestRuleDecidesWhateverTheOutcome(t *testing.T) {
	e := newComplianceEnv(t, 10_000_000)
	rule, err := e.s.CreateRule(Rule{Tags: []string{"cohort-a"}, MaxEpsilonMicroEps: 1_000_000, Quota: 2}, e.owner.ID)
	if err != nil {
		t.Fatal(err)
	}
	ok := e.succeed(t, 400_000, true)
	failed := e.fail(t, 400_000, true)
	for _, j := range []*Job{ok, failed} {
		if j.Release != wire.ReleaseApproved || !released(j) {
			t.Fatalf("job %s (%s): release %q, want approved by the rule at its end", j.ID, j.State, j.Release)
		}
		r, err := e.s.GetRequest(j.RequestID)
		if err != nil {
			t.Fatal(err)
		}
		if r.State != wire.RequestApproved || r.Decision == nil || r.Decision.RuleID != rule.ID || r.Decision.ChargedMicroEps != 400_000 {
			t.Fatalf("job %s (%s): request %+v decision %+v", j.ID, j.State, r, r.Decision)
		}
	}
	if r, _ := e.s.GetRequest(failed.RequestID); r.Error != "loss became +Inf" || r.Metrics != nil {
		t.Fatalf("released failure's request: error %q metrics %s", r.Error, r.Metrics)
	}
	if u := e.user(t); u.SpentMicroEps != 800_000 || u.ReservedMicroEps != 0 {
		t.Fatalf("a rule charges a failure as a model: %+v", u)
	}
	if got, _ := e.s.GetRule(rule.ID); got.Used != 2 {
		t.Fatalf("rule used %d, want 2", got.Used)
	}
	// The quota is spent: the next failure waits for an officer, as a model would.
	if j := e.fail(t, 400_000, true); j.Release != wire.ReleasePending {
		t.Fatalf("failure past the rule's quota: %q, want pending", j.Release)
	}
	if j := e.succeed(t, 400_000, true); j.Release != wire.ReleasePending {
		t.Fatalf("model past the rule's quota: %q, want pending", j.Release)
	}
}
