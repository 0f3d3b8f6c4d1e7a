package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// Federated training across gateways: `fedgrid train` with --dataset given
// more than once. The CLI is the federation's coordinator: it runs the
// rounds in the foreground and saves its state after each round under
// --federations, so that `fedgrid train --resume fed:ID` continues after
// it was stopped, and `fedgrid job fed:ID` / `fedgrid result fed:ID` read it.

const fedRefPrefix = "fed:"

// fedFlags are the federation settings of `fedgrid train`.
type fedFlags struct {
	rounds      int
	minGateways int
	strategy    string
	mu          float64
	momentum    float64
	serverLR    float64
	clip        float64
	maxRows     int
	resume      string
	dir         string
	secure      bool
}

func (ff *fedFlags) add(c interface {
	IntVar(*int, string, int, string)
	Float64Var(*float64, string, float64, string)
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
}) {
	c.IntVar(&ff.rounds, "rounds", 0, "federated rounds (default: the plan's train.rounds)")
	c.IntVar(&ff.minGateways, "min-gateways", 0, "the fewest gateways a round needs (default: all; at least a majority)")
	c.StringVar(&ff.strategy, "strategy", wire.StrategyFedAvg, "fedavg, fedprox or fedavgm")
	c.Float64Var(&ff.mu, "mu", 0, "fedprox: weight of the proximal term mu/2 ||w - w_global||^2")
	c.Float64Var(&ff.momentum, "momentum", 0, "fedavgm: server momentum (default 0.9)")
	c.Float64Var(&ff.serverLR, "server-lr", 0, "fedavgm: server learning rate (default 1)")
	c.Float64Var(&ff.clip, "clip", 10, "largest change of one parameter in one round (fixes the secure-aggregation scale)")
	c.IntVar(&ff.maxRows, "max-rows", 0, "bound on one gateway's rows (default: the largest dataset's rows in the catalogs)")
	c.StringVar(&ff.resume, "resume", "", "continue the federation fed:ID from its last completed round")
	c.BoolVar(&ff.secure, "secure-aggregation", true, "mask every gateway's update so that only their sum is read; false sends plain updates (only to gateways whose owners allow it; their officers see it)")
	c.StringVar(&ff.dir, "federations", "", "where federation states are kept (default: the user config directory's fedgrid/federations)")
}

func fedDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no place for federation states: %v (give --federations DIR)", err)
	}
	return filepath.Join(base, "fedgrid", "federations"), nil
}

func fedStatePath(dir, ref string) (string, error) {
	id, ok := strings.CutPrefix(ref, fedRefPrefix)
	if !ok || id == "" || strings.ContainsAny(id, `/\.`) {
		return "", usagef("%q is not a federation reference (fed:ID)", ref)
	}
	d, err := fedDir(dir)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, id+".json"), nil
}

