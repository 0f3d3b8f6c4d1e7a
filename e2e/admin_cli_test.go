package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
)

// adminCLI runs `fedgrid admin ...` with its own configuration directory,
// where login keeps the token.
type adminCLI struct {
	t *testing.T
	h *harness.Harness
}

// run runs the command (stdin: a password, or "") and fails the test unless it exits 0.
func (a adminCLI) run(ctx context.Context, stdin string, args ...string) string {
	a.t.Helper()
	res, err := a.h.RunInput(ctx, stdin, append([]string{"admin"}, args...)...)
	if err != nil {
		a.t.Fatal(err)
	}
	return string(res.Stdout)
}

// json runs the command with --json and decodes its answer into out.
func (a adminCLI) json(ctx context.Context, out any, args ...string) {
	a.t.Helper()
	a.jsonIn(ctx, "", out, args...)
}

// jsonIn is json with stdin.
func (a adminCLI) jsonIn(ctx context.Context, stdin string, out any, args ...string) {
	a.t.Helper()
	stdout := a.run(ctx, stdin, append(args, "--json")...)
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		a.t.Fatalf("fedgrid admin %s --json: %v; stdout: %.300s", strings.Join(args, " "), err, stdout)
	}
}

// fails runs a command that must fail with exit status code, and returns its stderr.
func (a adminCLI) fails(ctx context.Context, code int, stdin string, args ...string) string {
	a.t.Helper()
	res, err := a.h.RunInput(ctx, stdin, append([]string{"admin"}, args...)...)
	if harness.ExitCode(err) != code {
		a.t.Fatalf("fedgrid admin %s: %v, want exit status %d", strings.Join(args, " "), err, code)
	}
	return string(res.Stderr)
}

