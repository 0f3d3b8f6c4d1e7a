package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
	"github.com/fedgrid/fedgrid/internal/pgtest"
)

// pgPlan is a logistic regression on the generated patients table.
const pgPlan = `{
  "format": "fedgrid.plan/v1",
  "name": "patients-logreg",
  "features": ["age", "bmi", "glucose"],
  "label": "outcome",
  "preprocess": [{"op": "standardize"}],
  "params": {"w": {"shape": [3, 1], "init": "zeros"}, "b": {"shape": [1], "init": "zeros"}},
  "forward": [
    {"op": "matmul", "in": ["x", "w"], "out": "z"},
    {"op": "add", "in": ["z", "b"], "out": "z"},
    {"op": "sigmoid", "in": ["z"], "out": "y_hat"}
  ],
  "loss": {"op": "bce", "in": ["y_hat", "y"]},
  "optimizer": {"name": "adam", "learning_rate": 0.05},
  "train": {"epochs": 2, "batch_size": 256, "seed": 7, "validation_fraction": 0.2}
}`

// TestPostgresSource (acceptance 3 of issue 19): a PostgreSQL table of
// 100,000 generated rows, in Debian's real server on loopback, is
// registered as a dataset with `fedgrid admin datasets register`; a data
// scientist finds it by network search and trains on it through a node.
// Rows are added, `fedgrid admin datasets snapshot` takes version 2, and
// the first job's signed model still names version 1 while a new job's
// names version 2. The password, kept in the gateway's --pgpass file, is in
// no command output, API answer, audit entry or peer log.
func TestPostgresSource(t *testing.T) {
	bin := fedgridBin(t)
	pg := pgtest.Start(t)
	const rows = 100_000
	pg.Exec(t, "postgres", "CREATE DATABASE clinic")
	pg.Exec(t, "clinic",
		fmt.Sprintf("CREATE ROLE reader LOGIN PASSWORD '%s'", pgtest.Password),
		"CREATE TABLE patients (id int PRIMARY KEY, age double precision, bmi double precision, glucose double precision, outcome int)",
		// A seeded generator: the same table at every run. The outcome
		// follows the features through a logistic link.
		"SELECT setseed(0.19)",
		fmt.Sprintf(`INSERT INTO patients
		  SELECT g, round(a::numeric, 1), round(b::numeric, 2), round(c::numeric, 1),
		         (random() < 1 / (1 + exp(-(0.06 * (a - 45) + 0.1 * (b - 27) + 0.03 * (c - 110)))))::int
		  FROM (SELECT g, 20 + 60 * random() AS a, 18 + 20 * random() AS b, 70 + 90 * random() AS c
		        FROM generate_series(1, %d) g) s`, rows),
		"GRANT SELECT ON patients TO reader")

	dir := t.TempDir()
	cfgHome := filepath.Join(dir, "config")
	h, err := harness.New(harness.Config{Bin: bin, Dir: dir, Env: []string{"XDG_CONFIG_HOME=" + cfgHome}})
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
	ctx := testContext(t, 8*time.Minute)
	network := networkName(t)
	adm := adminCLI{t: t, h: h}
	var outputs []string
	admin := func(stdin string, args ...string) string {
		t.Helper()
		out := adm.run(ctx, stdin, args...)
		outputs = append(outputs, out)
		return out
	}

	// The operator's password file, as libpq reads it.
	pgpass := filepath.Join(dir, "pgpass")
	if err := os.WriteFile(pgpass, []byte(fmt.Sprintf("127.0.0.1:%d:clinic:reader:%s\n", pg.Port, pgtest.Password)), 0o600); err != nil {
		t.Fatal(err)
	}
	netPeer, err := h.StartNetwork(ctx, "network", harness.PeerOptions{Network: network})
	if err != nil {
		t.Fatal(err)
	}
	opts := harness.PeerOptions{Network: network, Bootstrap: []string{netPeer.Addr()}}
	gwOpts := opts
	gwOpts.Extra = []string{"--pgpass", pgpass}
	gw, err := h.StartGateway(ctx, "gateway", "Clinic A", gwOpts)
	if err != nil {
		t.Fatal(err)
	}
	const ownerEmail, ownerPassword = "owner@clinic-a.example", "correct horse battery staple"
	admin(ownerPassword+"\n", "setup", "--gateway", gw.HTTP, "--email", ownerEmail, "--name", "Owner", "--setup-token", gw.SetupToken())

	// Register the table: the first snapshot is version 1.
	url := pg.URL("reader", "clinic")
	var reg struct {
		Dataset struct {
			ID      string `json:"id"`
			Rows    int    `json:"rows"`
			Version int    `json:"version"`
			SHA256  string `json:"sha256"`
		} `json:"dataset"`
		Source struct {
			URL         string `json:"url"`
			LastVersion int    `json:"last_version"`
		} `json:"source"`
	}
	out := admin("", "datasets", "register", url, "--table", "patients", "--name", "clinic-patients",
		"--tags", "clinic,cardiometabolic", "--visibility", "public", "--json")
	if err := json.Unmarshal([]byte(out), &reg); err != nil {
		t.Fatalf("register --json: %v\n%s", err, out)
	}
	if reg.Dataset.Rows != rows || reg.Dataset.Version != 1 || reg.Source.URL != url || reg.Source.LastVersion != 1 {
		t.Fatalf("register answered %+v", reg)
	}
	ds := reg.Dataset.ID

	token := strings.TrimSpace(admin("", "nodes", "join-token"))
	if _, err := h.StartNode(ctx, "node", gw.Addr(), token, opts); err != nil {
		t.Fatal(err)
	}
	sci, err := h.NewScientist(ctx, h.Path("scientist.key"), network, []string{netPeer.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	admin("scientist password\n", "users", "create", "--email", "ds@lab.example", "--name", "Data Scientist",
		"--role", "Data Scientist", "--peer-id", sci.PeerID, "--budget", "10")

	// The network finds it by its tags.
	found, err := sci.WaitSearch(ctx, 1, 200*time.Millisecond, "cardiometabolic")
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Dataset.ID != ds || found[0].Gateway != gw.PeerID {
		t.Fatalf("search found %+v; want dataset %s on %s", found, ds, gw.PeerID)
	}
	plan := h.Path("plan.json")
	if err := os.WriteFile(plan, []byte(pgPlan), 0o644); err != nil {
		t.Fatal(err)
	}
	train := func(name string) string {
		t.Helper()
		j, err := sci.Train(ctx, found[0].Ref, plan)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !j.Succeeded() {
			t.Fatalf("%s: train --wait ended with %+v", name, j)
		}
		acc, _ := j.Metric("validation_accuracy")
		t.Logf("%s: job %s, validation accuracy %.4f", name, j.ID, acc)
		if acc < 0.7 {
			t.Errorf("%s: validation accuracy %.4f < 0.7 on a table generated with a logistic link", name, acc)
		}
		model := h.Path(name + ".model.json")
		if err := sci.Result(ctx, j.Ref, model); err != nil {
			t.Fatal(err)
		}
		return model
	}
	verify := func(model string) string {
		t.Helper()
		res, err := h.Run(ctx, "model", "verify", "--model", model)
		if err != nil {
			t.Fatal(err)
		}
		return string(res.Stdout)
	}
	first := train("first")

	// The table grows; a snapshot takes version 2.
	pg.Exec(t, "clinic", fmt.Sprintf(`INSERT INTO patients
	  SELECT g, 50, 30, 120, (g %% 2) FROM generate_series(%d, %d) g`, rows+1, rows+5000))
	var snap struct {
		Dataset struct {
			Rows    int    `json:"rows"`
			Version int    `json:"version"`
			SHA256  string `json:"sha256"`
		} `json:"dataset"`
	}
	out = admin("", "datasets", "snapshot", ds, "--json")
	if err := json.Unmarshal([]byte(out), &snap); err != nil {
		t.Fatalf("snapshot --json: %v\n%s", err, out)
	}
	if snap.Dataset.Version != 2 || snap.Dataset.Rows != rows+5000 || snap.Dataset.SHA256 == reg.Dataset.SHA256 {
		t.Fatalf("snapshot after 5,000 more rows: %+v; want version 2 with %d rows and a new hash", snap.Dataset, rows+5000)
	}
	second := train("second")

	// Each signed model names the version it was trained on.
	want1 := fmt.Sprintf("trained on dataset version 1 (sha256 %s)", reg.Dataset.SHA256)
	want2 := fmt.Sprintf("trained on dataset version 2 (sha256 %s)", snap.Dataset.SHA256)
	if v := verify(first); !strings.Contains(v, want1) {
		t.Errorf("the first job's model: %q; want %q", v, want1)
	}
	if v := verify(second); !strings.Contains(v, want2) {
		t.Errorf("the second job's model: %q; want %q", v, want2)
	}

	// The Owner's list of hosts other users' sources may name.
	hostPort := fmt.Sprintf("127.0.0.1:%d", pg.Port)
	if out := admin("", "settings", "sources"); !strings.Contains(out, "none: only the Owner") {
		t.Errorf("settings sources before any change: %q", out)
	}
	if out := admin("", "settings", "sources", "--allow-host", hostPort, "--allow-host", "DB.Example.org"); !strings.Contains(out, hostPort+", db.example.org") {
		t.Errorf("settings sources after --allow-host: %q", out)
	}
	if out := admin("", "settings", "sources", "--remove-host", "db.example.org."); !strings.Contains(out, hostPort) || strings.Contains(out, "db.example.org") {
		t.Errorf("settings sources after --remove-host: %q", out)
	}
	if msg := adm.fails(ctx, 2, "", "settings", "sources", "--remove-host", "other.example.org"); !strings.Contains(msg, "not on the list") {
		t.Errorf("--remove-host of a host not listed: %q", msg)
	}

	// The password is nowhere a user or operator looks.
	outputs = append(outputs, admin("", "datasets", "sources", "--json"), admin("", "audit", "list", "--limit", "1000", "--json"))
	for _, o := range outputs {
		if strings.Contains(o, pgtest.Password) {
			t.Errorf("a command printed the password: %.300s", o)
		}
	}
	for _, p := range h.Procs() {
		if strings.Contains(string(p.Stdout())+string(p.Stderr()), pgtest.Password) {
			t.Errorf("a peer logged the password")
		}
	}
	if !strings.Contains(string(gw.Stderr()), "dataset snapshot") {
		t.Errorf("the gateway's log does not show the snapshot:\n%s", gw.Tail(20))
	}
}
