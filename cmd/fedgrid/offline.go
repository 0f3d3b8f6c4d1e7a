package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

func readCSV(path string) (*dataset.Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := dataset.ReadCSV(f, dataset.Limits{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func readModel(path string) (*plan.Model, error) {
	b, err := readLimited(path, wire.MaxModel)
	if err != nil {
		return nil, err
	}
	m, err := plan.ParseModel(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// readPlanFile reads a plan file without its // comments.
func readPlanFile(path string) ([]byte, error) {
	b, err := readLimited(path, wire.MaxPlan)
	if err != nil {
		return nil, err
	}
	return plan.StripComments(b), nil
}

func readPlan(path string) (*plan.Plan, error) {
	b, err := readPlanFile(path)
	if err != nil {
		return nil, err
	}
	p, err := plan.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

func modelCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "model", Short: "work with released models, offline"}
	var modelFile, dataFile string
	var asJSON bool
	eval := &cobra.Command{
		Use:   "eval",
		Short: "accuracy and loss of a model on a labelled CSV",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if modelFile == "" || dataFile == "" {
				return usagef("--model MODEL.json and --data CSV are required")
			}
			m, err := readModel(modelFile)
			if err != nil {
				return err
			}
			t, err := readCSV(dataFile)
			if err != nil {
				return err
			}
			ev, err := plan.Evaluate(m, t)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.stdout, ev)
			}
			_, err = fmt.Fprintln(g.stdout, evalText(ev))
			return err
		},
	}
	eval.Flags().StringVar(&modelFile, "model", "", "model file (fedgrid.model/v1)")
	eval.Flags().StringVar(&dataFile, "data", "", "CSV with the plan's feature and label columns")
	eval.Flags().BoolVar(&asJSON, "json", false, "print one JSON document")

	var verifyFile string
	verify := &cobra.Command{
		Use:   "verify [MODEL.json]",
		Short: "check a model's provenance: its gateway's signature and, for a federated model, every round's receipts",
		Long: `Check a released model: the signature of the gateway that released it (over the
whole document) and, in a model trained across gateways, its federation record:
every receipt's signature by its gateway's peer key, that each round lists one
receipt per gateway whose update was summed, that rounds come in order, that
round 1 started from the plan's initial weights, each later round from the
previous round's result, and that the model's weights are the last round's
result. Every problem found is named; exit 1 if there is any.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 1 {
				if verifyFile != "" && verifyFile != args[0] {
					return usagef("give the model once: as an argument or with --model")
				}
				verifyFile = args[0]
			}
			if verifyFile == "" {
				return usagef("a model file is required: fedgrid model verify MODEL.json")
			}
			m, err := readModel(verifyFile)
			if err != nil {
				return err
			}
			if err := gateway.VerifyModel(m); err != nil {
				return fmt.Errorf("%s does not verify: %w", verifyFile, err)
			}
			pv := m.Provenance
			fmt.Fprintf(g.stdout, "signature valid: gateway %s, dataset %s, job %s\n", pv.Gateway, pv.Dataset, pv.Job)
			if pv.DatasetVersion > 0 {
				fmt.Fprintf(g.stdout, "trained on dataset version %d (sha256 %s)\n", pv.DatasetVersion, pv.DatasetSHA256)
			}
			if f := pv.Federation; f != nil {
				fmt.Fprintf(g.stdout, "federation %s: %d rounds, %d receipts verified; weights chain from the plan's initial weights to the final weights holds\n", f.ID, len(f.Rounds), f.Count())
				for _, gw := range f.Gateways {
					n := 0
					for _, r := range f.Rounds {
						if slices.Contains(r.Participants, gw.PeerID) {
							n++
						}
					}
					fmt.Fprintf(g.stdout, "  gateway %s (%s): in %d of %d rounds\n", gw.Name, gw.PeerID, n, len(f.Rounds))
				}
			}
			return nil
		},
	}
	verify.Flags().StringVar(&verifyFile, "model", "", "model file (or give it as the argument)")
	c.AddCommand(eval, verify)
	return c
}

func planCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "plan", Short: "check and run plans locally"}
	var checkPlan, checkData string
	var checkJSON bool
	check := &cobra.Command{
		Use:   "check",
		Short: "validate a plan against its schema (every mistake, with its JSON path), infer shapes and count parameters",
		Long: `Validate a plan: first against the plan format's JSON Schema (docs/schemas/
plan.v1.schema.json), reporting every mistake at once, each with its JSON path
(e.g. $.train.epochs); then the checks that need the operations' shapes and,
with --data, the CSV's columns. A valid plan prints its shapes and parameter count.`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if checkPlan == "" {
				return usagef("--plan PLAN.json is required")
			}
			b, err := readPlanFile(checkPlan)
			if err != nil {
				return err
			}
			mistakes, err := plan.CheckSchema(plan.Format, b)
			if err != nil {
				return fmt.Errorf("%s: %w", checkPlan, err)
			}
			if len(mistakes) > 0 {
				if checkJSON {
					if err := printJSON(g.stdout, map[string]any{"valid": false, "errors": mistakes}); err != nil {
						return err
					}
				} else {
					for _, m := range mistakes {
						fmt.Fprintf(g.stderr, "%s: %s\n", checkPlan, m)
					}
				}
				return fmt.Errorf("%s: %d mistakes against the plan schema", checkPlan, len(mistakes))
			}
			p, err := plan.Parse(b)
			if err != nil {
				return fmt.Errorf("%s: %w", checkPlan, err)
			}
			var cols []dataset.Column
			if checkData != "" {
				t, err := readCSV(checkData)
				if err != nil {
					return err
				}
				cols = t.Columns()
			}
			r, err := plan.Check(p, cols)
			if err != nil {
				return err
			}
			if checkJSON {
				return printJSON(g.stdout, map[string]any{"valid": true, "errors": []any{}, "report": r})
			}
			fmt.Fprint(g.stdout, r.String())
			return nil
		},
	}
	check.Flags().StringVar(&checkPlan, "plan", "", "plan file")
	check.Flags().StringVar(&checkData, "data", "", "CSV to check the plan's columns against (optional)")
	check.Flags().BoolVar(&checkJSON, "json", false, "print one JSON document: valid, errors (path, message) and the report")

	var runPlan, runData, runOut, runEngine string
	runc := &cobra.Command{
		Use:   "run",
		Short: "train a plan locally with the node's engine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if runPlan == "" || runData == "" || runOut == "" {
				return usagef("--plan, --data and --out are required")
			}
			engine, err := plan.ParseEngine(runEngine)
			if err != nil {
				return usagef("--engine: %v", err)
			}
			p, err := readPlan(runPlan)
			if err != nil {
				return err
			}
			t, err := readCSV(runData)
			if err != nil {
				return err
			}
			if _, err := plan.Check(p, t.Columns()); err != nil {
				return err
			}
			m, err := plan.Train(cmd.Context(), p, t, plan.TrainOptions{Engine: engine, Progress: func(pr plan.Progress) {
				g.logger().Debug("epoch", "epoch", pr.Epoch, "of", pr.Epochs, "loss", pr.Loss)
			}})
			if err != nil {
				return err
			}
			b, err := json.Marshal(m)
			if err != nil {
				return err
			}
			if err := writeFileAtomic(runOut, b); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "model written to %s\n", runOut)
			return nil
		},
	}
	runc.Flags().StringVar(&runPlan, "plan", "", "plan file")
	runc.Flags().StringVar(&runData, "data", "", "training CSV")
	runc.Flags().StringVar(&runOut, "out", "", "where to write the model")
	runc.Flags().StringVar(&runEngine, "engine", string(plan.EngineNative), "gradient engine: native (fast) or gorgonia (autodiff reference)")
	c.AddCommand(check, runc, planInitCmd(g))
	return c
}

// summarizeMetrics prints the scalar metrics and the last value of each curve.
func summarizeMetrics(raw json.RawMessage) string {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		switch v := m[k].(type) {
		case float64:
			parts = append(parts, k+"="+fmtNumber(v))
		case []any:
			if len(v) > 0 {
				if f, ok := v[len(v)-1].(float64); ok {
					parts = append(parts, k+"(last)="+fmtNumber(f))
				}
			}
		}
	}
	return strings.Join(parts, " ")
}
