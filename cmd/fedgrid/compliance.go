package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/wire"
)

// queryCmd: fedgrid query --dataset REF --stat S --column C --epsilon E [--lower L --upper U --bins B].
func queryCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var ref string
	var q wire.QueryRequest
	c := &cobra.Command{
		Use:   "query",
		Short: "ask a differentially private statistic of a dataset's numeric column; the epsilon is charged to your budget",
		Long: "Every query, on public data too, is answered with calibrated noise (laplace, or gaussian with --delta) and charged\n" +
			"its --epsilon, also when the same question was asked before. Values are clamped to [--lower, --upper];\n" +
			"count counts the rows within them.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ref == "" || q.Stat == "" || q.Column == "" || q.Epsilon == 0 {
				return usagef("--dataset GATEWAY_PEER_ID/DATASET_ID, --stat, --column and --epsilon are required")
			}
			if !cmd.Flags().Changed("lower") || !cmd.Flags().Changed("upper") {
				return usagef("--lower and --upper (the clamping bounds) are required")
			}
			gw, ds, err := client.SplitRef(ref)
			if err != nil {
				return usageError{err}
			}
			q.Dataset = ds
			cl, err := cf.open(cmd.Context(), g, true)
			if err != nil {
				return err
			}
			defer cl.Close()
			r, err := cl.Query(cmd.Context(), gw, q)
			if err != nil {
				return fmt.Errorf("query: %w", err)
			}
			if cf.json {
				return printJSON(g.stdout, r)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			if r.Stat == wire.StatHistogram {
				fmt.Fprintf(tw, "bin\tnoisy count\n")
				for i, n := range r.Counts {
					fmt.Fprintf(tw, "[%g, %g)\t%.1f\n", r.Edges[i], r.Edges[i+1], n)
				}
				fmt.Fprintf(tw, "noise\tsd %.4g per bin, 95%% within [%.4g, %.4g]\n", r.Scale, r.CI95[0], r.CI95[1])
			} else {
				fmt.Fprintf(tw, "%s(%s)\t%.6g\n", r.Stat, r.Column, r.Value)
				fmt.Fprintf(tw, "noise\tsd %.4g, 95%% interval [%.6g, %.6g]\n", r.Scale, r.CI95[0], r.CI95[1])
			}
			fmt.Fprintf(tw, "mechanism\t%s, epsilon %g", r.Mechanism, r.Epsilon)
			if r.Delta > 0 {
				fmt.Fprintf(tw, ", delta %g", r.Delta)
			}
			fmt.Fprintf(tw, "\nbudget left\t%g\nquery\t%s\n", r.Remaining, r.Query)
			return tw.Flush()
		},
	}
	cf.add(c, true)
	c.Flags().StringVar(&ref, "dataset", "", "GATEWAY_PEER_ID/DATASET_ID")
	c.Flags().StringVar(&q.Stat, "stat", "", "count, sum, mean or histogram")
	c.Flags().StringVar(&q.Column, "column", "", "numeric column")
	c.Flags().Float64Var(&q.Epsilon, "epsilon", 0, "privacy budget this query spends")
	c.Flags().Float64Var(&q.Lower, "lower", 0, "clamping bound: values below count as this")
	c.Flags().Float64Var(&q.Upper, "upper", 0, "clamping bound: values above count as this")
	c.Flags().IntVar(&q.Bins, "bins", 10, "histogram bins between --lower and --upper")
	c.Flags().StringVar(&q.Mechanism, "mechanism", wire.MechanismLaplace, "laplace or gaussian")
	c.Flags().Float64Var(&q.Delta, "delta", 0, "delta of the gaussian mechanism (0 < delta < 1e-3)")
	return c
}

