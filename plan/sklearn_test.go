package plan

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSklearnReference compares fedgrid's logistic regression with a central
// scikit-learn one (bench/sklearn_ref.py) on the same five 80/20 splits of
// each reference data set: the mean held-out accuracies must agree within
// 0.02. It needs /usr/bin/python3 with sklearn, so it runs only with
// FEDGRID_SKLEARN=1 (bench/sklearn_check.sh, called by `make bench`).
func TestSklearnReference(t *testing.T) {
	if os.Getenv("FEDGRID_SKLEARN") != "1" {
		t.Skip("set FEDGRID_SKLEARN=1 (bench/sklearn_check.sh) to compare with scikit-learn")
	}
	for _, c := range []struct{ plan, csv, label string }{
		{"logreg_pima.json", "pima_diabetes.csv", "diabetes"},
		{"logreg_wdbc.json", "wdbc_breast_cancer.csv", "malignant"},
	} {
		tab := loadTable(t, c.csv)
		p := loadPlan(t, c.plan)
		p.Train.ValidationFraction = 0 // sklearn fits on every training row too
		var fg, sk float64
		for seed := int64(1); seed <= 5; seed++ {
			train, holdout := tab.Split(0.2, seed)
			dir := t.TempDir()
			for name, tb := range map[string]interface{ Bytes() ([]byte, error) }{"train.csv": train, "holdout.csv": holdout} {
				b, err := tb.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out, err := exec.Command("/usr/bin/python3", "../bench/sklearn_ref.py",
				filepath.Join(dir, "train.csv"), filepath.Join(dir, "holdout.csv"), c.label).CombinedOutput()
			if err != nil {
				t.Fatalf("sklearn: %v\n%s", err, out)
			}
			ska, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			if err != nil {
				t.Fatalf("sklearn output %q", out)
			}
			m, err := Train(context.Background(), p, train, TrainOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ev, err := Evaluate(m, holdout)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("sklearn check %s split %d: fedgrid %.4f sklearn %.4f", c.csv, seed, ev.Accuracy, ska)
			fg += ev.Accuracy / 5
			sk += ska / 5
		}
		t.Logf("sklearn check %s mean over 5 splits: fedgrid %.4f sklearn %.4f difference %+.4f", c.csv, fg, sk, fg-sk)
		if math.Abs(fg-sk) > 0.02 {
			t.Errorf("%s: fedgrid %.4f vs sklearn %.4f differ by more than 0.02", c.csv, fg, sk)
		}
	}
}
