package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/internal/version"
)

// versionText is what `fedgrid version` and `fedgrid --version` print.
func versionText() string {
	in := version.Get()
	commit := in.Commit
	if in.Modified {
		commit += " (modified)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "fedgrid %s\n", in.Version)
	fmt.Fprintf(&b, "commit:    %s\n", commit)
	if in.BuildTime != "" {
		fmt.Fprintf(&b, "committed: %s\n", in.BuildTime)
	}
	fmt.Fprintf(&b, "go:        %s %s\n", in.Go, in.Platform)
	fmt.Fprintf(&b, "protocols: streams %s, DHT %s, plan %s, model %s\n", in.Protocols.Streams, in.Protocols.DHT, in.Protocols.Plan, in.Protocols.Model)
	return b.String()
}

func versionCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "print the version, commit, Go version and protocol versions",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				enc.SetEscapeHTML(false)
				return enc.Encode(version.Get())
			}
			_, err := fmt.Fprint(g.stdout, versionText())
			return err
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