// requestCmd: fedgrid request --gateway PEER_ID budget|permission ... --reason TEXT, request list
// and request withdraw.
func requestCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var gateway, reason, dataset, permission, state, id string
	var epsilon float64
	c := &cobra.Command{
		Use:   "request budget|permission|list|withdraw",
		Short: "ask a gateway's compliance officers for budget or a permission, list your requests, or withdraw one",
		Long: "fedgrid request --gateway PEER_ID budget --epsilon E --reason TEXT\n" +
			"fedgrid request --gateway PEER_ID permission --dataset DATASET_ID --permission train|auto_release --reason TEXT\n" +
			"fedgrid request --gateway PEER_ID list [--state pending|approved|denied|withdrawn] [--id REQUEST_ID]\n" +
			"fedgrid request --gateway PEER_ID withdraw --id REQUEST_ID [--reason TEXT]\n\n" +
			"Withdrawing a pending release request refunds the job's reserved epsilon; the result stays with the gateway.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if gateway == "" {
				return usagef("--gateway PEER_ID is required")
			}
			gw, err := peer.Decode(gateway)
			if err != nil {
				return usagef("--gateway %q is not a peer ID: %v", gateway, err)
			}
			var req wire.RequestCreate
			switch args[0] {
			case "budget":
				if epsilon <= 0 || reason == "" {
					return usagef("budget needs --epsilon E (> 0) and --reason TEXT")
				}
				req = wire.RequestCreate{Kind: wire.KindBudget, Epsilon: epsilon, Dataset: dataset, Reason: reason}
			case "permission":
				if dataset == "" || permission == "" || reason == "" {
					return usagef("permission needs --dataset DATASET_ID, --permission train|auto_release and --reason TEXT")
				}
				req = wire.RequestCreate{Kind: wire.KindPermission, Dataset: dataset, Permission: permission, Reason: reason}
			case "list":
			case "withdraw":
				if id == "" {
					return usagef("withdraw needs --id REQUEST_ID (see fedgrid request list)")
				}
			default:
				return usagef("unknown request kind %q: budget, permission, list or withdraw", args[0])
			}
			if i := strings.LastIndexByte(dataset, '/'); i >= 0 {
				req.Dataset = dataset[i+1:] // a GATEWAY/DATASET ref works too
			}
			cl, err := cf.open(cmd.Context(), g, true)
			if err != nil {
				return err
			}
			defer cl.Close()
			if args[0] == "list" {
				rs, err := cl.Requests(cmd.Context(), gw, id, state)
				if err != nil {
					return err
				}
				if cf.json {
					return printJSON(g.stdout, wire.RequestList{Requests: rs})
				}
				return printRequests(g, rs)
			}
			var r *wire.RequestInfo
			if args[0] == "withdraw" {
				r, err = cl.Withdraw(cmd.Context(), gw, id, reason)
			} else {
				r, err = cl.Ask(cmd.Context(), gw, req)
			}
			if err != nil {
				return fmt.Errorf("request: %w", err)
			}
			if cf.json {
				return printJSON(g.stdout, r)
			}
			return printRequests(g, []wire.RequestInfo{*r})
		},
	}
	cf.add(c, true)
	c.Flags().StringVar(&gateway, "gateway", "", "the gateway's peer ID")
	c.Flags().StringVar(&reason, "reason", "", "why you need it (required); withdraw: why you take it back (optional)")
	c.Flags().Float64Var(&epsilon, "epsilon", 0, "budget: the epsilon asked for")
	c.Flags().StringVar(&dataset, "dataset", "", "DATASET_ID (or GATEWAY_PEER_ID/DATASET_ID)")
	c.Flags().StringVar(&permission, "permission", "", "permission: train or auto_release")
	c.Flags().StringVar(&state, "state", "", "list: only requests in this state")
	c.Flags().StringVar(&id, "id", "", "list: only this request; withdraw: the request to take back")
	return c
}

func printRequests(g *globals, rs []wire.RequestInfo) error {
	if len(rs) == 0 {
		fmt.Fprintln(g.stdout, "no requests")
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "id\tkind\tstate\tdataset\tjob\tepsilon\tcreated\tdecision")
	for _, r := range rs {
		what := r.Permission
		if r.Epsilon > 0 {
			what = fmt.Sprintf("%g", r.Epsilon)
		}
		dec := ""
		if r.DecidedAt != nil {
			dec = fmt.Sprintf("%s by %s at %s", r.State, r.DecidedBy, r.DecidedAt.Format(time.RFC3339))
			if r.DecisionReason != "" {
				dec += ": " + r.DecisionReason
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Kind, r.State, dash(r.Dataset), dash(r.Job), dash(what), r.CreatedAt.Format(time.RFC3339), dec)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// releaseLine says where a job's result stands, for fedgrid job.
func releaseLine(j *wire.JobInfo) string {
	cost := "no formal privacy guarantee (no DP-SGD)"
	if j.DP {
		cost = fmt.Sprintf("epsilon %g", j.Epsilon)
	}
	switch j.Release {
	case wire.ReleaseReleased:
		return "released"
	case wire.ReleaseApproved:
		return fmt.Sprintf("approved (%s charged): %s", cost, j.ReleaseReason)
	case wire.ReleaseDenied:
		return fmt.Sprintf("DENIED: %s (nothing charged)", j.ReleaseReason)
	case wire.ReleaseWithdrawn:
		return fmt.Sprintf("withdrawn: %s (nothing charged)", j.ReleaseReason)
	case wire.ReleasePending:
		if j.Request == "" {
			return fmt.Sprintf("under review: %s (%s reserved)", j.ReleaseReason, cost)
		}
		return fmt.Sprintf("waiting for a compliance officer's review (request %s; %s reserved)", j.Request, cost)
	}
	if j.Review {
		return fmt.Sprintf("private data: the result will wait for review (%s)", cost)
	}
	return ""
}
