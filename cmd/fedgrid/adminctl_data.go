package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/adminclient"
)

// apiDataset is a dataset as the API shows it.
type apiDataset struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
	Visibility  string   `json:"visibility"`
	Columns     []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"columns"`
	Rows      int       `json:"rows"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
	Indexing  *struct {
		State string `json:"state"`
		Error string `json:"error"`
	} `json:"indexing"`
}

func (d *apiDataset) indexing() string {
	if d.Indexing == nil {
		return ""
	}
	if d.Indexing.Error != "" {
		return d.Indexing.State + ": " + d.Indexing.Error
	}
	return d.Indexing.State
}

func (d *apiDataset) fields() [][2]string {
	cols := make([]string, len(d.Columns))
	for i, c := range d.Columns {
		cols[i] = c.Name + " (" + c.Type + ")"
	}
	return [][2]string{{"id", d.ID}, {"name", d.Name}, {"description", d.Description}, {"tags", strings.Join(d.Tags, ", ")},
		{"visibility", d.Visibility}, {"rows", strconv.Itoa(d.Rows)}, {"size", fmtBytes(d.Size)},
		{"columns", strings.Join(cols, ", ")}, {"indexing", d.indexing()}, {"created", fmtTime(d.CreatedAt)}}
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

// datasetID takes a dataset's ID or name.
func (a *admin) datasetID(ctx context.Context, ref string) (string, error) {
	var list struct {
		Datasets []apiDataset `json:"datasets"`
	}
	if _, err := a.call(ctx, http.MethodGet, "/api/v1/datasets", nil, nil, &list); err != nil {
		return "", err
	}
	var byName []string
	for _, d := range list.Datasets {
		if d.ID == ref {
			return d.ID, nil
		}
		if d.Name == ref {
			byName = append(byName, d.ID)
		}
	}
	switch len(byName) {
	case 0:
		return "", fmt.Errorf("no dataset with the ID or name %q on %s", ref, a.cl.BaseURL)
	case 1:
		return byName[0], nil
	}
	return "", fmt.Errorf("%d datasets are named %q; give the ID (%s)", len(byName), ref, strings.Join(byName, ", "))
}

func splitTags(s string) []string {
	out := []string{}
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func admDatasetsCmd(g *globals, af *adminFlags) *cobra.Command {
	var tags []string
	list := admLeaf(g, af, "list", "list the datasets (with --tag, those carrying every tag given)", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			var out struct {
				Datasets []apiDataset `json:"datasets"`
			}
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/datasets", map[string][]string{"tag": tags}, nil, &out)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				rows := make([][]string, 0, len(out.Datasets))
				for _, d := range out.Datasets {
					rows = append(rows, []string{d.ID, d.Name, strconv.Itoa(d.Rows), strconv.Itoa(len(d.Columns)), d.Visibility, strings.Join(d.Tags, ","), d.indexing()})
				}
				return a.table([]string{"ID", "NAME", "ROWS", "COLUMNS", "VISIBILITY", "TAGS", "INDEXING"}, rows)
			})
		})
	list.Flags().StringArrayVar(&tags, "tag", nil, "only datasets carrying this tag; repeatable")

	show := admLeaf(g, af, "show DATASET", "show a dataset (by ID or name)", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			id, err := a.datasetID(ctx, args[0])
			if err != nil {
				return err
			}
			var d apiDataset
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/datasets/"+adminclient.PathEscape(id), nil, nil, &d)
			if err != nil {
				return err
			}
			return a.show(raw, func() error { return a.fields(d.fields()) })
		})

	var up uploadFlags
	upload := admLeaf(g, af, "upload FILE", "upload a CSV or Parquet file of any size as a dataset (or, with --dataset, as a new version of one); resumable", cobra.ExactArgs(1), true,
		func(_ context.Context, a *admin, args []string) error { return a.uploadFile(&up, args[0]) })
	upload.Long = `Upload a CSV or Parquet file of any size as a dataset, through the gateway's
resumable upload API: the file is sent in chunks from disk (never read whole
into memory), with a progress line on a terminal (not with --json). A cut
connection is retried from the bytes the gateway holds. If the command is
killed, running it again with the same file resumes the upload (its state is
kept in the user's cache directory until the upload is finished); --restart
starts over.`
	upload.Flags().StringVar(&up.name, "name", "", "the dataset's name (default: the file's)")
	upload.Flags().StringVar(&up.tags, "tags", "", "comma-separated tags announced on the network, e.g. medical,public")
	upload.Flags().StringVar(&up.description, "description", "", "what the data is")
	upload.Flags().StringVar(&up.visibility, "visibility", "", "public, or private to have every result reviewed (default private)")
	upload.Flags().StringVar(&up.format, "format", "", "csv or parquet (default: from the file's name and first bytes)")
	upload.Flags().StringVar(&up.dataset, "dataset", "", "upload the file as a new version of this dataset (ID or name)")
	upload.Flags().BoolVar(&up.restart, "restart", false, "start the upload over instead of resuming an interrupted one")
	upload.Flags().StringVar(&up.chunk, "chunk-size", "", "bytes per request (default 8MiB, at most what the gateway allows)")

	var ed struct{ name, tags, description, visibility string }
	edit := admLeaf(g, af, "edit DATASET", "change a dataset's name, description, tags or visibility", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			body := map[string]any{}
			flags := map[string]bool{}
			for _, n := range []string{"name", "tags", "description", "visibility"} {
				flags[n] = a.changed(n)
			}
			if flags["name"] {
				body["name"] = ed.name
			}
			if flags["description"] {
				body["description"] = ed.description
			}
			if flags["tags"] {
				body["tags"] = splitTags(ed.tags)
			}
			if flags["visibility"] {
				body["visibility"] = ed.visibility
			}
			if len(body) == 0 {
				return usagef("nothing to change: give --name, --description, --tags or --visibility")
			}
			id, err := a.datasetID(ctx, args[0])
			if err != nil {
				return err
			}
			var d apiDataset
			raw, err := a.call(ctx, http.MethodPatch, "/api/v1/datasets/"+adminclient.PathEscape(id), nil, body, &d)
			if err != nil {
				return err
			}
			return a.show(raw, func() error { return a.fields(d.fields()) })
		})
	edit.Flags().StringVar(&ed.name, "name", "", "new name")
	edit.Flags().StringVar(&ed.tags, "tags", "", "new comma-separated tags (replace the old ones)")
	edit.Flags().StringVar(&ed.description, "description", "", "new description")
	edit.Flags().StringVar(&ed.visibility, "visibility", "", "public or private")

	del := admLeaf(g, af, "delete DATASET", "delete a dataset", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			id, err := a.datasetID(ctx, args[0])
			if err != nil {
				return err
			}
			raw, err := a.call(ctx, http.MethodDelete, "/api/v1/datasets/"+adminclient.PathEscape(id), nil, nil, nil)
			if err != nil {
				return err
			}
			return a.done(raw, "deleted dataset %s", id)
		})

	var train, autoRelease string
	overrides := admLeaf(g, af, "overrides DATASET [USER]",
		"list a dataset's per-user overrides, or set one user's (--train, --auto-release: yes, no or default)", cobra.RangeArgs(1, 2), true,
		func(ctx context.Context, a *admin, args []string) error {
			ds, err := a.datasetID(ctx, args[0])
			if err != nil {
				return err
			}
			type override struct {
				UserID      string `json:"user_id"`
				Train       *bool  `json:"train"`
				AutoRelease *bool  `json:"auto_release"`
			}
			if len(args) == 1 {
				if a.changed("train") || a.changed("auto-release") {
					return usagef("name the USER whose override --train and --auto-release set")
				}
				var out struct {
					Overrides []override `json:"overrides"`
				}
				raw, err := a.call(ctx, http.MethodGet, "/api/v1/datasets/"+adminclient.PathEscape(ds)+"/overrides", nil, nil, &out)
				if err != nil {
					return err
				}
				return a.show(raw, func() error {
					rows := make([][]string, 0, len(out.Overrides))
					for _, o := range out.Overrides {
						rows = append(rows, []string{o.UserID, fmtBool(o.Train), fmtBool(o.AutoRelease)})
					}
					return a.table([]string{"USER", "TRAIN", "AUTO_RELEASE"}, rows)
				})
			}
			if !a.changed("train") && !a.changed("auto-release") {
				return usagef("give --train or --auto-release (yes, no or default)")
			}
			tv, err := triState("--train", train)
			if err != nil {
				return err
			}
			av, err := triState("--auto-release", autoRelease)
			if err != nil {
				return err
			}
			user, err := a.userID(ctx, args[1])
			if err != nil {
				return err
			}
			path := "/api/v1/datasets/" + adminclient.PathEscape(ds) + "/overrides/" + adminclient.PathEscape(user)
			// Keep what is not given: read the current override first.
			var cur struct {
				Overrides []override `json:"overrides"`
			}
			if _, err := a.call(ctx, http.MethodGet, "/api/v1/datasets/"+adminclient.PathEscape(ds)+"/overrides", nil, nil, &cur); err != nil {
				return err
			}
			body := map[string]*bool{"train": nil, "auto_release": nil}
			for _, o := range cur.Overrides {
				if o.UserID == user {
					body["train"], body["auto_release"] = o.Train, o.AutoRelease
				}
			}
			if a.changed("train") {
				body["train"] = tv
			}
			if a.changed("auto-release") {
				body["auto_release"] = av
			}
			var o override
			raw, err := a.call(ctx, http.MethodPut, path, nil, body, &o)
			if err != nil {
				return err
			}
			return a.done(raw, "override of %s on dataset %s: train %s, auto-release %s", args[1], ds, fmtBool(o.Train), fmtBool(o.AutoRelease))
		})
	overrides.Flags().StringVar(&train, "train", "", "whether the user may train on the dataset: yes, no or default")
	overrides.Flags().StringVar(&autoRelease, "auto-release", "", "whether their results skip review: yes, no or default")

	cmds := append([]*cobra.Command{list, show, upload, edit, del, overrides}, admSourceCmds(g, af)...)
	return groupCmd("datasets", "upload, list, change and delete datasets and their per-user overrides; register PostgreSQL or file sources and snapshot them", cmds...)
}

