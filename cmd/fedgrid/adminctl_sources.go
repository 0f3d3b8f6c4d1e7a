package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/adminclient"
)

// apiSource is a dataset source as the API shows it.
type apiSource struct {
	DatasetID       string    `json:"dataset_id"`
	Kind            string    `json:"kind"`
	URL             string    `json:"url"`
	Table           string    `json:"table"`
	Query           string    `json:"query"`
	IntervalSeconds int64     `json:"interval_seconds"`
	LastSnapshotAt  time.Time `json:"last_snapshot_at"`
	LastVersion     int       `json:"last_version"`
	LastError       string    `json:"last_error"`
}

func (s *apiSource) what() string {
	if s.Kind == "file" {
		return "the whole file"
	}
	if s.Table != "" {
		return "table " + s.Table
	}
	return "query " + s.Query
}

func (s *apiSource) schedule() string {
	if s.IntervalSeconds <= 0 {
		return "on demand"
	}
	return "every " + (time.Duration(s.IntervalSeconds) * time.Second).String()
}

func (s *apiSource) fields() [][2]string {
	return [][2]string{{"source", s.Kind + " " + s.URL}, {"reads", s.what()}, {"schedule", s.schedule()},
		{"last snapshot", fmtTime(s.LastSnapshotAt)}, {"last version", strconv.Itoa(s.LastVersion)}, {"last error", s.LastError}}
}

// admSlowLeaf is admLeaf for calls that wait on a data source: they may
// take up to --timeout rather than the usual two minutes.
func admSlowLeaf(g *globals, af *adminFlags, use, short string, args cobra.PositionalArgs, timeout *time.Duration,
	run func(ctx context.Context, a *admin, args []string) error) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := af.connect(g, true)
			if err != nil {
				return err
			}
			a.cmd = cmd
			if a.cl.HTTP != nil { // the context bounds the call, not the client's own timeout
				hc := *a.cl.HTTP
				hc.Timeout = 0
				a.cl.HTTP = &hc
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), *timeout)
			defer cancel()
			return run(ctx, a, args)
		},
	}
	c.Flags().DurationVar(timeout, "timeout", 15*time.Minute, "how long to wait for the snapshot")
	return c
}

func parseEvery(s string) (int64, error) {
	if s == "" || s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, usagef("--every must be a duration such as 1h or 24h (0: on demand only), got %q", s)
	}
	return int64(d / time.Second), nil
}

