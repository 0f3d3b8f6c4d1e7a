package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/gateway/api"
)

// genDocsCmd writes the generated part of the reference manual (hidden: it
// is for `make docs`, and a test checks that the committed files match).
func genDocsCmd(g *globals) *cobra.Command {
	var dir string
	var check bool
	c := &cobra.Command{
		Use:    "gen-docs",
		Short:  "write the generated reference manual (docs/) or, with --check, compare it",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			files, err := generatedDocs(cmd.Root())
			if err != nil {
				return err
			}
			names := make([]string, 0, len(files))
			for name := range files {
				names = append(names, name)
			}
			sort.Strings(names)
			var stale []string
			for _, name := range names {
				path := filepath.Join(dir, filepath.FromSlash(name))
				if check {
					old, err := os.ReadFile(path)
					if err != nil || !bytes.Equal(old, files[name]) {
						stale = append(stale, path)
					}
					continue
				}
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(path, files[name], 0o644); err != nil {
					return err
				}
			}
			if len(stale) > 0 {
				return fmt.Errorf("the reference manual is out of date (run make docs): %v", stale)
			}
			if !check {
				fmt.Fprintf(g.stdout, "wrote %d files under %s\n", len(names), dir)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "docs", "the docs directory")
	c.Flags().BoolVar(&check, "check", false, "compare instead of writing")
	return c
}

// generatedDocs returns the generated files, by slash path under docs/.
func generatedDocs(root *cobra.Command) (map[string][]byte, error) {
	files := map[string][]byte{}
	doc, err := api.OpenAPIDocument()
	if err != nil {
		return nil, err
	}
	files["api/openapi.json"] = append(doc, '\n')
	return files, nil
}
