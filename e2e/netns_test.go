package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fedgrid/fedgrid/internal/harness"
)

// The namespace test's addresses, all inside 198.18.0.0/15 (reserved for
// network tests) and only inside namespaces the test makes:
//
//	public segment 198.18.0.0/24 (a bridge in namespace pub):
//	    network peer 198.18.0.10, routers' WAN sides .11 (A), .12 (B), .13 (scientist)
//	org A's LAN 198.18.1.0/24: router 198.18.1.1, host 198.18.1.2 (gateway + node)
//	org B's LAN 198.18.2.0/24: router 198.18.2.1, host 198.18.2.2 (gateway + node)
//	scientist's LAN 198.18.3.0/24: router 198.18.3.1, host 198.18.3.2
//
// Each router masquerades its LAN behind its WAN address (iptables
// MASQUERADE) and has no route anywhere else: nothing leaves the namespaces.
const (
	nsNetAddr = "198.18.0.10"
)

// topology is the set of namespaces of one run, named <prefix>-<role>.
type topology struct {
	t      *testing.T
	prefix string
	made   []string
}

func (tp *topology) ns(role string) string { return tp.prefix + "-" + role }

func (tp *topology) run(args ...string) {
	tp.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tp.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (tp *topology) addNS(role string) {
	tp.t.Helper()
	name := tp.ns(role)
	tp.run("ip", "netns", "add", name)
	tp.made = append(tp.made, name)
	tp.run("ip", "-n", name, "link", "set", "lo", "up")
}

// veth joins namespace a (interface ifA) and b (ifB).
func (tp *topology) veth(i int, a, ifA, b, ifB string) {
	tp.t.Helper()
	ta, tb := fmt.Sprintf("%s%da", tp.prefix, i), fmt.Sprintf("%s%db", tp.prefix, i)
	tp.run("ip", "link", "add", ta, "type", "veth", "peer", "name", tb)
	tp.run("ip", "link", "set", ta, "netns", tp.ns(a))
	tp.run("ip", "link", "set", tb, "netns", tp.ns(b))
	tp.run("ip", "-n", tp.ns(a), "link", "set", ta, "name", ifA)
	tp.run("ip", "-n", tp.ns(b), "link", "set", tb, "name", ifB)
}

func (tp *topology) addr(role, ifname, cidr string) {
	tp.t.Helper()
	tp.run("ip", "-n", tp.ns(role), "addr", "add", cidr, "dev", ifname)
	tp.run("ip", "-n", tp.ns(role), "link", "set", ifname, "up")
}

// newTopology builds the namespaces; they are deleted when the test ends,
// also when it fails.
func newTopology(t *testing.T) *topology {
	b := make([]byte, 2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	tp := &topology{t: t, prefix: "fg" + hex.EncodeToString(b)}
	t.Cleanup(func() {
		for _, n := range tp.made {
			if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
				t.Errorf("delete namespace %s: %v %s", n, err, out)
			}
		}
	})
	for _, r := range []string{"pub", "net", "ra", "a", "rb", "b", "rs", "s"} {
		tp.addNS(r)
	}
	tp.run("ip", "-n", tp.ns("pub"), "link", "add", "br0", "type", "bridge")
	tp.run("ip", "-n", tp.ns("pub"), "link", "set", "br0", "up")
	port := func(i int, role, ifname, cidr string) {
		pif := fmt.Sprintf("p%d", i)
		tp.veth(i, "pub", pif, role, ifname)
		tp.run("ip", "-n", tp.ns("pub"), "link", "set", pif, "master", "br0")
		tp.run("ip", "-n", tp.ns("pub"), "link", "set", pif, "up")
		tp.addr(role, ifname, cidr)
	}
	port(0, "net", "wan", nsNetAddr+"/24")
	for i, org := range []struct{ router, host, wan, lan string }{
		{"ra", "a", "198.18.0.11", "198.18.1"},
		{"rb", "b", "198.18.0.12", "198.18.2"},
		{"rs", "s", "198.18.0.13", "198.18.3"},
	} {
		port(i+1, org.router, "wan", org.wan+"/24")
		tp.veth(i+10, org.router, "lan", org.host, "eth0")
		tp.addr(org.router, "lan", org.lan+".1/24")
		tp.addr(org.host, "eth0", org.lan+".2/24")
		tp.run("ip", "-n", tp.ns(org.host), "route", "add", "default", "via", org.lan+".1")
		tp.run("ip", "netns", "exec", tp.ns(org.router), "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
		tp.run("ip", "netns", "exec", tp.ns(org.router), "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
	}
	return tp
}

// harnessIn runs fedgrid inside namespace role.
func (tp *topology) harnessIn(bin, role string) *harness.Harness {
	tp.t.Helper()
	dir := filepath.Join(tp.t.TempDir(), role)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tp.t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "fedgrid-in-"+role)
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", tp.ns(role), bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		tp.t.Fatal(err)
	}
	h, err := harness.New(harness.Config{Bin: wrapper, Dir: dir, ReadyTimeout: time.Minute})
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() {
		err := h.Close()
		if tp.t.Failed() {
			tp.t.Logf("%s: peer logs (last lines):\n%s", role, h.LogTails(60))
		}
		if err != nil {
			tp.t.Errorf("%s: cleanup: %v", role, err)
		}
	})
	return h
}

