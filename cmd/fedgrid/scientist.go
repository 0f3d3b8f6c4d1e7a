package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

type clientFlags struct {
	network   string
	bootstrap []string
	key       string
	pskFile   string
	json      bool
}

func (cf *clientFlags) add(c *cobra.Command, keyRequired bool) {
	c.Flags().StringVar(&cf.network, "network", p2p.DefaultNetwork, "network name")
	c.Flags().StringArrayVar(&cf.bootstrap, "bootstrap", nil, "bootstrap peer multiaddr with /p2p/, repeatable (required)")
	help := "your key file (fedgrid keygen)"
	if !keyRequired {
		help += "; optional"
	}
	c.Flags().StringVar(&cf.key, "key", "", help)
	c.Flags().StringVar(&cf.pskFile, "psk-file", "", "private network key file, if the network has one")
	c.Flags().BoolVar(&cf.json, "json", false, "print one JSON document on stdout")
}

func (cf *clientFlags) open(ctx context.Context, g *globals, keyRequired bool, perGateway ...time.Duration) (*client.Client, error) {
	if len(cf.bootstrap) == 0 {
		return nil, usagef("--bootstrap MULTIADDR is required")
	}
	if _, err := p2p.ParseAddrInfos(cf.bootstrap); err != nil {
		return nil, usagef("--bootstrap: %v", err)
	}
	if keyRequired && cf.key == "" {
		return nil, usagef("--key FILE is required (make one with fedgrid keygen)")
	}
	var sk crypto.PrivKey
	if cf.key != "" {
		var err error
		if sk, err = p2p.ReadIdentity(cf.key); err != nil {
			return nil, err
		}
	}
	pf := peerFlags{pskFile: cf.pskFile}
	psk, err := pf.psk()
	if err != nil {
		return nil, usageError{err}
	}
	if err := p2p.ValidateNetworkName(cf.network); err != nil {
		return nil, usageError{err}
	}
	cfg := client.Config{Network: cf.network, Bootstrap: cf.bootstrap, Identity: sk, PSK: psk, Logger: g.quietLogger().With("sub", "client")}
	if len(perGateway) > 0 {
		cfg.PerGateway = perGateway[0]
	}
	return client.New(ctx, cfg)
}

// openRef splits a GATEWAY_PEER_ID/ID reference (bad usage if malformed)
// and opens a client with the data scientist's key.
func (cf *clientFlags) openRef(ctx context.Context, g *globals, ref string) (*client.Client, peer.ID, string, error) {
	gw, id, err := client.SplitRef(ref)
	if err != nil {
		return nil, "", "", usageError{err}
	}
	cl, err := cf.open(ctx, g, true)
	if err != nil {
		return nil, "", "", err
	}
	return cl, gw, id, nil
}

func keygenCmd(g *globals) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "keygen",
		Short: "make a data scientist's key pair and print its peer ID",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("--out FILE is required")
			}
			sk, err := p2p.GenerateIdentity()
			if err != nil {
				return err
			}
			if err := p2p.WriteIdentity(out, sk); err != nil {
				return err
			}
			id, err := p2p.PeerIDOf(sk)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, id.String())
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "where to write the key (mode 0600)")
	return c
}

func searchCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var limit int
	var q client.Query
	var showPreview bool
	var perGateway time.Duration
	c := &cobra.Command{
		Use:   "search [TAG]...",
		Short: "find datasets across the network (all tags must match, or any with --any)",
		Long: `Find datasets across the network. Every criterion given must hold: the tags
(all of them, or at least one with --any), every word of --text in the name or
the description, and every --column among the dataset's columns. Gateways that
cannot be reached are left out. The preview rows are synthetic: drawn from
per-column marginals (noised with differential privacy for private data),
never real rows. A text column with more distinct values than a summary
counts (identifiers, free text) shows "*" in every row and is named under the
preview.`,
		RunE: func(cmd *cobra.Command, tags []string) error {
			if limit < 0 {
				return usagef("--limit must be 0 or more")
			}
			if perGateway < 0 {
				return usagef("--gateway-timeout must be positive")
			}
			if q.Any && len(tags) == 0 {
				return usagef("--any needs at least one TAG")
			}
			q.Tags = tags
			cl, err := cf.open(cmd.Context(), g, false, perGateway)
			if err != nil {
				return err
			}
			defer cl.Close()
			var progress func(client.SearchProgress)
			if !cf.json {
				var last client.SearchProgress
				tty := g.stderrIsTerminal()
				progress = func(p client.SearchProgress) {
					last = p
					if tty {
						fmt.Fprintf(g.stderr, "\rsearching: %d gateways found, %d answered, %d unreachable", p.Found, p.Answered, p.Failed)
					}
				}
				defer func() {
					if !tty {
						fmt.Fprintf(g.stderr, "searched: %d gateways found, %d answered, %d unreachable\n", last.Found, last.Answered, last.Failed)
					}
				}()
				if tty {
					fmt.Fprint(g.stderr, "searching...")
				}
			}
			res, err := cl.SearchQuery(cmd.Context(), q, progress)
			if progress != nil && g.stderrIsTerminal() {
				fmt.Fprintln(g.stderr)
			}
			if err != nil {
				return fmt.Errorf("search: %w", err)
			}
			total := len(res)
			if limit > 0 && len(res) > limit {
				res = res[:limit]
			}
			if cf.json {
				if res == nil {
					res = []client.Result{}
				}
				return printJSON(g.stdout, map[string]any{"results": res, "total": total})
			}
			if len(res) == 0 {
				fmt.Fprintln(g.stdout, "no datasets found")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DATASET\tGATEWAY\tROWS\tCOLUMNS\tVISIBILITY\tTAGS\tREF")
			for _, r := range res {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.Dataset.Name, r.GatewayName, r.Dataset.Rows, len(r.Dataset.Columns), r.Dataset.Visibility, strings.Join(r.Dataset.Tags, ","), r.Ref)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if total > len(res) {
				fmt.Fprintf(g.stderr, "%d more not shown (--limit %d)\n", total-len(res), limit)
			}
			if showPreview {
				for _, r := range res {
					printPreview(g, r)
				}
			}
			return nil
		},
	}
	cf.add(c, false)
	c.Flags().IntVar(&limit, "limit", 0, "print at most this many results (0 = all)")
	c.Flags().BoolVar(&q.Any, "any", false, "match datasets carrying any of the tags instead of all")
	c.Flags().StringVar(&q.Text, "text", "", "words that must all appear in the dataset's name or description")
	c.Flags().StringArrayVar(&q.Columns, "column", nil, "a column the dataset must have, repeatable")
	c.Flags().BoolVar(&showPreview, "preview", false, "after the table, show each dataset's schema and synthetic preview rows")
	c.Flags().DurationVar(&perGateway, "gateway-timeout", 5*time.Second, "how long to wait for each gateway")
	return c
}

