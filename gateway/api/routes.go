package api

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/ingest"
	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/sources"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

func (a *API) routeTable() []*route {
	const (
		get, post, patch, put, del = http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodPut, http.MethodDelete
	)
	return []*route{
		{method: get, path: "/healthz", summary: "Liveness", access: accessAnyone, status: 200, resp: HealthResponse{}, handle: a.health},
		{method: get, path: "/api/v1/status", summary: "Name, peer ID, addresses and whether setup is done", access: accessAnyone, status: 200, resp: StatusResponse{}, handle: a.status},
		{method: get, path: "/api/v1/openapi.json", summary: "This document", access: accessAnyone, status: 200, resp: map[string]any{}, handle: a.openAPIHandler},
		{method: post, path: "/api/v1/setup", summary: "Create the Owner account (once), with the one-time setup_token the gateway printed on its first start", access: accessAnyone, req: SetupRequest{}, status: 201, resp: UserView{}, handle: a.setup},
		{method: post, path: "/api/v1/auth/login", summary: "Exchange email and password for a bearer token", access: accessPublic, req: LoginRequest{}, status: 200, resp: LoginResponse{}, handle: a.login},
		{method: post, path: "/api/v1/auth/logout", summary: "Revoke every token of the caller's account", access: accessUser, status: 204, handle: a.logout},
		{method: get, path: "/api/v1/auth/me", summary: "The caller's account and permissions", access: accessUser, status: 200, resp: UserView{}, handle: a.me},

		{method: get, path: "/api/v1/users", summary: "List users", access: accessPerm, perm: store.PermCreateUsers, status: 200, resp: UserList{}, handle: a.listUsers},
		{method: post, path: "/api/v1/users", summary: "Create a user", access: accessPerm, perm: store.PermCreateUsers, req: CreateUserRequest{}, status: 201, resp: UserView{}, handle: a.createUser},
		{method: get, path: "/api/v1/users/{id}", summary: "Get a user", access: accessPerm, perm: store.PermCreateUsers, status: 200, resp: UserView{}, handle: a.getUser},
		{method: patch, path: "/api/v1/users/{id}", summary: "Change a user (a new password revokes their tokens)", access: accessPerm, perm: store.PermCreateUsers, req: PatchUserRequest{}, status: 200, resp: UserView{}, handle: a.patchUser},
		{method: del, path: "/api/v1/users/{id}", summary: "Delete a user (revokes their tokens)", access: accessPerm, perm: store.PermCreateUsers, status: 204, handle: a.deleteUser},
		{method: post, path: "/api/v1/users/{id}/budget", summary: "Add (or take away) privacy budget", access: accessPerm, perm: store.PermManagePrivacyBudget, req: BudgetRequest{}, status: 200, resp: UserView{}, handle: a.adjustBudget},
		{method: put, path: "/api/v1/users/{id}/caps/{dataset_id}", summary: "Cap what a user may spend on one dataset (negative: no cap)", access: accessPerm, perm: store.PermManagePrivacyBudget, req: CapRequest{}, status: 200, resp: store.DatasetCap{}, handle: a.putCap},
		{method: get, path: "/api/v1/users/{id}/ledger", summary: "A user's budget movements", access: accessPerm, perm: store.PermManagePrivacyBudget, status: 200, resp: LedgerResponse{}, handle: a.ledger},

		{method: get, path: "/api/v1/roles", summary: "List roles", access: accessPerm, perm: store.PermEditRoles, status: 200, resp: RoleList{}, handle: a.listRoles},
		{method: post, path: "/api/v1/roles", summary: "Create a custom role", access: accessPerm, perm: store.PermEditRoles, req: RoleRequest{}, status: 201, resp: store.Role{}, handle: a.createRole},
		{method: patch, path: "/api/v1/roles/{name}", summary: "Change a role's permissions", access: accessPerm, perm: store.PermEditRoles, req: PatchRoleRequest{}, status: 200, resp: store.Role{}, handle: a.patchRole},
		{method: del, path: "/api/v1/roles/{name}", summary: "Delete a role no user holds", access: accessPerm, perm: store.PermEditRoles, status: 204, handle: a.deleteRole},

		{method: get, path: "/api/v1/datasets", summary: "List datasets (optionally ?tag=a&tag=b)", access: accessUser, query: []param{{"tag", "keep datasets carrying every given tag"}}, status: 200, resp: DatasetList{}, handle: a.listDatasets},
		{method: post, path: "/api/v1/datasets", summary: "Upload a CSV dataset (multipart/form-data)", access: accessPerm, perm: store.PermUploadData, multipart: true, req: UploadForm{}, status: 201, resp: store.Dataset{}, handle: a.uploadDataset},
		{method: get, path: "/api/v1/datasets/{id}", summary: "Get a dataset's description", access: accessUser, status: 200, resp: DatasetView{}, handle: a.getDataset},
		{method: get, path: "/api/v1/datasets/{id}/preview", summary: "Synthetic preview rows drawn from per-column marginals (noised for private data); never real rows", access: accessUser, query: []param{{"rows", "how many rows, 1 to 20 (default 5)"}}, status: 200, resp: wire.CatalogPreview{}, handle: a.previewDataset},
		{method: patch, path: "/api/v1/datasets/{id}", summary: "Change a dataset's name, description, tags or visibility", access: accessPerm, perm: store.PermUploadData, req: PatchDatasetRequest{}, status: 200, resp: store.Dataset{}, handle: a.patchDataset},
		{method: del, path: "/api/v1/datasets/{id}", summary: "Delete a dataset", access: accessPerm, perm: store.PermUploadData, status: 204, handle: a.deleteDataset},
		{method: get, path: "/api/v1/datasets/{id}/overrides", summary: "A dataset's per-user overrides", access: accessPerm, perm: store.PermUploadData, status: 200, resp: OverrideList{}, handle: a.listOverrides},
		{method: put, path: "/api/v1/datasets/{id}/overrides/{user_id}", summary: "Set whether a user may train on a dataset and whether their results skip review", access: accessPerm, perm: store.PermUploadData, req: OverrideRequest{}, status: 200, resp: store.Override{}, handle: a.putOverride},

		{method: post, path: "/api/v1/uploads", summary: "Start a resumable upload of a CSV or Parquet file of any size (up to the gateway's limit and free disk): a new dataset, or with dataset_id a new version of one. Send the bytes with PATCH, then finish", access: accessPerm, perm: store.PermUploadData, req: CreateUploadRequest{}, status: 201, resp: UploadView{}, handle: a.createUpload},
		{method: get, path: "/api/v1/uploads", summary: "Your uploads, oldest first (unfinished ones can be resumed from their offset, or cancelled)", access: accessPerm, perm: store.PermUploadData, status: 200, resp: UploadList{}, handle: a.listUploads},
		{method: get, path: "/api/v1/uploads/{id}", summary: "One of your uploads: how many bytes it has received (offset, also in the Upload-Offset header), its state and, once finished, the dataset version it became", access: accessPerm, perm: store.PermUploadData, status: 200, resp: UploadView{}, handle: a.getUpload},
		{method: patch, path: "/api/v1/uploads/{id}", summary: "Append one chunk (application/offset+octet-stream, at most chunk_max_bytes) starting at ?offset=, which must be the bytes received so far (409 offset_mismatch says the right one). A cut chunk keeps what arrived", access: accessPerm, perm: store.PermUploadData, chunk: true, query: []param{{"offset", "required: where this chunk starts, the upload's offset"}}, status: 200, resp: UploadView{}, handle: a.sendChunk},
		{method: post, path: "/api/v1/uploads/{id}/finish", summary: "Check the upload's size (and SHA-256 when given) and store its bytes as a dataset version; asked again, returns the same dataset", access: accessPerm, perm: store.PermUploadData, req: FinishUploadRequest{}, optional: true, status: 201, resp: store.Dataset{}, handle: a.finishUpload},
		{method: del, path: "/api/v1/uploads/{id}", summary: "Cancel an upload and delete the bytes it received", access: accessPerm, perm: store.PermUploadData, status: 204, handle: a.cancelUpload},
		{method: get, path: "/api/v1/sources", summary: "List dataset sources: where the gateway reads datasets itself (URL without password, table or query, schedule, last snapshot and error)", access: accessPerm, perm: store.PermUploadData, status: 200, resp: SourceList{}, handle: a.listSources},
		{method: post, path: "/api/v1/sources", summary: "Register a PostgreSQL table or read-only query, or a CSV or Parquet file on the gateway's host under a directory its operator allowed (file:///path), as a dataset: the gateway takes its first snapshot (version 1) now, and later ones on demand or on the schedule", access: accessPerm, perm: store.PermUploadData, req: SourceRequest{}, status: 201, resp: SourceSnapshot{}, handle: a.createSource},
		{method: get, path: "/api/v1/datasets/{id}/source", summary: "A dataset's source (404 for an uploaded dataset)", access: accessPerm, perm: store.PermUploadData, status: 200, resp: store.DatasetSource{}, handle: a.getSource},
		{method: patch, path: "/api/v1/datasets/{id}/source", summary: "Change how often the gateway snapshots a dataset's source (0: on demand only)", access: accessPerm, perm: store.PermUploadData, req: PatchSourceRequest{}, status: 200, resp: store.DatasetSource{}, handle: a.patchSource},
		{method: post, path: "/api/v1/datasets/{id}/snapshot", summary: "Snapshot a dataset's source now: a new version when the data changed, else the same version (502 source_failed: the source could not be read; the source records the error)", access: accessPerm, perm: store.PermUploadData, status: 200, resp: SourceSnapshot{}, handle: a.snapshotSource},

		{method: get, path: "/api/v1/models", summary: "List hosted models (descriptions, never weights), newest first; a plan names one with \"model\": \"<id>\"", access: accessUser, status: 200, resp: ModelList{}, handle: a.listModels},
		{method: post, path: "/api/v1/models", summary: "Host a model (multipart/form-data: file = a fedgrid.model/v1 JSON document, name, description); data scientists train it by naming its ID in a plan", access: accessPerm, perm: store.PermUploadData, multipart: true, req: ModelUploadForm{}, status: 201, resp: store.HostedModel{}, handle: a.uploadModel},
		{method: get, path: "/api/v1/models/{id}", summary: "Get a hosted model's description (never its weights)", access: accessUser, status: 200, resp: store.HostedModel{}, handle: a.getModel},
		{method: del, path: "/api/v1/models/{id}", summary: "Delete a hosted model (jobs already submitted keep their copy of its weights)", access: accessPerm, perm: store.PermUploadData, status: 204, handle: a.deleteModel},

		{method: get, path: "/api/v1/jobs", summary: "List jobs (all with can_triage_requests, else your own), newest first", access: accessJobOwner, query: []param{{"state", "queued, running, succeeded, failed or cancelled"}, {"user_id", "only this user's jobs"}, {"limit", "at most this many jobs (1 to 1000; default: all)"}, {"cursor", "the next_cursor of the previous page"}}, status: 200, resp: JobList{}, handle: a.listJobs},
		{method: get, path: "/api/v1/jobs/{id}", summary: "Get a job", access: accessJobOwner, status: 200, resp: JobView{}, handle: a.getJob},
		{method: post, path: "/api/v1/jobs/{id}/cancel", summary: "Cancel a queued or running job", access: accessJobOwner, status: 200, resp: JobView{}, handle: a.cancelJob},

		{method: get, path: "/api/v1/requests", summary: "The review queue and its history, newest first: release, budget and permission requests (all with can_triage_requests, else your own, without reviewer or unreleased metrics); pending ones carry the requester's history", access: accessUser, query: []param{{"state", "pending, approved or denied"}, {"kind", "release, budget or permission"}, {"user", "only this user's requests (user ID)"}, {"dataset", "only requests on this dataset ID"}, {"job", "only the release request of this job ID"}}, status: 200, resp: RequestList{}, handle: a.listRequests},
		{method: get, path: "/api/v1/requests/{id}", summary: "One request with everything needed to decide it (plan table, metrics, epsilon, guarantee, requester's history); your own, or any with can_triage_requests", access: accessUser, status: 200, resp: RequestView{}, handle: a.getRequest},
		{method: post, path: "/api/v1/requests/{id}/approve", summary: "Approve a pending request: a release commits its reserved epsilon and releases the result to the requester alone; budget (also needs can_manage_privacy_budget) grants it; permission sets the override. Decided once: 409 after", access: accessPerm, perm: store.PermTriageRequests, req: DecideRequest{}, optional: true, status: 200, resp: RequestView{}, handle: a.approveRequest},
		{method: post, path: "/api/v1/requests/{id}/deny", summary: "Deny a pending request with a reason (required); a release's reserved epsilon is refunded, nothing is charged", access: accessPerm, perm: store.PermTriageRequests, req: DecideRequest{}, status: 200, resp: RequestView{}, handle: a.denyRequest},

		{method: get, path: "/api/v1/rules", summary: "Approval rules: auto-approve DP-SGD releases on datasets carrying every tag, for the roles, up to max epsilon each, quota times, until expiry", access: accessPerm, perm: store.PermEditSettings, status: 200, resp: RuleList{}, handle: a.listRules},
		{method: post, path: "/api/v1/rules", summary: "Create an approval rule (tags required; matches owner-set dataset tags and the requester's role, never requester-chosen names)", access: accessPerm, perm: store.PermEditSettings, req: RuleRequest{}, status: 201, resp: RuleView{}, handle: a.createRule},
		{method: get, path: "/api/v1/rules/{id}", summary: "Get an approval rule", access: accessPerm, perm: store.PermEditSettings, status: 200, resp: RuleView{}, handle: a.getRule},
		{method: patch, path: "/api/v1/rules/{id}", summary: "Change an approval rule (its used count stays)", access: accessPerm, perm: store.PermEditSettings, req: PatchRuleRequest{}, status: 200, resp: RuleView{}, handle: a.patchRule},
		{method: del, path: "/api/v1/rules/{id}", summary: "Delete an approval rule (its past decisions stay in the history)", access: accessPerm, perm: store.PermEditSettings, status: 204, handle: a.deleteRule},

		{method: get, path: "/api/v1/nodes", summary: "List enrolled nodes", access: accessPerm, perm: store.PermManageInfrastructure, status: 200, resp: NodeList{}, handle: a.listNodes},
		{method: post, path: "/api/v1/nodes/join-tokens", summary: "Make a single-use node join token", access: accessPerm, perm: store.PermManageInfrastructure, req: JoinTokenRequest{}, optional: true, status: 201, resp: JoinTokenResponse{}, handle: a.joinToken},
		{method: del, path: "/api/v1/nodes/{peer_id}", summary: "Remove a node", access: accessPerm, perm: store.PermManageInfrastructure, status: 204, handle: a.removeNode},

		{method: get, path: "/api/v1/audit", summary: "The audit log, in chain order", access: accessPerm, perm: store.PermEditSettings, query: []param{{"after", "only entries with a greater seq"}, {"limit", "at most this many (default 100, max 1000)"}, {"action", "an action, or a prefix ending in '.'"}}, status: 200, resp: AuditList{}, handle: a.listAudit},
		{method: get, path: "/api/v1/audit/verify", summary: "Check the audit hash chain (409 audit_broken names the first bad entry)", access: accessPerm, perm: store.PermEditSettings, status: 200, resp: AuditVerifyResponse{}, handle: a.verifyAudit},
		{method: get, path: "/api/v1/settings", summary: "White-label settings of the admin app (name, logo, colour)", access: accessPublic, status: 200, resp: store.Settings{}, handle: a.getSettings},
		{method: put, path: "/api/v1/settings", summary: "Change the white-label settings", access: accessPerm, perm: store.PermEditSettings, req: store.Settings{}, status: 200, resp: store.Settings{}, handle: a.putSettings},
		{method: get, path: "/api/v1/settings/federation", summary: "This gateway's rules for federations across gateways (whether a federation may run here without secure aggregation)", access: accessPerm, perm: store.PermEditSettings, status: 200, resp: store.FederationSettings{}, handle: a.getFedSettings},
		{method: put, path: "/api/v1/settings/federation", summary: "Change the federation rules (allow_plain_updates: let a federation that asks for it receive this gateway's updates unmasked; off by default)", access: accessPerm, perm: store.PermEditSettings, req: store.FederationSettings{}, status: 200, resp: store.FederationSettings{}, handle: a.putFedSettings},
		{method: get, path: "/api/v1/settings/sources", summary: "The hosts a PostgreSQL source registered by anyone but the Owner may name (HOST, HOST:PORT, IP, IP:PORT or CIDR; empty: only the Owner may register PostgreSQL sources)", access: accessPerm, perm: store.PermUploadData, status: 200, resp: store.SourceSettings{}, handle: a.getSourceSettings},
		{method: put, path: "/api/v1/settings/sources", summary: "Replace the allowed source hosts (the Owner, or a role with can_manage_infrastructure): the gateway connects to a user's PostgreSQL source only on a host listed here, checked at registration and at each snapshot", access: accessPerm, perm: store.PermManageInfrastructure, req: store.SourceSettings{}, status: 200, resp: store.SourceSettings{}, handle: a.putSourceSettings},
	}
}

