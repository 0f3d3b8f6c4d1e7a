package gateway_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/procstat"
	"github.com/fedgrid/fedgrid/internal/testproc"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/network"
)

// searchBenchNet is the network name of the search benchmark's peers.
const searchBenchNet = "srchbench"

// searchGatewaysPerProc is how many of the benchmark's gateways one child
// process holds (FEDGRID_BENCH_GATEWAYS_PER_PROC changes it). A process
// holds both ends of every connection among its own gateways; 150 gateways
// in one process reached the 20,000-descriptor limit of BENCHMARKS.md's
// machine.
const searchGatewaysPerProc = 50

// BenchmarkSearch measures a data scientist's search across 10, 50 and 100
// gateways on loopback: latency of a whole search (DHT lookup, a direct
// question to the bootstrap peer, dial and catalog answer of every
// provider) and recall (the share of the gateways holding a matching
// dataset that the search returned). This process runs the network peer
// and the client; the gateways run in child processes of 50 each (their
// own badger store and libp2p host each), started together. Besides the
// latency it reports the CPU time a search costs the gateways' processes
// and this one (client and network peer), and the gateways' CPU while
// nobody searches. make bench runs it; BENCHMARKS.md has the figures.
//
// FEDGRID_BENCH_GATEWAYS selects the sizes (default "10,50,100"; make
// bench-search300 runs "10,50,100,300", the size issue 18 asks for).
func BenchmarkSearch(b *testing.B) {
	sizes := []int{10, 50, 100}
	if env := os.Getenv("FEDGRID_BENCH_GATEWAYS"); env != "" {
		sizes = sizes[:0]
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				b.Fatalf("FEDGRID_BENCH_GATEWAYS=%q: want gateway counts separated by commas", env)
			}
			sizes = append(sizes, n)
		}
	}
	perProc := searchGatewaysPerProc
	if env := os.Getenv("FEDGRID_BENCH_GATEWAYS_PER_PROC"); env != "" {
		n, err := strconv.Atoi(env)
		if err != nil || n < 1 {
			b.Fatalf("FEDGRID_BENCH_GATEWAYS_PER_PROC=%q: want a number of gateways >= 1", env)
		}
		perProc = n
	}
	var cur *searchEnv // the size being measured
	defer func() {
		if cur != nil {
			cur.close(b)
		}
	}()
	for _, n := range sizes {
		b.Run(fmt.Sprintf("gateways=%d", n), func(sub *testing.B) {
			if cur == nil || cur.n != n {
				if cur != nil {
					cur.close(sub)
					cur = nil
				}
				cur = startSearchEnv(sub, b.TempDir(), n, perProc)
			}
			benchSearch(sub, cur)
		})
	}
}

const searchGatewaysEnv = "FEDGRID_BENCH_SEARCH_GATEWAYS"