// admSourceCmds are the dataset source commands of fedgrid admin datasets.
func admSourceCmds(g *globals, af *adminFlags) []*cobra.Command {
	var reg struct {
		table, query, name, tags, description, visibility, every string
		timeout                                                  time.Duration
	}
	register := admSlowLeaf(g, af, "register postgres://USER@HOST:PORT/DATABASE | file:///PATH",
		"register a PostgreSQL table (--table) or read-only query (--query), or a CSV or Parquet file on the gateway's host "+
			"(under a directory its --source-dir allows), as a dataset; the gateway takes its first snapshot now "+
			"(a database password comes from the gateway's --pgpass file, never from the URL)", cobra.ExactArgs(1), &reg.timeout,
		func(ctx context.Context, a *admin, args []string) error {
			kind := "postgres"
			if strings.HasPrefix(args[0], "file:") {
				kind = "file"
				if reg.table != "" || reg.query != "" {
					return usagef("a file source has no --table or --query")
				}
			} else if (reg.table == "") == (reg.query == "") {
				return usagef("give --table or --query (one of them)")
			}
			if reg.name == "" {
				return usagef("give the dataset's --name")
			}
			every, err := parseEvery(reg.every)
			if err != nil {
				return err
			}
			body := map[string]any{"kind": kind, "url": args[0], "table": reg.table, "query": reg.query, "name": reg.name,
				"description": reg.description, "tags": splitTags(reg.tags), "visibility": reg.visibility, "interval_seconds": every}
			var out struct {
				Dataset apiDataset `json:"dataset"`
				Source  apiSource  `json:"source"`
			}
			raw, err := a.call(ctx, http.MethodPost, "/api/v1/sources", nil, body, &out)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				fmt.Fprintf(a.g.stdout, "registered %s as dataset %s (version %d, %d rows)\n", out.Source.what(), out.Dataset.ID, out.Source.LastVersion, out.Dataset.Rows)
				return a.fields(append(out.Dataset.fields(), out.Source.fields()...))
			})
		})
	register.Flags().StringVar(&reg.table, "table", "", "the table or view to read, TABLE or SCHEMA.TABLE")
	register.Flags().StringVar(&reg.query, "query", "", "one SELECT to read instead of a table (run in a read-only transaction)")
	register.Flags().StringVar(&reg.name, "name", "", "the dataset's name (required)")
	register.Flags().StringVar(&reg.tags, "tags", "", "comma-separated tags announced on the network, e.g. medical,public")
	register.Flags().StringVar(&reg.description, "description", "", "what the data is")
	register.Flags().StringVar(&reg.visibility, "visibility", "", "public, or private to have every result reviewed (default private)")
	register.Flags().StringVar(&reg.every, "every", "", "take a snapshot by itself this often, e.g. 24h (at least 1m; default: on demand only)")

	var snapTimeout time.Duration
	snapshot := admSlowLeaf(g, af, "snapshot DATASET",
		"read a registered dataset's source again now: a new version when its data changed, else the same version", cobra.ExactArgs(1), &snapTimeout,
		func(ctx context.Context, a *admin, args []string) error {
			id, err := a.datasetID(ctx, args[0])
			if err != nil {
				return err
			}
			var out struct {
				Dataset struct {
					apiDataset
					Version int    `json:"version"`
					SHA256  string `json:"sha256"`
				} `json:"dataset"`
				Source apiSource `json:"source"`
			}
			raw, err := a.call(ctx, http.MethodPost, "/api/v1/datasets/"+adminclient.PathEscape(id)+"/snapshot", nil, nil, &out)
			if err != nil {
				return err
			}
			return a.done(raw, "dataset %s: version %d, %d rows (sha256 %s)", id, out.Dataset.Version, out.Dataset.Rows, out.Dataset.SHA256)
		})

	list := admLeaf(g, af, "sources", "list the datasets the gateway reads from their source (URL, table or query, schedule, last snapshot)", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			var out struct {
				Sources []apiSource `json:"sources"`
			}
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/sources", nil, nil, &out)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				rows := make([][]string, 0, len(out.Sources))
				for _, s := range out.Sources {
					rows = append(rows, []string{s.DatasetID, s.URL, s.what(), s.schedule(), fmtTime(s.LastSnapshotAt), strconv.Itoa(s.LastVersion), s.LastError})
				}
				return a.table([]string{"DATASET", "URL", "READS", "SCHEDULE", "LAST_SNAPSHOT", "VERSION", "ERROR"}, rows)
			})
		})

	var every string
	schedule := admLeaf(g, af, "schedule DATASET", "show a registered dataset's source, or change how often it is snapshotted (--every 24h; 0: on demand only)", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			id, err := a.datasetID(ctx, args[0])
			if err != nil {
				return err
			}
			path := "/api/v1/datasets/" + adminclient.PathEscape(id) + "/source"
			var s apiSource
			var raw json.RawMessage
			if a.changed("every") {
				secs, err := parseEvery(every)
				if err != nil {
					return err
				}
				raw, err = a.call(ctx, http.MethodPatch, path, nil, map[string]any{"interval_seconds": secs}, &s)
				if err != nil {
					return err
				}
			} else if raw, err = a.call(ctx, http.MethodGet, path, nil, nil, &s); err != nil {
				return err
			}
			return a.show(raw, func() error { return a.fields(s.fields()) })
		})
	schedule.Flags().StringVar(&every, "every", "", "snapshot interval, e.g. 24h (at least 1m); 0: on demand only")
	return []*cobra.Command{register, snapshot, list, schedule}
}