// adminIn is an admin API client whose connections are made inside
// namespace role (the test process itself stays in its own namespace).
func (tp *topology) adminIn(role, baseURL string) *harness.Admin {
	a := harness.NewAdmin(baseURL)
	nsPath := "/run/netns/" + tp.ns(role)
	a.HTTP.Transport = &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialInNamespace(ctx, nsPath, network, addr)
	}}
	return a
}

// dialInNamespace opens a socket inside the network namespace at nsPath:
// the dialling OS thread enters it for the socket call and comes back.
func dialInNamespace(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter %s: %w", nsPath, err)
	}
	var d net.Dialer
	conn, derr := d.DialContext(ctx, network, addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays in the other namespace: keep it locked so that
		// Go ends it with this goroutine instead of reusing it.
		return nil, fmt.Errorf("leave %s: %w", nsPath, err)
	}
	runtime.UnlockOSThread()
	return conn, derr
}

// org is one data owner behind its NAT.
type org struct {
	name    string
	host    string // namespace role of its LAN host
	router  string
	ip      string
	gateway *harness.Proc
	admin   *harness.Admin
	node    *harness.Proc
	ref     string // GATEWAY_PEER_ID/DATASET_ID
}

func addrWithPrefix(addrs []string, prefix string) string {
	for _, a := range addrs {
		if strings.HasPrefix(a, prefix) {
			return a
		}
	}
	return ""
}

