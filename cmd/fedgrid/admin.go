package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/gateway/store"
)

func auditCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "audit", Short: "work with a gateway's audit log, offline"}
	var data string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "check that no audit entry was edited, removed or reordered (gateway stopped)",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if data == "" {
				return usagef("--data DIR (the gateway's data directory) is required")
			}
			n, err := store.VerifyAuditDir(filepath.Join(data, "db"))
			if err != nil {
				return fmt.Errorf("audit log does not verify: %w", err)
			}
			fmt.Fprintf(g.stdout, "audit log verifies: %d entries, hash chain intact\n", n)
			return nil
		},
	}
	verify.Flags().StringVar(&data, "data", "", "the gateway's data directory")
	c.AddCommand(verify)
	return c
}
