package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	dto "github.com/prometheus/client_model/go"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/procstat"
	"github.com/fedgrid/fedgrid/internal/testproc"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/node"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// trivialPlan trains one step on a tiny dataset: the benchmark measures the
// job machinery (offer, claim, lease, fetch, result, store), not training.
const trivialPlan = `{"format":"fedgrid.plan/v1","name":"trivial","features":["x"],"label":"y",
 "params":{"w":{"shape":[1,1],"init":"zeros"},"b":{"shape":[1],"init":"zeros"}},
 "forward":[{"op":"matmul","in":["x","w"],"out":"z"},{"op":"add","in":["z","b"],"out":"z"},{"op":"sigmoid","in":["z"],"out":"y_hat"}],
 "loss":{"op":"bce","in":["y_hat","y"]},"optimizer":{"name":"sgd","learning_rate":0.1},"train":{"epochs":1,"batch_size":8,"seed":1}}`

const trivialCSV = "x,y\n0,0\n1,1\n2,1\n-1,0\n3,1\n-2,0\n0.5,1\n-0.5,0\n"

func counterValue(t testing.TB, g interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) > 0 && mf.Metric[0].Counter != nil {
			return mf.Metric[0].Counter.GetValue()
		}
	}
	return 0
}

const benchGatewayEnv = "FEDGRID_BENCH_GATEWAY_DIR"

// TestBenchGatewayHelper is not a test on its own: BenchmarkDispatch runs it
// in a child process, so that the gateway's CPU time and memory are its
// own. It serves until its standard input is closed.
func TestBenchGatewayHelper(t *testing.T) {
	dir := os.Getenv(benchGatewayEnv)
	if dir == "" {
		t.Skip("helper process for BenchmarkDispatch")
	}
	cfg := gateway.Config{DataDir: dir, Network: "gwbench", Listen: []string{loopback},
		HTTPAddr: "127.0.0.1:0", Name: "bench"}
	if lvl := os.Getenv("FEDGRID_BENCH_LOG"); lvl != "" { // debugging a run: the gateway's log on stderr
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: benchLogLevel(lvl)}))
	}
	defer testproc.CPUProfile(t, os.Getenv("FEDGRID_BENCH_CPUPROFILE"))() // profiling a run
	if dir := os.Getenv("FEDGRID_BENCH_PROFILES"); dir != "" {            // contention profiles, written when the gateway stops
		runtime.SetMutexProfileFraction(5)
		runtime.SetBlockProfileRate(int(100 * time.Microsecond))
		defer writeProfiles(t, dir, "gateway")
		// SIGUSR1: the profiles now, as "gateway-idle-*" (the benchmark
		// sends it at the end of the idle window).
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGUSR1)
		defer signal.Stop(sig)
		go func() {
			for range sig {
				writeProfiles(t, dir, "gateway-idle")
			}
		}()
	}
	if v := os.Getenv("FEDGRID_BENCH_GOGC"); v != "" { // experiments with the gateway's GC
		n, _ := strconv.Atoi(v)
		debug.SetGCPercent(n)
	}
	if v := os.Getenv("FEDGRID_BENCH_MEMLIMIT_MB"); v != "" {
		n, _ := strconv.Atoi(v)
		debug.SetMemoryLimit(int64(n) << 20)
	}
	gw, err := gateway.Start(context.Background(), cfg)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	fmt.Println("READY", gw.Addrs()[0], gw.HTTPURL())
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := gw.Close(); err != nil {
		fmt.Println("ERR", err)
	}
}

// writeProfiles writes the mutex, block, heap and goroutine profiles of
// this process to dir/<name>-<profile>.pprof.
func writeProfiles(t testing.TB, dir, name string) {
	for _, prof := range []string{"mutex", "block", "heap", "goroutine"} {
		f, err := os.Create(filepath.Join(dir, name+"-"+prof+".pprof"))
		if err != nil {
			t.Error(err)
			return
		}
		if err := pprof.Lookup(prof).WriteTo(f, 0); err != nil {
			t.Error(err)
		}
		_ = f.Close()
	}
}

// benchLogLevel reads FEDGRID_BENCH_LOG: debug, info or warn.
func benchLogLevel(s string) slog.Level {
	var l slog.Level
	if l.UnmarshalText([]byte(s)) != nil {
		return slog.LevelDebug
	}
	return l
}

