package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/plan"
)

// maxInitCategories: a category column with more values is left out of
// the starting plan (one input per value would be too wide to start with).
const maxInitCategories = 50

func planInitCmd(g *globals) *cobra.Command {
	var data, label, out string
	c := &cobra.Command{
		Use:   "init",
		Short: "write a commented starting plan for a CSV (logistic, softmax or linear regression)",
		Long: `Write a starting plan for a CSV: every numeric column but the label is a
feature (standardized), category columns are one-hot encoded, and the model is
the simplest that fits the label: logistic regression for a 0/1 label, softmax
regression for class numbers 0..k-1, linear regression otherwise. The file has
// comments saying what each part is and what to change; fedgrid reads plan
files with such comments (and removes them before sending). Check it with
fedgrid plan check --plan FILE --data CSV.`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if data == "" {
				return usagef("--data CSV is required")
			}
			t, err := readCSV(data)
			if err != nil {
				return err
			}
			text, err := initPlan(t, filepath.Base(data), label)
			if err != nil {
				return usageError{err}
			}
			// The plan must pass the checks it is meant to start from.
			b := plan.StripComments([]byte(text))
			if mistakes, err := plan.CheckSchema(plan.Format, b); err != nil || len(mistakes) > 0 {
				return fmt.Errorf("internal error: the starting plan breaks the schema: %v %v", err, mistakes)
			}
			p, err := plan.Parse(b)
			if err != nil {
				return fmt.Errorf("internal error: the starting plan does not parse: %w", err)
			}
			if _, err := plan.Check(p, t.Columns()); err != nil {
				return fmt.Errorf("internal error: the starting plan does not fit %s: %w", data, err)
			}
			if out == "" {
				_, err := io.WriteString(g.stdout, text)
				return err
			}
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s exists; not overwriting it", out)
			}
			if err := writeFileAtomic(out, []byte(text)); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "plan written to %s; check it with fedgrid plan check --plan %s --data %s\n", out, out, data)
			return nil
		},
	}
	c.Flags().StringVar(&data, "data", "", "the CSV (its header and values decide features, label and task)")
	c.Flags().StringVar(&label, "label", "", "the column to predict (default: the last column)")
	c.Flags().StringVar(&out, "out", "", "write the plan here (default: standard output); an existing file is not overwritten")
	return c
}

