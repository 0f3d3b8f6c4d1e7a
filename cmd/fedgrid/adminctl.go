package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fedgrid/fedgrid/adminclient"
)

// adminFlags are the flags every `fedgrid admin` command takes.
type adminFlags struct {
	gateway string
	json    bool
}

// admin is one `fedgrid admin` command's connection to its gateway.
type admin struct {
	g        *globals
	af       *adminFlags
	cmd      *cobra.Command
	cl       *adminclient.Client
	credPath string
	creds    *adminclient.Credentials
}

// adminCallTimeout bounds one admin command's calls.
const adminCallTimeout = 2 * time.Minute

func adminCmd(g *globals) *cobra.Command {
	af := &adminFlags{}
	c := &cobra.Command{
		Use:   "admin",
		Short: "administer a gateway over its HTTP API (users, datasets, nodes, reviews, audit)",
		Long: `Administer a gateway over its HTTP API, as the admin web app does.

Start with "fedgrid admin setup" on a new gateway (it creates the Owner and logs
in) or "fedgrid admin login". The login's bearer token is kept, readable by you
only, in fedgrid/admin.json under your configuration directory ($XDG_CONFIG_HOME
or ~/.config); later commands use it. The gateway is --gateway URL, else
$FEDGRID_GATEWAY, else the one you last logged in to. Passwords are read from
standard input (a prompt without echo on a terminal), never from the command line.

Every command prints a table or text, or with --json the API's JSON answer.`,
	}
	c.PersistentFlags().StringVar(&af.gateway, "gateway", "", "the gateway's HTTP URL (its http= address), e.g. http://127.0.0.1:8420")
	c.PersistentFlags().BoolVar(&af.json, "json", false, "print the API's JSON answer on stdout")
	c.AddCommand(
		admSetupCmd(g, af), admLoginCmd(g, af), admLogoutCmd(g, af), admStatusCmd(g, af),
		admUsersCmd(g, af), admDatasetsCmd(g, af), admModelsCmd(g, af), admNodesCmd(g, af),
		admJobsCmd(g, af), admRequestsCmd(g, af), admRulesCmd(g, af), admAuditCmd(g, af), admSettingsCmd(g, af),
	)
	return c
}

// groupCmd is a command that only holds subcommands (strictGroups makes
// anything else bad usage).
func groupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short}
	c.AddCommand(subs...)
	return c
}

// connect finds the gateway and, if needLogin, its saved token.
func (af *adminFlags) connect(g *globals, needLogin bool) (*admin, error) {
	path, err := adminclient.DefaultCredentialsPath()
	if err != nil {
		return nil, err
	}
	creds, err := adminclient.LoadCredentials(path)
	if err != nil {
		return nil, err
	}
	raw := af.gateway
	if raw == "" {
		raw = creds.Current
	}
	if raw == "" {
		return nil, usagef("--gateway URL is required (or set FEDGRID_GATEWAY, or log in first)")
	}
	cl, err := adminclient.New(raw)
	if err != nil {
		return nil, usageError{fmt.Errorf("--gateway: %w", err)}
	}
	a := &admin{g: g, af: af, cl: cl, credPath: path, creds: creds}
	if needLogin {
		l, ok := creds.Gateways[cl.BaseURL]
		if !ok || l.Token == "" {
			return nil, fmt.Errorf("not logged in to %s: run fedgrid admin login --gateway %s --email EMAIL", cl.BaseURL, cl.BaseURL)
		}
		if !l.ExpiresAt.IsZero() && time.Now().After(l.ExpiresAt) {
			return nil, fmt.Errorf("the login to %s expired at %s: run fedgrid admin login again", cl.BaseURL, fmtTime(l.ExpiresAt))
		}
		cl.Token = l.Token
	}
	return a, nil
}

// admLeaf makes a command that talks to the gateway.
func admLeaf(g *globals, af *adminFlags, use, short string, args cobra.PositionalArgs, needLogin bool,
	run func(ctx context.Context, a *admin, args []string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := af.connect(g, needLogin)
			if err != nil {
				return err
			}
			a.cmd = cmd
			ctx, cancel := context.WithTimeout(cmd.Context(), adminCallTimeout)
			defer cancel()
			return run(ctx, a, args)
		},
	}
}