func (a *API) health(*call) (any, error) { return HealthResponse{Status: "ok"}, nil }

func (a *API) status(*call) (any, error) {
	done, err := a.isSetupDone()
	if err != nil {
		return nil, err
	}
	st := StatusResponse{Name: a.cfg.Name, Addrs: []string{}, SetupDone: done}
	if a.cfg.PeerID != nil {
		st.PeerID = a.cfg.PeerID()
	}
	if a.cfg.Addrs != nil {
		if addrs := a.cfg.Addrs(); addrs != nil {
			st.Addrs = addrs
		}
	}
	return st, nil
}

func (a *API) setup(c *call) (any, error) {
	var req SetupRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	if done, err := a.isSetupDone(); err != nil {
		return nil, err
	} else if done {
		return nil, store.ErrSetupDone
	}
	if a.cfg.SetupToken == "" || subtle.ConstantTimeCompare([]byte(req.SetupToken), []byte(a.cfg.SetupToken)) != 1 {
		return nil, errorf(http.StatusForbidden, "bad_setup_token", "setup_token is missing or wrong: give the one-time token this gateway printed on its first start (the setup-token line of its output)")
	}
	u, err := a.st.Setup(req.Email, req.Password, req.Name)
	if err != nil {
		return nil, err
	}
	a.setupDone.Store(true)
	a.log.Info("setup done", "owner", u.ID)
	return userView(u), nil
}