// changed reports whether the running command's flag was given (on the
// command line, in the environment or the config file).
func (a *admin) changed(name string) bool {
	return a.cmd != nil && a.cmd.Flags().Changed(name)
}

func triState(flag, v string) (*bool, error) {
	switch strings.ToLower(v) {
	case "yes", "true":
		t := true
		return &t, nil
	case "no", "false":
		f := false
		return &f, nil
	case "default", "":
		return nil, nil
	}
	return nil, usagef("%s must be yes, no or default, not %q", flag, v)
}

// apiModel is a hosted model's description.
type apiModel struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Params      int       `json:"params"`
	Size        int64     `json:"size"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by"`
}

func (m *apiModel) fields() [][2]string {
	return [][2]string{{"id", m.ID}, {"name", m.Name}, {"description", m.Description}, {"params", strconv.Itoa(m.Params)},
		{"size", fmtBytes(m.Size)}, {"created", fmtTime(m.CreatedAt)}, {"created by", m.CreatedBy}}
}

func admModelsCmd(g *globals, af *adminFlags) *cobra.Command {
	list := admLeaf(g, af, "list", "list the hosted models (descriptions, never weights)", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			var out struct {
				Models []apiModel `json:"models"`
			}
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/models", nil, nil, &out)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				rows := make([][]string, 0, len(out.Models))
				for _, m := range out.Models {
					rows = append(rows, []string{m.ID, m.Name, strconv.Itoa(m.Params), fmtBytes(m.Size), fmtTime(m.CreatedAt)})
				}
				return a.table([]string{"ID", "NAME", "PARAMS", "SIZE", "CREATED"}, rows)
			})
		})
	show := admLeaf(g, af, "show ID", "show a hosted model's description", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			var m apiModel
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/models/"+adminclient.PathEscape(args[0]), nil, nil, &m)
			if err != nil {
				return err
			}
			return a.show(raw, func() error { return a.fields(m.fields()) })
		})
	var name, description string
	upload := admLeaf(g, af, "upload MODEL.json", "host a model (a fedgrid.model/v1 file) that data scientists can train further", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			var raw json.RawMessage
			fields := []adminclient.Field{{Name: "name", Value: name}, {Name: "description", Value: description}}
			if err := a.cl.Upload(ctx, "/api/v1/models", fields, filepath.Base(args[0]), f, &raw); err != nil {
				return err
			}
			var m apiModel
			if err := json.Unmarshal(raw, &m); err != nil {
				return fmt.Errorf("the gateway's answer is not a model: %v", err)
			}
			return a.done(raw, "hosted %s as model %s: a plan names it with \"model\": %q", args[0], m.ID, m.ID)
		})
	upload.Flags().StringVar(&name, "name", "", "the model's name (default: its plan's)")
	upload.Flags().StringVar(&description, "description", "", "what the model is")
	del := admLeaf(g, af, "delete ID", "delete a hosted model", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			raw, err := a.call(ctx, http.MethodDelete, "/api/v1/models/"+adminclient.PathEscape(args[0]), nil, nil, nil)
			if err != nil {
				return err
			}
			return a.done(raw, "deleted model %s", args[0])
		})
	return groupCmd("models", "host, list and delete models", list, show, upload, del)
}