// show prints raw (the API's answer) with --json, else runs text.
func (a *admin) show(raw json.RawMessage, text func() error) error {
	if a.af.json {
		if len(bytes.TrimSpace(raw)) == 0 {
			raw = json.RawMessage("{}")
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return fmt.Errorf("the gateway's answer is not JSON: %v", err)
		}
		buf.WriteByte('\n')
		_, err := a.g.stdout.Write(buf.Bytes())
		return err
	}
	return text()
}

// done prints a one-line confirmation, or {} with --json (for 204 answers).
func (a *admin) done(raw json.RawMessage, format string, args ...any) error {
	return a.show(raw, func() error {
		_, err := fmt.Fprintf(a.g.stdout, format+"\n", args...)
		return err
	})
}

// call sends a JSON request and returns the raw answer, also decoded into out (if not nil).
func (a *admin) call(ctx context.Context, method, path string, query map[string][]string, in, out any) (json.RawMessage, error) {
	var raw json.RawMessage
	if err := a.cl.JSON(ctx, method, path, query, in, &raw); err != nil {
		return nil, err
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s %s: the answer is not the JSON expected: %v", method, path, err)
		}
	}
	return raw, nil
}

// table writes rows under a header, columns aligned.
func (a *admin) table(header []string, rows [][]string) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintln(a.g.stdout, "(none)")
		return err
	}
	tw := tabwriter.NewWriter(a.g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		for i := range r {
			r[i] = oneLine(r[i])
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// fields writes "key: value" lines, keys aligned; empty values are left out.
func (a *admin) fields(kv [][2]string) error {
	tw := tabwriter.NewWriter(a.g.stdout, 0, 0, 1, ' ', 0)
	for _, p := range kv {
		if p[1] == "" {
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\n", p[0], oneLine(p[1]))
	}
	return tw.Flush()
}

func oneLine(s string) string {
	s = strings.NewReplacer("\n", " ", "\r", " ", "\t", " ").Replace(s)
	if s == "" {
		return "-"
	}
	return s
}

// fmtEps prints epsilon as a person writes it: 1.5, 0.25, 10.
func fmtEps(eps float64) string { return strconv.FormatFloat(eps, 'f', -1, 64) }

// fmtMicro prints micro-epsilon as epsilon.
func fmtMicro(micro int64) string { return fmtEps(float64(micro) / 1e6) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func fmtBool(b *bool) string {
	if b == nil {
		return "default"
	}
	if *b {
		return "yes"
	}
	return "no"
}

// readPassword reads a password: on a terminal with a prompt and no echo,
// else the first line of standard input.
func (g *globals) readPassword(prompt string) (string, error) {
	if f, ok := g.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(g.stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(g.stderr)
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
	line, err := bufio.NewReaderSize(io.LimitReader(g.stdin, 4096), 4096).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", usagef("no password on standard input (give it on the first line)")
	}
	return pw, nil
}

// loginResponse is POST /api/v1/auth/login's answer.
type loginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	User      apiUser   `json:"user"`
}

// login logs in and saves the token as the current gateway's.
func (a *admin) login(ctx context.Context, email, password string) (json.RawMessage, *loginResponse, error) {
	var lr loginResponse
	raw, err := a.call(ctx, http.MethodPost, "/api/v1/auth/login", nil, map[string]string{"email": email, "password": password}, &lr)
	if err != nil {
		return nil, nil, err
	}
	if lr.Token == "" {
		return nil, nil, errors.New("the gateway's login answer has no token")
	}
	a.creds.Gateways[a.cl.BaseURL] = adminclient.Login{Token: lr.Token, Email: lr.User.Email, ExpiresAt: lr.ExpiresAt}
	a.creds.Current = a.cl.BaseURL
	if err := a.creds.Save(a.credPath); err != nil {
		return nil, nil, fmt.Errorf("logged in, but the token could not be saved: %w", err)
	}
	// The token is the caller's secret: --json shows everything but it.
	var doc map[string]json.RawMessage
	if json.Unmarshal(raw, &doc) == nil {
		delete(doc, "token")
		doc["saved_in"], _ = json.Marshal(a.credPath)
		raw, _ = json.Marshal(doc)
	}
	return raw, &lr, nil
}

func admSetupCmd(g *globals, af *adminFlags) *cobra.Command {
	var email, name, setupToken string
	c := admLeaf(g, af, "setup", "create the Owner account of a new gateway (once), then log in as it", cobra.NoArgs, false,
		func(ctx context.Context, a *admin, _ []string) error {
			if email == "" {
				return usagef("--email is required")
			}
			if setupToken == "" {
				return usagef("--setup-token is required: the gateway printed it at its first start (setup-token ...)")
			}
			pw, err := g.readPassword("password for the new Owner: ")
			if err != nil {
				return err
			}
			body := map[string]string{"email": email, "password": pw, "name": name, "setup_token": setupToken}
			if _, err := a.call(ctx, http.MethodPost, "/api/v1/setup", nil, body, nil); err != nil {
				return err
			}
			raw, lr, err := a.login(ctx, email, pw)
			if err != nil {
				return err
			}
			return a.done(raw, "created the Owner %s of %s and logged in (token in %s, valid until %s)",
				lr.User.Email, a.cl.BaseURL, a.credPath, fmtTime(lr.ExpiresAt))
		})
	c.Flags().StringVar(&email, "email", "", "the Owner's email (required)")
	c.Flags().StringVar(&name, "name", "", "the Owner's display name")
	c.Flags().StringVar(&setupToken, "setup-token", "", "the one-time setup token the gateway printed at its first start (required)")
	c.Long = c.Short + ".\n\nThe password is read from standard input (a prompt on a terminal)."
	return c
}

func admLoginCmd(g *globals, af *adminFlags) *cobra.Command {
	var email string
	c := admLeaf(g, af, "login", "log in to a gateway and keep the token for the next commands", cobra.NoArgs, false,
		func(ctx context.Context, a *admin, _ []string) error {
			if email == "" {
				return usagef("--email is required")
			}
			pw, err := g.readPassword("password for " + email + ": ")
			if err != nil {
				return err
			}
			raw, lr, err := a.login(ctx, email, pw)
			if err != nil {
				return err
			}
			return a.done(raw, "logged in to %s as %s (%s); token in %s, valid until %s",
				a.cl.BaseURL, lr.User.Email, lr.User.Role, a.credPath, fmtTime(lr.ExpiresAt))
		})
	c.Flags().StringVar(&email, "email", "", "your email (required)")
	c.Long = c.Short + ".\n\nThe password is read from standard input (a prompt on a terminal). The token is\nkept in fedgrid/admin.json under your configuration directory, mode 0600."
	return c
}

func admLogoutCmd(g *globals, af *adminFlags) *cobra.Command {
	return admLeaf(g, af, "logout", "revoke every token of your account on the gateway and forget it here", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			if _, err := a.call(ctx, http.MethodPost, "/api/v1/auth/logout", nil, nil, nil); err != nil && adminclient.StatusOf(err) != http.StatusUnauthorized {
				return err
			}
			delete(a.creds.Gateways, a.cl.BaseURL)
			if a.creds.Current == a.cl.BaseURL {
				a.creds.Current = ""
			}
			if err := a.creds.Save(a.credPath); err != nil {
				return err
			}
			return a.done(nil, "logged out of %s", a.cl.BaseURL)
		})
}

// apiStatus is GET /api/v1/status's answer.
type apiStatus struct {
	Name      string   `json:"name"`
	PeerID    string   `json:"peer_id"`
	Addrs     []string `json:"addrs"`
	SetupDone bool     `json:"setup_done"`
}

func admStatusCmd(g *globals, af *adminFlags) *cobra.Command {
	return admLeaf(g, af, "status", "the gateway's name, peer ID, addresses, whether setup is done, and who you are logged in as", cobra.NoArgs, false,
		func(ctx context.Context, a *admin, _ []string) error {
			var st apiStatus
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/status", nil, nil, &st)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				who := "(not logged in)"
				if l, ok := a.creds.Gateways[a.cl.BaseURL]; ok {
					who = l.Email
				}
				setup := "done"
				if !st.SetupDone {
					setup = "not done: run fedgrid admin setup"
				}
				return a.fields([][2]string{{"gateway", a.cl.BaseURL}, {"name", st.Name}, {"peer", st.PeerID},
					{"addrs", strings.Join(st.Addrs, " ")}, {"setup", setup}, {"logged in as", who}})
			})
		})
}
