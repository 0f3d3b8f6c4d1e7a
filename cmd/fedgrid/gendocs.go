package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/fedgrid/fedgrid/gateway/api"
	"github.com/fedgrid/fedgrid/plan"
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

// generatedDocs returns the generated files, by slash path under docs/:
// the CLI reference (cli/, from the cobra commands), the HTTP API
// reference (api/, from the OpenAPI document) and the format schemas
// (schemas/, the ones plan check enforces).
func generatedDocs(root *cobra.Command) (map[string][]byte, error) {
	files := map[string][]byte{}
	doc, err := api.OpenAPIDocument()
	if err != nil {
		return nil, err
	}
	files["api/openapi.json"] = append(doc, '\n')
	md, err := apiMarkdown(doc)
	if err != nil {
		return nil, err
	}
	files["api/README.md"] = md
	for _, file := range plan.SchemaFiles {
		b, err := plan.Schemas.ReadFile("schemas/" + file)
		if err != nil {
			return nil, err
		}
		files["schemas/"+file] = b
	}
	if err := cliMarkdown(root, files); err != nil {
		return nil, err
	}
	return files, nil
}

// cliMarkdown writes one page per command (cli/fedgrid_train.md, ...) and
// an index, with cobra's generator, without dates.
func cliMarkdown(root *cobra.Command, files map[string][]byte) error {
	root.DisableAutoGenTag = true
	var walk func(c *cobra.Command) error
	walk = func(c *cobra.Command) error {
		if !c.IsAvailableCommand() && c != root {
			return nil
		}
		c.DisableAutoGenTag = true
		var b bytes.Buffer
		if err := doc.GenMarkdownCustom(c, &b, func(s string) string { return s }); err != nil {
			return err
		}
		name := strings.ReplaceAll(c.CommandPath(), " ", "_") + ".md"
		files["cli/"+name] = b.Bytes()
		for _, sub := range c.Commands() {
			if err := walk(sub); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root); err != nil {
		return err
	}
	var idx bytes.Buffer
	idx.WriteString("# fedgrid command reference\n\nGenerated from the commands' own help (`make docs`); `fedgrid COMMAND --help` prints the same.\n\n")
	var names []string
	for name := range files {
		if strings.HasPrefix(name, "cli/fedgrid") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		cmd := strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(name, "cli/"), ".md"), "_", " ")
		fmt.Fprintf(&idx, "- [%s](%s)\n", cmd, strings.TrimPrefix(name, "cli/"))
	}
	files["cli/README.md"] = idx.Bytes()
	return nil
}
