package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/dataset/colstore"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/procstat"
	"github.com/fedgrid/fedgrid/node"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// Acceptance 2 of issue 19: a logistic regression and an MLP train through
// a real node (a child process) on a generated dataset of about 1 GB (5M
// rows x 20 features + a label, FEDGRID_BENCH_STREAM_ROWS to change the
// rows). The node allows its jobs 256 MiB (--max-memory), so it streams:
// job/data into its shard cache, then training from a bounded buffer. The
// same plans then train in this process on the rows already in memory
// (plan.TrainSource without a limit: the path of fedgrid plan run). It
// reports the node's peak RSS per plan (VmHWM, reset between plans), the
// transfer, and the mean time of epochs 2.. of each run and their ratio.
//
// The gateway stores the generated CSV as its columnar version
// (store.PutDatasetFrom, as an upload does) and serves job/data from it.

const benchStreamNodeEnv = "FEDGRID_BENCH_STREAM_NODE"

const benchFeatures = 20

// genCSV writes rows rows of benchFeatures standard normal features
// (rounded to six decimals, written as dataset.AppendNumber spells them)
// and a 0/1 label drawn from a logistic model of them.
func genCSV(path string, rows int, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(seed, 0x67656e))
	var wts [benchFeatures]float64
	for j := range wts {
		wts[j] = float64(j%5-2) * 0.4
	}
	for j := range benchFeatures {
		fmt.Fprintf(w, "f%02d,", j)
	}
	w.WriteString("label\n")
	buf := make([]byte, 0, 256)
	for range rows {
		buf = buf[:0]
		z := 0.0
		for j := range benchFeatures {
			v := math.Round(rng.NormFloat64()*1e6) / 1e6
			z += wts[j] * v
			buf = dataset.AppendNumber(buf, v)
			buf = append(buf, ',')
		}
		if rng.Float64() < 1/(1+math.Exp(-z)) {
			buf = append(buf, '1', '\n')
		} else {
			buf = append(buf, '0', '\n')
		}
		if _, err := w.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TestBenchStreamNodeHelper is not a test on its own: BenchmarkStreamTraining
// runs it in a child process, a node ("<data dir> <gateway multiaddr>
// <join token> <max memory bytes>") that prints "TRAIN <unix ns>" when a
// job's training starts and "EPOCH <n> <unix ns> <CPU ns>" after each epoch
// (CPU: the process's user and system time so far), until
// its standard input is closed.
func TestBenchStreamNodeHelper(t *testing.T) {
	f := strings.Fields(os.Getenv(benchStreamNodeEnv))
	if len(f) != 4 {
		t.Skip("helper process for BenchmarkStreamTraining")
	}
	maxMem, _ := strconv.ParseInt(f[3], 10, 64)
	debug.SetMemoryLimit(node.RuntimeMemoryLimit(maxMem)) // as fedgrid node --max-memory does
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	jobs := 0
	train := func(ctx context.Context, p *plan.Plan, src dataset.Source, o plan.TrainOptions) (*plan.Model, error) {
		jobs++
		if stop, err := cpuProfile(fmt.Sprintf("node-%d-%s", jobs, p.Name)); err != nil {
			return nil, err
		} else if stop != nil {
			defer stop()
		}
		if os.Getenv("FEDGRID_BENCH_SCRATCH") == "off" { // the streamed path without its scratch file, for A/B runs
			o.ScratchDir = ""
		}
		say("TRAIN %d", time.Now().UnixNano())
		prog := o.Progress
		o.Progress = func(pg plan.Progress) {
			say("EPOCH %d %d %d", pg.Epoch, time.Now().UnixNano(), cpuTime())
			prog(pg)
		}
		return plan.TrainSource(ctx, p, src, o)
	}
	nd, err := node.Start(context.Background(), node.Config{DataDir: f[0], Network: "strbench", Listen: []string{"/ip4/127.0.0.1/tcp/0"},
		Gateway: f[1], JoinToken: f[2], MaxMemory: maxMem, Train: train})
	if err != nil {
		say("ERR %v", err)
		os.Exit(2)
	}
	say("READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := nd.Close(); err != nil {
		say("ERR %v", err)
	}
}

func benchPlan(name string, hidden int) []byte {
	feats := make([]string, benchFeatures)
	for j := range feats {
		feats[j] = fmt.Sprintf("f%02d", j)
	}
	p := map[string]any{
		"format": "fedgrid.plan/v1", "name": name, "features": feats, "label": "label",
		"preprocess": []map[string]any{{"op": "standardize"}},
		"loss":       map[string]any{"op": "bce_logits", "in": []string{"z", "y"}},
		"optimizer":  map[string]any{"name": "adam", "learning_rate": 0.005},
		"train":      map[string]any{"epochs": 3, "batch_size": 256, "seed": 7, "validation_fraction": 0.2},
	}
	if hidden == 0 {
		p["params"] = map[string]any{"w": map[string]any{"shape": []int{benchFeatures, 1}}, "b": map[string]any{"shape": []int{1}}}
		p["forward"] = []map[string]any{
			{"op": "matmul", "in": []string{"x", "w"}, "out": "z"}, {"op": "add", "in": []string{"z", "b"}, "out": "z"}}
	} else {
		p["params"] = map[string]any{"w1": map[string]any{"shape": []int{benchFeatures, hidden}}, "b1": map[string]any{"shape": []int{hidden}},
			"w2": map[string]any{"shape": []int{hidden, 1}}, "b2": map[string]any{"shape": []int{1}}}
		p["forward"] = []map[string]any{
			{"op": "matmul", "in": []string{"x", "w1"}, "out": "h"}, {"op": "add", "in": []string{"h", "b1"}, "out": "h"},
			{"op": "relu", "in": []string{"h"}, "out": "h"},
			{"op": "matmul", "in": []string{"h", "w2"}, "out": "z"}, {"op": "add", "in": []string{"z", "b2"}, "out": "z"}}
	}
	b, _ := json.Marshal(p)
	return b
}

// steadyEpoch is the mean time of epochs 2.. from the instants each epoch
// ended; first is epoch 1 (with the statistics pass when streamed).
func steadyEpoch(ends []time.Time, start time.Time) (first, steady time.Duration) {
	if len(ends) < 2 {
		return ends[0].Sub(start), ends[0].Sub(start)
	}
	return ends[0].Sub(start), ends[len(ends)-1].Sub(ends[0]) / time.Duration(len(ends)-1)
}

// steadyCPU is the mean CPU time of epochs 2.. from the process's CPU
// time when each epoch ended.
func steadyCPU(cpus []time.Duration) time.Duration {
	if len(cpus) < 2 {
		return 0
	}
	return (cpus[len(cpus)-1] - cpus[0]) / time.Duration(len(cpus)-1)
}

// cpuTime is this process's user and system CPU time so far, in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func procStatus(b *testing.B, pid int, key string) float64 {
	mib, err := procstat.MiB(pid, key)
	if err != nil {
		b.Fatal(err)
	}
	return mib
}