// TestNetworkNamespaces runs fedgrid across real links between network
// namespaces: a network peer on a "public" segment, two organisations each
// with a gateway and a node behind its own NAT, and a data scientist behind
// a third NAT. Search finds both organisations' datasets and a job trains
// at each through the NATs (acceptance 1); the logs say how each path went.
// Then organisation B's uplink is cut for 30 s while its node runs a job:
// after the link heals the job finishes and train --wait ends with the
// result (acceptance 2). It needs root, ip and iptables, and runs with
// `make test-netns` (FEDGRID_NETNS=1).
func TestNetworkNamespaces(t *testing.T) {
	if os.Getenv("FEDGRID_NETNS") == "" {
		t.Skip("network-namespace test: run it with `make test-netns` (as root; FEDGRID_NETNS=1)")
	}
	if os.Geteuid() != 0 {
		t.Skip("network-namespace test: needs root (ip netns, iptables)")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("network-namespace test: %s is not installed (apt-get install iproute2 iptables)", tool)
		}
	}
	bin := fedgridBin(t)
	tp := newTopology(t)
	ctx := testContext(t, 12*time.Minute)
	netName := networkName(t)

	// The network peer, on the public segment.
	hNet := tp.harnessIn(bin, "net")
	np, err := hNet.Start(ctx, "network", "network", "--data", hNet.Path("data"), "--network", netName,
		"--listen", "/ip4/"+nsNetAddr+"/tcp/4001", "--listen", "/ip4/"+nsNetAddr+"/udp/4001/quic-v1")
	if err != nil {
		t.Fatal(err)
	}
	netAddr := addrWithPrefix(np.Addrs, "/ip4/"+nsNetAddr+"/tcp/4001/")
	if netAddr == "" {
		t.Fatalf("network peer addresses %v lack %s/tcp/4001", np.Addrs, nsNetAddr)
	}

	// The data scientist, behind the third NAT.
	hS := tp.harnessIn(bin, "s")
	sci, err := hS.NewScientist(ctx, hS.Path("scientist.key"), netName, []string{netAddr})
	if err != nil {
		t.Fatal(err)
	}

	orgs := []*org{
		{name: "Hospital A", host: "a", router: "ra", ip: "198.18.1.2"},
		{name: "Hospital B", host: "b", router: "rb", ip: "198.18.2.2"},
	}
	data := map[string]string{"a": "pima_diabetes.csv", "b": "wdbc_breast_cancer.csv"}
	for _, o := range orgs {
		h := tp.harnessIn(bin, o.host)
		o.gateway, err = h.Start(ctx, "gateway", "gateway", "--data", h.Path("gateway"), "--network", netName, "--name", o.name,
			"--listen", "/ip4/"+o.ip+"/tcp/4002", "--listen", "/ip4/"+o.ip+"/udp/4002/quic-v1",
			"--bootstrap", netAddr, "--http", o.ip+":8420",
			// 198.18.0.0/15 is not a public range, so AutoNAT cannot tell;
			// the operator says the gateway is behind NAT.
			"--reachability", "private")
		if err != nil {
			t.Fatal(err)
		}
		o.admin = tp.adminIn(o.host, o.gateway.HTTP)
		if _, err := o.admin.Setup(ctx, o.gateway.SetupToken(), "owner@"+o.host+".example", "owner password 1", "Owner"); err != nil {
			t.Fatal(err)
		}
		if err := o.admin.Login(ctx, "owner@"+o.host+".example", "owner password 1"); err != nil {
			t.Fatal(err)
		}
		csv, err := os.ReadFile(filepath.Join(dataDir(), data[o.host]))
		if err != nil {
			t.Fatal(err)
		}
		ds, err := o.admin.UploadCSV(ctx, harness.Upload{Name: strings.TrimSuffix(data[o.host], ".csv"), Tags: []string{"medical", "netns"}, Visibility: "public", CSV: csv})
		if err != nil {
			t.Fatal(err)
		}
		o.ref = o.gateway.PeerID + "/" + ds.ID
		if _, err := o.admin.CreateUser(ctx, harness.NewUser{Email: "scientist@lab.example", Password: "scientist password", Name: "Scientist", Role: harness.RoleDataScientist, PeerID: sci.PeerID}); err != nil {
			t.Fatal(err)
		}
		tok, err := o.admin.JoinToken(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lanAddr := addrWithPrefix(o.gateway.Addrs, "/ip4/"+o.ip+"/tcp/4002/")
		if lanAddr == "" {
			t.Fatalf("%s: gateway addresses %v lack its LAN address", o.name, o.gateway.Addrs)
		}
		o.node, err = h.Start(ctx, "node", "node", "--data", h.Path("node"), "--network", netName,
			"--listen", "/ip4/"+o.ip+"/tcp/0", "--gateway", lanAddr, "--join-token", tok, "--bootstrap", netAddr)
		if err != nil {
			t.Fatal(err)
		}
	}

	// Acceptance 1: search from behind the third NAT finds both datasets.
	found, err := sci.WaitSearch(ctx, 2, time.Second, "netns")
	if err != nil {
		t.Fatalf("search: %v", err)
	}
	t.Logf("search found %d datasets", len(found))
	for _, o := range orgs {
		ok := false
		for _, r := range found {
			if r.Ref == o.ref {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("search did not find %s's dataset %s: %+v", o.name, o.ref, found)
		}
	}

	// A job trains at each organisation, through the NATs.
	plan := filepath.Join(planDir(), "logreg_pima.json")
	for _, o := range orgs {
		p := plan
		if o.host == "b" {
			p = filepath.Join(planDir(), "logreg_wdbc.json")
		}
		job, stderr := trainWait(t, ctx, hS, sci, o.ref, p)
		if job.State != "succeeded" {
			t.Fatalf("%s: job %s ended %s: %s", o.name, job.ID, job.State, job.Error)
		}
		t.Logf("%s: job %s succeeded; the scientist's path to the gateway: %s", o.name, job.ID, pathSummary(stderr, o.gateway.PeerID))
		if pathSummary(stderr, o.gateway.PeerID) == "" {
			t.Errorf("%s: the scientist's log says nothing about the path to the gateway:\n%s", o.name, stderr)
		}
		model := hS.Path(o.host + "-model.json")
		if err := sci.Result(ctx, o.gateway.PeerID+"/"+job.ID, model); err != nil {
			t.Fatalf("%s: result: %v", o.name, err)
		}
	}
	for _, o := range orgs {
		t.Logf("%s gateway: %s", o.name, pathSummary(o.gateway.Stderr(), sci.PeerID))
	}

	// Acceptance 2: cut org B's uplink for 30 s while its node runs a slow
	// job, then heal it. The job finishes, nothing is lost, and the
	// scientist's train --wait (running all along) ends with the result.
	b := orgs[1]
	slow := writeSlowPlan(t, hS.Path("slow.json"))
	type outcome struct {
		job    *harness.Job
		stderr string
	}
	done := make(chan outcome, 1)
	go func() { // owned by this test: it waits for done below
		j, e := trainWait(t, ctx, hS, sci, b.ref, slow)
		done <- outcome{j, e}
	}()
	running := waitJobRunning(t, ctx, b.admin)
	t.Logf("job %s runs at %s's node; cutting its uplink for 30 s", running, b.name)
	tp.run("ip", "-n", tp.ns(b.router), "link", "set", "wan", "down")
	// The 30 s outage is what this part of the test is about: a fixed
	// wall-clock partition, not a wait for a condition.
	select {
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	stateAtHeal := "unknown"
	if jobs, err := b.admin.Jobs(ctx); err == nil { // over B's LAN, which stayed up
		for _, j := range jobs {
			if j.ID == running {
				stateAtHeal = j.State
			}
		}
	}
	tp.run("ip", "-n", tp.ns(b.router), "link", "set", "wan", "up")
	t.Logf("uplink healed; the job was %s when it came back", stateAtHeal)
	var res outcome
	select {
	case res = <-done:
	case <-ctx.Done():
		t.Fatalf("train --wait did not end after the uplink healed: %v", ctx.Err())
	}
	if res.job == nil || res.job.State != "succeeded" || res.job.ID != running {
		t.Fatalf("after the partition: job %+v (want %s succeeded)\n%s", res.job, running, res.stderr)
	}
	if acc, ok := res.job.Metric("validation_accuracy"); !ok || acc < 0.8 {
		t.Errorf("the job that lived through the partition has validation_accuracy %v (present %v), want at least 0.8", acc, ok)
	}
	if err := sci.Result(ctx, b.gateway.PeerID+"/"+running, hS.Path("b-slow-model.json")); err != nil {
		t.Fatalf("result after the partition: %v", err)
	}
	jobs, err := b.admin.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.State != "succeeded" {
			t.Errorf("%s has job %s in state %s after the partition", b.name, j.ID, j.State)
		}
	}
	t.Logf("after the partition: %s", pathSummary(res.stderr, b.gateway.PeerID))
}

// trainWait runs `fedgrid train --wait --json` with info logs and returns
// the job and the command's stderr (its connection log).
func trainWait(t *testing.T, ctx context.Context, h *harness.Harness, sci *harness.Scientist, ref, plan string) (*harness.Job, string) {
	// Debug: the one-shot commands keep info lines (the connection paths)
	// off stderr unless asked for.
	args := []string{"train", "--network", sci.Network, "--key", sci.Key, "--log-level", "debug", "--dataset", ref, "--plan", plan, "--wait", "--json"}
	for _, b := range sci.Bootstrap {
		args = append(args, "--bootstrap", b)
	}
	res, err := h.Run(ctx, args...)
	if res == nil {
		t.Errorf("train: %v", err)
		return nil, ""
	}
	var j harness.Job
	if jerr := json.Unmarshal(res.Stdout, &j); jerr != nil || j.ID == "" {
		t.Errorf("train printed no job (%v): %v\nstderr:\n%s", jerr, err, res.Stderr)
		return nil, string(res.Stderr)
	}
	return &j, string(res.Stderr)
}

// pathSummary picks the log lines about the connection to peer: relayed
// connections, hole punching and direct dials.
func pathSummary(log any, peerID string) string {
	text, _ := log.(string)
	if b, ok := log.([]byte); ok {
		text = string(b)
	}
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, peerID) && strings.Contains(l, "path=") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, " | ")
}

