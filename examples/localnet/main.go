// Command localnet starts a local fedgrid network on 127.0.0.1, every peer a
// real process, for the Python tests and the quick-start notebook: a network
// peer, Hospital A and Hospital B, each with a gateway and a worker node, and
// a registered data scientist's key. Both hospitals treat diabetes patients:
// of the diabetes CSV, 20 % is held back (HOLDOUT) and the rest split between
// A (60 %) and B (40 %), both datasets named pima-diabetes; B also hosts the
// breast cancer data (20 % held back).
//
//	go run ./examples/localnet --bin bin/fedgrid --data examples/data --env /tmp/fg/env.json
//
// Once everything is up and both datasets are found by search, it writes
// --env, a JSON file with what a client needs (bootstrap, key, network, the
// dataset references and the held-out and uploaded CSVs), prints the matching
// FEDGRID_* environment variables (and HOLDOUT, the diabetes data's held-out
// rows) as shell exports, then "ready".
// It then runs until its standard input closes or it gets SIGINT/SIGTERM,
// stops every peer and exits 0 (1 if a peer did not stop cleanly).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/internal/harness"
)

// Env is the file --env.
type Env struct {
	Bin       string              `json:"bin"`
	Network   string              `json:"network"`
	Bootstrap []string            `json:"bootstrap"`
	Key       string              `json:"key"`
	PeerID    string              `json:"peer_id"`
	Dir       string              `json:"dir"`
	Datasets  map[string]EnvEntry `json:"datasets"`
}

// EnvEntry is one hosted dataset; Env.Datasets has "pima-diabetes" (A's),
// "pima-diabetes@b" (B's) and "wdbc-breast-cancer" (B's).
type EnvEntry struct {
	Name     string `json:"name"`
	Ref      string `json:"ref"`
	Gateway  string `json:"gateway"`
	Admin    string `json:"admin"`
	Upload   string `json:"upload"`
	Holdout  string `json:"holdout"`
	Hospital string `json:"hospital"`
}

func main() { os.Exit(run()) }

func run() int {
	bin := flag.String("bin", "bin/fedgrid", "the fedgrid binary (make build)")
	data := flag.String("data", "examples/data", "directory with pima_diabetes.csv and wdbc_breast_cancer.csv")
	work := flag.String("work", "", "directory for the peers' data and logs (default: a new temporary directory, removed at the end)")
	envFile := flag.String("env", "", "where to write the client environment (JSON); required")
	timeout := flag.Duration("timeout", 3*time.Minute, "give up starting after this long")
	flag.Parse()
	if *envFile == "" {
		fmt.Fprintln(os.Stderr, "localnet: --env is required")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, remove := *work, false
	if dir == "" {
		d, err := os.MkdirTemp("", "fedgrid-localnet-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "localnet:", err)
			return 1
		}
		dir, remove = d, true
	}
	absBin, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "localnet:", err)
		return 1
	}
	h, err := harness.New(harness.Config{Bin: absBin, Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "localnet:", err)
		return 1
	}
	sctx, cancel := context.WithTimeout(ctx, *timeout)
	env, err := start(sctx, h, *data)
	cancel()
	if err == nil {
		env.Bin = absBin
		var b []byte
		b, err = json.MarshalIndent(env, "", "  ")
		if err == nil {
			err = os.WriteFile(*envFile, b, 0o600)
		}
	}
	if err == nil {
		// For a shell: eval "$(... | sed -n 's/^export /export /p')".
		fmt.Printf("export FEDGRID_BIN=%s\nexport FEDGRID_BOOTSTRAP=%s\nexport FEDGRID_KEY=%s\nexport FEDGRID_NETWORK=%s\nexport FEDGRID_ENV=%s\nexport HOLDOUT=%s\n",
			env.Bin, env.Bootstrap[0], env.Key, env.Network, *envFile, env.Datasets["pima-diabetes"].Holdout)
		fmt.Println("ready")
		wait(ctx)
	}
	stopErr := h.Close()
	code := 0
	if err != nil {
		fmt.Fprintf(os.Stderr, "localnet: %v\nlast lines of each peer's log:\n%s", err, h.LogTails(15))
		code = 1
	}
	if stopErr != nil {
		fmt.Fprintln(os.Stderr, "localnet: a peer did not stop cleanly:", stopErr)
		code = 1
	}
	if remove && code == 0 {
		_ = os.RemoveAll(dir)
	}
	return code
}

// wait returns when standard input closes or ctx ends (a signal).
func wait(ctx context.Context) {
	eof := make(chan struct{})
	go func() { // ends with the process; reading stdin cannot be cancelled
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-ctx.Done():
	}
}