// TestAdminCLIWalkthrough runs the README's walkthrough, every admin step a
// `fedgrid admin` command, with real processes: a network peer, a gateway
// set up and filled through the CLI, a node enrolled with the CLI's join
// token, and a data scientist the CLI registers, who trains and fetches the
// model. Then it runs the other admin commands against the same gateway.
func TestAdminCLIWalkthrough(t *testing.T) {
	dir := t.TempDir()
	cfgHome := filepath.Join(dir, "config")
	h, err := harness.New(harness.Config{Bin: fedgridBin(t), Dir: dir, Env: []string{"XDG_CONFIG_HOME=" + cfgHome}})
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
	network := networkName(t)
	adm := adminCLI{t: t, h: h}

	netPeer, err := h.StartNetwork(ctx, "network", harness.PeerOptions{Network: network})
	if err != nil {
		t.Fatal(err)
	}
	opts := harness.PeerOptions{Network: network, Bootstrap: []string{netPeer.Addr()}}
	gw, err := h.StartGateway(ctx, "gateway", "Hospital A", opts)
	if err != nil {
		t.Fatal(err)
	}
	const ownerEmail, ownerPassword = "owner@hospital-a.example", "correct horse battery staple"

	// Terminal 3 of the README.
	if out := adm.run(ctx, "", "status", "--gateway", gw.HTTP); !strings.Contains(out, "not done") {
		t.Fatalf("status before setup:\n%s", out)
	}
	adm.fails(ctx, 2, ownerPassword+"\n", "setup", "--gateway", gw.HTTP, "--email", ownerEmail)
	if msg := adm.fails(ctx, 1, ownerPassword+"\n", "setup", "--gateway", gw.HTTP, "--email", ownerEmail, "--setup-token", "wrong"); msg == "" {
		t.Fatal("setup with a wrong setup token: no message")
	}
	adm.run(ctx, ownerPassword+"\n", "setup", "--gateway", gw.HTTP, "--email", ownerEmail, "--name", "Owner", "--setup-token", gw.SetupToken())
	cred := filepath.Join(cfgHome, "fedgrid", "admin.json")
	fi, err := os.Stat(cred)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", cred, fi.Mode().Perm())
	}
	// A second setup is refused; a wrong password is a failure (exit 1) that says so.
	adm.fails(ctx, 1, ownerPassword+"\n", "setup", "--email", ownerEmail, "--setup-token", gw.SetupToken())
	if msg := adm.fails(ctx, 1, "wrong password\n", "login", "--email", ownerEmail); !strings.Contains(msg, "wrong email or password") {
		t.Fatalf("bad login says %q", msg)
	}
	adm.run(ctx, ownerPassword+"\n", "login", "--email", ownerEmail)

	var ds struct {
		ID   string `json:"id"`
		Rows int    `json:"rows"`
	}
	adm.json(ctx, &ds, "datasets", "upload", filepath.Join(dataDir(), "pima_diabetes.csv"),
		"--name", "pima-diabetes", "--tags", "medical,public,diabetes", "--visibility", "public")
	if ds.ID == "" || ds.Rows != 768 {
		t.Fatalf("upload answered %+v", ds)
	}
	token := strings.TrimSpace(adm.run(ctx, "", "nodes", "join-token"))
	if token == "" || strings.ContainsAny(token, " \n") {
		t.Fatalf("join-token printed %q, want the token alone", token)
	}

	// Terminal 4: the node, enrolled with that token.
	if _, err := h.StartNode(ctx, "node", gw.Addr(), token, opts); err != nil {
		t.Fatal(err)
	}

	// Terminal 5 makes a key; terminal 3 registers it.
	sci, err := h.NewScientist(ctx, h.Path("scientist.key"), network, []string{netPeer.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	var user struct {
		ID             string `json:"id"`
		PeerID         string `json:"peer_id"`
		Role           string `json:"role"`
		BudgetMicroEps int64  `json:"budget_micro_eps"`
	}
	adm.jsonIn(ctx, "scientist password\n", &user, "users", "create", "--email", "scientist@lab.example", "--name", "Data Scientist",
		"--role", "Data Scientist", "--peer-id", sci.PeerID, "--budget", "10")
	if user.PeerID != sci.PeerID || user.Role != "Data Scientist" || user.BudgetMicroEps != 10_000_000 {
		t.Fatalf("users create answered %+v", user)
	}

	// Terminal 5: search, train, fetch and score.
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	found, err := sci.WaitSearch(sctx, 1, 300*time.Millisecond, "medical")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	job, err := sci.Train(ctx, found[0].Ref, filepath.Join(planDir(), "logreg_pima.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !job.Succeeded() {
		t.Fatalf("job ended %s: %s", job.State, job.Error)
	}
	model := h.Path("model.json")
	if err := sci.Result(ctx, job.Ref, model); err != nil {
		t.Fatal(err)
	}
	ev, err := h.ModelEval(ctx, model, filepath.Join(dataDir(), "pima_diabetes.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Rows != 768 || ev.Accuracy < 0.7 {
		t.Fatalf("model eval: %+v", ev)
	}

	// The data scientist lists their jobs on the gateways that know them
	// (one, found through the network), and re-prints their peer ID.
	var mine struct {
		Gateways []struct {
			Gateway string `json:"gateway"`
			Jobs    []struct {
				Ref   string `json:"ref"`
				State string `json:"state"`
			} `json:"jobs"`
			Error string `json:"error"`
		} `json:"gateways"`
	}
	if err := h.RunJSON(ctx, &mine, "jobs", "--network", network, "--bootstrap", netPeer.Addr(), "--key", sci.Key, "--json"); err != nil {
		t.Fatal(err)
	}
	if len(mine.Gateways) != 1 || mine.Gateways[0].Gateway != gw.PeerID || len(mine.Gateways[0].Jobs) != 1 ||
		mine.Gateways[0].Jobs[0].Ref != job.Ref || mine.Gateways[0].Jobs[0].State != "succeeded" {
		t.Fatalf("fedgrid jobs: %+v, want job %s succeeded on %s", mine, job.Ref, gw.PeerID)
	}
	res, err := h.Run(ctx, "jobs", "--network", network, "--bootstrap", netPeer.Addr(), "--key", sci.Key, "--state", "running")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(res.Stdout), job.Ref) {
		t.Fatalf("jobs --state running lists the succeeded job:\n%s", res.Stdout)
	}
	if res, err = h.Run(ctx, "whoami", "--key", sci.Key); err != nil || strings.TrimSpace(string(res.Stdout)) != sci.PeerID {
		t.Fatalf("whoami: %v %q, want %s", err, res.Stdout, sci.PeerID)
	}
	// Progress written to a pipe has no carriage returns.
	res, err = h.Run(ctx, "search", "medical", "--network", network, "--bootstrap", netPeer.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(res.Stderr), "\r") || !strings.Contains(string(res.Stderr), "searched: ") {
		t.Fatalf("search progress to a pipe: %q", res.Stderr)
	}

	// The admin sees the job.
	var jl struct {
		Jobs []struct {
			ID        string `json:"id"`
			State     string `json:"state"`
			DatasetID string `json:"dataset_id"`
		} `json:"jobs"`
	}
	adm.json(ctx, &jl, "jobs", "list")
	if len(jl.Jobs) != 1 || jl.Jobs[0].ID != job.ID || jl.Jobs[0].State != "succeeded" || jl.Jobs[0].DatasetID != ds.ID {
		t.Fatalf("admin jobs list: %+v, want job %s succeeded on %s", jl.Jobs, job.ID, ds.ID)
	}
	if out := adm.run(ctx, "", "jobs", "list"); !strings.Contains(out, job.ID) || !strings.Contains(out, "succeeded") {
		t.Fatalf("jobs list table:\n%s", out)
	}

	t.Run("every command group", func(t *testing.T) {
		adm := adminCLI{t: t, h: h}
		var ul struct {
			Users []struct {
				Email string `json:"email"`
			} `json:"users"`
		}
		adm.json(ctx, &ul, "users", "list")
		if len(ul.Users) != 2 {
			t.Fatalf("users list: %+v", ul)
		}
		if out := adm.run(ctx, "", "users", "show", "scientist@lab.example"); !strings.Contains(out, sci.PeerID) {
			t.Fatalf("users show:\n%s", out)
		}
		var bu struct {
			BudgetMicroEps int64 `json:"budget_micro_eps"`
		}
		adm.json(ctx, &bu, "users", "budget", "scientist@lab.example", "--add", "2.5", "--reason", "second study")
		if bu.BudgetMicroEps != 12_500_000 {
			t.Fatalf("budget after +2.5: %d micro-epsilon", bu.BudgetMicroEps)
		}
		var cp struct {
			CapMicroEps int64 `json:"cap_micro_eps"`
		}
		adm.json(ctx, &cp, "users", "caps", "scientist@lab.example", "pima-diabetes", "--epsilon", "1.5")
		if cp.CapMicroEps != 1_500_000 {
			t.Fatalf("cap: %+v", cp)
		}
		adm.fails(ctx, 2, "", "users", "caps", "scientist@lab.example", "pima-diabetes")

		var ov struct {
			UserID string `json:"user_id"`
			Train  *bool  `json:"train"`
		}
		adm.json(ctx, &ov, "datasets", "overrides", "pima-diabetes", "scientist@lab.example", "--train", "no")
		if ov.UserID != user.ID || ov.Train == nil || *ov.Train {
			t.Fatalf("override: %+v", ov)
		}
		if out := adm.run(ctx, "", "datasets", "overrides", "pima-diabetes"); !strings.Contains(out, user.ID) {
			t.Fatalf("overrides list:\n%s", out)
		}
		var ed struct {
			Tags       []string `json:"tags"`
			Visibility string   `json:"visibility"`
		}
		adm.json(ctx, &ed, "datasets", "edit", "pima-diabetes", "--tags", "medical,diabetes", "--visibility", "private")
		if strings.Join(ed.Tags, ",") != "diabetes,medical" || ed.Visibility != "private" {
			t.Fatalf("edit: %+v", ed)
		}
		if out := adm.run(ctx, "", "datasets", "list", "--tag", "diabetes"); !strings.Contains(out, ds.ID) {
			t.Fatalf("datasets list --tag diabetes:\n%s", out)
		}

		var rule struct {
			ID                 string `json:"id"`
			MaxEpsilonMicroEps int64  `json:"max_epsilon_micro_eps"`
		}
		adm.json(ctx, &rule, "rules", "create", "--tag", "medical", "--max-epsilon", "0.5", "--quota", "3", "--expires", "720h")
		if rule.ID == "" || rule.MaxEpsilonMicroEps != 500_000 {
			t.Fatalf("rules create: %+v", rule)
		}
		if out := adm.run(ctx, "", "rules", "list"); !strings.Contains(out, rule.ID) {
			t.Fatalf("rules list:\n%s", out)
		}
		adm.run(ctx, "", "rules", "edit", rule.ID, "--disabled")
		adm.run(ctx, "", "rules", "delete", rule.ID)

		var rl struct {
			Requests []json.RawMessage `json:"requests"`
		}
		adm.json(ctx, &rl, "requests", "list", "--state", "pending")
		if len(rl.Requests) != 0 {
			t.Fatalf("pending requests on a public dataset: %s", rl.Requests)
		}
		adm.fails(ctx, 2, "", "requests", "deny", "nope")

		var nl struct {
			Nodes []struct {
				PeerID string `json:"peer_id"`
			} `json:"nodes"`
		}
		adm.json(ctx, &nl, "nodes", "list")
		if len(nl.Nodes) != 1 {
			t.Fatalf("nodes list: %+v", nl)
		}
		if out := adm.run(ctx, "", "models", "list"); !strings.Contains(out, "(none)") {
			t.Fatalf("models list on a gateway hosting none:\n%s", out)
		}

		var al struct {
			Entries []struct {
				Action string `json:"action"`
			} `json:"entries"`
		}
		adm.json(ctx, &al, "audit", "list", "--action", "budget.")
		if len(al.Entries) == 0 {
			t.Fatal("audit list --action budget. found nothing")
		}
		if out := adm.run(ctx, "", "audit", "verify"); !strings.Contains(out, "hash chain intact") {
			t.Fatalf("audit verify:\n%s", out)
		}
		adm.run(ctx, "", "settings", "set", "--name", "Hospital A", "--color", "#225588")
		if out := adm.run(ctx, "", "settings", "show"); !strings.Contains(out, "Hospital A") || !strings.Contains(out, "#225588") {
			t.Fatalf("settings show:\n%s", out)
		}

		adm.run(ctx, "", "users", "role", "scientist@lab.example", "Compliance Officer")
		adm.run(ctx, "", "users", "delete", "scientist@lab.example")
		if msg := adm.fails(ctx, 1, "", "users", "show", "scientist@lab.example"); !strings.Contains(msg, "no user with the email") {
			t.Fatalf("show of a deleted user: %q", msg)
		}
		adm.run(ctx, "", "logout")
		if msg := adm.fails(ctx, 1, "", "users", "list", "--gateway", gw.HTTP); !strings.Contains(msg, "not logged in") {
			t.Fatalf("after logout: %q", msg)
		}
	})
}