// waitJobRunning returns the ID of the first job the admin API shows running.
func waitJobRunning(t *testing.T, ctx context.Context, a *harness.Admin) string {
	t.Helper()
	for {
		jobs, err := a.Jobs(ctx)
		if err == nil {
			for _, j := range jobs {
				if j.State == "running" {
					return j.ID
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no job started running: %v (last error %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writeSlowPlan writes a plan for the breast-cancer data that trains for a
// while (a two-layer MLP, many epochs, small batches).
func writeSlowPlan(t *testing.T, path string) string {
	t.Helper()
	var p map[string]any
	b, err := os.ReadFile(filepath.Join(planDir(), "logreg_wdbc.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	nf := len(p["features"].([]any))
	p["name"] = "wdbc-mlp-slow"
	p["params"] = map[string]any{
		"w1": map[string]any{"shape": []int{nf, 128}, "init": "glorot"},
		"b1": map[string]any{"shape": []int{128}, "init": "zeros"},
		"w2": map[string]any{"shape": []int{128, 128}, "init": "glorot"},
		"b2": map[string]any{"shape": []int{128}, "init": "zeros"},
		"w3": map[string]any{"shape": []int{128, 1}, "init": "glorot"},
		"b3": map[string]any{"shape": []int{1}, "init": "zeros"},
	}
	p["forward"] = []any{
		map[string]any{"op": "matmul", "in": []string{"x", "w1"}, "out": "h"},
		map[string]any{"op": "add", "in": []string{"h", "b1"}, "out": "h"},
		map[string]any{"op": "relu", "in": []string{"h"}, "out": "h"},
		map[string]any{"op": "matmul", "in": []string{"h", "w2"}, "out": "h2"},
		map[string]any{"op": "add", "in": []string{"h2", "b2"}, "out": "h2"},
		map[string]any{"op": "relu", "in": []string{"h2"}, "out": "h2"},
		map[string]any{"op": "matmul", "in": []string{"h2", "w3"}, "out": "z"},
		map[string]any{"op": "add", "in": []string{"z", "b3"}, "out": "z"},
		map[string]any{"op": "sigmoid", "in": []string{"z"}, "out": "y_hat"},
	}
	p["optimizer"] = map[string]any{"name": "adam", "learning_rate": 0.0005}
	// About 28 s of CPU on an idle core (4.7 s per 400 epochs of batch 8
	// measured), so that the job still runs when the uplink comes back on
	// most machines. Not more epochs: the job's per-epoch curves must stay
	// under the ds/job answer limit (64 KiB; some 80 bytes an epoch).
	p["train"] = map[string]any{"epochs": 600, "batch_size": 2, "seed": 7, "validation_fraction": 0.2}
	out, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