// benchStreamRows is the rows of the generated dataset of the streaming
// benchmarks: FEDGRID_BENCH_STREAM_ROWS, 5,000,000 (about 1 GB of CSV) by
// default.
func benchStreamRows(b *testing.B) int {
	b.Helper()
	env := os.Getenv("FEDGRID_BENCH_STREAM_ROWS")
	if env == "" {
		return 5_000_000
	}
	n, err := strconv.Atoi(env)
	if err != nil || n < 1000 {
		b.Fatalf("FEDGRID_BENCH_STREAM_ROWS=%q: want a number of rows >= 1000", env)
	}
	return n
}

func BenchmarkStreamTraining(b *testing.B) {
	rows := benchStreamRows(b)
	const maxMem = 256 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	dir := b.TempDir()
	csvPath := filepath.Join(dir, "generated.csv")
	t0 := time.Now()
	if err := genCSV(csvPath, rows, 1); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(csvPath)
	b.Logf("generated %d rows, %.0f MB in %.1f s", rows, float64(st.Size())/1e6, time.Since(t0).Seconds())
	g, err := Start(ctx, Config{DataDir: filepath.Join(dir, "gw"), Network: "strbench", Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	if _, err := g.store.Setup("owner@example.org", "correct horse battery", "Owner"); err != nil {
		b.Fatal(err)
	}
	in, err := os.Open(csvPath)
	if err != nil {
		b.Fatal(err)
	}
	t0 = time.Now()
	ds := &store.Dataset{Name: "generated", Tags: []string{"bench"}, Visibility: "public"}
	err = g.store.PutDatasetFrom(ctx, ds, in, colstore.Options{})
	in.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("stored as the gateway's columnar version in %.1f s", time.Since(t0).Seconds())
	// A new version gets its catalog summary (computeMarginals: a scan of
	// every row) once, in the gateway's background loop. Wait for it, so
	// that the node's epochs, like the in-memory ones, run beside an idle
	// gateway: on this 2-core machine the scan (seconds of CPU at 5M rows)
	// would otherwise share the cores with the first job.
	t0 = time.Now()
	if err := g.WaitSummary(ctx, ds.ID); err != nil {
		b.Fatal(err)
	}
	b.Logf("the gateway's catalog summary of the version came %.1f s later", time.Since(t0).Seconds())
	_, src, err := g.store.OpenDataset(ds.ID)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	if src.NumRows() != rows {
		b.Fatalf("version has %d rows, want %d", src.NumRows(), rows)
	}
	sk, _ := p2p.GenerateIdentity()
	pid, _ := p2p.PeerIDOf(sk)
	if _, err := g.store.CreateUser(store.NewUser{Email: "ds@example.org", Password: "a long password", Name: "DS", Role: store.RoleDataScientist, PeerID: pid.String()}); err != nil {
		b.Fatal(err)
	}
	tok, _, err := g.store.CreateJoinToken(time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchStreamNodeHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %d", benchStreamNodeEnv, filepath.Join(dir, "node"), g.Addrs()[0], tok, maxMem))
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
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	lines := make(chan string, 64)
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "READY" {
		if strings.HasPrefix(sc.Text(), "ERR") {
			b.Fatalf("node: %s", sc.Text())
		}
	}
	go func() { // ends when the child's stdout closes
		defer close(lines)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	cl, err := client.New(ctx, client.Config{Network: "strbench", Bootstrap: []string{g.Addrs()[0]}, Identity: sk})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()

	type result struct {
		fetch          time.Duration
		first, steady  time.Duration
		peakMB         float64
		valAcc, memAcc float64
		memFirst       time.Duration
		memSteady      time.Duration
		steadyCPU      time.Duration // CPU time of epochs 2..
		memSteadyCPU   time.Duration
	}
	plans := []struct {
		name string
		json []byte
	}{{"logreg", benchPlan("logreg", 0)}, {"mlp-20-64-1", benchPlan("mlp", 64)}}
	res := make([]result, len(plans))
	b.ResetTimer()
	stopGW, err := cpuProfile("gateway-while-streaming") // this process while the node trains
	if err != nil {
		b.Fatal(err)
	}
	for i, pl := range plans {
		// Reset the node's peak RSS (VmHWM) to its current RSS.
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", cmd.Process.Pid), []byte("5"), 0); err != nil {
			b.Fatal(err)
		}
		submitted := time.Now()
		j, err := cl.Submit(ctx, g.peer.ID(), ds.ID, pl.json)
		if err != nil {
			b.Fatal(err)
		}
		var trainStart time.Time
		var ends []time.Time
		var cpus []time.Duration
		for len(ends) < 3 {
			select {
			case l, ok := <-lines:
				if !ok {
					b.Fatal("the node exited")
				}
				f := strings.Fields(l)
				switch {
				case f[0] == "TRAIN" && len(f) == 2:
					ns, _ := strconv.ParseInt(f[1], 10, 64)
					trainStart = time.Unix(0, ns)
				case f[0] == "EPOCH" && len(f) == 4:
					ns, _ := strconv.ParseInt(f[2], 10, 64)
					cpu, _ := strconv.ParseInt(f[3], 10, 64)
					ends = append(ends, time.Unix(0, ns))
					cpus = append(cpus, time.Duration(cpu))
				}
			case <-ctx.Done():
				b.Fatal(ctx.Err())
			}
		}
		done, err := cl.Wait(ctx, g.peer.ID(), j.ID, nil)
		if err != nil || done.State != wire.StateSucceeded {
			b.Fatalf("%s: %+v %v", pl.name, done, err)
		}
		res[i].peakMB = procStatus(b, cmd.Process.Pid, "VmHWM")
		res[i].fetch = trainStart.Sub(submitted)
		res[i].first, res[i].steady = steadyEpoch(ends, trainStart)
		res[i].steadyCPU = steadyCPU(cpus)
		if mb, err := cl.Model(ctx, g.peer.ID(), j.ID); err == nil {
			if m, err := plan.ParseModel(mb); err == nil {
				res[i].valAcc = m.Metrics.ValidationAccuracy
			}
		}
	}
	b.StopTimer()
	if stopGW != nil {
		stopGW()
	}
	_ = stdin.Close()
	// The same plans on the rows in memory, in this process, one after
	// the other with the node idle.
	for i, pl := range plans {
		p, err := plan.Parse(pl.json)
		if err != nil {
			b.Fatal(err)
		}
		var start time.Time
		var ends []time.Time
		var cpus []time.Duration
		stop, err := cpuProfile("memory-" + p.Name)
		if err != nil {
			b.Fatal(err)
		}
		m, err := plan.TrainSource(ctx, p, &startTimer{Source: src, start: &start}, plan.TrainOptions{Progress: func(plan.Progress) {
			ends, cpus = append(ends, time.Now()), append(cpus, time.Duration(cpuTime()))
		}})
		if err != nil {
			b.Fatal(err)
		}
		if stop != nil {
			stop()
		}
		res[i].memFirst, res[i].memSteady = steadyEpoch(ends, start)
		res[i].memSteadyCPU = steadyCPU(cpus)
		res[i].memAcc = m.Metrics.ValidationAccuracy
	}
	if os.Getenv("FEDGRID_BENCH_SCRATCH") == "off" {
		b.Log("FEDGRID_BENCH_SCRATCH=off: the node streamed without its scratch file")
	}
	for i, pl := range plans {
		r := res[i]
		b.Logf("%s: node peak RSS %.0f MB (--max-memory %d MiB); job start to training %.1f s; streamed epoch 1 %.2f s, epochs 2-3 %.2f s (%.2f CPU-s); in memory epoch 1 %.2f s, epochs 2-3 %.2f s (%.2f CPU-s); ratio %.2f (CPU %.2f); validation accuracy %.4f streamed, %.4f in memory",
			pl.name, r.peakMB, maxMem>>20, r.fetch.Seconds(), r.first.Seconds(), r.steady.Seconds(), r.steadyCPU.Seconds(), r.memFirst.Seconds(), r.memSteady.Seconds(), r.memSteadyCPU.Seconds(),
			r.steady.Seconds()/r.memSteady.Seconds(), r.steadyCPU.Seconds()/r.memSteadyCPU.Seconds(), r.valAcc, r.memAcc)
		b.ReportMetric(r.peakMB, pl.name+"-node-peak-rss-MB")
		b.ReportMetric(r.steady.Seconds(), pl.name+"-stream-epoch-s")
		b.ReportMetric(r.memSteady.Seconds(), pl.name+"-memory-epoch-s")
		b.ReportMetric(r.steady.Seconds()/r.memSteady.Seconds(), pl.name+"-ratio")
		b.ReportMetric(r.steadyCPU.Seconds()/r.memSteadyCPU.Seconds(), pl.name+"-cpu-ratio")
	}
	b.ReportMetric(res[0].fetch.Seconds(), "first-job-fetch-s")
	b.ReportMetric(0, "ns/op")
}

// cpuProfile starts a CPU profile of this process into
// $FEDGRID_BENCH_PROFILES/<name>-cpu.pprof when that variable names a
// directory (profiling a run: the node's training of each job, and each
// in-memory run); stop ends it. Without the variable it does nothing.
func cpuProfile(name string) (stop func(), err error) {
	dir := os.Getenv("FEDGRID_BENCH_PROFILES")
	if dir == "" {
		return nil, nil
	}
	f, err := os.Create(filepath.Join(dir, name+"-cpu.pprof"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}

// startTimer marks when TrainSource finished reading every row: the
// in-memory run's training starts there.
type startTimer struct {
	dataset.Source
	start *time.Time
}

func (s *startTimer) Scan(ctx context.Context, from, to, batchRows int, fn func(*dataset.Batch) error) error {
	err := s.Source.Scan(ctx, from, to, batchRows, fn)
	*s.start = time.Now()
	return err
}
