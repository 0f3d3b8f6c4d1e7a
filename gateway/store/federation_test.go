package store

import (
	"errors"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/wire"
)

// A federation that stops is refunded only while none of this gateway's
// masked updates left; after one did, its reservation is charged. A denied
// approval cancels the job and refunds it.
func TestFederationStopCharges(t *testing.T) {
	s := openTest(t, t.TempDir())
	owner := setupTest(t, s)
	u, err := s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1", BudgetMicroEps: 10_000, Actor: owner.ID})
	if err != nil {
		t.Fatal(err)
	}
	off, err := s.CreateUser(NewUser{Email: "co@example.org", Password: "password1", Role: RoleComplianceOfficer, Actor: owner.ID})
	if err != nil {
		t.Fatal(err)
	}
	d := &Dataset{Name: "d", Visibility: VisibilityPrivate}
	if err := s.PutDataset(d, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	job := func(id string, review bool) *Job {
		j := &Job{ID: id, DatasetID: d.ID, UserID: u.ID, Federation: id, Shards: 1, Rounds: 3, EpsilonMicroEps: 1_000, DP: true}
		if err := s.CreateFederationJob(j, 1_000, review, "federation "+id); err != nil {
			t.Fatal(err)
		}
		if j.State != wire.StateRunning || !j.Coordinated() {
			t.Fatalf("federation job %s is %s (coordinated %v)", id, j.State, j.Coordinated())
		}
		return j
	}
	spent := func() (int64, int64) {
		x, err := s.User(u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return x.SpentMicroEps, x.ReservedMicroEps
	}

	a := job("fed-a", false)
	if err := s.FailFederation(a.ID, "stopped before any update"); err != nil {
		t.Fatal(err)
	}
	if sp, res := spent(); sp != 0 || res != 0 {
		t.Fatalf("stopped before any update: spent %d, reserved %d; want a refund", sp, res)
	}

	b := job("fed-b", false)
	if err := s.MarkFederationSent(b.ID, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.FailFederation(b.ID, "stopped in round 2"); err != nil {
		t.Fatal(err)
	}
	if sp, res := spent(); sp != 1_000 || res != 0 {
		t.Fatalf("stopped after an update left: spent %d, reserved %d; want 1000 charged", sp, res)
	}
	if got, _ := s.Job(b.ID); got.State != wire.StateFailed || got.FedSent != 1 {
		t.Fatalf("job %+v", got)
	}

	c := job("fed-c", true)
	if st, err := s.FederationApproval(c); err != nil || st != wire.RequestPending {
		t.Fatalf("approval %q %v", st, err)
	}
	if _, err := s.Decide(c.FedRequestID, false, off.ID, "not this study"); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Job(c.ID)
	if got.State != wire.StateCancelled {
		t.Fatalf("denied federation job is %s", got.State)
	}
	if sp, res := spent(); sp != 1_000 || res != 0 {
		t.Fatalf("after the denial: spent %d, reserved %d; want the reservation refunded", sp, res)
	}
	if err := s.FailFederation(c.ID, "late"); err == nil {
		t.Fatal("a cancelled federation job failed again")
	}
}

// A federation job whose coordinator went quiet expires: cancelled with its
// shards, refunded while no masked update left, charged after one did, its
// pending approval request withdrawn, and audited. A call heard since the
// cutoff keeps it.
func TestFederationExpire(t *testing.T) {
	s := openTest(t, t.TempDir())
	owner := setupTest(t, s)
	u, err := s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1", BudgetMicroEps: 10_000, Actor: owner.ID})
	if err != nil {
		t.Fatal(err)
	}
	d := &Dataset{Name: "d", Visibility: VisibilityPrivate}
	if err := s.PutDataset(d, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC()
	now := t0
	s.now = func() time.Time { return now }
	job := func(id string, review bool) *Job {
		j := &Job{ID: id, DatasetID: d.ID, UserID: u.ID, Federation: id, Shards: 1, Rounds: 3, EpsilonMicroEps: 1_000, DP: true}
		if err := s.CreateFederationJob(j, 1_000, review, "federation "+id); err != nil {
			t.Fatal(err)
		}
		return j
	}
	ledger := func() (int64, int64) {
		x, err := s.User(u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return x.SpentMicroEps, x.ReservedMicroEps
	}

	// Waiting for its officer, the coordinator gone: refunded, request withdrawn.
	a := job("fed-a", true)
	shard := &Job{ID: ShardJobID(a.ID, 1, 0), ParentID: a.ID, DatasetID: d.ID, UserID: u.ID, Round: 1, Shard: 0, Shards: 1}
	if err := s.CreateJob(shard); err != nil {
		t.Fatal(err)
	}
	if sp, res := ledger(); sp != 0 || res != 1_000 {
		t.Fatalf("joined: spent %d, reserved %d", sp, res)
	}
	now = t0.Add(2 * time.Hour)
	if err := s.TouchFederation(a.ID, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ExpireFederation(a.ID, now.Add(-time.Hour), "quiet"); !errors.Is(err, ErrConflictState) {
		t.Fatalf("expired although heard since the cutoff: %v", err)
	}
	if idle, err := s.IdleFederations(now.Add(-time.Hour)); err != nil || len(idle) != 0 {
		t.Fatalf("idle federations %v %v", idle, err)
	}
	now = t0.Add(5 * time.Hour)
	cutoff := now.Add(-time.Hour)
	idle, err := s.IdleFederations(cutoff)
	if err != nil || len(idle) != 1 || idle[0].ID != a.ID {
		t.Fatalf("idle federations %v %v", idle, err)
	}
	got, err := s.ExpireFederation(a.ID, cutoff, "the coordinator was not heard from")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != wire.StateCancelled || got.Error != "the coordinator was not heard from" {
		t.Fatalf("expired job %+v", got)
	}
	if sp, res := ledger(); sp != 0 || res != 0 {
		t.Fatalf("expired before any update: spent %d, reserved %d; want the reservation refunded", sp, res)
	}
	if r, _ := s.GetRequest(a.FedRequestID); r.State != wire.RequestWithdrawn {
		t.Fatalf("the approval request is %s", r.State)
	}
	if sh, _ := s.Job(shard.ID); sh.State != wire.StateCancelled {
		t.Fatalf("its shard job is %s", sh.State)
	}
	if _, err := s.ExpireFederation(a.ID, cutoff, "again"); !errors.Is(err, ErrConflictState) {
		t.Fatalf("expired twice: %v", err)
	}

	// After a masked update left: charged.
	b := job("fed-b", false)
	if err := s.MarkFederationSent(b.ID, 2); err != nil {
		t.Fatal(err)
	}
	now = now.Add(3 * time.Hour)
	if _, err := s.ExpireFederation(b.ID, now.Add(-time.Hour), "quiet after round 2"); err != nil {
		t.Fatal(err)
	}
	if sp, res := ledger(); sp != 1_000 || res != 0 {
		t.Fatalf("expired after an update left: spent %d, reserved %d; want 1000 charged", sp, res)
	}
	entries, err := s.Audit(AuditFilter{Action: "federation.expire"})
	if err != nil || len(entries) != 2 {
		t.Fatalf("audit entries %d %v", len(entries), err)
	}
	if e := entries[1]; e.Target != "job/"+b.ID || e.Detail["federation_rounds_released"] != float64(2) || e.Detail["charged_micro_eps"] != float64(1_000) {
		t.Fatalf("audit entry %+v", e)
	}
	if e := entries[0]; e.Detail["withdrawn_request"] != a.FedRequestID || e.Detail["charged_micro_eps"] != float64(0) {
		t.Fatalf("audit entry %+v", e)
	}
}

// Keys are made once per round attempt: an attempt not after the last
// recorded one is refused, a later attempt or round is taken.
func TestOpenFederationRound(t *testing.T) {
	s := openTest(t, t.TempDir())
	owner := setupTest(t, s)
	u, err := s.CreateUser(NewUser{Email: "ds@example.org", Password: "password1", Actor: owner.ID})
	if err != nil {
		t.Fatal(err)
	}
	j := &Job{ID: "fed-x", DatasetID: "d", UserID: u.ID, Federation: "x", Shards: 1, Rounds: 5}
	if err := s.CreateFederationJob(j, 0, false, ""); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		round, attempt int
		lost           bool
	}{{1, 0, false}, {1, 0, true}, {1, 1, false}, {1, 0, true}, {2, 0, false}, {1, 2, true}, {2, 0, true}, {2, 3, false}, {3, 0, false}} {
		err := s.OpenFederationRound(j.ID, step.round, step.attempt)
		if lost := errors.Is(err, ErrRoundKeysLost); lost != step.lost || (err != nil && !lost) {
			t.Fatalf("round %d attempt %d: %v (want lost %v)", step.round, step.attempt, err, step.lost)
		}
	}
	got, _ := s.Job(j.ID)
	if got.FedKeys == nil || *got.FedKeys != (FedRoundMark{Round: 3}) {
		t.Fatalf("recorded %+v", got.FedKeys)
	}
	if err := s.FailFederation(j.ID, "stop"); err != nil {
		t.Fatal(err)
	}
	if err := s.OpenFederationRound(j.ID, 4, 0); !errors.Is(err, ErrConflictState) {
		t.Fatalf("a finished federation opened a round: %v", err)
	}
}