// TestBenchSearchGatewaysHelper is not a test on its own: BenchmarkSearch
// runs it in child processes, each starting gateways ("<data dir> <first
// index> <count> <bootstrap multiaddr>" in its environment), each with one
// public dataset tagged "bench". It prints "STARTED" once they run and
// "READY <peer ID>..." once each has provided its dataset's keys, and
// serves until stopped.
func TestBenchSearchGatewaysHelper(t *testing.T) {
	f := strings.Fields(os.Getenv(searchGatewaysEnv))
	if len(f) != 4 {
		t.Skip("helper process for BenchmarkSearch")
	}
	first, err1 := strconv.Atoi(f[1])
	count, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		fmt.Println("ERR", searchGatewaysEnv, "=", f)
		os.Exit(2)
	}
	tbl, err := dataset.ReadCSV(bytesReader([]byte(trivialCSV)), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	type hosted struct {
		gw *gateway.Gateway
		id string
	}
	gws := make([]hosted, 0, count)
	defer func() { // all at once: one after the other takes long at 50
		var wg sync.WaitGroup
		for _, h := range gws {
			wg.Go(func() {
				if err := h.gw.Close(); err != nil {
					fmt.Println("ERR close:", err)
				}
			})
		}
		wg.Wait()
	}()
	for i := first; i < first+count; i++ {
		g, err := gateway.Start(ctx, gateway.Config{DataDir: filepath.Join(f[0], fmt.Sprintf("gw%03d", i)), Network: searchBenchNet,
			Listen: []string{loopback}, Bootstrap: []string{f[3]}, NoHTTP: true, Name: fmt.Sprintf("gw%03d", i)})
		if err != nil {
			fmt.Println("ERR", err)
			return
		}
		ds := &store.Dataset{Name: fmt.Sprintf("set %d", i), Tags: []string{"bench", fmt.Sprintf("g%d", i)}, Visibility: store.VisibilityPublic, Columns: tbl.Columns(), Rows: tbl.NumRows()}
		if err := g.Store().PutDataset(ds, []byte(trivialCSV)); err != nil {
			fmt.Println("ERR", err)
			return
		}
		gws = append(gws, hosted{g, ds.ID})
	}
	fmt.Println("STARTED")
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if _, err := wait.Context(wctx, func() error {
		for _, h := range gws {
			if s := h.gw.IndexState(h.id); s.State != gateway.IndexProvided {
				return fmt.Errorf("gateway %s: %+v", h.gw.ID(), s)
			}
		}
		return nil
	}); err != nil {
		fmt.Println("ERR indexing:", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	ids := make([]string, len(gws))
	for i, h := range gws {
		ids[i] = h.gw.ID()
	}
	if dir := os.Getenv("FEDGRID_BENCH_SEARCH_CPUPROFILES"); dir != "" { // profiling the gateways' side of the searches
		defer testproc.CPUProfile(t, filepath.Join(dir, fmt.Sprintf("search-gw%03d-cpu.pprof", first)))()
	}
	fmt.Println("READY", strings.Join(ids, " "))
	testproc.Wait()
	if dir := os.Getenv("FEDGRID_BENCH_PROFILES"); dir != "" { // heap, goroutines... of this process, when stopped
		writeProfiles(t, dir, fmt.Sprintf("search-gw%03d", first))
	}
}

// searchEnv is one size of BenchmarkSearch: the network peer, the
// gateways' processes and the client. It is kept from the benchmark's run
// with b.N = 1 to its run with -benchtime's count, which would otherwise
// start and index every gateway twice.
type searchEnv struct {
	n       int
	netw    *network.Network
	procs   []*testproc.Proc
	want    map[string]bool // the gateways' peer IDs
	cl      *client.Client
	startup time.Duration // until every gateway ran
	indexed time.Duration // until every gateway had provided its keys
	cold    time.Duration // the client's first search (it dials every gateway)
	idleCPU float64       // the gateways' CPU while idle, in cores
}

// startSearchEnv starts the network peer in this process, n gateways in
// child processes of perProc each, all at once, and the client once every
// gateway has provided its dataset's keys.
func startSearchEnv(b *testing.B, dir string, n, perProc int) *searchEnv {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	e := &searchEnv{n: n, want: map[string]bool{}}
	ok := false
	defer func() {
		if !ok { // failed half-way: stop what runs
			e.close(b)
		}
	}()
	var err error
	e.netw, err = network.Start(ctx, network.Config{DataDir: filepath.Join(dir, "net"), Network: searchBenchNet, Listen: []string{loopback}})
	if err != nil {
		b.Fatal(err)
	}
	started := time.Now()
	for first := 0; first < n; first += perProc {
		count := min(perProc, n-first)
		e.procs = append(e.procs, testproc.Start(b, "TestBenchSearchGatewaysHelper",
			fmt.Sprintf("%s=%s %d %d %s", searchGatewaysEnv, dir, first, count, e.netw.Addrs()[0])))
	}
	for _, p := range e.procs {
		p.Expect(b, 10*time.Minute, "STARTED")
	}
	e.startup = time.Since(started)
	b.Logf("%d gateways in %d processes started in %v", n, len(e.procs), e.startup.Round(time.Second))
	for _, p := range e.procs {
		for _, id := range p.Expect(b, 10*time.Minute, "READY") {
			e.want[id] = true
		}
	}
	e.indexed = time.Since(started)
	if len(e.want) != n {
		b.Fatalf("%d distinct gateways ready, want %d", len(e.want), n)
	}
	if e.cl, err = client.New(ctx, client.Config{Network: searchBenchNet, Bootstrap: e.netw.Addrs()}); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	res, err := e.cl.Search(ctx, []string{"bench"}, nil)
	e.cold = time.Since(t0)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("first search: %d results in %v", len(res), e.cold.Round(time.Millisecond))
	ok = true
	return e
}

// close stops the client, the gateways' processes and the network peer.
func (e *searchEnv) close(b *testing.B) {
	if e.cl != nil {
		_ = e.cl.Close()
	}
	for _, p := range e.procs {
		if err := p.Stop(); err != nil {
			b.Error(err)
		}
	}
	if e.netw != nil {
		if err := e.netw.Close(); err != nil {
			b.Error(err)
		}
	}
}

func benchSearch(b *testing.B, e *searchEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if b.N > 1 {
		defer testproc.CPUProfile(b, os.Getenv("FEDGRID_BENCH_SEARCH_CPUPROFILE"))() // profiling the client's side of the searches
	}
	// The gateways' CPU while nobody searches (DHT upkeep: routing table
	// refreshes, their answers, AutoNAT), over a window before the timed
	// searches, so that their CPU per search can be told from it. Once per
	// size: the run with b.N = 1 skips it.
	if b.N > 1 {
		const idleWindow = 10 * time.Second
		before := e.childCPU(b)
		// A sleep is the point here: the idle window is what is measured.
		time.Sleep(idleWindow)
		e.idleCPU = float64(e.childCPU(b)-before) / float64(idleWindow)
	}
	gwCPU, selfCPU := e.childCPU(b), cpuTime(b, os.Getpid())
	var lat []time.Duration
	var recall float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		res, err := e.cl.Search(ctx, []string{"bench"}, nil)
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		seen := map[string]bool{}
		for _, r := range res {
			if !e.want[r.Gateway] {
				b.Fatalf("result from %s, not one of the benchmark's gateways", r.Gateway)
			}
			seen[r.Gateway] = true
		}
		recall += float64(len(seen)) / float64(e.n)
	}
	b.StopTimer()
	gwCPU, selfCPU = e.childCPU(b)-gwCPU, cpuTime(b, os.Getpid())-selfCPU
	// What the processes hold after the searches.
	var fdsMax, anonMiB, rssMiB float64
	for _, p := range e.procs {
		fdsMax = max(fdsMax, float64(openFiles(b, p.Pid())))
		anonMiB += procStatus(b, p.Pid(), "RssAnon")
		rssMiB += procStatus(b, p.Pid(), "VmRSS")
	}
	selfRSS, err := procstat.MiB(0, "VmRSS")
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d child processes: at most %.0f open files in one, %.0f MiB resident in all (%.0f MiB anonymous, %.1f MiB a gateway); this process (network peer, client): %d open files, %.0f MiB resident",
		len(e.procs), fdsMax, rssMiB, anonMiB, anonMiB/float64(e.n), openFiles(b, os.Getpid()), selfRSS)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(e.cold.Microseconds())/1000, "first-ms")
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(100*recall/float64(b.N), "recall-%")
	b.ReportMetric(e.startup.Seconds(), "start-s")
	b.ReportMetric(e.indexed.Seconds(), "index-s")
	b.ReportMetric(fdsMax, "proc-fds-max")
	b.ReportMetric(anonMiB/float64(e.n), "gw-anon-MB")
	b.ReportMetric(float64(gwCPU.Microseconds())/1000/float64(b.N), "gw-cpu-ms/search")
	b.ReportMetric(float64(selfCPU.Microseconds())/1000/float64(b.N), "client-cpu-ms/search")
	b.ReportMetric(100*e.idleCPU, "gw-idle-cpu-%")
	b.ReportMetric(0, "ns/op")
}

// childCPU is the user + system CPU time of every gateway process.
func (e *searchEnv) childCPU(b *testing.B) time.Duration {
	var sum time.Duration
	for _, p := range e.procs {
		sum += cpuTime(b, p.Pid())
	}
	return sum
}

// openFiles counts a process's open file descriptors.
func openFiles(b *testing.B, pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		b.Fatal(err)
	}
	return len(ents)
}
