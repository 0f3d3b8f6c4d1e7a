package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fedgrid/fedgrid/adminclient"
	"github.com/fedgrid/fedgrid/internal/harness"
)

// writeBenchCSV writes a deterministic CSV of 20 numeric columns (19
// features, one 0/1 label) of at least size bytes.
func writeBenchCSV(b testing.TB, path string, size int64) int64 {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for c := range 19 {
		w.WriteString("x" + strconv.Itoa(c) + ",")
	}
	w.WriteString("y\n")
	x := uint64(0x9E3779B97F4A7C15)
	var n int64
	line := make([]byte, 0, 256)
	for n < size {
		line = line[:0]
		for range 19 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			line = strconv.AppendFloat(line, float64(int64(x%2000000)-1000000)/1e5, 'f', -1, 64)
			line = append(line, ',')
		}
		line = append(line, byte('0'+x>>63), '\n')
		k, err := w.Write(line)
		if err != nil {
			b.Fatal(err)
		}
		n += int64(k)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil { // clean pages, which dropCache can drop
		b.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}

// dropCache asks the kernel to forget the file's cached pages, so that the
// next read comes from the disk.
func dropCache(b testing.TB, path string) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Logf("fadvise: %v (the read may come from the page cache)", err)
	}
}

// BenchmarkResumableUpload uploads a generated CSV of about
// FEDGRID_BENCH_UPLOAD_MB megabytes (default 1024; FEDGRID_BENCH_CSV names
// an existing file instead) to a real gateway process through the
// resumable HTTP API (adminclient, 8 MiB chunks over loopback), beside a
// plain read of the same file from this disk. It reports the upload's
// MB/s, the read's MB/s, their ratio, the finish (size and SHA-256 check
// and ingest) in seconds, the gateway's peak RSS after the chunks (before
// any ingest) and at the end, and the MB/s of registering the same file as
// a file:// source (the gateway reads it where it lies).
func BenchmarkResumableUpload(b *testing.B) {
	dir := b.TempDir()
	file := os.Getenv("FEDGRID_BENCH_CSV")
	if file == "" {
		mb := int64(1024)
		if v := os.Getenv("FEDGRID_BENCH_UPLOAD_MB"); v != "" {
			var err error
			if mb, err = strconv.ParseInt(v, 10, 64); err != nil || mb < 1 {
				b.Fatalf("FEDGRID_BENCH_UPLOAD_MB=%q", v)
			}
		}
		file = filepath.Join(dir, "bench.csv")
		writeBenchCSV(b, file, mb*1e6)
	}
	fi, err := os.Stat(file)
	if err != nil {
		b.Fatal(err)
	}
	size := fi.Size()

	h, err := harness.New(harness.Config{Bin: fedgridBin(b), Dir: dir, Env: []string{"XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	gw, err := h.StartGateway(ctx, "gateway", "bench", harness.PeerOptions{Network: networkName(b), Extra: []string{"--source-dir", filepath.Dir(file)}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := h.RunInput(ctx, "bench password\n", "admin", "setup", "--gateway", gw.HTTP, "--email", "owner@example.org", "--setup-token", gw.SetupToken()); err != nil {
		b.Fatal(err)
	}
	creds, err := adminclient.LoadCredentials(filepath.Join(dir, "config", "fedgrid", "admin.json"))
	if err != nil {
		b.Fatal(err)
	}
	cl, err := adminclient.New(gw.HTTP)
	if err != nil {
		b.Fatal(err)
	}
	cl.Token = creds.Gateways[cl.BaseURL].Token
	slow := *cl // for calls longer than the client's own timeout: the context bounds them
	slow.HTTP = &http.Client{}

	var read, send, finish, register time.Duration
	var uploadPeak int64
	finished, registered := 0, 0
	b.ResetTimer()
	for i := range b.N {
		dropCache(b, file)
		start := time.Now()
		f, err := os.Open(file)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, f, make([]byte, 1<<20)); err != nil {
			b.Fatal(err)
		}
		read += time.Since(start)

		dropCache(b, file)
		up, err := cl.Start(ctx, adminclient.NewUpload{Size: size, Format: "csv", Name: "bench" + strconv.Itoa(i)})
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		sha, err := (&adminclient.Sender{Client: cl}).Send(ctx, up, f, size)
		if err != nil {
			b.Fatal(err)
		}
		send += time.Since(start)
		_ = f.Close()
		uploadPeak = max(uploadPeak, vmHWM(b, gw.PID())) // before any ingest
		start = time.Now()
		if _, err := cl.Finish(ctx, up.ID, sha, 20*time.Minute); err != nil {
			b.Logf("finish: %v", err)
		} else {
			finish += time.Since(start)
			finished++
		}

		// The same file registered as a file source: read where it lies.
		dropCache(b, file)
		start = time.Now()
		rctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
		err = slow.JSON(rctx, "POST", "/api/v1/sources", nil, map[string]any{"kind": "file", "url": "file://" + file, "name": "file" + strconv.Itoa(i)}, nil)
		cancel()
		if err != nil {
			b.Logf("register file source: %v", err)
		} else {
			register += time.Since(start)
			registered++
		}
	}
	b.StopTimer()
	mb := float64(size) / 1e6 * float64(b.N)
	b.ReportMetric(mb/send.Seconds(), "upload_MB/s")
	b.ReportMetric(mb/read.Seconds(), "read_MB/s")
	b.ReportMetric(read.Seconds()/send.Seconds(), "upload/read")
	if finished > 0 {
		b.ReportMetric(finish.Seconds()/float64(finished), "finish_s")
	}
	if registered > 0 {
		b.ReportMetric(float64(size)/1e6*float64(registered)/register.Seconds(), "file_source_MB/s")
	}
	b.ReportMetric(float64(uploadPeak)/(1<<20), "gateway_peak_upload_MiB")
	b.ReportMetric(float64(vmHWM(b, gw.PID()))/(1<<20), "gateway_peak_MiB")
	b.Logf("file %d bytes; %d of %d uploads finished; %d of %d file sources registered", size, finished, b.N, registered, b.N)
}
