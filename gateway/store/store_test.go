package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/wire"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func setupTest(t testing.TB, s *Store) *User {
	t.Helper()
	owner, err := s.Setup("owner@example.org", "owner-password", "Owner")
	if err != nil {
		t.Fatal(err)
	}
	return owner
}

func TestGrantExactlyOnceUnderConcurrency(t *testing.T) {
	s := openTest(t, t.TempDir())
	j := &Job{DatasetID: "d1", UserID: "u1", Requester: "peer"}
	if err := s.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var winner atomic.Value
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := string(rune('A' + i))
			g, err := s.Grant(j.ID, node, time.Minute)
			switch {
			case err == nil:
				wins.Add(1)
				winner.Store(g)
			case errors.Is(err, ErrConflictState):
			default:
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("unexpected grant error: %v", err)
	}
	if wins.Load() != 1 {
		t.Fatalf("%d grants succeeded, want exactly 1", wins.Load())
	}
	g := winner.Load().(*Job)
	got, err := s.Job(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != wire.StateRunning || got.Attempt != 1 || got.Node != g.Node {
		t.Fatalf("stored job %+v, winner %+v", got, g)
	}
}

func TestLeaseFencing(t *testing.T) {
	s := openTest(t, t.TempDir())
	j := &Job{DatasetID: "d1", UserID: "u1"}
	if err := s.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	g1, err := s.Grant(j.ID, "n1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Heartbeat(j.ID, 1, "n1", wire.Progress{Epoch: 1, Epochs: 3, Loss: 0.5}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Not expired yet: nothing requeued.
	if req, err := s.ExpireLeases(time.Now()); err != nil || len(req) != 0 {
		t.Fatalf("early expiry: %v %v", req, err)
	}
	// The lease runs out: the job goes back to the queue with its attempt kept.
	req, err := s.ExpireLeases(g1.LeaseExpires.Add(2 * time.Minute))
	if err != nil || len(req) != 1 || req[0].State != wire.StateQueued || req[0].Attempt != 1 {
		t.Fatalf("expiry: %+v %v", req, err)
	}
	q, err := s.QueuedJobs()
	if err != nil || len(q) != 1 || q[0].ID != j.ID {
		t.Fatalf("queued: %v %v", q, err)
	}
	// The old node's heartbeat and result are now stale.
	if _, err := s.Heartbeat(j.ID, 1, "n1", wire.Progress{}, time.Minute); !errors.Is(err, ErrStale) {
		t.Fatalf("stale heartbeat: %v", err)
	}
	// Re-queued with a backoff: not granted before it ends.
	if _, err := s.Grant(j.ID, "n2", time.Minute); !errors.Is(err, ErrConflictState) {
		t.Fatalf("grant during backoff: %v", err)
	}
	later := req[0].NotBefore.Add(time.Millisecond)
	s.now = func() time.Time { return later }
	g2, err := s.Grant(j.ID, "n2", time.Minute)
	if err != nil || g2.Attempt != 2 {
		t.Fatalf("regrant: %+v %v", g2, err)
	}
	if err := s.Complete(j.ID, 1, "n1", []byte("old"), nil); !errors.Is(err, ErrStale) {
		t.Fatalf("stale complete: %v", err)
	}
	if err := s.Complete(j.ID, 2, "n1", []byte("old"), nil); !errors.Is(err, ErrStale) {
		t.Fatalf("wrong node complete: %v", err)
	}
	if err := s.Fail(j.ID, 1, "n1", "boom"); !errors.Is(err, ErrStale) {
		t.Fatalf("stale fail: %v", err)
	}
	if _, err := s.Grant(j.ID, "n3", time.Minute); !errors.Is(err, ErrConflictState) {
		t.Fatalf("grant of running job: %v", err)
	}
	metrics := json.RawMessage(`{"loss":0.1}`)
	if err := s.Complete(j.ID, 2, "n2", []byte("model"), metrics); err != nil {
		t.Fatal(err)
	}
	res, err := s.Result(j.ID)
	if err != nil || string(res) != "model" {
		t.Fatalf("result %q %v", res, err)
	}
	got, _ := s.Job(j.ID)
	if got.State != wire.StateSucceeded || string(got.Metrics) != string(metrics) || got.FinishedAt.IsZero() {
		t.Fatalf("finished job %+v", got)
	}
	if err := s.Cancel(j.ID); !errors.Is(err, ErrConflictState) {
		t.Fatalf("cancel of finished job: %v", err)
	}
	if _, err := s.Grant("nope", "n", time.Minute); !errors.Is(err, ErrNotFound) {
		t.Fatalf("grant of unknown job: %v", err)
	}
}

func TestCancelSeenByHeartbeat(t *testing.T) {
	s := openTest(t, t.TempDir())
	j := &Job{DatasetID: "d1"}
	if err := s.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Grant(j.ID, "n1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Cancel(j.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.Heartbeat(j.ID, 1, "n1", wire.Progress{}, time.Minute)
	if !errors.Is(err, ErrStale) || got == nil || got.State != wire.StateCancelled {
		t.Fatalf("heartbeat after cancel: %+v %v", got, err)
	}
	if err := s.Complete(j.ID, 1, "n1", []byte("x"), nil); !errors.Is(err, ErrStale) {
		t.Fatalf("complete after cancel: %v", err)
	}
}

func TestJobListsOrder(t *testing.T) {
	s := openTest(t, t.TempDir())
	// A clock that moves a millisecond per reading: every job is created
	// at its own instant.
	t0 := time.Now()
	var ticks time.Duration
	s.now = func() time.Time { ticks += time.Millisecond; return t0.Add(ticks) }
	var ids []string
	for i := range 3 {
		j := &Job{DatasetID: "d", UserID: []string{"a", "b", "a"}[i]}
		if err := s.CreateJob(j); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	all, err := s.Jobs(JobFilter{})
	if err != nil || len(all) != 3 || all[0].ID != ids[2] || all[2].ID != ids[0] {
		t.Fatalf("newest first: %v %v", all, err)
	}
	mine, _ := s.Jobs(JobFilter{UserID: "a"})
	if len(mine) != 2 {
		t.Fatalf("filter by user: %d", len(mine))
	}
	q, _ := s.QueuedJobs()
	if len(q) != 3 || q[0].ID != ids[0] {
		t.Fatalf("oldest first: %v", q)
	}
}

func TestJoinTokens(t *testing.T) {
	s := openTest(t, t.TempDir())
	tok, exp, err := s.CreateJoinToken(time.Hour)
	if err != nil || tok == "" || time.Until(exp) < 59*time.Minute {
		t.Fatalf("%q %v %v", tok, exp, err)
	}
	// 8 peers race for one token: exactly one enrols.
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.RedeemJoinToken(tok, "peer"+string(rune('0'+i)), 2, "v1")
			if err == nil {
				ok.Add(1)
			} else if !errors.Is(err, ErrTokenInvalid) {
				t.Errorf("redeem: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d redemptions, want 1", ok.Load())
	}
	nodes, err := s.Nodes()
	if err != nil || len(nodes) != 1 || nodes[0].Slots != 2 {
		t.Fatalf("nodes %v %v", nodes, err)
	}
	// Re-enrol the same peer with a fresh token.
	tok2, _, _ := s.CreateJoinToken(time.Hour)
	if _, err := s.RedeemJoinToken(tok2, nodes[0].PeerID, 4, "v2"); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.Node(nodes[0].PeerID); n.Slots != 4 || n.Version != "v2" {
		t.Fatalf("re-enrol: %+v", n)
	}
	// Expiry.
	s.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	old, _, _ := s.CreateJoinToken(time.Hour)
	s.now = time.Now
	if _, err := s.RedeemJoinToken(old, "late", 1, ""); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("expired token: %v", err)
	}
	if _, err := s.RedeemJoinToken("made-up", "p", 1, ""); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("unknown token: %v", err)
	}
	if err := s.TouchNode(nodes[0].PeerID, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveNode(nodes[0].PeerID); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveNode(nodes[0].PeerID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	if err := s.TouchNode("nobody", time.Now()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("touch unknown: %v", err)
	}
}

func TestDatasets(t *testing.T) {
	s := openTest(t, t.TempDir())
	csv := []byte("a,b\n1,x\n2,y\n")
	d := &Dataset{Name: "pima", Tags: []string{" Health", "diabetes", "health"}, Visibility: "public",
		Columns: []dataset.Column{{Name: "a", Type: dataset.TypeNumber}, {Name: "b", Type: dataset.TypeCategory}}, Rows: 2}
	if err := s.PutDataset(d, csv); err != nil {
		t.Fatal(err)
	}
	if d.ID == "" || d.Size != int64(len(csv)) || len(d.Tags) != 2 {
		t.Fatalf("%+v", d)
	}
	d2 := &Dataset{Name: "other", Tags: []string{"health"}}
	if err := s.PutDataset(d2, []byte("c\n1\n")); err != nil {
		t.Fatal(err)
	}
	if d2.Visibility != VisibilityPrivate {
		t.Fatalf("default visibility %q", d2.Visibility)
	}
	for _, tc := range []struct {
		tags []string
		want int
	}{{nil, 2}, {[]string{"HEALTH"}, 2}, {[]string{"health", "diabetes"}, 1}, {[]string{"cancer"}, 0}} {
		got, err := s.DatasetsWithTags(tc.tags)
		if err != nil || len(got) != tc.want {
			t.Fatalf("tags %v: %d %v", tc.tags, len(got), err)
		}
	}
	b, err := s.DatasetCSV(d.ID)
	if err != nil || string(b) != string(csv) {
		t.Fatalf("csv %q %v", b, err)
	}
	if err := s.PutDataset(&Dataset{Name: "x", Visibility: "secret"}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad visibility: %v", err)
	}
	name := "renamed"
	if u, err := s.UpdateDataset(d.ID, DatasetUpdate{Name: &name}); err != nil || u.Name != name || u.Rows != 2 {
		t.Fatalf("update %+v %v", u, err)
	}
	if err := s.DeleteDataset(d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Dataset(d.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted dataset: %v", err)
	}
	if _, err := s.DatasetCSV(d.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted csv: %v", err)
	}
}

func TestUsersAndTokens(t *testing.T) {
	s := openTest(t, t.TempDir())
	if _, err := s.CreateUser(NewUser{Email: "a@example.org", Password: "password1"}); !errors.Is(err, ErrSetupRequired) {
		t.Fatalf("create before setup: %v", err)
	}
	owner := setupTest(t, s)
	if _, err := s.Setup("x@example.org", "password2", ""); !errors.Is(err, ErrSetupDone) {
		t.Fatalf("second setup: %v", err)
	}
	ds, err := s.CreateUser(NewUser{Email: "DS@example.org", Password: "password1", PeerID: "12D3KooWpeer", BudgetMicroEps: 2_000_000})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Role != RoleDataScientist || ds.Email != "ds@example.org" {
		t.Fatalf("%+v", ds)
	}
	for _, nu := range []NewUser{
		{Email: "ds@example.org", Password: "password1"},
		{Email: "other@example.org", Password: "password1", PeerID: "12D3KooWpeer"},
	} {
		if _, err := s.CreateUser(nu); !errors.Is(err, ErrExists) {
			t.Fatalf("duplicate %+v: %v", nu, err)
		}
	}
	if _, err := s.CreateUser(NewUser{Email: "o2@example.org", Password: "password1", Role: RoleOwner}); !errors.Is(err, ErrProtected) {
		t.Fatalf("second owner: %v", err)
	}
	if _, err := s.CreateUser(NewUser{Email: "o3@example.org", Password: "password1", Role: "Nope"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown role: %v", err)
	}
	if u, err := s.UserByPeerID("12D3KooWpeer"); err != nil || u.ID != ds.ID {
		t.Fatalf("by peer: %v %v", u, err)
	}
	if _, _, _, err := s.Login("ds@example.org", "wrong-password", time.Hour); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, _, err := s.Login("nobody@example.org", "password1", time.Hour); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("unknown user: %v", err)
	}
	tok, _, _, err := s.Login("ds@example.org", "password1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := s.Authenticate(tok); err != nil || u.ID != ds.ID {
		t.Fatalf("authenticate %v %v", u, err)
	}
	// Permissions follow the role, and a role change applies at once.
	if err := s.Authorize(ds.ID, PermMakeDataRequests); err != nil {
		t.Fatal(err)
	}
	if err := s.Authorize(ds.ID, PermUploadData); !errors.Is(err, ErrForbidden) {
		t.Fatalf("ds upload: %v", err)
	}
	role := RoleAdministrator
	if _, err := s.UpdateUser(ds.ID, UserUpdate{Role: &role}); err != nil {
		t.Fatal(err)
	}
	if err := s.Authorize(ds.ID, PermUploadData); err != nil {
		t.Fatalf("admin upload: %v", err)
	}
	if _, err := s.AuthorizePeer("12D3KooWpeer", PermMakeDataRequests); err != nil {
		t.Fatalf("peer authorize: %v", err)
	}
	if _, err := s.AuthorizePeer("12D3KooWstranger", PermMakeDataRequests); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown peer: %v", err)
	}
	ownerRole := RoleOwner
	if _, err := s.UpdateUser(ds.ID, UserUpdate{Role: &ownerRole}); !errors.Is(err, ErrProtected) {
		t.Fatalf("assign owner: %v", err)
	}
	if _, err := s.UpdateUser(owner.ID, UserUpdate{Role: &role}); !errors.Is(err, ErrProtected) {
		t.Fatalf("demote owner: %v", err)
	}
	if err := s.DeleteUser(owner.ID, ""); !errors.Is(err, ErrProtected) {
		t.Fatalf("delete owner: %v", err)
	}
	// A password change revokes the old token; the new password works.
	pw := "new-password"
	if _, err := s.UpdateUser(ds.ID, UserUpdate{Password: &pw}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(tok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("token after password change: %v", err)
	}
	tok2, _, _, err := s.Login("ds@example.org", pw, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(ds.ID, owner.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(tok2); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("token after delete: %v", err)
	}
	if _, err := s.UserByPeerID("12D3KooWpeer"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("peer index after delete: %v", err)
	}
	if _, err := s.Authenticate("garbage"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("garbage token: %v", err)
	}
}

func TestRestartDurability(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	owner := setupTest(t, s)
	tok, _, _, err := s.Login("owner@example.org", "owner-password", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d := &Dataset{Name: "d", Visibility: "public"}
	if err := s.PutDataset(d, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	j := &Job{DatasetID: d.ID, UserID: owner.ID}
	if err := s.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Grant(j.ID, "n1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRole(Role{Name: "Auditor", Permissions: []Permission{PermEditSettings}}, owner.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	s2 := openTest(t, dir)
	if done, err := s2.SetupDone(); err != nil || !done {
		t.Fatalf("setup after restart: %v %v", done, err)
	}
	// The token secret survived, so the session token is still good.
	if u, err := s2.Authenticate(tok); err != nil || u.ID != owner.ID {
		t.Fatalf("token after restart: %v %v", u, err)
	}
	if got, err := s2.Dataset(d.ID); err != nil || got.Name != "d" {
		t.Fatalf("dataset after restart: %v %v", got, err)
	}
	if got, err := s2.Job(j.ID); err != nil || got.State != wire.StateRunning || got.Attempt != 1 {
		t.Fatalf("job after restart: %+v %v", got, err)
	}
	if r, err := s2.Role("Auditor"); err != nil || !r.Has(PermEditSettings) {
		t.Fatalf("role after restart: %+v %v", r, err)
	}
	if n, err := s2.VerifyAudit(); err != nil || n < 5 {
		t.Fatalf("audit after restart: %d %v", n, err)
	}
}

func TestRetryBudgetAndDeadline(t *testing.T) {
	s := openTest(t, t.TempDir())
	now := time.Now()
	s.now = func() time.Time { return now }
	j := &Job{DatasetID: "d1", UserID: "u1", MaxAttempts: 2, AttemptTimeout: time.Hour}
	if err := s.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt <= 2; attempt++ {
		g, err := s.Grant(j.ID, "n", time.Second)
		if err != nil || g.Attempt != attempt {
			t.Fatalf("grant %d: %+v %v", attempt, g, err)
		}
		now = now.Add(2 * time.Second) // lease lost
		ch, err := s.ExpireLeases(now)
		if err != nil || len(ch) != 1 {
			t.Fatalf("expire %d: %v %v", attempt, ch, err)
		}
		if attempt == 1 {
			if ch[0].State != wire.StateQueued || !ch[0].NotBefore.After(now) {
				t.Fatalf("first loss should re-queue with backoff: %+v", ch[0])
			}
			now = ch[0].NotBefore
		} else if ch[0].State != wire.StateFailed || ch[0].Error == "" {
			t.Fatalf("retry budget spent, want failed: %+v", ch[0])
		}
	}
	if q, _ := s.QueuedJobs(); len(q) != 0 {
		t.Fatalf("failed job still queued: %v", q)
	}
	if r, _ := s.RunningJobs(); len(r) != 0 {
		t.Fatalf("failed job still running: %v", r)
	}

	// Attempt timeout: heartbeats keep the lease, but the attempt runs too long.
	k := &Job{DatasetID: "d1", UserID: "u1", AttemptTimeout: time.Minute}
	if err := s.CreateJob(k); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Grant(k.ID, "n", time.Hour); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if ch, _ := s.ExpireLeases(now); len(ch) != 1 || ch[0].State != wire.StateQueued {
		t.Fatalf("attempt timeout: %+v", ch)
	}

	// Whole-job deadline: a queued job that nobody runs fails.
	d := &Job{DatasetID: "d1", UserID: "u1", Deadline: now.Add(time.Minute)}
	if err := s.CreateJob(d); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	ch, _ := s.ExpireLeases(now)
	var failed bool
	for _, c := range ch {
		if c.ID == d.ID && c.State == wire.StateFailed {
			failed = true
		}
	}
	if !failed {
		t.Fatalf("deadline passed but job not failed: %+v", ch)
	}
}

func TestBackoff(t *testing.T) {
	if Backoff(1) != 250*time.Millisecond || Backoff(2) != 500*time.Millisecond || Backoff(100) != 30*time.Second {
		t.Fatalf("backoff: %v %v %v", Backoff(1), Backoff(2), Backoff(100))
	}
}

// TestJobInitKeptApart: a job's starting weights live under a key of their
// own, so the job record a heartbeat rewrites stays small; a record from
// before, with the weights inline, still gives them back.
func TestJobInitKeptApart(t *testing.T) {
	s := openTest(t, t.TempDir())
	weights := json.RawMessage(`{"w":{"shape":[2],"data":[0.25,-1.5]}}`)
	j := &Job{DatasetID: "d", UserID: "u", Init: weights}
	if err := s.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Grant(j.ID, "node", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Heartbeat(j.ID, 1, "node", wire.Progress{Epoch: 1, Epochs: 2, Loss: 0.5}, time.Minute); err != nil {
		t.Fatal(err)
	}
	var raw []byte
	if err := s.view(func(txn *badger.Txn) error {
		var err error
		raw, err = getBytes(txn, prefixJob+j.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("-1.5")) {
		t.Fatalf("the job record carries the weights: %s", raw)
	}
	got, err := s.JobInit(j.ID)
	if err != nil || !bytes.Equal(got, weights) {
		t.Fatalf("JobInit: %s %v", got, err)
	}
	if stored, _ := s.Job(j.ID); stored.InitSize != len(weights) {
		t.Fatalf("init size %d, want %d", stored.InitSize, len(weights))
	}
	// No weights: nil.
	plain := &Job{DatasetID: "d", UserID: "u"}
	if err := s.CreateJob(plain); err != nil {
		t.Fatal(err)
	}
	if got, err := s.JobInit(plain.ID); err != nil || got != nil {
		t.Fatalf("JobInit of a job without weights: %s %v", got, err)
	}
	// A record written before: weights inline under "init".
	legacy := []byte(`{"id":"old1","dataset_id":"d","user_id":"u","state":"queued","init":{"w":{"shape":[1],"data":[7]}}}`)
	if err := s.update(func(txn *badger.Txn) error { return txn.Set([]byte(prefixJob+"old1"), legacy) }); err != nil {
		t.Fatal(err)
	}
	if got, err := s.JobInit("old1"); err != nil || string(got) != `{"w":{"shape":[1],"data":[7]}}` {
		t.Fatalf("legacy JobInit: %s %v", got, err)
	}
	if _, err := s.JobInit("missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("JobInit of a missing job: %v", err)
	}
}

// TestGrantFitting: a node that allows one job less memory than the job
// needs is not granted it; one that allows enough, or does not say, is.
func TestGrantFitting(t *testing.T) {
	s := openTest(t, t.TempDir())
	j := &Job{DatasetID: "d1", UserID: "u1", Requester: "peer", MemoryBytes: 2 << 30}
	if err := s.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	if refs, err := s.QueuedRefs(); err != nil || len(refs) != 1 || refs[0].MemoryBytes != 2<<30 {
		t.Fatalf("queued refs %+v %v", refs, err)
	}
	if _, err := s.GrantFitting(j.ID, "small", time.Minute, 1<<30, false); !errors.Is(err, ErrNoFit) {
		t.Fatalf("grant to a node allowing 1 GiB: %v, want ErrNoFit", err)
	}
	if g, err := s.GrantFitting(j.ID, "big", time.Minute, 4<<30, false); err != nil || g.Node != "big" {
		t.Fatalf("grant to a node allowing 4 GiB: %+v %v", g, err)
	}
	// Streamed, the job needs 256 MiB: a streaming node of 1 GiB gets it, a
	// node that reads every row into memory does not.
	st := &Job{DatasetID: "d1", UserID: "u1", Requester: "peer", MemoryBytes: 2 << 30, StreamMemoryBytes: 256 << 20}
	if err := s.CreateJob(st); err != nil {
		t.Fatal(err)
	}
	if refs, err := s.QueuedRefs(); err != nil || len(refs) != 1 || refs[0].MemoryNeed(true) != 256<<20 || refs[0].MemoryNeed(false) != 2<<30 {
		t.Fatalf("queued refs %+v %v", refs, err)
	}
	if _, err := s.GrantFitting(st.ID, "small", time.Minute, 1<<30, false); !errors.Is(err, ErrNoFit) {
		t.Fatalf("grant to a node allowing 1 GiB that does not stream: %v, want ErrNoFit", err)
	}
	if g, err := s.GrantFitting(st.ID, "small", time.Minute, 1<<30, true); err != nil || g.Node != "small" {
		t.Fatalf("grant to a streaming node allowing 1 GiB: %+v %v", g, err)
	}
}

// TestHeartbeatWritesOnlyWhenNeeded: a heartbeat without new progress while
// the stored lease has at least half its length left stores nothing; new
// progress, or a lease past its half, is stored and extends the lease; a
// stale attempt is refused on either path.
func TestHeartbeatWritesOnlyWhenNeeded(t *testing.T) {
	s := openTest(t, t.TempDir())
	j := &Job{DatasetID: "d1", UserID: "u1"}
	if err := s.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.now = func() time.Time { return start }
	g, err := s.Grant(j.ID, "n1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	p := wire.Progress{Epoch: 1, Epochs: 3, Loss: 0.5}
	stored := func() *Job {
		t.Helper()
		got, err := s.Job(j.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// New progress: stored, lease extended.
	s.now = func() time.Time { return start.Add(10 * time.Second) }
	if _, err := s.Heartbeat(j.ID, 1, "n1", p, time.Minute); err != nil {
		t.Fatal(err)
	}
	first := stored()
	if first.Progress != p || !first.LeaseExpires.After(g.LeaseExpires) {
		t.Fatalf("heartbeat with progress not stored: %+v", first)
	}
	// Same progress, 50 s of the 60 s lease left: nothing stored.
	s.now = func() time.Time { return start.Add(20 * time.Second) }
	if got, err := s.Heartbeat(j.ID, 1, "n1", p, time.Minute); err != nil || got.Progress != p {
		t.Fatalf("idle heartbeat: %+v %v", got, err)
	}
	if got := stored(); !got.LeaseExpires.Equal(first.LeaseExpires) {
		t.Fatalf("idle heartbeat wrote the lease: %v, was %v", got.LeaseExpires, first.LeaseExpires)
	}
	// Less than half the lease left: extended.
	s.now = func() time.Time { return start.Add(45 * time.Second) }
	if _, err := s.Heartbeat(j.ID, 1, "n1", p, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := stored(); !got.LeaseExpires.Equal(start.Add(45 * time.Second).Add(time.Minute).UTC()) {
		t.Fatalf("lease not extended past its half: %v", got.LeaseExpires)
	}
	// Another node, or another attempt, is refused on the quiet path too.
	if _, err := s.Heartbeat(j.ID, 1, "n2", p, time.Minute); !errors.Is(err, ErrStale) {
		t.Fatalf("other node: %v", err)
	}
	if _, err := s.Heartbeat(j.ID, 2, "n1", p, time.Minute); !errors.Is(err, ErrStale) {
		t.Fatalf("other attempt: %v", err)
	}
	// After the result, a late heartbeat is refused with the job as stored.
	if err := s.Complete(j.ID, 1, "n1", []byte("model"), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Heartbeat(j.ID, 1, "n1", p, time.Minute); !errors.Is(err, ErrStale) || got == nil || got.State != wire.StateSucceeded {
		t.Fatalf("heartbeat after the result: %+v %v", got, err)
	}
}
