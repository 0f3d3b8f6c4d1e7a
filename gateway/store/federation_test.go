package store

import (
	"testing"

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
