package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/adminclient"
	"github.com/fedgrid/fedgrid/internal/hostallow"
	"github.com/fedgrid/fedgrid/wire"
)

// apiJob is a job as the admin API shows it.
type apiJob struct {
	ID        string `json:"id"`
	DatasetID string `json:"dataset_id"`
	UserID    string `json:"user_id"`
	Requester string `json:"requester"`
	State     string `json:"state"`
	Attempt   int    `json:"attempt"`
	Node      string `json:"node"`
	Progress  struct {
		Epoch        int     `json:"epoch"`
		Epochs       int     `json:"epochs"`
		Loss         float64 `json:"loss"`
		LossWithheld bool    `json:"loss_withheld"`
	} `json:"progress"`
	Metrics    map[string]any `json:"metrics"`
	Error      string         `json:"error"`
	CreatedAt  time.Time      `json:"created_at"`
	StartedAt  time.Time      `json:"started_at"`
	FinishedAt time.Time      `json:"finished_at"`
}

func (j *apiJob) progress() string {
	if j.Progress.Epochs == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%d", j.Progress.Epoch, j.Progress.Epochs)
}

// fmtMetrics prints a metrics object as sorted key=value pairs, numbers as
// a person writes them (epochs=100, accuracy=0.7812).
func fmtMetrics(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+fmtValue(m[k]))
	}
	return strings.Join(parts, " ")
}

func fmtValue(v any) string {
	switch x := v.(type) {
	case float64:
		return fmtNumber(x)
	case string:
		return x
	case nil:
		return "-"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func admJobsCmd(g *globals, af *adminFlags) *cobra.Command {
	var state, user string
	list := admLeaf(g, af, "list", "list jobs, newest first (all of them with can_triage_requests, else your own)", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			q := map[string][]string{}
			if state != "" {
				q["state"] = []string{state}
			}
			if user != "" {
				id, err := a.userID(ctx, user)
				if err != nil {
					return err
				}
				q["user_id"] = []string{id}
			}
			var out struct {
				Jobs []apiJob `json:"jobs"`
			}
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/jobs", q, nil, &out)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				rows := make([][]string, 0, len(out.Jobs))
				for _, j := range out.Jobs {
					rows = append(rows, []string{j.ID, j.State, j.DatasetID, j.UserID, j.progress(), fmtTime(j.CreatedAt), j.Error})
				}
				return a.table([]string{"ID", "STATE", "DATASET", "USER", "EPOCH", "CREATED", "ERROR"}, rows)
			})
		})
	list.Flags().StringVar(&state, "state", "", "only jobs in this state: "+strings.Join(wire.JobStates(), ", "))
	list.Flags().StringVar(&user, "user", "", "only this user's jobs (ID or email)")
	jobFields := func(j *apiJob) [][2]string {
		return [][2]string{{"id", j.ID}, {"state", j.State}, {"dataset", j.DatasetID}, {"user", j.UserID}, {"requester", j.Requester},
			{"attempt", strconv.Itoa(j.Attempt)}, {"node", j.Node}, {"epoch", j.progress()}, {"metrics", fmtMetrics(j.Metrics)},
			{"error", j.Error}, {"created", fmtTime(j.CreatedAt)}, {"started", fmtTime(j.StartedAt)}, {"finished", fmtTime(j.FinishedAt)}}
	}
	show := admLeaf(g, af, "show ID", "show a job", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			var j apiJob
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/jobs/"+adminclient.PathEscape(args[0]), nil, nil, &j)
			if err != nil {
				return err
			}
			return a.show(raw, func() error { return a.fields(jobFields(&j)) })
		})
	cancel := admLeaf(g, af, "cancel ID", "cancel a queued or running job", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			var j apiJob
			raw, err := a.call(ctx, http.MethodPost, "/api/v1/jobs/"+adminclient.PathEscape(args[0])+"/cancel", nil, nil, &j)
			if err != nil {
				return err
			}
			return a.done(raw, "job %s is %s", j.ID, j.State)
		})
	return groupCmd("jobs", "list, show and cancel training jobs", list, show, cancel)
}