func clientAddr(r *http.Request) string {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		host = host[:i]
	}
	return host
}

// loginLimits are the throttle keys of a login attempt: the (client, account)
// pair first, then the account from any address, then the client across accounts.
func (a *API) loginLimits(client, email string) []limit {
	acct := strings.ToLower(strings.TrimSpace(email))
	n := a.cfg.LoginMaxFailures
	return []limit{{client + "|" + acct, n}, {"\x00account|" + acct, 2 * n}, {client, 10 * n}}
}

func (a *API) login(c *call) (any, error) {
	var req LoginRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	limits := a.loginLimits(clientAddr(c.r), req.Email)
	at, wait := a.throttle.take(limits...)
	if wait > 0 {
		secs := int(math.Ceil(wait.Seconds()))
		c.w.Header().Set("Retry-After", strconv.Itoa(secs))
		return nil, errorf(http.StatusTooManyRequests, "too_many_attempts", "too many failed logins; try again in %d s", secs)
	}
	tok, exp, u, err := a.st.Login(req.Email, req.Password, a.cfg.TokenTTL)
	if errors.Is(err, store.ErrBusy) {
		// Not evaluated: the attempt does not count.
		a.throttle.giveBack(at, limits...)
		c.w.Header().Set("Retry-After", "1")
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	a.throttle.giveBack(at, limits...)
	a.throttle.reset(limits[0].key)
	return LoginResponse{Token: tok, ExpiresAt: exp, User: userView(u)}, nil
}

func (a *API) logout(c *call) (any, error) {
	return nil, a.st.RevokeTokens(c.user.ID, c.actor())
}

func (a *API) me(c *call) (any, error) {
	v := userView(c.user)
	perms, err := a.st.Permissions(c.user.ID)
	if err != nil {
		return nil, err
	}
	v.Permissions = make([]string, len(perms))
	for i, p := range perms {
		v.Permissions[i] = string(p)
	}
	return v, nil
}

// ---- users

func (a *API) listUsers(*call) (any, error) {
	us, err := a.st.Users()
	if err != nil {
		return nil, err
	}
	out := UserList{Users: make([]UserView, 0, len(us))}
	for _, u := range us {
		out.Users = append(out.Users, userView(u))
	}
	return out, nil
}

// epsToMicro turns an epsilon a person gave in field into micro-epsilon,
// rounded to the nearest (an amount given, never a charge).
func epsToMicro(field string, eps float64, allowNegative bool) (int64, error) {
	if err := wire.CheckEpsilon(eps, allowNegative); err != nil {
		return 0, badField(field, "%v", err)
	}
	return int64(wire.MicroEpsNearest(eps)), nil
}

func validPeerID(field, s string) error {
	if s == "" {
		return nil
	}
	if _, err := peer.Decode(s); err != nil {
		return badField(field, "not a libp2p peer ID")
	}
	return nil
}

func (a *API) createUser(c *call) (any, error) {
	var req CreateUserRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	if err := validPeerID("peer_id", req.PeerID); err != nil {
		return nil, err
	}
	nu := store.NewUser{Email: req.Email, Password: req.Password, Name: req.Name, Role: req.Role, PeerID: req.PeerID, Actor: c.actor()}
	if nu.Role == "" {
		nu.Role = store.RoleDataScientist
	}
	if req.BudgetEpsilon != nil {
		m, err := epsToMicro("budget_epsilon", *req.BudgetEpsilon, false)
		if err != nil {
			return nil, err
		}
		if m != 0 {
			if ok, err := c.can(store.PermManagePrivacyBudget); err != nil {
				return nil, err
			} else if !ok {
				return nil, errorf(http.StatusForbidden, "forbidden", "setting a budget needs %s", store.PermManagePrivacyBudget)
			}
		}
		nu.BudgetMicroEps = m
	}
	if err := a.st.AuthorizeManageUser(c.user.ID, "", nu.Role); err != nil {
		return nil, err
	}
	u, err := a.st.CreateUser(nu)
	if err != nil {
		return nil, err
	}
	return userView(u), nil
}

func (a *API) getUser(c *call) (any, error) {
	u, err := a.st.User(c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	return userView(u), nil
}

func (a *API) patchUser(c *call) (any, error) {
	var req PatchUserRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	id := c.r.PathValue("id")
	if req.PeerID != nil {
		if err := validPeerID("peer_id", *req.PeerID); err != nil {
			return nil, err
		}
	}
	upd := store.UserUpdate{Email: req.Email, Name: req.Name, Role: req.Role, PeerID: req.PeerID, Password: req.Password, Actor: c.actor()}
	if req.BudgetEpsilon != nil {
		m, err := epsToMicro("budget_epsilon", *req.BudgetEpsilon, false)
		if err != nil {
			return nil, err
		}
		if ok, err := c.can(store.PermManagePrivacyBudget); err != nil {
			return nil, err
		} else if !ok {
			return nil, errorf(http.StatusForbidden, "forbidden", "changing a budget needs %s", store.PermManagePrivacyBudget)
		}
		upd.BudgetMicroEps = &m
	}
	newRole := ""
	if req.Role != nil {
		newRole = *req.Role
	}
	if err := a.st.AuthorizeManageUser(c.user.ID, id, newRole); err != nil {
		return nil, err
	}
	u, err := a.st.UpdateUser(id, upd)
	if err != nil {
		return nil, err
	}
	return userView(u), nil
}

func (a *API) deleteUser(c *call) (any, error) {
	id := c.r.PathValue("id")
	if err := a.st.AuthorizeManageUser(c.user.ID, id, ""); err != nil {
		return nil, err
	}
	return nil, a.st.DeleteUser(id, c.actor())
}

func (a *API) adjustBudget(c *call) (any, error) {
	var req BudgetRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	m, err := epsToMicro("delta_epsilon", req.DeltaEpsilon, true)
	if err != nil {
		return nil, err
	}
	if m == 0 {
		return nil, badField("delta_epsilon", "must not be zero")
	}
	if len(req.Reason) > 1000 {
		return nil, badField("reason", "longer than 1000 characters")
	}
	u, err := a.st.GrantBudget(c.r.PathValue("id"), m, c.actor(), req.Reason)
	if err != nil {
		return nil, err
	}
	return userView(u), nil
}

func (a *API) putCap(c *call) (any, error) {
	var req CapRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	m := int64(-1)
	if req.CapEpsilon >= 0 {
		var err error
		if m, err = epsToMicro("cap_epsilon", req.CapEpsilon, false); err != nil {
			return nil, err
		}
	} else if _, err := epsToMicro("cap_epsilon", req.CapEpsilon, true); err != nil {
		return nil, err
	}
	uid, did := c.r.PathValue("id"), c.r.PathValue("dataset_id")
	if err := a.st.SetDatasetCap(uid, did, m, c.actor()); err != nil {
		return nil, err
	}
	return a.st.DatasetCapFor(uid, did)
}

func (a *API) ledger(c *call) (any, error) {
	u, err := a.st.User(c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	ms, err := a.st.Ledger(u.ID)
	if err != nil {
		return nil, err
	}
	if ms == nil {
		ms = []*store.Movement{}
	}
	return LedgerResponse{User: userView(u), Movements: ms}, nil
}

// ---- roles

func (a *API) listRoles(*call) (any, error) {
	rs, err := a.st.Roles()
	if err != nil {
		return nil, err
	}
	return RoleList{Roles: rs}, nil
}

func (a *API) createRole(c *call) (any, error) {
	var req RoleRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	if strings.TrimSpace(req.Name) == store.RoleOwner {
		return nil, errorf(http.StatusConflict, "exists", "role %q exists", store.RoleOwner)
	}
	return a.st.CreateRole(store.Role{Name: req.Name, Permissions: req.Permissions}, c.actor())
}

func (a *API) patchRole(c *call) (any, error) {
	var req PatchRoleRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	if req.Permissions == nil {
		return nil, badField("permissions", "required")
	}
	return a.st.UpdateRole(c.r.PathValue("name"), *req.Permissions, c.actor())
}

func (a *API) deleteRole(c *call) (any, error) {
	return nil, a.st.DeleteRole(c.r.PathValue("name"), c.actor())
}

// ---- datasets

func (a *API) listDatasets(c *call) (any, error) {
	var tags []string
	for _, t := range c.r.URL.Query()["tag"] {
		tags = append(tags, strings.Split(t, ",")...)
	}
	ds, err := a.st.DatasetsWithTags(tags)
	if err != nil {
		return nil, err
	}
	out := DatasetList{Datasets: make([]DatasetView, 0, len(ds))}
	for _, d := range ds {
		out.Datasets = append(out.Datasets, a.datasetView(d))
	}
	return out, nil
}

func (a *API) datasetView(d *store.Dataset) DatasetView {
	v := DatasetView{Dataset: d}
	if a.cfg.Hooks.IndexState != nil {
		ix := a.cfg.Hooks.IndexState(d.ID)
		v.Indexing = &ix
	}
	return v
}

func (a *API) previewDataset(c *call) (any, error) {
	n := 5
	if v := c.r.URL.Query().Get("rows"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > wire.MaxPreviewRows {
			return nil, errorf(http.StatusBadRequest, "invalid_field", "rows: must be a whole number from 1 to %d", wire.MaxPreviewRows)
		}
	}
	d, err := a.st.Dataset(c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	if a.cfg.Hooks.Preview == nil {
		return nil, errorf(http.StatusServiceUnavailable, "unavailable", "this server cannot draw previews")
	}
	return a.cfg.Hooks.Preview(d.ID, n)
}

func (a *API) getDataset(c *call) (any, error) {
	d, err := a.st.Dataset(c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	return a.datasetView(d), nil
}

func splitTags(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func (a *API) uploadDataset(c *call) (any, error) {
	up, err := readUpload(c, a.cfg.MaxUploadBytes, fmt.Sprintf("file larger than %d bytes", a.cfg.MaxUploadBytes), "the CSV file", "name", "tags", "description", "visibility")
	if err != nil {
		return nil, err
	}
	csv, fields, fileName := up.file, up.fields, up.fileName
	name := strings.TrimSpace(fields["name"])
	if name == "" && fileName != "" {
		name = strings.TrimSuffix(path.Base(fileName), path.Ext(fileName))
	}
	vis := strings.TrimSpace(fields["visibility"])
	if vis == "" {
		vis = store.VisibilityPrivate
	}
	d := &store.Dataset{Name: name, Description: fields["description"], Tags: splitTags(fields["tags"]), Visibility: vis,
		CreatedBy: c.actor()}
	if err := ingest.Dataset(c.r.Context(), a.st, d, bytes.NewReader(csv), dataset.Limits{MaxBytes: a.cfg.MaxUploadBytes}); err != nil {
		var bad *ingest.BadInputError
		if errors.As(err, &bad) {
			return nil, &httpError{status: http.StatusBadRequest, code: "bad_csv", message: "file: " + bad.Error()}
		}
		return nil, err
	}
	if a.cfg.Hooks.DatasetAdded != nil {
		a.cfg.Hooks.DatasetAdded(d)
	}
	return d, nil
}

func multipartError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "request body larger than %d bytes", mbe.Limit)
	}
	return errorf(http.StatusBadRequest, "bad_multipart", "malformed multipart body: %v", err)
}

func (a *API) patchDataset(c *call) (any, error) {
	var req PatchDatasetRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	d, err := a.st.UpdateDataset(c.r.PathValue("id"), store.DatasetUpdate{Name: req.Name, Description: req.Description,
		Tags: req.Tags, Visibility: req.Visibility, Actor: c.actor()})
	if err != nil {
		return nil, err
	}
	if a.cfg.Hooks.DatasetAdded != nil {
		a.cfg.Hooks.DatasetAdded(d)
	}
	return d, nil
}

func (a *API) deleteDataset(c *call) (any, error) {
	id := c.r.PathValue("id")
	d, err := a.st.Dataset(id)
	if err != nil {
		return nil, err
	}
	if err := a.st.DeleteDatasetBy(id, c.actor()); err != nil {
		return nil, err
	}
	if a.cfg.Hooks.DatasetRemoved != nil {
		a.cfg.Hooks.DatasetRemoved(d)
	}
	return nil, nil
}

func (a *API) listOverrides(c *call) (any, error) {
	id := c.r.PathValue("id")
	if _, err := a.st.Dataset(id); err != nil {
		return nil, err
	}
	os, err := a.st.Overrides(id)
	if err != nil {
		return nil, err
	}
	if os == nil {
		os = []*store.Override{}
	}
	return OverrideList{Overrides: os}, nil
}

func (a *API) putOverride(c *call) (any, error) {
	var req OverrideRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	o := store.Override{DatasetID: c.r.PathValue("id"), UserID: c.r.PathValue("user_id"), Train: req.Train, AutoRelease: req.AutoRelease}
	if err := a.st.SetOverride(o, c.actor()); err != nil {
		return nil, err
	}
	return o, nil
}

// ---- jobs

func (a *API) listJobs(c *call) (any, error) {
	q := c.r.URL.Query()
	vs, err := a.svc.Jobs(c.who, service.JobFilter{State: q.Get("state"), UserID: q.Get("user_id")})
	if err != nil {
		return nil, err
	}
	page, next, err := pageOf(vs, func(v *service.JobView) string { return v.Job.ID }, q)
	if err != nil {
		return nil, err
	}
	out := JobList{Jobs: make([]JobView, 0, len(page)), NextCursor: next}
	for _, v := range page {
		out.Jobs = append(out.Jobs, jobView(v.Job))
	}
	return out, nil
}

func (a *API) getJob(c *call) (any, error) {
	v, err := a.svc.Job(c.who, c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	return jobView(v.Job), nil
}

func (a *API) cancelJob(c *call) (any, error) {
	v, err := a.svc.CancelJob(c.who, c.r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	return jobView(v.Job), nil
}

// ---- nodes

func (a *API) listNodes(*call) (any, error) {
	ns, err := a.st.Nodes()
	if err != nil {
		return nil, err
	}
	if ns == nil {
		ns = []*store.Node{}
	}
	return NodeList{Nodes: ns}, nil
}

func (a *API) joinToken(c *call) (any, error) {
	var req JoinTokenRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	ttl := a.cfg.JoinTokenTTL
	if req.TTLSeconds != 0 {
		if req.TTLSeconds < 0 || time.Duration(req.TTLSeconds)*time.Second > maxJoinTokenTTL {
			return nil, badField("ttl_seconds", "must be between 1 and %d", int64(maxJoinTokenTTL/time.Second))
		}
		ttl = time.Duration(req.TTLSeconds) * time.Second
	}
	tok, exp, err := a.st.CreateJoinTokenBy(ttl, c.actor())
	if err != nil {
		return nil, err
	}
	return JoinTokenResponse{Token: tok, ExpiresAt: exp}, nil
}

func (a *API) removeNode(c *call) (any, error) {
	id := c.r.PathValue("peer_id")
	if err := a.st.RemoveNodeBy(id, c.actor()); err != nil {
		return nil, err
	}
	if a.cfg.Hooks.NodeRemoved != nil {
		a.cfg.Hooks.NodeRemoved(id)
	}
	return nil, nil
}

// ---- audit

func (a *API) listAudit(c *call) (any, error) {
	q := c.r.URL.Query()
	f := store.AuditFilter{Limit: 100, Action: q.Get("action")}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, badField("after", "must be a non-negative integer")
		}
		f.After = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			return nil, badField("limit", "must be an integer from 1 to 1000")
		}
		f.Limit = n
	}
	l, err := a.svc.Audit(c.who, f)
	if err != nil {
		return nil, err
	}
	return AuditList{Entries: l.Entries, Withheld: l.Withheld}, nil
}

func (a *API) verifyAudit(c *call) (any, error) {
	v, err := a.svc.VerifyAudit(c.who)
	if errors.Is(err, store.ErrAuditBroken) {
		return nil, errorf(http.StatusConflict, "audit_broken", "%s", trimStore(err))
	}
	if err != nil {
		return nil, err
	}
	return AuditVerifyResponse{OK: true, Entries: v.Entries, Withheld: v.Withheld}, nil
}

// ---- dataset sources

func (a *API) sources() (*sources.Manager, error) {
	if a.cfg.Sources == nil {
		return nil, errorf(http.StatusServiceUnavailable, "unavailable", "this server reads no dataset sources")
	}
	return a.cfg.Sources, nil
}

// sourceError maps a failed snapshot onto the contract: the source could
// not be read (502 source_failed, with the reason), its host is not
// allowed (403 host_not_allowed), or one is running.
func sourceError(err error) error {
	var se *sources.SnapshotError
	switch {
	case errors.As(err, &se):
		return errorf(http.StatusBadGateway, "source_failed", "%s", se.Msg)
	case errors.Is(err, sources.ErrBusy):
		return errorf(http.StatusConflict, "conflict", "%s", err.Error())
	case errors.Is(err, sources.ErrClosed):
		return errorf(http.StatusServiceUnavailable, "unavailable", "%s", err.Error())
	}
	var refused *sources.HostRefusedError
	if errors.As(err, &refused) {
		return errorf(http.StatusForbidden, "host_not_allowed", "%s", refused.Error())
	}
	return err
}

func (a *API) listSources(*call) (any, error) {
	srcs, err := a.st.DatasetSources()
	if err != nil {
		return nil, err
	}
	if srcs == nil {
		srcs = []*store.DatasetSource{}
	}
	return SourceList{Sources: srcs}, nil
}

func (a *API) createSource(c *call) (any, error) {
	m, err := a.sources()
	if err != nil {
		return nil, err
	}
	var req SourceRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	d, src, err := m.Register(c.r.Context(), sources.Registration{Kind: req.Kind, URL: req.URL, Table: req.Table, Query: req.Query,
		IntervalSeconds: req.IntervalSeconds, Name: req.Name, Description: req.Description, Tags: req.Tags, Visibility: req.Visibility}, c.actor())
	if err != nil {
		return nil, sourceError(err)
	}
	return SourceSnapshot{Dataset: d, Source: src}, nil
}

func (a *API) getSource(c *call) (any, error) {
	return a.st.DatasetSource(c.r.PathValue("id"))
}

func (a *API) patchSource(c *call) (any, error) {
	var req PatchSourceRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	if req.IntervalSeconds == nil {
		return nil, badField("interval_seconds", "required")
	}
	return a.st.SetSourceInterval(c.r.PathValue("id"), *req.IntervalSeconds, c.actor())
}

func (a *API) snapshotSource(c *call) (any, error) {
	m, err := a.sources()
	if err != nil {
		return nil, err
	}
	d, src, err := m.Snapshot(c.r.Context(), c.r.PathValue("id"), c.actor())
	if err != nil {
		return nil, sourceError(err)
	}
	return SourceSnapshot{Dataset: d, Source: src}, nil
}
