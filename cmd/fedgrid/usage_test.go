package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// TestUnknownCommandIsBadUsage: an unknown command exits 2 like an unknown
// flag, at the top and inside command groups; a group without a subcommand
// is bad usage too.
func TestUnknownCommandIsBadUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bogus"}, {"model", "bogus"}, {"model"}, {"plan", "nope"}, {"admin", "users", "nope"}, {"admin"},
		{"search", "--bogus"}, {"audit"},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("fedgrid %s: exit %d, want 2 (stderr %q)", strings.Join(args, " "), code, errOut.String())
		}
		if lines := strings.Count(strings.TrimSpace(errOut.String()), "\n"); lines != 0 {
			t.Errorf("fedgrid %s: %d lines on stderr, want one: %q", strings.Join(args, " "), lines+1, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run(nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "Available Commands") {
		t.Fatalf("fedgrid alone: exit %d, %q", code, out.String())
	}
}

func TestWhoamiReprintsKeygen(t *testing.T) {
	key := filepath.Join(t.TempDir(), "me.key")
	var out, errOut bytes.Buffer
	if code := run([]string{"keygen", "--out", key}, &out, &errOut); code != 0 {
		t.Fatalf("keygen: %d %s", code, errOut.String())
	}
	made := out.String()
	out.Reset()
	if code := run([]string{"whoami", "--key", key}, &out, &errOut); code != 0 || out.String() != made {
		t.Fatalf("whoami: exit %d, %q; keygen printed %q", code, out.String(), made)
	}
	if code := run([]string{"whoami"}, &out, &errOut); code != 2 {
		t.Fatalf("whoami without --key: exit %d, want 2", code)
	}
}

func TestNumbersForPeople(t *testing.T) {
	for x, want := range map[float64]string{
		100: "100", 0.78125: "0.7812", 0.05: "0.05", -2.5: "-2.5", 0.0000123: "1.23e-05", 0: "0", 1234.56789: "1234.5679",
	} {
		if got := fmtNumber(x); got != want {
			t.Errorf("fmtNumber(%v) = %q, want %q", x, got, want)
		}
	}
	got := summarizeMetrics([]byte(`{"epochs":100,"accuracy":0.78125,"loss":[0.9,0.5]}`))
	if got != "accuracy=0.7812 epochs=100 loss(last)=0.5" {
		t.Fatalf("summarizeMetrics: %q", got)
	}
}

// TestModelEvalTextHasTheJSONFacts: the text line shows the AUC that --json has.
func TestModelEvalTextHasTheJSONFacts(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "model.json")
	data := filepath.Join("..", "..", "dataset", "testdata", "pima_diabetes.csv")
	var out, errOut bytes.Buffer
	if code := run([]string{"plan", "run", "--plan", filepath.Join("..", "..", "plan", "testdata", "logreg_pima.json"), "--data", data, "--out", model}, &out, &errOut); code != 0 {
		t.Fatalf("plan run: %d %s", code, errOut.String())
	}
	out.Reset()
	if code := run([]string{"model", "eval", "--model", model, "--data", data}, &out, &errOut); code != 0 {
		t.Fatalf("model eval: %d %s", code, errOut.String())
	}
	raw, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	if errs, err := plan.CheckSchema(plan.ModelFormat, raw); err != nil || len(errs) > 0 {
		t.Errorf("the trained model breaks the model schema: %v %v", err, errs)
	}
	line := out.String()
	for _, want := range []string{"rows 768", "task binary", "accuracy 0.", "loss 0.", "auc 0."} {
		if !strings.Contains(line, want) {
			t.Errorf("model eval printed %q, want %q in it", line, want)
		}
	}
}

// TestProgressWithoutATerminal: written to a file or a pipe, progress is one
// line per state and per tenth of the epochs, without a carriage return.
func TestProgressWithoutATerminal(t *testing.T) {
	var errOut bytes.Buffer
	g := &globals{stderr: &errOut}
	p := progressPrinter(g, false)
	p(&wire.JobInfo{ID: "j", State: wire.StateQueued})
	p(&wire.JobInfo{ID: "j", State: wire.StateQueued})
	for e := 1; e <= 100; e++ {
		p(&wire.JobInfo{ID: "j", State: wire.StateRunning, Attempt: 1, Progress: wire.Progress{Epoch: e, Epochs: 100, Loss: 0.5}})
	}
	p(&wire.JobInfo{ID: "j", State: wire.StateSucceeded})
	s := errOut.String()
	if strings.Contains(s, "\r") {
		t.Fatalf("carriage return in non-terminal progress: %q", s)
	}
	if n := strings.Count(s, "\n"); n != 1+11+1 {
		t.Fatalf("%d lines, want 13 (queued, epochs 1,10,...,100, succeeded):\n%s", n, s)
	}
	if !strings.Contains(s, "epoch 100/100 loss 0.5 (attempt 1)") {
		t.Fatalf("progress:\n%s", s)
	}
}