// runFederation starts (refs, planJSON) or resumes (ff.resume) a federation.
func runFederation(ctx context.Context, g *globals, cf *clientFlags, ff *fedFlags, refs []string, planJSON []byte) error {
	var s *client.FedState
	var path string
	var err error
	if ff.resume != "" {
		if len(refs) > 0 || planJSON != nil {
			return usagef("--resume takes no --dataset or --plan: the federation has them")
		}
		if path, err = fedStatePath(ff.dir, ff.resume); err != nil {
			return err
		}
		if s, err = client.LoadFederation(path); err != nil {
			return fmt.Errorf("resume %s: %w", ff.resume, err)
		}
		if s.State != client.FedRunning {
			return fmt.Errorf("federation %s%s is %s: nothing to resume", fedRefPrefix, s.Options.ID, s.State)
		}
	}
	cl, err := cf.open(ctx, g, true)
	if err != nil {
		return err
	}
	defer cl.Close()
	if s == nil {
		o, err := fedOptions(ctx, cl, ff, refs, planJSON)
		if err != nil {
			return err
		}
		if s, err = client.NewFederation(o); err != nil {
			return usageError{err}
		}
		if path, err = fedStatePath(ff.dir, fedRefPrefix+s.Options.ID); err != nil {
			return err
		}
		if err := s.Save(path); err != nil {
			return fmt.Errorf("save federation state: %w", err)
		}
	}
	ref := fedRefPrefix + s.Options.ID
	if !cf.json {
		fmt.Fprintf(g.stderr, "federation %s: %d gateways, %d rounds, strategy %s%s (state in %s)\n", ref, len(s.Options.Participants), s.Options.Rounds, s.Options.Strategy.Name, plainNote(s), path)
	}
	run := client.FedRunOptions{StatePath: path}
	if !cf.json {
		run.Progress = func(r client.FedRound) {
			line := fmt.Sprintf("round %d/%d: %d gateways, %.0f rows, loss %.4f, %.1fs", r.Round, s.Options.Rounds, len(r.Participants), r.Rows, r.Loss, r.Seconds)
			if r.Round == wire.FitRound {
				line = fmt.Sprintf("round 0: preprocessing statistics fitted across %d gateways, %.0f rows, %.1fs", len(r.Participants), r.Rows, r.Seconds)
			}
			if r.Epsilon > 0 {
				line += fmt.Sprintf(", epsilon spent %.4g", r.Epsilon)
			}
			if len(r.Dropped) > 0 {
				line += fmt.Sprintf(", dropped %s", strings.Join(short(r.Dropped), " "))
			}
			fmt.Fprintln(g.stderr, line)
		}
		run.Retry = func(round, attempt int, cause error) {
			fmt.Fprintf(g.stderr, "round %d failed, trying again with fresh keys (attempt %d): %v\n", round, attempt+1, cause)
		}
	}
	s, err = cl.Federate(ctx, s, run)
	if errors.Is(err, context.Canceled) || errors.Is(err, client.ErrRoundFailed) {
		fmt.Fprintf(g.stderr, "stopped after round %d; continue with: fedgrid train --resume %s\n", s.Round, ref)
		if errors.Is(err, context.Canceled) {
			return err
		}
	}
	if perr := printFederation(g, cf.json, s); perr != nil {
		return perr
	}
	if err != nil {
		return fmt.Errorf("federation %s: %w", ref, err)
	}
	return nil
}

// short abbreviates peer IDs for progress lines.
func short(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id
		if len(id) > 12 {
			out[i] = "…" + id[len(id)-8:]
		}
	}
	return out
}

// fedOptions builds a federation from the dataset references, checking in
// the catalogs that every dataset has the same schema.
func fedOptions(ctx context.Context, cl *client.Client, ff *fedFlags, refs []string, planJSON []byte) (client.FedOptions, error) {
	pl, err := plan.Parse(planJSON)
	if err != nil {
		return client.FedOptions{}, usagef("plan: %v", err)
	}
	o := client.FedOptions{Plan: planJSON, Rounds: ff.rounds, MinGateways: ff.minGateways, Clip: ff.clip, MaxRows: ff.maxRows,
		Strategy: wire.FedStrategy{Name: ff.strategy, Mu: ff.mu, Momentum: ff.momentum, ServerLR: ff.serverLR}, PlainUpdates: !ff.secure}
	if o.Rounds == 0 {
		o.Rounds = pl.Train.Rounds
	}
	if o.Rounds == 0 {
		return o, usagef("--rounds is required (the plan has no train.rounds)")
	}
	var first *wire.CatalogEntry
	maxRows := 0
	for _, ref := range refs {
		gw, id, err := client.SplitRef(ref)
		if err != nil {
			return o, usageError{err}
		}
		entry, gwName, err := cl.Dataset(ctx, gw, id)
		if err != nil {
			return o, fmt.Errorf("dataset %s: %w", ref, err)
		}
		if first == nil {
			first = entry
		} else if err := sameSchema(first, entry); err != nil {
			return o, fmt.Errorf("dataset %s does not have the schema of %s: %v", ref, refs[0], err)
		}
		maxRows = max(maxRows, entry.Rows)
		o.Participants = append(o.Participants, wire.FedParticipant{Gateway: gw.String(), Name: gwName, Dataset: id})
	}
	if o.MaxRows == 0 {
		o.MaxRows = max(1, maxRows)
	}
	return o, nil
}

