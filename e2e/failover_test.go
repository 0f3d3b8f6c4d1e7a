package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
	"github.com/fedgrid/fedgrid/internal/wait"
)

// failoverSite is a network peer, one gateway with a short lease, the
// diabetes set, and a registered data scientist.
type failoverSite struct {
	h     *harness.Harness
	net   *harness.Proc
	site  *harness.Site
	sci   *harness.Scientist
	ref   string              // dataset ref
	slow  string              // plan file that trains for seconds
	quick string              // plan file that trains in a blink
	opts  harness.PeerOptions // for nodes
	gwOpt harness.PeerOptions // for the gateway: short lease and any extra flags
}

// startNode enrols a node through the admin API's join token.
func (f *failoverSite) startNode(t *testing.T, ctx context.Context, name, gatewayAddr string) *harness.Proc {
	t.Helper()
	tok, err := f.site.Admin.JoinToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gatewayAddr == "" {
		gatewayAddr = f.site.Gateway.Addr()
	}
	n, err := f.h.StartNode(ctx, name, gatewayAddr, tok, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func startFailoverSite(t *testing.T, ctx context.Context, extra ...string) *failoverSite {
	t.Helper()
	f := &failoverSite{h: newHarness(t)}
	network := networkName(t)
	var err error
	f.net, err = f.h.StartNetwork(ctx, "network", harness.PeerOptions{Network: network})
	if err != nil {
		t.Fatal(err)
	}
	f.opts = harness.PeerOptions{Network: network, Bootstrap: []string{f.net.Addr()}}
	f.gwOpt = f.opts
	f.gwOpt.Extra = append([]string{"--lease", "2s"}, extra...)
	f.site, err = f.h.StartSite(ctx, "gateway", "Hospital A", "owner@a.example", "a long owner password", f.gwOpt)
	if err != nil {
		t.Fatal(err)
	}
	csv, err := os.ReadFile(filepath.Join(dataDir(), "pima_diabetes.csv"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := f.site.Admin.UploadCSV(ctx, harness.Upload{Name: "pima", Tags: []string{"medical"}, Visibility: "public", CSV: csv})
	if err != nil {
		t.Fatal(err)
	}
	f.ref = f.site.Gateway.Ready.PeerID + "/" + ds.ID
	f.sci, err = f.h.NewScientist(ctx, filepath.Join(t.TempDir(), "ds.key"), network, []string{f.net.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.site.RegisterScientist(ctx, "ds@example.org", "a long ds password", "DS", f.sci.PeerID); err != nil {
		t.Fatal(err)
	}
	// A plan that trains for a few seconds (small MLP, one row per step)
	// and one that trains at once.
	var p map[string]any
	b, err := os.ReadFile(filepath.Join("..", "plan", "testdata", "mlp_pima.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	p["train"] = map[string]any{"epochs": 2500, "batch_size": 1, "seed": 1}
	f.slow = filepath.Join(t.TempDir(), "slow.json")
	writeJSON(t, f.slow, p)
	f.quick = filepath.Join(planDir(), "logreg_pima.json")
	return f
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// adminJob polls the admin API until cond holds for the job.
func adminJob(t *testing.T, ctx context.Context, a *harness.Admin, id, what string, timeout time.Duration, cond func(harness.AdminJob) bool) harness.AdminJob {
	t.Helper()
	var last harness.AdminJob
	wait.For(t, timeout, "job "+id+": "+what, func() error {
		jobs, err := a.Jobs(ctx)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if j.ID == id {
				last = j
				if cond(j) {
					return nil
				}
			}
		}
		return fmt.Errorf("last seen %+v", last)
	})
	return last
}

// A node killed with SIGKILL in the middle of a job: its lease runs out, the
// job completes on another node as attempt 2, and only that result is stored.
func TestNodeKilledMidJob(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	f := startFailoverSite(t, ctx)
	nodeA := f.startNode(t, ctx, "node-a", "")
	job, err := f.sci.Submit(ctx, f.ref, f.slow)
	if err != nil {
		t.Fatal(err)
	}
	adminJob(t, ctx, f.site.Admin, job.ID, "node A to run it", time.Minute, func(j harness.AdminJob) bool {
		return j.State == "running" && j.Node == nodeA.Ready.PeerID
	})
	nodeA.Kill()
	nodeB := f.startNode(t, ctx, "node-b", "")
	done := adminJob(t, ctx, f.site.Admin, job.ID, "success", 2*time.Minute, func(j harness.AdminJob) bool { return j.State == "succeeded" || j.State == "failed" })
	if done.State != "succeeded" || done.Attempt != 2 || done.Node != nodeB.Ready.PeerID {
		t.Fatalf("after node A's death: %+v (node B is %s)", done, nodeB.Ready.PeerID)
	}
	if err := f.sci.Result(ctx, job.Ref, filepath.Join(t.TempDir(), "m.json")); err != nil {
		t.Fatalf("result: %v", err)
	}
}

// A node frozen (SIGSTOP) past its lease loses the job to another node;
// when it wakes up its late heartbeat and result are refused as stale, and
// the stored result stays the other node's.
func TestLateNodeRefused(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	f := startFailoverSite(t, ctx)
	nodeA := f.startNode(t, ctx, "node-a", "")
	job, err := f.sci.Submit(ctx, f.ref, f.slow)
	if err != nil {
		t.Fatal(err)
	}
	adminJob(t, ctx, f.site.Admin, job.ID, "node A to run it", time.Minute, func(j harness.AdminJob) bool {
		return j.State == "running" && j.Node == nodeA.Ready.PeerID
	})
	// The gateway marks the job running when it grants the lease, before
	// node A has read the grant. Frozen in between, A would wake to a claim
	// that timed out, never know it had the job and never hear it lost it
	// (on a busy machine that window is wide): freeze A only once it trains.
	waitTraining(t, nodeA, job.ID)
	if err := syscall.Kill(nodeA.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	nodeB := f.startNode(t, ctx, "node-b", "")
	done := adminJob(t, ctx, f.site.Admin, job.ID, "success on node B", 2*time.Minute, func(j harness.AdminJob) bool { return j.State == "succeeded" || j.State == "failed" })
	if done.State != "succeeded" || done.Node != nodeB.Ready.PeerID || done.Attempt != 2 {
		t.Fatalf("while node A was frozen: %+v", done)
	}
	if err := syscall.Kill(nodeA.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Node A wakes up: its next heartbeat for attempt 1 is stale and it
	// stops (or, had it finished meanwhile, its result is refused). On a
	// busy machine the woken process may take a while to be scheduled,
	// reconnect and heartbeat: the wait lasts as long as the test may.
	wait.For(t, time.Until(deadlineOf(ctx)), "node A to learn it lost the lease", func() error {
		if log := string(nodeA.Stderr()); strings.Contains(log, "lease lost") || strings.Contains(log, "result refused") {
			return nil
		}
		return fmt.Errorf("node A's log:\n%s", nodeA.Tail(20))
	})
	after := adminJob(t, ctx, f.site.Admin, job.ID, "state", time.Second, func(harness.AdminJob) bool { return true })
	if after.Node != nodeB.Ready.PeerID || after.Attempt != 2 || after.State != "succeeded" {
		t.Fatalf("the late node changed the job: %+v", after)
	}
}

// waitTraining waits until node n logs that it trains job: it holds the
// lease, has the plan and data, and heartbeats.
func waitTraining(t *testing.T, n *harness.Proc, job string) {
	t.Helper()
	wait.For(t, time.Minute, n.Name+" to train job "+job, func() error {
		for _, line := range strings.Split(string(n.Stderr()), "\n") {
			if strings.Contains(line, "msg=training") && strings.Contains(line, "job="+job) {
				return nil
			}
		}
		return fmt.Errorf("its log:\n%s", n.Tail(10))
	})
}

// deadlineOf is ctx's deadline (testContext always sets one).
func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// A gateway killed with SIGKILL while one job runs and two wait finishes all
// three after it restarts on the same data directory and address.
func TestGatewayKilledResumes(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	f := startFailoverSite(t, ctx)
	// The gateway listens on an ephemeral port; it comes back on the same
	// one, which its node keeps redialling.
	gwAddr := f.site.Gateway.Addr()
	listen, _, _ := strings.Cut(gwAddr, "/p2p/")
	node := f.startNode(t, ctx, "node", gwAddr)
	slow, err := f.sci.Submit(ctx, f.ref, f.slow)
	if err != nil {
		t.Fatal(err)
	}
	adminJob(t, ctx, f.site.Admin, slow.ID, "the node to run it", time.Minute, func(j harness.AdminJob) bool {
		return j.State == "running" && j.Node == node.Ready.PeerID
	})
	var queued []*harness.Job
	for i := 0; i < 2; i++ {
		j, err := f.sci.Submit(ctx, f.ref, f.quick)
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, j)
	}
	f.site.Gateway.Kill()
	again := f.gwOpt
	again.Extra = append(append([]string{}, again.Extra...), "--listen", listen)
	gw, err := f.h.StartGateway(ctx, "gateway", "Hospital A", again) // same name: same data directory
	if err != nil {
		t.Fatal(err)
	}
	if gw.Ready.PeerID != f.site.Gateway.Ready.PeerID {
		t.Fatalf("the restarted gateway has a new identity %s", gw.Ready.PeerID)
	}
	admin := harness.NewAdmin(gw.HTTP)
	if err := admin.Login(ctx, "owner@a.example", "a long owner password"); err != nil {
		t.Fatal(err)
	}
	for _, j := range append([]*harness.Job{slow}, queued...) {
		done := adminJob(t, ctx, admin, j.ID, "success after the restart", 3*time.Minute, func(j harness.AdminJob) bool { return j.State == "succeeded" || j.State == "failed" })
		if done.State != "succeeded" {
			t.Fatalf("job %s after the gateway's restart: %+v", j.ID, done)
		}
	}
}
