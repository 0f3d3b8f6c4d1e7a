package e2e

import (
	"bytes"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/wait"
)

// TestWidePlanRefusedAtSubmit: a plan that passes every parameter and
// compute limit but whose activations need gigabytes (w1 [2, 1e6], then
// three relu) is refused at submit with the memory it needs, because the
// gateway's only node (--max-memory 1GiB) could not hold it. The node keeps
// running and trains the next plan that fits (after giving back the pages
// of the binary its start-up touched: internal/memtrim).
func TestWidePlanRefusedAtSubmit(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	f := startFailoverSite(t, ctx)
	f.opts.Extra = []string{"--max-memory", "1GiB"}
	node := f.startNode(t, ctx, "node-a", "")

	wide := filepath.Join(t.TempDir(), "wide.json")
	writeJSON(t, wide, map[string]any{
		"format": "fedgrid.plan/v1", "name": "wide",
		"features": []string{"glucose", "age"}, "label": "diabetes",
		"params": map[string]any{"w1": map[string]any{"shape": []int{2, 1000000}}, "w2": map[string]any{"shape": []int{1000000, 1}}},
		"forward": []map[string]any{
			{"op": "matmul", "in": []string{"x", "w1"}, "out": "h"},
			{"op": "relu", "in": []string{"h"}, "out": "h1"},
			{"op": "relu", "in": []string{"h1"}, "out": "h2"},
			{"op": "relu", "in": []string{"h2"}, "out": "h3"},
			{"op": "matmul", "in": []string{"h3", "w2"}, "out": "z"},
			{"op": "sigmoid", "in": []string{"z"}, "out": "y_hat"},
		},
		"loss":      map[string]any{"op": "bce", "in": []string{"y_hat", "y"}},
		"optimizer": map[string]any{"name": "adam", "learning_rate": 0.01},
		"train":     map[string]any{"epochs": 1, "batch_size": 32, "seed": 1},
	})
	_, err := f.sci.Submit(ctx, f.ref, wide)
	if err == nil {
		t.Fatal("a plan needing gigabytes was accepted by a gateway whose node allows 1 GiB")
	}
	msg := err.Error()
	t.Logf("refused: %s", msg)
	if !strings.Contains(msg, "needs about 2.") || !strings.Contains(msg, "bytes") || !strings.Contains(msg, "1.07 GB") {
		t.Errorf("the refusal does not give the memory needed and the node's: %s", msg)
	}
	if jobs, err := f.site.Admin.Jobs(ctx); err != nil || len(jobs) != 0 {
		t.Errorf("jobs after the refusal: %+v %v", jobs, err)
	}
	job, err := f.sci.Train(ctx, f.ref, f.quick)
	if err != nil || !job.Succeeded() {
		t.Fatalf("a small plan after the refusal: %+v %v", job, err)
	}
	if node.Exited() {
		t.Fatalf("the node exited: %s", node.State())
	}
	// The node gave back its start-up pages of the binary once enrolled
	// (Linux; internal/memtrim) and trained after that.
	if runtime.GOOS == "linux" {
		wait.For(t, 30*time.Second, "the node's log line of its released start-up pages", func() error {
			if !bytes.Contains(node.Stderr(), []byte("start-up pages of the binary released")) {
				return fmt.Errorf("not in the node's log:\n%s", node.Stderr())
			}
			return nil
		})
	}
}