func printPreview(g *globals, r client.Result) {
	fmt.Fprintf(g.stdout, "\n%s (%s)\n", r.Dataset.Name, r.Ref)
	if r.Dataset.Description != "" {
		fmt.Fprintf(g.stdout, "  %s\n", r.Dataset.Description)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	p := r.Dataset.Preview
	for i, col := range r.Dataset.Columns {
		fmt.Fprintf(tw, "  %s\t%s", col.Name, col.Type)
		if p != nil && len(p.Columns) == len(r.Dataset.Columns) {
			for _, row := range p.Rows {
				if i < len(row) {
					fmt.Fprintf(tw, "\t%s", row[i])
				}
			}
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
	switch {
	case p == nil:
		fmt.Fprintln(g.stdout, "  (no preview)")
	case p.DP:
		fmt.Fprintf(g.stdout, "  preview: %d synthetic rows from marginals with differential privacy (epsilon %g, delta %g); no real rows\n", len(p.Rows), p.Epsilon, p.Delta)
	default:
		fmt.Fprintf(g.stdout, "  preview: %d synthetic rows from exact marginals; no real rows\n", len(p.Rows))
	}
	if p != nil && len(p.HighCardinality) > 0 {
		fmt.Fprintf(g.stdout, "  too many distinct values to show (cells *): %s\n", strings.Join(p.HighCardinality, ", "))
	}
}

func trainCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var ff fedFlags
	var refs []string
	var planFile string
	var wait, waitReview bool
	c := &cobra.Command{
		Use:   "train",
		Short: "submit a plan to train on a dataset you cannot see; with --dataset given more than once, train one model across their gateways",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ff.resume != "" && (len(refs) > 0 || planFile != "") {
				return usagef("--resume takes no --dataset or --plan: the federation has them")
			}
			if ff.resume != "" || len(refs) > 1 {
				var planJSON []byte
				if planFile != "" {
					var err error
					if planJSON, err = readLimited(planFile, wire.MaxPlan); err != nil {
						return fmt.Errorf("read plan: %w", err)
					}
				} else if ff.resume == "" {
					return usagef("--plan PLAN.json is required")
				}
				return runFederation(cmd.Context(), g, &cf, &ff, refs, planJSON)
			}
			ref := ""
			if len(refs) == 1 {
				ref = refs[0]
			}
			if ref == "" || planFile == "" {
				return usagef("--dataset GATEWAY_PEER_ID/DATASET_ID and --plan PLAN.json are required")
			}
			gw, ds, err := client.SplitRef(ref)
			if err != nil {
				return usageError{err}
			}
			planJSON, err := readPlanFile(planFile)
			if err != nil {
				return fmt.Errorf("read plan: %w", err)
			}
			cl, err := cf.open(cmd.Context(), g, true)
			if err != nil {
				return err
			}
			defer cl.Close()
			j, err := cl.Submit(cmd.Context(), gw, ds, planJSON)
			if err != nil {
				return fmt.Errorf("submit: %w", err)
			}
			if !wait {
				return printJob(g, cf.json, j)
			}
			if !cf.json {
				fmt.Fprintf(g.stderr, "job %s queued\n", j.Ref)
			}
			return waitJob(cmd.Context(), g, cf.json, cl, gw, j, waitReview)
		},
	}
	cf.add(c, true)
	c.Flags().StringArrayVar(&refs, "dataset", nil, "GATEWAY_PEER_ID/DATASET_ID (from fedgrid search); more than once: federated training across their gateways")
	c.Flags().StringVar(&planFile, "plan", "", "plan file (fedgrid.plan/v1 JSON)")
	c.Flags().BoolVar(&wait, "wait", false, "wait until the job ends, showing progress (on review-gated data: until it is under review)")
	c.Flags().BoolVar(&waitReview, "wait-review", false, "with --wait, on review-gated data: also wait for the compliance officer's decision")
	ff.add(c.Flags())
	return c
}

// waitJob follows a job until it ends, or, on review-gated data, until it
// is under review (and, with decision, until the officer decides). It
// prints the job and fails (exit 1) unless it succeeded or waits for review.
func waitJob(ctx context.Context, g *globals, asJSON bool, cl *client.Client, gw peer.ID, j *wire.JobInfo, decision bool) error {
	wait := cl.Wait
	if decision {
		wait = cl.WaitDecision
	}
	j, err := wait(ctx, gw, j.ID, progressPrinter(g, asJSON))
	if err != nil {
		return err
	}
	if err := printJob(g, asJSON, j); err != nil {
		return err
	}
	switch j.State {
	case wire.StateSucceeded:
		return nil
	case wire.StateUnderReview:
		fmt.Fprintf(g.stderr, "job %s is under review: its outcome (a model or an error) is shown once a compliance officer releases it; "+
			"follow it with fedgrid job %s, or wait for the decision with fedgrid job %s --watch --wait-review\n", j.Ref, j.Ref, j.Ref)
		return nil
	case wire.StateDenied:
		return fmt.Errorf("job %s: the release of its outcome was denied: %s", j.Ref, j.ReleaseReason)
	}
	if j.Error != "" {
		return fmt.Errorf("job %s %s: %s", j.Ref, j.State, j.Error)
	}
	return fmt.Errorf("job %s %s: %s", j.Ref, j.State, j.ReleaseReason)
}

// progressPrinter shows a job's progress on stderr: a bar redrawn in place
// on a terminal; elsewhere (a log file, a pipe) one line per state change
// and per tenth of the epochs, never a carriage return.
func progressPrinter(g *globals, quiet bool) func(*wire.JobInfo) {
	if quiet {
		return nil
	}
	tty := g.stderrIsTerminal()
	lastState, lastTenth := "", -1
	return func(j *wire.JobInfo) {
		if j.State == wire.StateRunning && j.Progress.Epochs > 0 {
			if tty {
				const width = 30
				done := width * j.Progress.Epoch / j.Progress.Epochs
				fmt.Fprintf(g.stderr, "\r[%s%s] epoch %d/%d %s (attempt %d)", strings.Repeat("#", done), strings.Repeat(".", width-done), j.Progress.Epoch, j.Progress.Epochs, lossText(j.Progress), j.Attempt)
				lastState = j.State
				return
			}
			tenth := 10 * j.Progress.Epoch / j.Progress.Epochs
			if tenth != lastTenth || lastState != j.State {
				fmt.Fprintf(g.stderr, "job %s: epoch %d/%d %s (attempt %d)\n", j.ID, j.Progress.Epoch, j.Progress.Epochs, lossText(j.Progress), j.Attempt)
				lastTenth = tenth
			}
			lastState = j.State
			return
		}
		if j.State == lastState && !tty {
			return
		}
		if tty && lastState == wire.StateRunning {
			fmt.Fprint(g.stderr, "\r")
		}
		fmt.Fprintf(g.stderr, "job %s: %s\n", j.ID, j.State)
		lastState = j.State
	}
}

// lossText is a running job's loss, or why it is not shown.
func lossText(p wire.Progress) string {
	if p.LossWithheld {
		return "loss withheld until the result is released"
	}
	return "loss " + fmtNumber(p.Loss)
}

func printJob(g *globals, asJSON bool, j *wire.JobInfo) error {
	if asJSON {
		return printJSON(g.stdout, j)
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "job\t%s\nstate\t%s\ndataset\t%s\nattempt\t%d\n", j.Ref, j.State, j.Dataset, j.Attempt)
	if j.DatasetVersion > 0 {
		fmt.Fprintf(tw, "dataset version\t%d (sha256 %s)\n", j.DatasetVersion, j.DatasetSHA256)
	}
	if j.Progress.Epochs > 0 {
		fmt.Fprintf(tw, "progress\tepoch %d/%d, %s\n", j.Progress.Epoch, j.Progress.Epochs, lossText(j.Progress))
	}
	if j.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", j.Error)
	}
	if rel := releaseLine(j); rel != "" {
		fmt.Fprintf(tw, "release\t%s\n", rel)
	}
	if len(j.Metrics) > 0 {
		fmt.Fprintf(tw, "metrics\t%s\n", summarizeMetrics(j.Metrics))
	}
	fmt.Fprintf(tw, "created\t%s\n", j.CreatedAt.Format(time.RFC3339))
	return tw.Flush()
}

func jobCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var watch, waitReview bool
	var fedStates string
	c := &cobra.Command{
		Use:   "job JOB_REF",
		Short: "show a job's state (JOB_REF is GATEWAY_PEER_ID/JOB_ID, or fed:ID for a federation)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.HasPrefix(args[0], fedRefPrefix) {
				path, err := fedStatePath(fedStates, args[0])
				if err != nil {
					return err
				}
				s, err := client.LoadFederation(path)
				if err != nil {
					return fmt.Errorf("federation %s: %w", args[0], err)
				}
				return printFederation(g, cf.json, s)
			}
			cl, gw, id, err := cf.openRef(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			defer cl.Close()
			var j *wire.JobInfo
			switch {
			case watch && waitReview:
				j, err = cl.WaitDecision(cmd.Context(), gw, id, progressPrinter(g, cf.json))
			case watch:
				j, err = cl.Wait(cmd.Context(), gw, id, progressPrinter(g, cf.json))
			default:
				j, err = cl.Job(cmd.Context(), gw, id)
			}
			if err != nil {
				return err
			}
			return printJob(g, cf.json, j)
		},
	}
	cf.add(c, true)
	c.Flags().BoolVar(&watch, "watch", false, "follow the job until it ends (or is under review), with a progress bar")
	c.Flags().BoolVar(&waitReview, "wait-review", false, "with --watch: for a job under review, follow it until the compliance officer decides")
	c.Flags().StringVar(&fedStates, "federations", "", "where federation states are kept (for fed:ID)")
	c.AddCommand(jobCancelCmd(g))
	return c
}

func jobCancelCmd(g *globals) *cobra.Command {
	var cf clientFlags
	c := &cobra.Command{
		Use:   "cancel JOB_REF",
		Short: "cancel one of your jobs; a node running it stops within seconds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, gw, id, err := cf.openRef(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			defer cl.Close()
			j, err := cl.Cancel(cmd.Context(), gw, id)
			if err != nil {
				return err
			}
			return printJob(g, cf.json, j)
		},
	}
	cf.add(c, true)
	return c
}

func resultCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var out, fedStates string
	c := &cobra.Command{
		Use:   "result JOB_REF",
		Short: "fetch a job's released model (JOB_REF may be fed:ID: a federation's model, as a gateway released it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("--out MODEL.json is required")
			}
			if strings.HasPrefix(args[0], fedRefPrefix) {
				return fedResult(cmd.Context(), g, &cf, fedStates, args[0], out)
			}
			cl, gw, id, err := cf.openRef(cmd.Context(), g, args[0])
			if err != nil {
				return err
			}
			defer cl.Close()
			b, err := cl.Model(cmd.Context(), gw, id)
			if err != nil {
				// The refusal names the review state and a denial's reason.
				return fmt.Errorf("result of %s: %w", args[0], err)
			}
			if err := writeFileAtomic(out, b); err != nil {
				return err
			}
			if !cf.json {
				fmt.Fprintf(g.stderr, "model written to %s\n", out)
			} else {
				return printJSON(g.stdout, map[string]any{"job": args[0], "out": out, "bytes": len(b)})
			}
			return nil
		},
	}
	cf.add(c, true)
	c.Flags().StringVar(&out, "out", "", "where to write the model")
	c.Flags().StringVar(&fedStates, "federations", "", "where federation states are kept (for fed:ID)")
	return c
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
