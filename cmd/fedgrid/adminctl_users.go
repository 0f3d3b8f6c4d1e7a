package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedgrid/fedgrid/adminclient"
)

// apiUser is a user as the API shows it.
type apiUser struct {
	ID               string    `json:"id"`
	Email            string    `json:"email"`
	Name             string    `json:"name"`
	Role             string    `json:"role"`
	PeerID           string    `json:"peer_id"`
	BudgetMicroEps   int64     `json:"budget_micro_eps"`
	ReservedMicroEps int64     `json:"reserved_micro_eps"`
	SpentMicroEps    int64     `json:"spent_micro_eps"`
	CreatedAt        time.Time `json:"created_at"`
	Permissions      []string  `json:"permissions"`
}

func (u *apiUser) fields() [][2]string {
	return [][2]string{{"id", u.ID}, {"email", u.Email}, {"name", u.Name}, {"role", u.Role}, {"peer", u.PeerID},
		{"budget", fmtMicro(u.BudgetMicroEps) + " epsilon"}, {"reserved", fmtMicro(u.ReservedMicroEps) + " epsilon"},
		{"spent", fmtMicro(u.SpentMicroEps) + " epsilon"}, {"created", fmtTime(u.CreatedAt)},
		{"permissions", strings.Join(u.Permissions, ", ")}}
}

// userID takes a user's ID or email; an email is looked up in the user list.
func (a *admin) userID(ctx context.Context, ref string) (string, error) {
	if !strings.Contains(ref, "@") {
		return ref, nil
	}
	var list struct {
		Users []apiUser `json:"users"`
	}
	if _, err := a.call(ctx, http.MethodGet, "/api/v1/users", nil, nil, &list); err != nil {
		return "", err
	}
	for _, u := range list.Users {
		if strings.EqualFold(u.Email, ref) {
			return u.ID, nil
		}
	}
	return "", fmt.Errorf("no user with the email %s on %s", ref, a.cl.BaseURL)
}