// benchGateway is the gateway process of a benchmark.
type benchGateway struct {
	cmd   *exec.Cmd
	stdin io.Closer
	addr  string
	http  string
}

// startBenchGateway prepares a store in dir (owner, the tiny dataset, data
// scientists with the given peer IDs, one join token per node) and starts
// the gateway process on it.
func startBenchGateway(b *testing.B, dir string, scientists []string, nodes int) (*benchGateway, *store.Dataset, []string) {
	st, err := store.Open(filepath.Join(dir, "db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := st.Setup("owner@example.org", "correct horse battery", "Owner"); err != nil {
		b.Fatal(err)
	}
	tbl, _ := dataset.ReadCSV(bytesReader([]byte(trivialCSV)), dataset.Limits{})
	ds := &store.Dataset{Name: "tiny", Tags: []string{"bench"}, Visibility: "public", Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := st.PutDataset(ds, []byte(trivialCSV)); err != nil {
		b.Fatal(err)
	}
	for i, pid := range scientists {
		if _, err := st.CreateUser(store.NewUser{Email: fmt.Sprintf("ds%d@example.org", i), Password: "a long password", Name: "DS", Role: store.RoleDataScientist, PeerID: pid}); err != nil {
			b.Fatal(err)
		}
	}
	tokens := make([]string, nodes)
	for i := range tokens {
		if tokens[i], _, err = st.CreateJoinToken(time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchGatewayHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), benchGatewayEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	g := &benchGateway{cmd: cmd, stdin: stdin}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "READY" {
			g.addr, g.http = f[1], f[2]
			break
		}
		if len(f) > 0 && f[0] == "ERR" {
			b.Fatalf("gateway: %s", sc.Text())
		}
	}
	if g.addr == "" {
		_ = cmd.Process.Kill()
		b.Fatal("gateway process did not start")
	}
	go func() { _, _ = io.Copy(io.Discard, out) }() // ends when the process does
	return g, ds, tokens
}

func (g *benchGateway) stop() {
	_ = g.stdin.Close()
	done := make(chan struct{})
	go func() { _ = g.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = g.cmd.Process.Kill()
		<-done
	}
}

// metrics reads the gateway's counters and gauges from GET /metrics; the
// series of a labelled metric are summed under its name.
func (g *benchGateway) metrics(b *testing.B) map[string]float64 {
	resp, err := http.Get(g.http + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		// A labelled series adds to its name's total (jobs_ended_total{state}).
		name, _, _ := strings.Cut(f[0], "{")
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[name] += v
		}
	}
	return out
}

// cpu is the gateway process's user + system CPU time.
func (g *benchGateway) cpu(b *testing.B) time.Duration { return cpuTime(b, g.cmd.Process.Pid) }

// cpuTime is a process's user + system CPU time.
func cpuTime(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64) // fields 14 and 15 of stat
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// minorFaults is a process's count of minor page faults (field 10 of
// /proc/PID/stat): pages mapped again from the page cache, without a read.
func minorFaults(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	n, err := strconv.ParseInt(f[7], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// rss is a process's resident set size in MiB.
func rss(b *testing.B, pid int) float64 { return procStatus(b, pid, "VmRSS") }

// procStatus reads a size field of /proc/PID/status in MiB: VmRSS, or its
// parts RssAnon (heap, stacks: the process's own) and RssFile (mapped
// files, mostly the binary's text, shared by every process of the same
// binary: the benchmark's gateway and node processes are all this test
// binary, 60+ MB).
func procStatus(b *testing.B, pid int, field string) float64 {
	mib, err := procstat.MiB(pid, field)
	if err != nil {
		b.Fatal(err)
	}
	return mib
}

// BenchmarkDispatch measures, with 10, 100 and 1,000 nodes in this process
// (real libp2p hosts on loopback) against one gateway in a child process:
// submit-to-lease latency (p50, p99), throughput of trivial jobs, claims and
// messages per job, the gateway's CPU time per job and its memory. make bench
// runs it; BENCHMARKS.md has the figures.
func BenchmarkDispatch(b *testing.B) {
	sizes := []int{10, 100, 1000}
	if env := os.Getenv("FEDGRID_BENCH_NODES"); env != "" { // e.g. "1000" to run one size
		sizes = sizes[:0]
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				b.Fatalf("FEDGRID_BENCH_NODES=%q: want node counts separated by commas", env)
			}
			sizes = append(sizes, n)
		}
	}
	for _, nodes := range sizes {
		benchDispatch(b, nodes)
	}
}

func benchDispatch(b *testing.B, nodes int) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	const submitters = 4
	var keys []string
	var clients []*client.Client
	var sks []crypto.PrivKey
	for range submitters {
		sk, _ := p2p.GenerateIdentity()
		pid, _ := p2p.PeerIDOf(sk)
		keys = append(keys, pid.String())
		sks = append(sks, sk)
	}
	dir := b.TempDir()
	gw, ds, tokens := startBenchGateway(b, dir, keys, nodes)
	defer gw.stop()
	gwAddr, err := p2p.ParseAddrInfos([]string{gw.addr})
	if err != nil {
		b.Fatal(err)
	}
	gwID := gwAddr[0].ID
	for _, sk := range sks {
		cl, err := client.New(ctx, client.Config{Network: "gwbench", Bootstrap: []string{gw.addr}, Identity: sk})
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		clients = append(clients, cl)
	}

	// The nodes, started a few at a time.
	started := time.Now()
	nds := make([]*node.Node, nodes)
	var wg sync.WaitGroup
	next := make(chan int)
	var startErr error
	var mu sync.Mutex
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				cfg := node.Config{DataDir: filepath.Join(dir, fmt.Sprintf("node%d", i)), Network: "gwbench",
					Listen: []string{loopback}, Gateway: gw.addr, JoinToken: tokens[i]}
				if lvl := os.Getenv("FEDGRID_BENCH_LOG"); lvl != "" {
					cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: benchLogLevel(lvl)})).With("node", i)
				}
				nd, err := node.Start(ctx, cfg)
				mu.Lock()
				if err != nil && startErr == nil {
					startErr = err
				}
				nds[i] = nd
				mu.Unlock()
			}
		}()
	}
	for i := range nodes {
		next <- i
	}
	close(next)
	wg.Wait()
	defer func() {
		for _, nd := range nds {
			if nd != nil {
				_ = nd.Close()
			}
		}
	}()
	if startErr != nil {
		b.Fatal(startErr)
	}
	if _, err := wait.Context(ctx, wait.Is(func() bool { return gw.metrics(b)["fedgrid_nodes_live"] >= float64(nodes) })); err != nil {
		b.Fatalf("only %v of %d nodes live: %v", gw.metrics(b)["fedgrid_nodes_live"], nodes, err)
	}
	b.Logf("%d nodes enrolled and live in %v", nodes, time.Since(started).Round(time.Millisecond))
	// What the idle fleet costs: CPU of the gateway and of this process (the
	// nodes and clients) over a few seconds without jobs.
	gwIdle0, selfIdle0, idleStart := gw.cpu(b), cpuTime(b, os.Getpid()), time.Now()
	stopIdleProfile := testproc.CPUProfile(b, os.Getenv("FEDGRID_BENCH_IDLE_CPUPROFILE")) // profiling the idle nodes
	// A sleep is the point here: the measurement window itself.
	time.Sleep(3 * time.Second)
	stopIdleProfile()
	if os.Getenv("FEDGRID_BENCH_PROFILES") != "" {
		_ = gw.cmd.Process.Signal(syscall.SIGUSR1)
	}
	idleSecs := time.Since(idleStart).Seconds()
	gm := gw.metrics(b)
	b.Logf("idle with %d nodes: gateway %.0f ms CPU/s, nodes %.0f ms CPU/s, gateway RSS %.1f MiB (heap in use %.1f MiB, stacks %.1f MiB, %v goroutines), this process RSS %.0f MiB",
		nodes, float64((gw.cpu(b)-gwIdle0).Milliseconds())/idleSecs, float64((cpuTime(b, os.Getpid())-selfIdle0).Milliseconds())/idleSecs,
		rss(b, gw.cmd.Process.Pid), gm["go_memstats_heap_inuse_bytes"]/(1<<20), gm["go_memstats_stack_inuse_bytes"]/(1<<20), gm["go_goroutines"], rss(b, os.Getpid()))

	b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
		idleRSS, idleAnon := rss(b, gw.cmd.Process.Pid), procStatus(b, gw.cmd.Process.Pid, "RssAnon")
		if b.N > 1 {
			defer testproc.CPUProfile(b, os.Getenv("FEDGRID_BENCH_NODES_CPUPROFILE"))() // profiling the nodes' side of a burst
		}
		m0, cpu0 := gw.metrics(b), gw.cpu(b)
		b.ResetTimer()
		start := time.Now()
		ids := make([]string, b.N)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		for i := range b.N {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j, err := clients[i%submitters].Submit(ctx, gwID, ds.ID, []byte(trivialPlan))
				mu.Lock()
				defer mu.Unlock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					ids[i] = j.ID
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			b.Fatal(firstErr)
		}
		// Wait for the last job to end, watching the gateway's counters
		// (reading every job while they run would load the gateway).
		ended := func(m map[string]float64) float64 {
			return m["fedgrid_jobs_ended_total"]
		}
		if _, err := wait.Context(ctx, wait.Is(func() bool { return ended(gw.metrics(b))-ended(m0) >= float64(b.N) })); err != nil {
			b.Fatalf("benchmark timed out: %v", err)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		m1, cpu1 := gw.metrics(b), gw.cpu(b)
		burstRSS := rss(b, gw.cmd.Process.Pid)
		delta := func(name string) float64 { return (m1[name] - m0[name]) / float64(b.N) }
		var lat []time.Duration
		for i, id := range ids {
			j, err := clients[i%submitters].Job(ctx, gwID, id)
			if err != nil {
				b.Fatal(err)
			}
			if j.State != wire.StateSucceeded || j.StartedAt == nil {
				b.Fatalf("job %s %s: %s", id, j.State, j.Error)
			}
			lat = append(lat, j.StartedAt.Sub(j.CreatedAt))
		}
		pct := func(lat []time.Duration, p float64) float64 {
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
		b.ReportMetric(delta("fedgrid_claims_total"), "claims/job")
		b.ReportMetric(delta("fedgrid_node_requests_total")+delta("fedgrid_offers_direct_total")+delta("fedgrid_offer_gossip_sends_total"), "msgs/job")
		b.ReportMetric(delta("fedgrid_node_pings_total"), "pings/job")
		b.ReportMetric(delta("fedgrid_offers_direct_total"), "offers/job")
		b.ReportMetric(delta("fedgrid_offer_gossip_sends_total"), "gossip-sends/job")
		b.ReportMetric(delta("fedgrid_lease_expiries_total"), "lease-expiries/job")
		b.ReportMetric(float64((cpu1-cpu0).Microseconds())/1000/float64(b.N), "gw-cpu-ms/job")
		b.ReportMetric(idleRSS, "gw-idle-rss-MB")
		b.ReportMetric(idleAnon, "gw-idle-anon-MB")
		b.ReportMetric(burstRSS, "gw-rss-MB")
		b.ReportMetric(pct(lat, 0.5), "burst-p50-ms")

		// Dispatch latency with free nodes: one job at a time, submit to lease.
		lat = lat[:0]
		for i := range 50 {
			j, err := clients[i%submitters].Submit(ctx, gwID, ds.ID, []byte(trivialPlan))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := wait.Context(ctx, func() error {
				sj, err := clients[i%submitters].Job(ctx, gwID, j.ID)
				if err != nil {
					b.Fatal(err)
				}
				if wire.Terminal(sj.State) && sj.State != wire.StateSucceeded {
					b.Fatalf("job %s %s", j.ID, sj.State)
				}
				if sj.State != wire.StateSucceeded {
					return fmt.Errorf("job %s", sj.State)
				}
				lat = append(lat, sj.StartedAt.Sub(sj.CreatedAt))
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(pct(lat, 0.5), "p50-ms")
		b.ReportMetric(pct(lat, 0.99), "p99-ms")
		b.ReportMetric(0, "ns/op")
	})
}

// fedgridBinary returns the fedgrid binary a benchmark runs: $FEDGRID_BIN
// (make bench exports bin/fedgrid, built by make build), else one built
// here with go build into dir.
func fedgridBinary(b *testing.B, dir string) string {
	if p := os.Getenv("FEDGRID_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("FEDGRID_BIN=%s: %v (run make build)", p, err)
		}
		return p
	}
	out := filepath.Join(dir, "fedgrid")
	if msg, err := exec.Command("go", "build", "-o", out, "github.com/fedgrid/fedgrid/cmd/fedgrid").CombinedOutput(); err != nil {
		b.Fatalf("go build ./cmd/fedgrid: %v\n%s", err, msg)
	}
	return out
}

// BenchmarkNodeIdleRSS measures the resident memory of an idle node, the
// real `fedgrid node` process (see fedgridBinary), enrolled at a gateway
// process, pinging and subscribed to offers, after a job has run on it; and
// of its gateway. make bench runs it; BENCHMARKS.md has the figures.
// The idle window is 10 s, or FEDGRID_BENCH_NODE_IDLE (a duration);
// FEDGRID_BENCH_NODE_SMAPS=FILE copies the node's /proc/PID/smaps there at
// the time of the measurement (which mappings hold its pages).
func BenchmarkNodeIdleRSS(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sk, _ := p2p.GenerateIdentity()
	pid, _ := p2p.PeerIDOf(sk)
	dir := b.TempDir()
	bin := fedgridBinary(b, dir)
	b.Logf("node binary: %s", bin)
	gw, ds, tokens := startBenchGateway(b, dir, []string{pid.String()}, 1)
	defer gw.stop()
	cmd := exec.Command(bin, "node", "--data", filepath.Join(dir, "node"), "--network", "gwbench",
		"--listen", loopback, "--gateway", gw.addr, "--join-token", tokens[0], "--log-level", "warn")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		// SIGTERM: the node stops as a user's Ctrl-C would stop it.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	sc := bufio.NewScanner(out) // the node's standard output: its ready line first
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "ready ") {
		b.Fatalf("node did not start: %q %v", sc.Text(), sc.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	cl, err := client.New(ctx, client.Config{Network: "gwbench", Bootstrap: []string{gw.addr}, Identity: sk})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	gwAddr, _ := p2p.ParseAddrInfos([]string{gw.addr})
	faults0 := minorFaults(b, cmd.Process.Pid)
	b.ResetTimer()
	for range b.N {
		j, err := cl.Submit(ctx, gwAddr[0].ID, ds.ID, []byte(trivialPlan))
		if err != nil {
			b.Fatal(err)
		}
		if done, err := cl.Wait(ctx, gwAddr[0].ID, j.ID, nil); err != nil || done.State != wire.StateSucceeded {
			b.Fatalf("job: %+v %v", done, err)
		}
	}
	b.StopTimer()
	faults1, cpu1 := minorFaults(b, cmd.Process.Pid), cpuTime(b, cmd.Process.Pid)
	// Idle for a while: pings, gossip heartbeats, the GC settling.
	// A sleep is the point here: the idle period is what is measured.
	idle := 10 * time.Second
	if v := os.Getenv("FEDGRID_BENCH_NODE_IDLE"); v != "" { // a longer idle window, e.g. 2m
		if idle, err = time.ParseDuration(v); err != nil || idle <= 0 {
			b.Fatalf("FEDGRID_BENCH_NODE_IDLE=%q: %v", v, err)
		}
	}
	time.Sleep(idle)
	faults2, cpu2 := minorFaults(b, cmd.Process.Pid), cpuTime(b, cmd.Process.Pid)
	// The page faults of the jobs and of the idle window: what releasing
	// the binary's start-up pages (internal/memtrim) costs later.
	b.ReportMetric(float64(faults1-faults0)/float64(b.N), "node-minflt/job")
	b.ReportMetric(float64(faults2-faults1)/idle.Seconds(), "node-idle-minflt/s")
	b.ReportMetric(float64((cpu2-cpu1).Milliseconds())/idle.Seconds(), "node-idle-cpu-ms/s")
	if path := os.Getenv("FEDGRID_BENCH_NODE_SMAPS"); path != "" {
		smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", cmd.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(path, smaps, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(rss(b, cmd.Process.Pid), "node-idle-rss-MB")
	b.ReportMetric(procStatus(b, cmd.Process.Pid, "RssAnon"), "node-idle-anon-MB")
	b.ReportMetric(procStatus(b, cmd.Process.Pid, "RssFile"), "node-idle-file-MB")
	b.ReportMetric(rss(b, gw.cmd.Process.Pid), "gw-idle-rss-MB")
	b.ReportMetric(0, "ns/op")
}
