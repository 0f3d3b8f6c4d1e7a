// Command ingestbench measures dataset ingest (make bench): it generates a
// deterministic CSV (default 5M rows x 20 columns, about 1 GB) in a
// temporary directory, times a raw read of the file (as `wc -c` does),
// then ingests it in a child process through gateway/ingest.Dataset into a
// fresh store, and reports the throughput, its ratio to the raw read and
// the child's peak RSS (VmHWM).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/ingest"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/procstat"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "ingest" {
		if err := child(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "ingestbench ingest:", err)
			os.Exit(1)
		}
		return
	}
	rows := flag.Int("rows", 5_000_000, "rows of the generated CSV")
	cols := flag.Int("cols", 20, "columns of the generated CSV (the last two are categories)")
	work := flag.String("work", "", "directory for the CSV and the store (default: a new temporary directory, removed after)")
	csvFile := flag.String("csv", "", "ingest this CSV or Parquet file instead of a generated one")
	flag.Parse()
	if err := run(*rows, *cols, *work, *csvFile); err != nil {
		fmt.Fprintln(os.Stderr, "ingestbench:", err)
		os.Exit(1)
	}
}

type result struct {
	Seconds float64 `json:"seconds"`
	Bytes   int64   `json:"bytes"`
	Rows    int     `json:"rows"`
	CPU     float64 `json:"cpu_seconds"`
	PeakRSS int64   `json:"peak_rss_kib"`
	Startup int64   `json:"startup_rss_kib"`
	// Stored is the size of the columnar version ingest wrote.
	Stored int64 `json:"stored_bytes"`
}

func run(rows, cols int, work, csvFile string) error {
	if work == "" {
		dir, err := os.MkdirTemp("", "ingestbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		work = dir
	}
	csvPath := csvFile
	if csvPath == "" {
		csvPath = filepath.Join(work, "data.csv")
		t0 := time.Now()
		if err := generate(csvPath, rows, cols); err != nil {
			return err
		}
		fi, err := os.Stat(csvPath)
		if err != nil {
			return err
		}
		fmt.Printf("generated %s: %d rows x %d columns, %d bytes in %.1fs\n", csvPath, rows, cols, fi.Size(), time.Since(t0).Seconds())
	}
	fi, err := os.Stat(csvPath)
	if err != nil {
		return err
	}

	raw, err := rawRead(csvPath)
	if err != nil {
		return err
	}
	rawMBs := float64(fi.Size()) / 1e6 / raw
	fmt.Printf("raw read: %.2fs, %.0f MB/s\n", raw, rawMBs)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "ingest", csvPath, filepath.Join(work, "store"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("ingest child: %w", err)
	}
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("ingest child said %q: %w", out, err)
	}
	mbs := float64(r.Bytes) / 1e6 / r.Seconds
	fmt.Printf("RESULT ingest: %d bytes, %d rows in %.2fs = %.1f MB/s (%.1f MB per CPU-second, %.1f CPU-s); raw read %.0f MB/s; ratio ingest/raw %.4f; peak RSS %.0f MB (at start %.0f MB)\n",
		r.Bytes, r.Rows, r.Seconds, mbs, float64(r.Bytes)/1e6/r.CPU, r.CPU, rawMBs, mbs/rawMBs, float64(r.PeakRSS)/1024, float64(r.Startup)/1024)
	// The ratio the upload free-space check assumes (gateway/upload.IngestRatio).
	fmt.Printf("RESULT stored: %d bytes of columns for %d bytes of source = %.3f of the source\n", r.Stored, r.Bytes, float64(r.Stored)/float64(r.Bytes))
	return nil
}

// generate writes rows x cols deterministically: cols-2 number columns
// (mixed magnitudes and decimals), a category of 12 values and a label.
func generate(path string, rows, cols int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	var b []byte
	for c := range cols {
		if c > 0 {
			b = append(b, ',')
		}
		switch c {
		case cols - 2:
			b = append(b, "region"...)
		case cols - 1:
			b = append(b, "label"...)
		default:
			b = append(b, "x"...)
			b = strconv.AppendInt(b, int64(c), 10)
		}
	}
	b = append(b, '\n')
	regions := strings.Split("north,south,east,west,centre,coast,hills,valley,lakes,plains,islands,capital", ",")
	for range rows {
		for c := range cols {
			if c > 0 {
				b = append(b, ',')
			}
			switch {
			case c == cols-2:
				b = append(b, regions[rng.IntN(len(regions))]...)
			case c == cols-1:
				b = strconv.AppendInt(b, int64(rng.IntN(2)), 10)
			case c%4 == 0:
				b = strconv.AppendInt(b, int64(rng.IntN(1_000_000_000)), 10)
			default:
				b = strconv.AppendFloat(b, rng.NormFloat64()*float64(c+1)*10, 'f', 7, 64)
			}
		}
		b = append(b, '\n')
		if len(b) > 1<<16 {
			if _, err := w.Write(b); err != nil {
				_ = f.Close()
				return err
			}
			b = b[:0]
		}
	}
	if _, err := w.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// rawRead reads the file through with a 1 MiB buffer, as wc -c would.
func rawRead(path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	t0 := time.Now()
	buf := make([]byte, 1<<20)
	for {
		_, err := f.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	return time.Since(t0).Seconds(), nil
}

// child ingests the file into a new store and prints a result as JSON.
func child(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: ingestbench ingest CSV STOREDIR")
	}
	startRSS := vmHWM()
	st, err := store.Open(args[1], nil)
	if err != nil {
		return err
	}
	defer st.Close()
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	t0 := time.Now()
	d := &store.Dataset{Name: "bench", CreatedBy: "bench"}
	if err := ingest.Dataset(context.Background(), st, d, f, dataset.Limits{}); err != nil {
		return err
	}
	secs := time.Since(t0).Seconds()
	stored, err := dirSize(st.VersionDir(d.ID, d.SHA256))
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(result{Seconds: secs, Bytes: d.Size, Rows: d.Rows, CPU: cpuSeconds(), PeakRSS: vmHWM(), Startup: startRSS, Stored: stored})
}

// dirSize is the bytes of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e os.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	return n, err
}

// cpuSeconds is the user and system CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// vmHWM returns this process's peak resident set size in KiB.
func vmHWM() int64 {
	n, err := procstat.Bytes(0, "VmHWM")
	if err != nil {
		return -1
	}
	return n >> 10
}