func sameSchema(a, b *wire.CatalogEntry) error {
	if len(a.Columns) != len(b.Columns) {
		return fmt.Errorf("%d columns, not %d", len(b.Columns), len(a.Columns))
	}
	for _, c := range a.Columns {
		i := slices.IndexFunc(b.Columns, func(d dataset.Column) bool { return d.Name == c.Name })
		if i < 0 {
			return fmt.Errorf("no column %q", c.Name)
		}
		if b.Columns[i].Type != c.Type {
			return fmt.Errorf("column %q is %s, not %s", c.Name, b.Columns[i].Type, c.Type)
		}
	}
	return nil
}

// plainNote marks a federation without secure aggregation.
func plainNote(s *client.FedState) string {
	if s.Options.PlainUpdates {
		return ", secure aggregation OFF (plain updates)"
	}
	return ""
}

// printFederation shows a federation's state (without its weights).
func printFederation(g *globals, asJSON bool, s *client.FedState) error {
	ref := fedRefPrefix + s.Options.ID
	if asJSON {
		return printJSON(g.stdout, map[string]any{"federation": ref, "state": s.State, "error": s.Error, "rounds": s.Options.Rounds,
			"completed_rounds": s.Round, "strategy": s.Options.Strategy, "participants": s.Options.Participants, "active": s.Active,
			"refused": s.Refused, "jobs": s.Jobs, "epsilon": s.Epsilon, "history": s.History, "fit": s.Fit, "secure_aggregation": !s.Options.PlainUpdates})
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "federation\t%s\nstate\t%s\nrounds\t%d/%d\nstrategy\t%s%s\n", ref, s.State, s.Round, s.Options.Rounds, s.Options.Strategy.Name, plainNote(s))
	for _, p := range s.Options.Participants {
		status := "in"
		if why, ok := s.Refused[p.Gateway]; ok {
			status = "refused: " + why
		} else if !slices.Contains(s.Active, p.Gateway) && s.Round > 0 {
			status = "dropped"
		}
		job := ""
		if id, ok := s.Jobs[p.Gateway]; ok {
			job = p.Gateway + "/" + id
		}
		fmt.Fprintf(tw, "gateway\t%s (%s)\t%s\t%s\n", p.Name, p.Dataset, status, job)
	}
	if s.Fit != nil {
		fmt.Fprintf(tw, "round 0\tpreprocessing statistics fitted across %d gateways, %.0f rows\n", len(s.Fit.Participants), s.Fit.Rows)
	}
	if n := len(s.History); n > 0 {
		last := s.History[n-1]
		fmt.Fprintf(tw, "loss\t%.4f (round %d)\n", last.Loss, last.Round)
	}
	var eps float64
	for _, e := range s.Epsilon {
		eps += e
	}
	if eps > 0 {
		fmt.Fprintf(tw, "epsilon\t%.4g over all gateways' datasets\n", eps)
	}
	if s.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", s.Error)
	}
	return tw.Flush()
}

// fedResult writes the federation's model: the copy a gateway released,
// signed by it, or — if none can be fetched — the coordinator's own.
func fedResult(ctx context.Context, g *globals, cf *clientFlags, dir, ref, out string) error {
	path, err := fedStatePath(dir, ref)
	if err != nil {
		return err
	}
	s, err := client.LoadFederation(path)
	if err != nil {
		return err
	}
	if s.State != client.FedSucceeded {
		return fmt.Errorf("federation %s is %s: no model yet", ref, s.State)
	}
	cl, err := cf.open(ctx, g, true)
	if err != nil {
		return err
	}
	defer cl.Close()
	var why []string
	for _, gw := range slices.Sorted(maps.Keys(s.Final)) {
		id, err := peer.Decode(gw)
		if err != nil {
			continue
		}
		b, err := cl.Model(ctx, id, s.Final[gw].ID)
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		if err := writeFileAtomic(out, b); err != nil {
			return err
		}
		if !cf.json {
			fmt.Fprintf(g.stderr, "model (signed by gateway %s) written to %s\n", gw, out)
			return nil
		}
		return printJSON(g.stdout, map[string]any{"federation": ref, "out": out, "gateway": gw, "bytes": len(b)})
	}
	return fmt.Errorf("no gateway released the model of %s: %s", ref, strings.Join(why, "; "))
}
