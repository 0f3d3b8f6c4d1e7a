package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
)

// cutProxy forwards TCP connections to a gateway on loopback and cuts the
// traffic once the client has sent a byte budget: then it closes the
// gateway's side (the gateway sees the connection end mid-chunk) and, unless
// told to leave the client hanging, the client's side too.
type cutProxy struct {
	ln     net.Listener
	target string

	mu         sync.Mutex
	budget     int64 // client bytes still forwarded before the cut; < 0: no cut
	hangClient bool
	cut        chan struct{} // closed at the cut
	conns      map[net.Conn]bool
	wg         sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, budget: -1, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) URL() string { return "http://" + p.ln.Addr().String() }

// cutAfter arms the cut after n more client bytes and returns a channel
// closed when it happens.
func (p *cutProxy) cutAfter(n int64, hangClient bool) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.budget, p.hangClient, p.cut = n, hangClient, make(chan struct{})
	return p.cut
}

// dropAll closes every connection, those left hanging included.
func (p *cutProxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *cutProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns[c] = true
	p.mu.Unlock()
}

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		p.track(client)
		p.track(up)
		var hang atomic.Bool // this connection's client is left hanging at the cut
		p.wg.Add(2)
		go func() { // gateway -> client
			defer p.wg.Done()
			_, _ = io.Copy(client, up)
			if !hang.Load() {
				_ = client.Close()
			}
		}()
		go func() { // client -> gateway, within the budget
			defer p.wg.Done()
			defer up.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := client.Read(buf)
				if n > 0 {
					p.mu.Lock()
					k, cut, cutCh := int64(n), false, p.cut
					if p.budget >= 0 {
						k = min(k, p.budget)
						p.budget -= k
						if cut = p.budget == 0; cut {
							// One cut; later connections pass.
							p.budget = -1
							hang.Store(p.hangClient)
						}
					}
					p.mu.Unlock()
					if _, werr := up.Write(buf[:k]); werr != nil {
						return
					}
					if cut {
						if !hang.Load() {
							_ = client.Close()
						}
						close(cutCh)
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// writeUploadCSV writes a deterministic CSV of about rows*17 bytes.
func writeUploadCSV(t *testing.T, path string, rows int) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "age,glucose,pressure,mass,label")
	x := uint64(88172645463325252)
	for i := range rows {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		fmt.Fprintf(w, "%d,%d,%d,%d.%d,%d\n", 20+x%60, 60+x%140, 40+(x>>8)%60, 18+(x>>16)%30, (x>>24)%10, i%2)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

type uploadedDataset struct {
	ID      string `json:"id"`
	Rows    int    `json:"rows"`
	Size    int64  `json:"size"`
	Version int    `json:"version"`
	SHA256  string `json:"sha256"`
}

// TestCutUploadResumesEndToEnd (acceptance 4 of issue 19): `fedgrid admin
// datasets upload` sends the same file to a real gateway three times: once
// uninterrupted; once through a proxy that drops the connection in the
// middle of a chunk (the CLI asks the gateway's offset and goes on by
// itself); and once killed (SIGKILL) in the middle, then run again, when it
// resumes from its state file. All three datasets have the same content
// hash, and so has the same file registered as a file:// source.
func TestCutUploadResumesEndToEnd(t *testing.T) {
	dir := t.TempDir()
	h, err := harness.New(harness.Config{Bin: fedgridBin(t), Dir: dir,
		Env: []string{"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"), "XDG_CACHE_HOME=" + filepath.Join(dir, "cache")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := h.Close()
		if t.Failed() {
			t.Logf("peer logs (last lines):\n%s", h.LogTails(40))
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ctx := testContext(t, 4*time.Minute)
	adm := adminCLI{t: t, h: h}
	exports := filepath.Join(dir, "exports")
	if err := os.Mkdir(exports, 0o755); err != nil {
		t.Fatal(err)
	}
	gw, err := h.StartGateway(ctx, "gateway", "Uploads", harness.PeerOptions{Network: networkName(t), Extra: []string{"--source-dir", exports}})
	if err != nil {
		t.Fatal(err)
	}
	const email, password = "owner@example.org", "correct horse battery staple"
	adm.run(ctx, password+"\n", "setup", "--gateway", gw.HTTP, "--email", email, "--setup-token", gw.SetupToken())
	gwURL, err := url.Parse(gw.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newCutProxy(t, gwURL.Host)
	adm.run(ctx, password+"\n", "login", "--gateway", proxy.URL(), "--email", email)

	file := filepath.Join(exports, "table.csv")
	const rows = 400_000
	size := writeUploadCSV(t, file, rows)
	const chunk = 1 << 20
	if size < 4*chunk {
		t.Fatalf("test file of %d bytes: want several chunks", size)
	}
	upload := func(ctx context.Context, name string) (*harness.Result, error) {
		return h.Run(ctx, "admin", "datasets", "upload", file, "--gateway", proxy.URL(), "--name", name, "--chunk-size", "1MiB", "--json")
	}
	decode := func(res *harness.Result, err error) uploadedDataset {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var d uploadedDataset
		if err := json.Unmarshal(res.Stdout, &d); err != nil {
			t.Fatalf("upload --json printed %q: %v", res.Stdout, err)
		}
		return d
	}

	whole := decode(upload(ctx, "whole"))
	if whole.SHA256 == "" || whole.Rows != rows || whole.Size != size {
		t.Fatalf("uninterrupted upload: %+v (file %d bytes)", whole, size)
	}

	// Dropped in the middle of the third chunk: the CLI resumes by itself.
	cut := proxy.cutAfter(2*chunk+300_000, false)
	res, err := upload(ctx, "dropped")
	dropped := decode(res, err)
	select {
	case <-cut:
	default:
		t.Fatal("the proxy never cut the upload")
	}
	if !strings.Contains(string(res.Stderr), "upload interrupted") {
		t.Errorf("the CLI did not say it resumed; stderr:\n%s", res.Stderr)
	}

	// Killed in the middle: the gateway holds part of a chunk; a second run
	// resumes from the CLI's state file.
	cut = proxy.cutAfter(3*chunk+123_456, true)
	killCtx, kill := context.WithCancel(ctx)
	killed := make(chan error, 1)
	go func() {
		_, err := upload(killCtx, "killed")
		killed <- err
	}()
	select {
	case <-cut:
	case err := <-killed:
		t.Fatalf("the upload ended before the cut: %v", err)
	case <-ctx.Done():
		t.Fatal("no cut before the deadline")
	}
	kill() // SIGKILL to the CLI's process group
	if err := <-killed; err == nil {
		t.Fatal("the killed upload succeeded")
	}
	proxy.dropAll()
	res, err = upload(ctx, "killed")
	resumed := decode(res, err)
	if !strings.Contains(string(res.Stderr), "resuming upload") {
		t.Errorf("the second run did not resume; stderr:\n%s", res.Stderr)
	}

	for _, d := range []uploadedDataset{dropped, resumed} {
		if d.SHA256 != whole.SHA256 || d.Rows != whole.Rows || d.Size != whole.Size || d.Version != 1 {
			t.Errorf("interrupted upload gave %+v, uninterrupted %+v", d, whole)
		}
	}
	if whole.ID == dropped.ID || dropped.ID == resumed.ID {
		t.Errorf("dataset IDs %s %s %s: want three datasets", whole.ID, dropped.ID, resumed.ID)
	}
	// The same file registered where it lies (a file:// source under the
	// gateway's --source-dir) has the same content hash; a file elsewhere
	// is refused.
	var reg struct {
		Dataset uploadedDataset `json:"dataset"`
	}
	adm.json(ctx, &reg, "datasets", "register", "file://"+file, "--name", "from-file")
	if reg.Dataset.SHA256 != whole.SHA256 || reg.Dataset.Rows != whole.Rows {
		t.Errorf("file source: %+v, upload %+v", reg.Dataset, whole)
	}
	if msg := adm.fails(ctx, 1, "", "datasets", "register", "file:///etc/passwd", "--name", "nope"); !strings.Contains(msg, "not under a directory") {
		t.Errorf("register a file outside --source-dir: %q", msg)
	}

	// The gateway killed (SIGKILL) in the middle, its bytes since the last
	// sync (every 64 MiB: none of this file's) not yet durable: restarted on
	// the same data directory and address, it answers the durable offset,
	// and the CLI, retrying, resends from there to the same hash.
	cut = proxy.cutAfter(3*chunk+77_777, true)
	gone := make(chan uploadedDataset, 1)
	go func() {
		res, err := upload(ctx, "gateway-killed")
		if err != nil {
			t.Errorf("upload across a gateway restart: %v; stderr:\n%s", err, res.Stderr)
			gone <- uploadedDataset{}
			return
		}
		var d uploadedDataset
		if err := json.Unmarshal(res.Stdout, &d); err != nil {
			t.Errorf("upload --json printed %q: %v", res.Stdout, err)
		}
		gone <- d
	}()
	select {
	case <-cut:
	case <-ctx.Done():
		t.Fatal("no cut before the deadline")
	}
	gw.Kill()
	if _, err := h.StartGateway(ctx, "gateway", "Uploads", harness.PeerOptions{Network: networkName(t),
		Extra: []string{"--source-dir", exports, "--http", gwURL.Host}}); err != nil {
		t.Fatal(err)
	}
	proxy.dropAll()
	if d := <-gone; d.SHA256 != whole.SHA256 || d.Rows != whole.Rows || d.Size != whole.Size {
		t.Errorf("upload across a gateway kill gave %+v, uninterrupted %+v", d, whole)
	}

	// Nothing is left to resume: the state file went with the finish.
	states, err := filepath.Glob(filepath.Join(dir, "cache", "fedgrid", "uploads", "*.json"))
	if err != nil || len(states) != 0 {
		t.Errorf("upload state files left: %v %v", states, err)
	}
}