func start(ctx context.Context, h *harness.Harness, dataDir string) (*Env, error) {
	const network = "fedgrid-localnet"
	type upload struct {
		key, csv, name, tag string
		part                int // 0: all the uploaded rows; 1, 2: A's or B's part
	}
	hospitals := []struct {
		site, display string
		uploads       []upload
	}{
		{"gateway-a", "Hospital A", []upload{{"pima-diabetes", "pima_diabetes.csv", "pima-diabetes", "diabetes", 1}}},
		{"gateway-b", "Hospital B", []upload{{"pima-diabetes@b", "pima_diabetes.csv", "pima-diabetes", "diabetes", 2},
			{"wdbc-breast-cancer", "wdbc_breast_cancer.csv", "wdbc-breast-cancer", "oncology", 0}}},
	}
	netPeer, err := h.StartNetwork(ctx, "network", harness.PeerOptions{Network: network})
	if err != nil {
		return nil, err
	}
	opts := harness.PeerOptions{Network: network, Bootstrap: []string{netPeer.Addr()}}
	sci, err := h.NewScientist(ctx, h.Path("scientist.key"), network, []string{netPeer.Addr()})
	if err != nil {
		return nil, err
	}
	env := &Env{Network: network, Bootstrap: []string{netPeer.Addr()}, Key: sci.Key, PeerID: sci.PeerID, Dir: h.Dir(), Datasets: map[string]EnvEntry{}}
	want := 0
	for _, hp := range hospitals {
		site, err := h.StartSite(ctx, hp.site, hp.display, "owner@"+hp.site+".example", "owner password "+hp.site, opts)
		if err != nil {
			return nil, err
		}
		for _, u := range hp.uploads {
			parts, ho, err := split(filepath.Join(dataDir, u.csv), h.Path("data"))
			if err != nil {
				return nil, err
			}
			up := parts[u.part]
			csv, err := os.ReadFile(up)
			if err != nil {
				return nil, err
			}
			if _, err := site.Admin.UploadCSV(ctx, harness.Upload{Name: u.name, Tags: []string{"medical", "public", u.tag}, Visibility: "public",
				Description: hp.display + "'s copy of part of " + u.csv + " (see examples/data/README.md)", FileName: u.csv, CSV: csv}); err != nil {
				return nil, err
			}
			env.Datasets[u.key] = EnvEntry{Name: u.name, Gateway: site.Gateway.PeerID, Admin: site.Gateway.HTTP, Upload: up, Holdout: ho, Hospital: hp.display}
			want++
		}
		if _, err := site.StartNode(ctx, hp.site+"-node"); err != nil {
			return nil, err
		}
		u, err := site.RegisterScientist(ctx, "scientist@lab.example", "scientist password", "Data Scientist", sci.PeerID)
		if err != nil {
			return nil, err
		}
		// A privacy budget, so that DP queries can be tried.
		if err := site.Admin.DoJSON(ctx, http.MethodPatch, "/api/v1/users/"+u.ID, map[string]float64{"budget_epsilon": 5}, nil); err != nil {
			return nil, fmt.Errorf("%s: set the scientist's budget: %w", hp.display, err)
		}
	}
	found, err := sci.WaitSearch(ctx, want, 300*time.Millisecond, "medical")
	if err != nil {
		return nil, err
	}
	for key, e := range env.Datasets {
		for _, r := range found {
			if r.Gateway == e.Gateway && r.Dataset.Name == e.Name {
				e.Ref = r.Ref
			}
		}
		if e.Ref == "" {
			return nil, fmt.Errorf("search medical did not find %s's %q", e.Hospital, e.Name)
		}
		env.Datasets[key] = e
	}
	return env, nil
}

// split writes the parts of a CSV under dir: 20 % held out (seed 1), the
// rest (uploads[0]) and that rest split 60/40 (uploads[1], uploads[2]).
func split(src, dir string) (uploads [3]string, holdout string, err error) {
	f, err := os.Open(src)
	if err != nil {
		return uploads, "", err
	}
	defer f.Close()
	t, err := dataset.ReadCSV(f, dataset.Limits{})
	if err != nil {
		return uploads, "", fmt.Errorf("%s: %w", src, err)
	}
	up, ho := t.Split(0.2, 1)
	a, b := up.Split(0.4, 2)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return uploads, "", err
	}
	base := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".csv"))
	uploads = [3]string{base + ".upload.csv", base + ".upload-a.csv", base + ".upload-b.csv"}
	holdout = base + ".holdout.csv"
	for path, part := range map[string]*dataset.Table{uploads[0]: up, uploads[1]: a, uploads[2]: b, holdout: ho} {
		b, err := part.Bytes()
		if err != nil {
			return uploads, "", err
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return uploads, "", err
		}
	}
	return uploads, holdout, nil
}