// initPlan builds the commented plan text.
func initPlan(t *dataset.Table, name, label string) (string, error) {
	cols := t.Columns()
	if len(cols) < 2 {
		return "", fmt.Errorf("the CSV has %d columns; a plan needs at least one feature and a label", len(cols))
	}
	if label == "" {
		label = cols[len(cols)-1].Name
	}
	lc, ok := t.Column(label)
	if !ok {
		return "", fmt.Errorf("--label %q is not a column of the CSV", label)
	}
	if lc.Type != "number" {
		return "", fmt.Errorf("the label %q holds text; a plan's label must be numbers (0/1, class numbers or values)", label)
	}
	ys, err := t.Numeric(label)
	if err != nil {
		return "", err
	}
	task, classes := labelTask(ys)

	var features, numeric, skipped []string
	type hot struct {
		col  string
		cats []string
	}
	var hots []hot
	for _, c := range cols {
		if c.Name == label {
			continue
		}
		if c.Type == "number" {
			features = append(features, c.Name)
			numeric = append(numeric, c.Name)
			continue
		}
		vals, err := t.Category(c.Name)
		if err != nil {
			return "", err
		}
		cats := distinct(vals)
		if len(cats) > maxInitCategories {
			skipped = append(skipped, fmt.Sprintf("%s (%d values)", c.Name, len(cats)))
			continue
		}
		features = append(features, c.Name)
		hots = append(hots, hot{c.Name, cats})
	}
	if len(features) == 0 {
		return "", fmt.Errorf("no column but the label %q can be a feature", label)
	}
	width := len(numeric)
	for _, h := range hots {
		width += len(h.cats)
	}
	outputs := 1
	if task == plan.TaskMulticlass {
		outputs = classes
	}

	q := func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("// A starting plan for %s, written by fedgrid plan init.", name)
	w("// Lines starting with // are comments: fedgrid removes them before the plan is sent.")
	w("// Check it with: fedgrid plan check --plan THIS_FILE --data %s", name)
	w("// The format is described in docs/plan-format.md and docs/schemas/plan.v1.schema.json.")
	w("{")
	w(`  "format": "fedgrid.plan/v1",`)
	w(`  "name": %s,`, q(strings.TrimSuffix(name, filepath.Ext(name))+"-"+map[string]string{plan.TaskBinary: "logreg", plan.TaskMulticlass: "softmax", plan.TaskRegression: "linreg"}[task]))
	w("  // The columns the model reads, in order. Remove the ones that should not count.")
	if len(skipped) > 0 {
		w("  // Left out: %s: too many values for one-hot encoding.", strings.Join(skipped, ", "))
	}
	w(`  "features": %s,`, q(features))
	switch task {
	case plan.TaskBinary:
		w("  // The column to predict: its values are 0 and 1, so this is a binary classifier.")
	case plan.TaskMulticlass:
		w("  // The column to predict: its values are the class numbers 0 to %d.", classes-1)
	default:
		w("  // The column to predict: a number, so this is a regression.")
	}
	w(`  "label": %s,`, q(label))
	w("  // Preprocessing: numeric features are standardized with the training rows' mean and")
	w("  // standard deviation; category features become one input per value (one_hot).")
	w(`  "preprocess": [`)
	var steps []string
	for _, h := range hots {
		steps = append(steps, fmt.Sprintf(`    {"op": "one_hot", "column": %s, "categories": %s}`, q(h.col), q(h.cats)))
	}
	if len(numeric) > 0 {
		steps = append(steps, fmt.Sprintf(`    {"op": "standardize", "columns": %s}`, q(numeric)))
	}
	w("%s", strings.Join(steps, ",\n"))
	w("  ],")
	w("  // The trainable parameters: w maps the %d inputs to %d output(s), b is the bias.", width, outputs)
	w(`  "params": {`)
	w(`    "w": {"shape": [%d, %d], "init": "zeros"},`, width, outputs)
	w(`    "b": {"shape": [%d], "init": "zeros"}`, outputs)
	w("  },")
	w("  // The forward pass: x is the preprocessed input, each step writes one value.")
	w("  // For a hidden layer, add a parameter pair and a relu between matmul and the output.")
	w(`  "forward": [`)
	w(`    {"op": "matmul", "in": ["x", "w"], "out": "z"},`)
	switch task {
	case plan.TaskBinary:
		w(`    {"op": "add", "in": ["z", "b"], "out": "z"},`)
		w(`    {"op": "sigmoid", "in": ["z"], "out": "y_hat"}`)
		w("  ],")
		w("  // Binary cross-entropy between the predicted probability and the label y.")
		w(`  "loss": {"op": "bce", "in": ["y_hat", "y"]},`)
	case plan.TaskMulticlass:
		w(`    {"op": "add", "in": ["z", "b"], "out": "scores"}`)
		w("  ],")
		w("  // Cross-entropy between the class scores and the label y (a class number).")
		w(`  "loss": {"op": "cross_entropy", "in": ["scores", "y"]},`)
	default:
		w(`    {"op": "add", "in": ["z", "b"], "out": "y_hat"}`)
		w("  ],")
		w("  // Mean squared error between the prediction and the label y.")
		w(`  "loss": {"op": "mse", "in": ["y_hat", "y"]},`)
	}
	w("  // Adam with a moderate learning rate; lower it if the loss jumps around.")
	w(`  "optimizer": {"name": "adam", "learning_rate": 0.05},`)
	w("  // 100 passes over the data in batches of 32; 20 %% of the rows measure validation")
	w("  // loss and accuracy. The seed makes training repeatable.")
	w(`  "train": {"epochs": 100, "batch_size": 32, "seed": 1, "validation_fraction": 0.2}`)
	w("  // For differential privacy (DP-SGD) add, after train:")
	w(`  // "privacy": {"dp_sgd": {"noise_multiplier": 1.1, "max_grad_norm": 1.0}, "delta": 1e-5}`)
	w("  // and drop validation_fraction (the statistics must then be declared, see the docs).")
	w("}")
	return b.String(), nil
}

// labelTask decides the task from the label's values.
func labelTask(ys []float64) (string, int) {
	seen := map[float64]bool{}
	whole := true
	for _, y := range ys {
		seen[y] = true
		if y != math.Trunc(y) || y < 0 {
			whole = false
		}
	}
	if whole && len(seen) <= 2 && (len(seen) == 0 || allIn(seen, 0, 1)) {
		return plan.TaskBinary, 2
	}
	if whole && len(seen) <= 100 {
		k := 0
		for y := range seen {
			k = max(k, int(y)+1)
		}
		if k == len(seen) {
			return plan.TaskMulticlass, k
		}
	}
	return plan.TaskRegression, 0
}

func allIn(seen map[float64]bool, vals ...float64) bool {
	for y := range seen {
		if !slices.Contains(vals, y) {
			return false
		}
	}
	return true
}

func distinct(vals []string) []string {
	m := map[string]bool{}
	for _, v := range vals {
		m[v] = true
	}
	out := make([]string, 0, len(m))
	for v := range m {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}
