// Command fedgrid is the one binary of fedgrid: the network, gateway and
// node peers, and the data scientist's commands. See CONTRACT.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/fedgrid/fedgrid/internal/strictjson"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fedgrid/fedgrid/internal/version"
)

// usageError marks bad usage: exit status 2.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	fmt.Fprintln(stderr, "fedgrid: "+msg)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

type globals struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	logLevel       string
	logFormat      string
	configFile     string
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: os.Stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "fedgrid",
		Short:         "fedgrid: federated learning on data you cannot see",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnvAndConfig(cmd, g.configFile); err != nil {
				return err
			}
			switch strings.ToLower(g.logLevel) {
			case "debug", "info", "warn", "error":
			default:
				return usagef("--log-level %q: want debug, info, warn or error", g.logLevel)
			}
			if g.logFormat != "text" && g.logFormat != "json" {
				return usagef("--log-format %q: want text or json", g.logFormat)
			}
			return nil
		},
	}
	root.Version = version.Short()
	root.SetVersionTemplate(versionText())
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format on stderr: text (key=value) or json (one object a line)")
	root.PersistentFlags().StringVar(&g.configFile, "config", "", "JSON config file whose keys are flag names")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		networkCmd(g), gatewayCmd(g), nodeCmd(g),
		keygenCmd(g), whoamiCmd(g), searchCmd(g), jobsCmd(g), trainCmd(g), evalCmd(g), jobCmd(g), resultCmd(g), queryCmd(g), requestCmd(g),
		modelCmd(g), planCmd(g), auditCmd(g), versionCmd(g), adminCmd(g), genDocsCmd(g),
	)
	strictGroups(root)
	for _, c := range root.Commands() {
		markUsage(c)
	}
	return root
}

// strictGroups makes an unknown command bad usage (exit 2) like an unknown
// flag: every command that only holds subcommands refuses other arguments,
// and a group run without a subcommand says which it has (the root prints its help).
func strictGroups(c *cobra.Command) {
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q; see %s --help", args[0], cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		}
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			if !cmd.HasParent() {
				return cmd.Help()
			}
			var names []string
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, sub.Name())
				}
			}
			return usagef("%s needs a subcommand: %s", cmd.CommandPath(), strings.Join(names, ", "))
		}
	}
	for _, sub := range c.Commands() {
		strictGroups(sub)
	}
}

// markUsage makes argument-count errors usage errors (exit 2).
func markUsage(c *cobra.Command) {
	if c.Args != nil {
		inner := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := inner(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markUsage(sub)
	}
}

func (g *globals) logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	return slog.New(g.logHandler(lvl))
}

func (g *globals) logHandler(lvl slog.Level) slog.Handler {
	opts := &slog.HandlerOptions{Level: lvl}
	if g.logFormat == "json" {
		return slog.NewJSONHandler(g.stderr, opts)
	}
	return slog.NewTextHandler(g.stderr, opts)
}

// quietLogger is for one-shot commands: their stderr is for the person
// running them, so routine peer events stay out unless asked for.
func (g *globals) quietLogger() *slog.Logger {
	if g.logLevel == "info" {
		return slog.New(g.logHandler(slog.LevelWarn))
	}
	return g.logger()
}

// applyEnvAndConfig fills every flag not given on the command line from
// FEDGRID_<FLAG> (dashes as underscores), then from the config file.
func applyEnvAndConfig(cmd *cobra.Command, configFile string) error {
	if env := os.Getenv("FEDGRID_CONFIG"); configFile == "" && env != "" {
		configFile = env
	}
	var conf map[string]json.RawMessage
	if configFile != "" {
		b, err := readLimited(configFile, 1<<20)
		if err != nil {
			return usagef("config file: %v", err)
		}
		if err := strictjson.Decode(b, &conf); err != nil {
			return usagef("config file %s is not a JSON object: %v", configFile, err)
		}
	}
	known := map[string]bool{}
	var ferr error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		known[f.Name] = true
		if ferr != nil || f.Changed {
			return
		}
		env := "FEDGRID_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			for _, part := range splitList(f, v) {
				if err := f.Value.Set(part); err != nil {
					ferr = usagef("%s=%q: %v", env, v, err)
					return
				}
			}
			return
		}
		raw, ok := conf[f.Name]
		if !ok {
			return
		}
		var vals []string
		var one any
		if err := json.Unmarshal(raw, &one); err != nil {
			ferr = usagef("config key %q: %v", f.Name, err)
			return
		}
		switch v := one.(type) {
		case []any:
			for _, x := range v {
				vals = append(vals, fmt.Sprint(x))
			}
		default:
			vals = []string{fmt.Sprint(v)}
		}
		for _, s := range vals {
			if err := f.Value.Set(s); err != nil {
				ferr = usagef("config key %q: %v", f.Name, err)
				return
			}
		}
	})
	if ferr != nil {
		return ferr
	}
	for k := range conf {
		if !known[k] {
			return usagef("config file %s: %q is not a flag of %q", configFile, k, cmd.CommandPath())
		}
	}
	return nil
}

// splitList lets a list flag's environment variable carry several values, comma-separated.
func splitList(f *pflag.Flag, v string) []string {
	if strings.HasSuffix(f.Value.Type(), "Slice") || strings.HasSuffix(f.Value.Type(), "Array") {
		return strings.Split(v, ",")
	}
	return []string{v}
}

func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