func admNodesCmd(g *globals, af *adminFlags) *cobra.Command {
	var ttl time.Duration
	join := admLeaf(g, af, "join-token", "make a single-use token that enrols one node", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			if ttl < 0 {
				return usagef("--ttl must not be negative")
			}
			body := map[string]any{}
			if ttl > 0 {
				body["ttl_seconds"] = int64(ttl.Round(time.Second) / time.Second)
			}
			var out struct {
				Token     string    `json:"token"`
				ExpiresAt time.Time `json:"expires_at"`
			}
			raw, err := a.call(ctx, http.MethodPost, "/api/v1/nodes/join-tokens", nil, body, &out)
			if err != nil {
				return err
			}
			// Alone on stdout, so that a script can take it: TOKEN=$(fedgrid admin nodes join-token).
			return a.show(raw, func() error {
				fmt.Fprintf(a.g.stderr, "single-use join token, valid until %s; run: fedgrid node --gateway GATEWAY_MULTIADDR --join-token TOKEN ...\n", fmtTime(out.ExpiresAt))
				_, err := fmt.Fprintln(a.g.stdout, out.Token)
				return err
			})
		})
	join.Flags().DurationVar(&ttl, "ttl", 0, "how long the token is valid, e.g. 1h (default: the gateway's)")
	list := admLeaf(g, af, "list", "list the enrolled nodes", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			var out struct {
				Nodes []struct {
					PeerID     string    `json:"peer_id"`
					Slots      int       `json:"slots"`
					Version    string    `json:"version"`
					EnrolledAt time.Time `json:"enrolled_at"`
					LastSeen   time.Time `json:"last_seen"`
				} `json:"nodes"`
			}
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/nodes", nil, nil, &out)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				rows := make([][]string, 0, len(out.Nodes))
				for _, n := range out.Nodes {
					rows = append(rows, []string{n.PeerID, strconv.Itoa(n.Slots), n.Version, fmtTime(n.EnrolledAt), fmtTime(n.LastSeen)})
				}
				return a.table([]string{"PEER", "SLOTS", "VERSION", "ENROLLED", "LAST_SEEN"}, rows)
			})
		})
	remove := admLeaf(g, af, "remove PEER_ID", "remove a node", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			raw, err := a.call(ctx, http.MethodDelete, "/api/v1/nodes/"+adminclient.PathEscape(args[0]), nil, nil, nil)
			if err != nil {
				return err
			}
			return a.done(raw, "removed node %s", args[0])
		})
	return groupCmd("nodes", "enrol, list and remove the gateway's nodes", join, list, remove)
}