// apiRequest is a review request as the API shows it.
type apiRequest struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	State     string `json:"state"`
	UserID    string `json:"user_id"`
	UserEmail string `json:"user_email"`
	UserRole  string `json:"user_role"`
	Requester string `json:"requester"`
	Reason    string `json:"reason"`
	Dataset   *struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"dataset"`
	JobID           string         `json:"job_id"`
	EpsilonMicroEps int64          `json:"epsilon_micro_eps"`
	DP              bool           `json:"dp"`
	Guarantee       string         `json:"guarantee"`
	PlanTable       string         `json:"plan_table"`
	Metrics         map[string]any `json:"metrics"`
	Permission      string         `json:"permission"`
	CreatedAt       time.Time      `json:"created_at"`
	Decision        *struct {
		Approved        bool      `json:"approved"`
		Reviewer        string    `json:"reviewer"`
		ReviewerEmail   string    `json:"reviewer_email"`
		Reason          string    `json:"reason"`
		ChargedMicroEps int64     `json:"charged_micro_eps"`
		At              time.Time `json:"at"`
	} `json:"decision"`
	History *struct {
		Requests         map[string]int `json:"requests"`
		BudgetMicroEps   int64          `json:"budget_micro_eps"`
		SpentMicroEps    int64          `json:"spent_micro_eps"`
		ReservedMicroEps int64          `json:"reserved_micro_eps"`
	} `json:"history"`
}

func (r *apiRequest) dataset() string {
	if r.Dataset == nil {
		return ""
	}
	return r.Dataset.Name + " (" + r.Dataset.ID + ")"
}

func (r *apiRequest) who() string {
	if r.UserEmail != "" {
		return r.UserEmail
	}
	return r.UserID
}

func (r *apiRequest) fields() [][2]string {
	kv := [][2]string{{"id", r.ID}, {"kind", r.Kind}, {"state", r.State}, {"requester", r.who()}, {"role", r.UserRole},
		{"peer", r.Requester}, {"dataset", r.dataset()}, {"job", r.JobID}, {"permission", r.Permission}, {"reason", r.Reason},
		{"epsilon", fmtMicro(r.EpsilonMicroEps)}, {"guarantee", r.Guarantee}, {"metrics", fmtMetrics(r.Metrics)},
		{"created", fmtTime(r.CreatedAt)}}
	if d := r.Decision; d != nil {
		verdict := "denied"
		if d.Approved {
			verdict = "approved"
		}
		by := d.Reviewer
		if d.ReviewerEmail != "" {
			by = d.ReviewerEmail
		}
		kv = append(kv, [2]string{"decision", fmt.Sprintf("%s by %s at %s", verdict, by, fmtTime(d.At))},
			[2]string{"decision reason", d.Reason}, [2]string{"charged", fmtMicro(d.ChargedMicroEps) + " epsilon"})
	}
	if h := r.History; h != nil {
		kv = append(kv, [2]string{"requester budget", fmt.Sprintf("%s epsilon (%s reserved, %s spent)",
			fmtMicro(h.BudgetMicroEps), fmtMicro(h.ReservedMicroEps), fmtMicro(h.SpentMicroEps))})
		if len(h.Requests) > 0 {
			m := make(map[string]any, len(h.Requests))
			for k, v := range h.Requests {
				m[k] = float64(v)
			}
			kv = append(kv, [2]string{"requester history", fmtMetrics(m)})
		}
	}
	return kv
}

func admRequestsCmd(g *globals, af *adminFlags) *cobra.Command {
	var f struct{ state, kind, user, dataset, job string }
	list := admLeaf(g, af, "list", "the review queue and its history, newest first", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			q := map[string][]string{}
			for k, v := range map[string]string{"state": f.state, "kind": f.kind, "job": f.job} {
				if v != "" {
					q[k] = []string{v}
				}
			}
			if f.user != "" {
				id, err := a.userID(ctx, f.user)
				if err != nil {
					return err
				}
				q["user"] = []string{id}
			}
			if f.dataset != "" {
				id, err := a.datasetID(ctx, f.dataset)
				if err != nil {
					return err
				}
				q["dataset"] = []string{id}
			}
			var out struct {
				Requests []apiRequest `json:"requests"`
			}
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/requests", q, nil, &out)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				rows := make([][]string, 0, len(out.Requests))
				for _, r := range out.Requests {
					ds := ""
					if r.Dataset != nil {
						ds = r.Dataset.Name
					}
					rows = append(rows, []string{r.ID, r.Kind, r.State, r.who(), ds, r.JobID, fmtMicro(r.EpsilonMicroEps), fmtTime(r.CreatedAt)})
				}
				return a.table([]string{"ID", "KIND", "STATE", "REQUESTER", "DATASET", "JOB", "EPSILON", "CREATED"}, rows)
			})
		})
	list.Flags().StringVar(&f.state, "state", "", "pending, approved, denied or withdrawn")
	list.Flags().StringVar(&f.kind, "kind", "", "release, budget or permission")
	list.Flags().StringVar(&f.user, "user", "", "only this user's requests (ID or email)")
	list.Flags().StringVar(&f.dataset, "dataset", "", "only requests on this dataset (ID or name)")
	list.Flags().StringVar(&f.job, "job", "", "only the release request of this job ID")

	show := admLeaf(g, af, "show ID", "one request with what is needed to decide it: plan, metrics, epsilon, the requester's history", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			var r apiRequest
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/requests/"+adminclient.PathEscape(args[0]), nil, nil, &r)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				if err := a.fields(r.fields()); err != nil {
					return err
				}
				if r.PlanTable != "" {
					fmt.Fprintf(a.g.stdout, "plan:\n%s\n", strings.TrimRight(r.PlanTable, "\n"))
				}
				return nil
			})
		})

	decide := func(use, short, verb string, reasonRequired bool) *cobra.Command {
		var reason string
		c := admLeaf(g, af, use, short, cobra.ExactArgs(1), true,
			func(ctx context.Context, a *admin, args []string) error {
				if reasonRequired && strings.TrimSpace(reason) == "" {
					return usagef("--reason is required")
				}
				var r apiRequest
				raw, err := a.call(ctx, http.MethodPost, "/api/v1/requests/"+adminclient.PathEscape(args[0])+"/"+verb, nil, map[string]string{"reason": reason}, &r)
				if err != nil {
					return err
				}
				msg := fmt.Sprintf("request %s (%s by %s) is %s", r.ID, r.Kind, r.who(), r.State)
				if r.Decision != nil && r.Decision.ChargedMicroEps != 0 {
					msg += fmt.Sprintf("; charged %s epsilon", fmtMicro(r.Decision.ChargedMicroEps))
				}
				return a.done(raw, "%s", msg)
			})
		help := "why (shown to the requester and kept in the audit log)"
		if reasonRequired {
			help += "; required"
		}
		c.Flags().StringVar(&reason, "reason", "", help)
		return c
	}
	approve := decide("approve ID", "approve a pending request (a release goes to its requester alone)", "approve", false)
	deny := decide("deny ID", "deny a pending request with a reason (a release's reserved epsilon is refunded)", "deny", true)
	return groupCmd("requests", "review release, budget and permission requests", list, show, approve, deny)
}

// apiRule is an approval rule.
type apiRule struct {
	ID                 string    `json:"id"`
	Tags               []string  `json:"tags"`
	Roles              []string  `json:"roles"`
	MaxEpsilonMicroEps int64     `json:"max_epsilon_micro_eps"`
	Quota              int       `json:"quota"`
	Used               int       `json:"used"`
	ExpiresAt          time.Time `json:"expires_at"`
	Expired            bool      `json:"expired"`
	Disabled           bool      `json:"disabled"`
	Note               string    `json:"note"`
	CreatedAt          time.Time `json:"created_at"`
}

func (r *apiRule) status() string {
	switch {
	case r.Disabled:
		return "disabled"
	case r.Expired:
		return "expired"
	case r.Used >= r.Quota:
		return "used up"
	}
	return "active"
}

func (r *apiRule) fields() [][2]string {
	exp := fmtTime(r.ExpiresAt)
	if exp == "" {
		exp = "never"
	}
	roles := strings.Join(r.Roles, ", ")
	if roles == "" {
		roles = "any"
	}
	return [][2]string{{"id", r.ID}, {"status", r.status()}, {"tags", strings.Join(r.Tags, ", ")}, {"roles", roles},
		{"max epsilon", fmtMicro(r.MaxEpsilonMicroEps)}, {"used", fmt.Sprintf("%d of %d", r.Used, r.Quota)}, {"expires", exp},
		{"note", r.Note}, {"created", fmtTime(r.CreatedAt)}}
}

// ruleFlags are the fields of a rule given on the command line.
type ruleFlags struct {
	tags, roles []string
	maxEps      float64
	quota       int
	expires     string
	noExpiry    bool
	disabled    bool
	note        string
}

func (rf *ruleFlags) add(c *cobra.Command, create bool) {
	c.Flags().StringSliceVar(&rf.tags, "tag", nil, "a dataset tag the rule needs (all must be on the dataset); repeatable or comma-separated")
	c.Flags().StringSliceVar(&rf.roles, "role", nil, "a requester role the rule applies to; repeatable (default: any role)")
	c.Flags().Float64Var(&rf.maxEps, "max-epsilon", 0, "the most epsilon one release may cost")
	c.Flags().IntVar(&rf.quota, "quota", 0, "how many releases it may approve")
	c.Flags().StringVar(&rf.expires, "expires", "", "when it stops: a date-time (2026-12-31T23:59:00Z) or a duration from now (720h)")
	c.Flags().BoolVar(&rf.disabled, "disabled", false, "keep the rule but do not apply it")
	c.Flags().StringVar(&rf.note, "note", "", "why the rule exists")
	if !create {
		c.Flags().BoolVar(&rf.noExpiry, "no-expiry", false, "remove the expiry")
	}
}

func parseExpiry(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, usagef("--expires %s: a duration must be positive", s)
		}
		return time.Now().Add(d).UTC().Truncate(time.Second), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, usagef("--expires %q: give a date-time like 2026-12-31T23:59:00Z or a duration like 720h", s)
	}
	return t, nil
}

// body is the JSON body for the flags given (all, on create).
func (rf *ruleFlags) body(changed func(string) bool, create bool) (map[string]any, error) {
	b := map[string]any{}
	if create || changed("tag") {
		b["tags"] = rf.tags
	}
	if create || changed("role") {
		roles := rf.roles
		if roles == nil {
			roles = []string{}
		}
		b["roles"] = roles
	}
	if create || changed("max-epsilon") {
		b["max_epsilon"] = rf.maxEps
	}
	if create || changed("quota") {
		b["quota"] = rf.quota
	}
	if changed("expires") {
		t, err := parseExpiry(rf.expires)
		if err != nil {
			return nil, err
		}
		b["expires_at"] = t
	}
	if changed("no-expiry") {
		if changed("expires") {
			return nil, usagef("give --expires or --no-expiry, not both")
		}
		b["no_expiry"] = rf.noExpiry
	}
	if create || changed("disabled") {
		b["disabled"] = rf.disabled
	}
	if create || changed("note") {
		b["note"] = rf.note
	}
	return b, nil
}

func admRulesCmd(g *globals, af *adminFlags) *cobra.Command {
	list := admLeaf(g, af, "list", "list the approval rules", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			var out struct {
				Rules []apiRule `json:"rules"`
			}
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/rules", nil, nil, &out)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				rows := make([][]string, 0, len(out.Rules))
				for _, r := range out.Rules {
					f := r.fields()
					rows = append(rows, []string{r.ID, r.status(), strings.Join(r.Tags, ","), f[3][1], fmtMicro(r.MaxEpsilonMicroEps), f[5][1], f[6][1]})
				}
				return a.table([]string{"ID", "STATUS", "TAGS", "ROLES", "MAX_EPSILON", "USED", "EXPIRES"}, rows)
			})
		})
	show := admLeaf(g, af, "show ID", "show an approval rule", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			var r apiRule
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/rules/"+adminclient.PathEscape(args[0]), nil, nil, &r)
			if err != nil {
				return err
			}
			return a.show(raw, func() error { return a.fields(r.fields()) })
		})
	var cf ruleFlags
	create := admLeaf(g, af, "create", "auto-approve DP-SGD releases on datasets carrying every --tag, up to --max-epsilon each, --quota times", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			if len(cf.tags) == 0 {
				return usagef("--tag is required (at least one)")
			}
			if !a.changed("max-epsilon") || !a.changed("quota") {
				return usagef("--max-epsilon and --quota are required")
			}
			body, err := cf.body(a.changed, true)
			if err != nil {
				return err
			}
			var r apiRule
			raw, err := a.call(ctx, http.MethodPost, "/api/v1/rules", nil, body, &r)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				fmt.Fprintf(a.g.stdout, "created rule %s\n", r.ID)
				return a.fields(r.fields())
			})
		})
	cf.add(create, true)
	var ef ruleFlags
	edit := admLeaf(g, af, "edit ID", "change an approval rule (its used count stays)", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			body, err := ef.body(a.changed, false)
			if err != nil {
				return err
			}
			if len(body) == 0 {
				return usagef("nothing to change: give at least one flag (see --help)")
			}
			var r apiRule
			raw, err := a.call(ctx, http.MethodPatch, "/api/v1/rules/"+adminclient.PathEscape(args[0]), nil, body, &r)
			if err != nil {
				return err
			}
			return a.show(raw, func() error { return a.fields(r.fields()) })
		})
	ef.add(edit, false)
	del := admLeaf(g, af, "delete ID", "delete an approval rule (its past decisions stay)", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			raw, err := a.call(ctx, http.MethodDelete, "/api/v1/rules/"+adminclient.PathEscape(args[0]), nil, nil, nil)
			if err != nil {
				return err
			}
			return a.done(raw, "deleted rule %s", args[0])
		})
	return groupCmd("rules", "approval rules that release DP-SGD results without a reviewer", list, show, create, edit, del)
}

func admAuditCmd(g *globals, af *adminFlags) *cobra.Command {
	var after uint64
	var limit int
	var action string
	list := admLeaf(g, af, "list", "the audit log, in chain order", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			if limit < 0 {
				return usagef("--limit must not be negative")
			}
			q := map[string][]string{}
			if a.changed("after") {
				q["after"] = []string{strconv.FormatUint(after, 10)}
			}
			if limit > 0 {
				q["limit"] = []string{strconv.Itoa(limit)}
			}
			if action != "" {
				q["action"] = []string{action}
			}
			var out struct {
				Entries []struct {
					Seq    uint64         `json:"seq"`
					Time   time.Time      `json:"time"`
					Actor  string         `json:"actor"`
					Action string         `json:"action"`
					Target string         `json:"target"`
					Detail map[string]any `json:"detail"`
				} `json:"entries"`
			}
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/audit", q, nil, &out)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				rows := make([][]string, 0, len(out.Entries))
				for _, e := range out.Entries {
					rows = append(rows, []string{strconv.FormatUint(e.Seq, 10), fmtTime(e.Time), e.Actor, e.Action, e.Target, fmtMetrics(e.Detail)})
				}
				return a.table([]string{"SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"}, rows)
			})
		})
	list.Flags().Uint64Var(&after, "after", 0, "only entries with a greater sequence number")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default 100, max 1000)")
	list.Flags().StringVar(&action, "action", "", "one action, or a prefix ending in '.' (e.g. auth.)")
	verify := admLeaf(g, af, "verify", "check the audit log's hash chain on the running gateway", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			var out struct {
				OK      bool `json:"ok"`
				Entries int  `json:"entries"`
			}
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/audit/verify", nil, nil, &out)
			if err != nil {
				if adminclient.StatusOf(err) == http.StatusConflict {
					return fmt.Errorf("the audit log does not verify: %w", err)
				}
				return err
			}
			if !out.OK {
				return fmt.Errorf("the audit log does not verify (%d entries)", out.Entries)
			}
			return a.done(raw, "audit log verifies: %d entries, hash chain intact", out.Entries)
		})
	return groupCmd("audit", "read and verify the gateway's audit log", list, verify)
}

func admSettingsCmd(g *globals, af *adminFlags) *cobra.Command {
	type settings struct {
		Name    string `json:"name"`
		LogoURL string `json:"logo_url"`
		Color   string `json:"color"`
	}
	show := admLeaf(g, af, "show", "the admin app's white-label name, logo and colour", cobra.NoArgs, false,
		func(ctx context.Context, a *admin, _ []string) error {
			var s settings
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/settings", nil, nil, &s)
			if err != nil {
				return err
			}
			return a.show(raw, func() error { return a.fields([][2]string{{"name", s.Name}, {"logo", s.LogoURL}, {"color", s.Color}}) })
		})
	var ns settings
	set := admLeaf(g, af, "set", "change the white-label settings (the ones given; the others stay)", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			if !a.changed("name") && !a.changed("logo-url") && !a.changed("color") {
				return usagef("nothing to change: give --name, --logo-url or --color")
			}
			var s settings
			if _, err := a.call(ctx, http.MethodGet, "/api/v1/settings", nil, nil, &s); err != nil {
				return err
			}
			if a.changed("name") {
				s.Name = ns.Name
			}
			if a.changed("logo-url") {
				s.LogoURL = ns.LogoURL
			}
			if a.changed("color") {
				s.Color = ns.Color
			}
			raw, err := a.call(ctx, http.MethodPut, "/api/v1/settings", nil, s, &s)
			if err != nil {
				return err
			}
			return a.show(raw, func() error { return a.fields([][2]string{{"name", s.Name}, {"logo", s.LogoURL}, {"color", s.Color}}) })
		})
	set.Flags().StringVar(&ns.Name, "name", "", "the app's name")
	set.Flags().StringVar(&ns.LogoURL, "logo-url", "", "the logo's URL (https: or data:)")
	set.Flags().StringVar(&ns.Color, "color", "", "the accent colour, #rrggbb")
	return groupCmd("settings", "the admin app's white-label settings; the federation rules; the allowed source hosts", show, set,
		admFedSettingsCmd(g, af), admSourceSettingsCmd(g, af))
}

// admSourceSettingsCmd shows or changes the hosts a PostgreSQL source
// registered by anyone but the Owner may name.
func admSourceSettingsCmd(g *globals, af *adminFlags) *cobra.Command {
	type sourceSettings struct {
		Schema       int      `json:"schema"`
		AllowedHosts []string `json:"allowed_hosts"`
	}
	var add, remove []string
	var clearList bool
	c := admLeaf(g, af, "sources", "show or change the hosts a PostgreSQL source registered by anyone but the Owner may name (the gateway connects to no other)", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			var s sourceSettings
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/settings/sources", nil, nil, &s)
			if err != nil {
				return err
			}
			if len(add) > 0 || len(remove) > 0 || clearList {
				hosts := s.AllowedHosts
				if clearList {
					hosts = nil
				}
				drop, err := hostallow.Normalize(remove)
				if err != nil {
					return usagef("--remove-host: %v", err)
				}
				kept := make([]string, 0, len(hosts)+len(add))
				for _, h := range hosts {
					if !slices.Contains(drop, h) {
						kept = append(kept, h)
					}
				}
				for _, h := range drop {
					if !slices.Contains(hosts, h) {
						return usagef("--remove-host %s: not on the list (%s)", h, strings.Join(hosts, ", "))
					}
				}
				if raw, err = a.call(ctx, http.MethodPut, "/api/v1/settings/sources", nil, sourceSettings{AllowedHosts: append(kept, add...)}, &s); err != nil {
					return err
				}
			}
			list := "none: only the Owner may register PostgreSQL sources"
			if len(s.AllowedHosts) > 0 {
				list = strings.Join(s.AllowedHosts, ", ")
			}
			return a.show(raw, func() error { return a.fields([][2]string{{"allowed source hosts", list}}) })
		})
	c.Flags().StringArrayVar(&add, "allow-host", nil, "allow a host: HOST, HOST:PORT, an IP address, [IPv6]:PORT or a CIDR prefix (repeatable)")
	c.Flags().StringArrayVar(&remove, "remove-host", nil, "take a host off the list, written as the list shows it (repeatable)")
	c.Flags().BoolVar(&clearList, "clear", false, "empty the list first (then only the Owner may register PostgreSQL sources)")
	return c
}

// admFedSettingsCmd shows or changes the gateway's federation rules.
func admFedSettingsCmd(g *globals, af *adminFlags) *cobra.Command {
	type fedSettings struct {
		Schema            int  `json:"schema"`
		AllowPlainUpdates bool `json:"allow_plain_updates"`
	}
	var allow bool
	c := admLeaf(g, af, "federation", "show or change the federation rules: whether a federation may run here without secure aggregation", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			var s fedSettings
			var raw json.RawMessage
			var err error
			if a.changed("allow-plain-updates") {
				raw, err = a.call(ctx, http.MethodPut, "/api/v1/settings/federation", nil, fedSettings{AllowPlainUpdates: allow}, &s)
			} else {
				raw, err = a.call(ctx, http.MethodGet, "/api/v1/settings/federation", nil, nil, &s)
			}
			if err != nil {
				return err
			}
			plain := "no: every federation here uses secure aggregation"
			if s.AllowPlainUpdates {
				plain = "yes: a federation that asks for it receives this gateway's updates unmasked"
			}
			return a.show(raw, func() error { return a.fields([][2]string{{"plain updates allowed", plain}}) })
		})
	c.Flags().BoolVar(&allow, "allow-plain-updates", false, "let federations that ask for it (fedgrid train --secure-aggregation=false) run here with plain, unmasked updates")
	return c
}
