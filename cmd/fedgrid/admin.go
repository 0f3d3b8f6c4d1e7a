package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
)

func auditCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "audit", Short: "work with a gateway's audit log, offline"}
	var data string
	var cf clientFlags
	var witnesses []string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "check that no audit entry was edited, removed or reordered (gateway stopped); with --witness, also against the checkpoints its network peer witnessed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if data == "" {
				return usagef("--data DIR (the gateway's data directory) is required")
			}
			var cps []store.Witnessed
			if len(witnesses) > 0 {
				sk, err := p2p.ReadIdentity(filepath.Join(data, p2p.IdentityFile))
				if err != nil {
					return fmt.Errorf("the gateway's identity: %w", err)
				}
				gw, err := p2p.PeerIDOf(sk)
				if err != nil {
					return err
				}
				ws, err := p2p.ParseAddrInfos(witnesses)
				if err != nil {
					return usagef("--witness: %v", err)
				}
				// The witness answers the gateway's own key alone.
				cf.bootstrap, cf.key = witnesses, filepath.Join(data, p2p.IdentityFile)
				cl, err := cf.open(cmd.Context(), g, false)
				if err != nil {
					return err
				}
				defer cl.Close()
				for _, w := range ws {
					got, err := cl.Checkpoints(cmd.Context(), w.ID, gw.String())
					if err != nil {
						return fmt.Errorf("witness %s: %w", w.ID, err)
					}
					for _, cp := range got {
						cps = append(cps, store.Witnessed{Seq: cp.Seq, Hash: cp.Hash, Time: cp.Time})
					}
				}
				if len(cps) == 0 {
					return errors.New("the witness keeps no checkpoint of this gateway (is it the gateway's --bootstrap network peer?)")
				}
			}
			n, err := store.VerifyAuditDirWitnessed(filepath.Join(data, "db"), cps)
			if errors.Is(err, store.ErrInUse) {
				return fmt.Errorf("cannot check the audit log of %s while its gateway runs: stop the gateway first, or check the running gateway with fedgrid admin audit verify", data)
			}
			if err != nil {
				return fmt.Errorf("audit log does not verify: %w", err)
			}
			if len(cps) > 0 {
				fmt.Fprintf(g.stdout, "audit log verifies: %d entries, hash chain intact, matches %d witnessed checkpoint(s)\n", n, len(cps))
				return nil
			}
			fmt.Fprintf(g.stdout, "audit log verifies: %d entries, hash chain intact\n", n)
			return nil
		},
	}
	verify.Flags().StringVar(&data, "data", "", "the gateway's data directory")
	verify.Flags().StringArrayVar(&witnesses, "witness", nil, "a network peer (multiaddr with /p2p/) that witnessed the gateway's audit checkpoints; repeatable")
	verify.Flags().StringVar(&cf.network, "network", p2p.DefaultNetwork, "network name (with --witness)")
	verify.Flags().StringVar(&cf.pskFile, "psk-file", "", "private network key file, if the network has one (with --witness)")
	c.AddCommand(verify)
	return c
}
