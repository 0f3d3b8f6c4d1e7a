package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// `fedgrid eval`: a model scored on the rows of several gateways, of which
// only securely aggregated sums leave (client.FedEvaluate). `fedgrid model
// eval` scores a model on a CSV of your own, offline.

func evalCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var refs []string
	var modelFile string
	var minGateways int
	c := &cobra.Command{
		Use:   "eval",
		Short: "score a model on datasets of several gateways: only their secure sums leave (loss, accuracy, AUC)",
		Long: `Score a model (fedgrid.model/v1) on the rows of datasets held by two or more
gateways. Each gateway checks your permission on its dataset and the model
against its schema; on review-gated data its compliance officer approves first.
Each gateway scores the model on its own rows and sends its row count, loss
sum, rows predicted right and (binary models) per-class histograms of the
scores over 1000 bins, masked for secure aggregation: you learn only the sums
over all the gateways. The AUC comes from the summed histograms, within the
bin error shown. No noise is added and no epsilon is spent.
To score a model on a CSV of your own, offline: fedgrid model eval.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelFile == "" {
				return usagef("--model MODEL.json is required")
			}
			if len(refs) < 2 {
				return usagef("--dataset GATEWAY_PEER_ID/DATASET_ID is needed at least twice, on different gateways: only sums over several gateways leave (to score a model on a CSV of your own: fedgrid model eval)")
			}
			m, err := readModel(modelFile)
			if err != nil {
				return err
			}
			return runEval(cmd.Context(), g, &cf, m, refs, minGateways)
		},
	}
	cf.add(c, true)
	c.Flags().StringVar(&modelFile, "model", "", "model file (fedgrid.model/v1)")
	c.Flags().StringArrayVar(&refs, "dataset", nil, "GATEWAY_PEER_ID/DATASET_ID (from fedgrid search), at least twice")
	c.Flags().IntVar(&minGateways, "min-gateways", 0, "the fewest gateways whose rows must be in the figures (default: all; at least a majority)")
	return c
}

func runEval(ctx context.Context, g *globals, cf *clientFlags, m *plan.Model, refs []string, minGateways int) error {
	cl, err := cf.open(ctx, g, true)
	if err != nil {
		return err
	}
	defer cl.Close()
	o := client.EvalOptions{Model: m, MinGateways: minGateways}
	names := map[string]string{}
	for _, ref := range refs {
		gw, id, err := client.SplitRef(ref)
		if err != nil {
			return usageError{err}
		}
		entry, gwName, err := cl.Dataset(ctx, gw, id)
		if err != nil {
			return fmt.Errorf("dataset %s: %w", ref, err)
		}
		if _, err := plan.Check(m.Plan, entry.Columns); err != nil {
			return fmt.Errorf("dataset %s: the model does not fit its schema: %v", ref, err)
		}
		o.Participants = append(o.Participants, wire.FedParticipant{Gateway: gw.String(), Name: gwName, Dataset: id})
		names[gw.String()] = gwName
	}
	run := client.FedRunOptions{}
	told := false
	if !cf.json {
		run.Waiting = func(pending map[string]string) {
			if told {
				return
			}
			told = true
			var who []string
			for _, gw := range slices.Sorted(maps.Keys(pending)) {
				who = append(who, fmt.Sprintf("%s (request %s)", names[gw], pending[gw]))
			}
			fmt.Fprintf(g.stderr, "waiting for the compliance officers of %s\n", strings.Join(who, ", "))
		}
	}
	res, err := cl.FedEvaluate(ctx, o, run)
	if err != nil {
		if res != nil && len(res.Refused) > 0 && !cf.json {
			for _, gw := range slices.Sorted(maps.Keys(res.Refused)) {
				fmt.Fprintf(g.stderr, "%s refused: %s\n", names[gw], res.Refused[gw])
			}
		}
		return fmt.Errorf("evaluation: %w", err)
	}
	if cf.json {
		return printJSON(g.stdout, res)
	}
	return printFedEval(g.stdout, res, names)
}

// printFedEval shows a federated evaluation; names are the gateways' names by peer ID.
func printFedEval(w io.Writer, res *client.EvalResult, names map[string]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var in []string
	for _, gw := range res.Gateways {
		in = append(in, names[gw])
	}
	fmt.Fprintf(tw, "evaluation\t%s (each gateway's part: job fed-%s)\ngateways\t%d: %s\nrows\t%d\ntask\t%s\n", res.Federation, res.Federation, len(res.Gateways), strings.Join(in, ", "), res.Rows, res.Task)
	if res.Task != plan.TaskRegression {
		fmt.Fprintf(tw, "accuracy\t%s (%d of %d)\n", fmtNumber(res.Accuracy), res.Correct, res.Rows)
	}
	fmt.Fprintf(tw, "loss\t%s\n", fmtNumber(res.Loss))
	if res.Bins > 0 && res.AUC != 0 {
		fmt.Fprintf(tw, "auc\t%s (within %.2g of the exact AUC: %d-bin score histograms)\n", fmtNumber(res.AUC), res.AUCError, res.Bins)
	}
	for _, gw := range res.Dropped {
		fmt.Fprintf(tw, "dropped\t%s\n", names[gw])
	}
	for _, gw := range slices.Sorted(maps.Keys(res.Refused)) {
		fmt.Fprintf(tw, "refused\t%s: %s\n", names[gw], res.Refused[gw])
	}
	return tw.Flush()
}
