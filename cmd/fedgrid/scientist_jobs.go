package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

func whoamiCmd(g *globals) *cobra.Command {
	var key string
	c := &cobra.Command{
		Use:   "whoami",
		Short: "print the peer ID of your key (what a gateway's admin registers)",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if key == "" {
				return usagef("--key FILE is required (make one with fedgrid keygen)")
			}
			sk, err := p2p.ReadIdentity(key)
			if err != nil {
				return err
			}
			id, err := p2p.PeerIDOf(sk)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.stdout, id.String())
			return err
		},
	}
	c.Flags().StringVar(&key, "key", "", "your key file (fedgrid keygen)")
	return c
}

func jobsCmd(g *globals) *cobra.Command {
	var cf clientFlags
	var state string
	var gateways []string
	c := &cobra.Command{
		Use:   "jobs",
		Short: "list your jobs on every gateway where your peer ID is registered, newest first",
		Long: `List your jobs, newest first, on every gateway of the network where your peer
ID is registered (gateways that do not know you are left out), or only on the
gateways given with --gateway. A gateway that does not answer is listed with
its error, and the command then exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state != "" && !slices.Contains(wire.JobStates(), state) {
				return usagef("--state must be one of %s", strings.Join(wire.JobStates(), ", "))
			}
			var ids []peer.ID
			for _, s := range gateways {
				id, err := peer.Decode(s)
				if err != nil {
					return usagef("--gateway %q is not a peer ID: %v", s, err)
				}
				ids = append(ids, id)
			}
			cl, err := cf.open(cmd.Context(), g, true)
			if err != nil {
				return err
			}
			defer cl.Close()
			res, err := cl.MyJobs(cmd.Context(), ids, state)
			if err != nil {
				return err
			}
			var failed []string
			for _, r := range res {
				if r.Error != "" {
					failed = append(failed, r.Gateway)
				}
			}
			if cf.json {
				if err := printJSON(g.stdout, map[string]any{"gateways": res}); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				n := 0
				fmt.Fprintln(tw, "REF\tGATEWAY\tDATASET\tSTATE\tEPOCH\tRELEASE\tCREATED")
				for _, r := range res {
					for _, j := range r.Jobs {
						epoch := "-"
						if j.Progress.Epochs > 0 {
							epoch = fmt.Sprintf("%d/%d", j.Progress.Epoch, j.Progress.Epochs)
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.Ref, dash(r.GatewayName), j.Dataset, j.State, epoch, dash(j.Release), j.CreatedAt.UTC().Format("2006-01-02 15:04:05Z"))
						n++
					}
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(g.stderr, "%d jobs on %d gateways\n", n, len(res)-len(failed))
				for _, r := range res {
					if r.Error != "" {
						fmt.Fprintf(g.stderr, "gateway %s: %s\n", r.Gateway, r.Error)
					}
				}
			}
			if len(failed) > 0 {
				return fmt.Errorf("could not list jobs on %d gateways: %s", len(failed), strings.Join(failed, ", "))
			}
			return nil
		},
	}
	cf.add(c, true)
	c.Flags().StringVar(&state, "state", "", "only jobs in this state: "+strings.Join(wire.JobStates(), ", "))
	c.Flags().StringArrayVar(&gateways, "gateway", nil, "only this gateway (peer ID); repeatable")
	return c
}