func admUsersCmd(g *globals, af *adminFlags) *cobra.Command {
	list := admLeaf(g, af, "list", "list the users", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			var out struct {
				Users []apiUser `json:"users"`
			}
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/users", nil, nil, &out)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				rows := make([][]string, 0, len(out.Users))
				for _, u := range out.Users {
					rows = append(rows, []string{u.ID, u.Email, u.Name, u.Role, fmtMicro(u.BudgetMicroEps), fmtMicro(u.ReservedMicroEps), fmtMicro(u.SpentMicroEps), u.PeerID})
				}
				return a.table([]string{"ID", "EMAIL", "NAME", "ROLE", "BUDGET", "RESERVED", "SPENT", "PEER"}, rows)
			})
		})

	show := admLeaf(g, af, "show USER", "show a user (by ID or email)", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			id, err := a.userID(ctx, args[0])
			if err != nil {
				return err
			}
			var u apiUser
			raw, err := a.call(ctx, http.MethodGet, "/api/v1/users/"+adminclient.PathEscape(id), nil, nil, &u)
			if err != nil {
				return err
			}
			return a.show(raw, func() error { return a.fields(u.fields()) })
		})

	var nu struct {
		email, name, role, peer string
		budget                  float64
	}
	create := admLeaf(g, af, "create", "create a user; their password is read from standard input", cobra.NoArgs, true,
		func(ctx context.Context, a *admin, _ []string) error {
			if nu.email == "" {
				return usagef("--email is required")
			}
			if nu.budget < 0 {
				return usagef("--budget must not be negative")
			}
			pw, err := g.readPassword("password for " + nu.email + ": ")
			if err != nil {
				return err
			}
			body := map[string]any{"email": nu.email, "password": pw, "name": nu.name, "role": nu.role, "peer_id": nu.peer}
			if nu.budget > 0 {
				body["budget_epsilon"] = nu.budget
			}
			var u apiUser
			raw, err := a.call(ctx, http.MethodPost, "/api/v1/users", nil, body, &u)
			if err != nil {
				return err
			}
			return a.show(raw, func() error {
				fmt.Fprintf(a.g.stdout, "created user %s\n", u.Email)
				return a.fields(u.fields())
			})
		})
	create.Flags().StringVar(&nu.email, "email", "", "their email, which they log in with (required)")
	create.Flags().StringVar(&nu.name, "name", "", "their display name")
	create.Flags().StringVar(&nu.role, "role", "", `their role, e.g. "Data Scientist", "Compliance Officer", "Administrator" (default: the gateway's)`)
	create.Flags().StringVar(&nu.peer, "peer-id", "", "a data scientist's peer ID (fedgrid keygen or fedgrid whoami prints it)")
	create.Flags().Float64Var(&nu.budget, "budget", 0, "their privacy budget in epsilon")

	var delta float64
	var reason string
	budget := admLeaf(g, af, "budget USER", "add privacy budget to a user (or, negative, take it away)", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			if delta == 0 {
				return usagef("--add EPSILON is required (negative takes budget away)")
			}
			id, err := a.userID(ctx, args[0])
			if err != nil {
				return err
			}
			var u apiUser
			raw, err := a.call(ctx, http.MethodPost, "/api/v1/users/"+adminclient.PathEscape(id)+"/budget", nil,
				map[string]any{"delta_epsilon": delta, "reason": reason}, &u)
			if err != nil {
				return err
			}
			return a.done(raw, "%s now has a budget of %s epsilon (%s reserved, %s spent)", u.Email,
				fmtMicro(u.BudgetMicroEps), fmtMicro(u.ReservedMicroEps), fmtMicro(u.SpentMicroEps))
		})
	budget.Flags().Float64Var(&delta, "add", 0, "epsilon to add; negative takes away (required)")
	budget.Flags().StringVar(&reason, "reason", "", "why, for the ledger and the audit log")

	var capEps float64
	var noCap bool
	caps := admLeaf(g, af, "caps USER DATASET", "cap what a user may spend on one dataset (by dataset ID or name)", cobra.ExactArgs(2), true,
		func(ctx context.Context, a *admin, args []string) error {
			if !noCap && capEps < 0 {
				return usagef("--epsilon must not be negative (use --none to remove the cap)")
			}
			id, err := a.userID(ctx, args[0])
			if err != nil {
				return err
			}
			ds, err := a.datasetID(ctx, args[1])
			if err != nil {
				return err
			}
			v := capEps
			if noCap {
				v = -1
			}
			var cp struct {
				CapMicroEps  int64 `json:"cap_micro_eps"`
				UsedMicroEps int64 `json:"used_micro_eps"`
			}
			raw, err := a.call(ctx, http.MethodPut, "/api/v1/users/"+adminclient.PathEscape(id)+"/caps/"+adminclient.PathEscape(ds), nil,
				map[string]any{"cap_epsilon": v}, &cp)
			if err != nil {
				return err
			}
			if cp.CapMicroEps < 0 {
				return a.done(raw, "no cap on dataset %s for %s (%s epsilon used)", ds, args[0], fmtMicro(cp.UsedMicroEps))
			}
			return a.done(raw, "cap on dataset %s for %s: %s epsilon (%s used)", ds, args[0], fmtMicro(cp.CapMicroEps), fmtMicro(cp.UsedMicroEps))
		})
	caps.Flags().Float64Var(&capEps, "epsilon", 0, "the cap in epsilon")
	caps.Flags().BoolVar(&noCap, "none", false, "remove the cap")
	caps.PreRunE = func(cmd *cobra.Command, _ []string) error {
		if noCap == cmd.Flags().Changed("epsilon") {
			return usagef("give either --epsilon EPSILON or --none")
		}
		return nil
	}

	role := admLeaf(g, af, "role USER ROLE", "change a user's role", cobra.ExactArgs(2), true,
		func(ctx context.Context, a *admin, args []string) error {
			id, err := a.userID(ctx, args[0])
			if err != nil {
				return err
			}
			var u apiUser
			raw, err := a.call(ctx, http.MethodPatch, "/api/v1/users/"+adminclient.PathEscape(id), nil, map[string]any{"role": args[1]}, &u)
			if err != nil {
				return err
			}
			return a.done(raw, "%s is now %s", u.Email, u.Role)
		})

	del := admLeaf(g, af, "delete USER", "delete a user (their tokens are revoked)", cobra.ExactArgs(1), true,
		func(ctx context.Context, a *admin, args []string) error {
			id, err := a.userID(ctx, args[0])
			if err != nil {
				return err
			}
			raw, err := a.call(ctx, http.MethodDelete, "/api/v1/users/"+adminclient.PathEscape(id), nil, nil, nil)
			if err != nil {
				return err
			}
			return a.done(raw, "deleted user %s", args[0])
		})

	return groupCmd("users", "list, create, change and delete the gateway's users", list, show, create, budget, caps, role, del)
}
