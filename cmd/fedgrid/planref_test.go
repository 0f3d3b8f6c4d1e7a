package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/plan"
)

// TestPlanCheckReportsThreeMistakes (acceptance 5): a plan with three
// mistakes gets all three, each with its JSON path, and exit 1.
func TestPlanCheckReportsThreeMistakes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.json")
	bad := `// three mistakes
{
  "format": "fedgrid.plan/v1",
  "features": ["glucose", "mass"], "label": "diabetes",
  "params": {"w": {"shape": [2, 1], "init": "zero"}},
  "forward": [{"op": "matmul", "in": ["x", "w"], "out": "y_hat"}],
  "loss": {"op": "bce", "in": ["y_hat", "y"]},
  "optimizer": {"name": "adam", "learning_rate": 0.05},
  "train": {"epochs": 0, "batch_size": 32, "sed": 7}
}
`
	if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"plan", "check", "--plan", p}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, errOut.String())
	}
	for _, path := range []string{"$.params.w.init:", "$.train:", "$.train.epochs:"} {
		if !strings.Contains(errOut.String(), p+": "+path) {
			t.Errorf("stderr lacks %s:\n%s", path, errOut.String())
		}
	}
	if !strings.Contains(errOut.String(), "3 mistakes") {
		t.Errorf("stderr: %s", errOut.String())
	}
	out.Reset()
	run([]string{"plan", "check", "--plan", p, "--json"}, &out, &errOut)
	var doc struct {
		Valid  bool               `json:"valid"`
		Errors []plan.SchemaError `json:"errors"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.Valid || len(doc.Errors) != 3 {
		t.Fatalf("--json: %v %s", err, out.String())
	}
}

// TestPlanInit: the starting plan for each example CSV has comments, passes
// plan check against the CSV, and trains.
func TestPlanInit(t *testing.T) {
	dir := t.TempDir()
	for _, csv := range []string{"pima_diabetes.csv", "wdbc_breast_cancer.csv"} {
		data := filepath.Join("..", "..", "examples", "data", csv)
		planFile := filepath.Join(dir, csv+".plan.json")
		var out, errOut bytes.Buffer
		if code := run([]string{"plan", "init", "--data", data, "--out", planFile}, &out, &errOut); code != 0 {
			t.Fatalf("%s: plan init: %d %s", csv, code, errOut.String())
		}
		b, err := os.ReadFile(planFile)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(b), "//") < 10 {
			t.Errorf("%s: the plan has few comments:\n%s", csv, b)
		}
		if code := run([]string{"plan", "check", "--plan", planFile, "--data", data}, &out, &errOut); code != 0 {
			t.Fatalf("%s: plan check: %d %s", csv, code, errOut.String())
		}
		if code := run([]string{"plan", "init", "--data", data, "--out", planFile}, &out, &errOut); code != 1 {
			t.Errorf("%s: plan init over an existing file: exit %d, want 1", csv, code)
		}
	}
	// A regression label and a multiclass label.
	for name, csv := range map[string]string{
		"regression": "a,b,y\n1,2,0.5\n2,3,1.7\n3,1,2.2\n4,4,3.1\n",
		"multiclass": "a,colour,y\n1,red,0\n2,blue,1\n3,red,2\n4,green,1\n",
	} {
		data := filepath.Join(dir, name+".csv")
		if err := os.WriteFile(data, []byte(csv), 0o644); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		if code := run([]string{"plan", "init", "--data", data}, &out, &errOut); code != 0 {
			t.Fatalf("%s: %d %s", name, code, errOut.String())
		}
		want := map[string]string{"regression": `"mse"`, "multiclass": `"cross_entropy"`}[name]
		if !strings.Contains(out.String(), want) {
			t.Errorf("%s: no %s loss:\n%s", name, want, out.String())
		}
		if name == "multiclass" && !strings.Contains(out.String(), `"one_hot", "column": "colour"`) {
			t.Errorf("multiclass: colour is not one-hot encoded:\n%s", out.String())
		}
	}
}
