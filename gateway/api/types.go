package api

import (
	"time"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// Request and response bodies. Field names are the wire names (snake_case).

// HealthResponse answers GET /healthz.
type HealthResponse struct {
	Status string `json:"status"`
}

// StatusResponse answers GET /api/v1/status.
type StatusResponse struct {
	Name      string   `json:"name"`
	PeerID    string   `json:"peer_id"`
	Addrs     []string `json:"addrs"`
	SetupDone bool     `json:"setup_done"`
}

// SetupRequest is POST /api/v1/setup's body.
type SetupRequest struct {
	Email    string `json:"email" required:"true"`
	Password string `json:"password" required:"true"`
	Name     string `json:"name"`
	// SetupToken is the one-time token the gateway printed on its first
	// start (setup-token line on stdout).
	SetupToken string `json:"setup_token" required:"true"`
}

// LoginRequest is POST /api/v1/auth/login's body.
type LoginRequest struct {
	Email    string `json:"email" required:"true"`
	Password string `json:"password" required:"true"`
}

// LoginResponse carries a bearer token.
type LoginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	User      UserView  `json:"user"`
}

// UserView is a user as the API shows it. Budgets are in epsilon (and, exactly,
// in micro-epsilon).
type UserView struct {
	ID               string    `json:"id"`
	Email            string    `json:"email"`
	Name             string    `json:"name"`
	Role             string    `json:"role"`
	PeerID           string    `json:"peer_id"`
	BudgetEpsilon    float64   `json:"budget_epsilon"`
	ReservedEpsilon  float64   `json:"reserved_epsilon"`
	SpentEpsilon     float64   `json:"spent_epsilon"`
	BudgetMicroEps   int64     `json:"budget_micro_eps"`
	ReservedMicroEps int64     `json:"reserved_micro_eps"`
	SpentMicroEps    int64     `json:"spent_micro_eps"`
	CreatedAt        time.Time `json:"created_at"`
	Permissions      []string  `json:"permissions,omitempty"`
}

func userView(u *store.User) UserView {
	return UserView{ID: u.ID, Email: u.Email, Name: u.Name, Role: u.Role, PeerID: u.PeerID,
		BudgetEpsilon: wire.Epsilon(u.BudgetMicroEps), ReservedEpsilon: wire.Epsilon(u.ReservedMicroEps), SpentEpsilon: wire.Epsilon(u.SpentMicroEps),
		BudgetMicroEps: u.BudgetMicroEps, ReservedMicroEps: u.ReservedMicroEps, SpentMicroEps: u.SpentMicroEps, CreatedAt: u.CreatedAt}
}

// CreateUserRequest is POST /api/v1/users's body.
type CreateUserRequest struct {
	Email         string   `json:"email" required:"true"`
	Password      string   `json:"password" required:"true"`
	Name          string   `json:"name"`
	Role          string   `json:"role"`
	PeerID        string   `json:"peer_id"`
	BudgetEpsilon *float64 `json:"budget_epsilon"`
}

// PatchUserRequest is PATCH /api/v1/users/{id}'s body; absent fields stay.
type PatchUserRequest struct {
	Email         *string  `json:"email"`
	Password      *string  `json:"password"`
	Name          *string  `json:"name"`
	Role          *string  `json:"role"`
	PeerID        *string  `json:"peer_id"`
	BudgetEpsilon *float64 `json:"budget_epsilon"`
}

// UserList answers GET /api/v1/users.
type UserList struct {
	Users []UserView `json:"users"`
}

// RoleRequest is POST /api/v1/roles's body.
type RoleRequest struct {
	Name        string             `json:"name" required:"true"`
	Permissions []store.Permission `json:"permissions"`
}

// PatchRoleRequest is PATCH /api/v1/roles/{name}'s body.
type PatchRoleRequest struct {
	Permissions *[]store.Permission `json:"permissions" required:"true"`
}

// RoleList answers GET /api/v1/roles.
type RoleList struct {
	Roles []*store.Role `json:"roles"`
}

// UploadForm documents POST /api/v1/datasets's multipart/form-data fields.
type UploadForm struct {
	File        string `json:"file" format:"binary" required:"true"`
	Name        string `json:"name"`
	Tags        string `json:"tags" description:"comma-separated"`
	Description string `json:"description"`
	Visibility  string `json:"visibility" enum:"public,private"`
}

// CreateUploadRequest is POST /api/v1/uploads's body.
type CreateUploadRequest struct {
	Size   int64  `json:"size" required:"true" description:"the file's size in bytes"`
	Format string `json:"format" enum:"csv,parquet" description:"default csv"`
	// A new dataset's description, or the dataset this is a new version of.
	Name        string   `json:"name" description:"a new dataset's name (required without dataset_id)"`
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
	Visibility  string   `json:"visibility" enum:"public,private" description:"default private"`
	DatasetID   string   `json:"dataset_id" description:"make the upload a new version of this dataset (its name, tags and visibility stay)"`
	SHA256      string   `json:"sha256" description:"the file's hex SHA-256; finish refuses other bytes"`
}

// UploadView is a resumable upload as its owner sees it.
type UploadView struct {
	ID     string `json:"id"`
	Size   int64  `json:"size"`
	Offset int64  `json:"offset" description:"bytes received: where the next chunk starts"`
	State  string `json:"state" enum:"receiving,complete,finished" description:"complete: every byte is here, finish it"`
	Format string `json:"format" enum:"csv,parquet"`

	Name          string        `json:"name,omitempty"`
	Description   string        `json:"description,omitempty"`
	Tags          []string      `json:"tags"`
	Visibility    string        `json:"visibility,omitempty"`
	DatasetID     string        `json:"dataset_id,omitempty" description:"the dataset this upload is a new version of"`
	SHA256        string        `json:"sha256,omitempty"`
	ChunkMaxBytes int64         `json:"chunk_max_bytes" description:"the most bytes one PATCH may carry"`
	CreatedAt     time.Time     `json:"created_at"`
	ExpiresAt     time.Time     `json:"expires_at" description:"when the gateway deletes the upload unless it is touched again"`
	Result        *UploadResult `json:"result,omitempty" description:"once finished: the dataset version it became"`
}

// UploadList answers GET /api/v1/uploads: the caller's uploads, oldest first.
type UploadList struct {
	Uploads []UploadView `json:"uploads"`
}

// UploadResult is the dataset version a finished upload became.
type UploadResult struct {
	DatasetID string `json:"dataset_id"`
	Version   int    `json:"version"`
	SHA256    string `json:"sha256" description:"of the uploaded bytes"`
}

// FinishUploadRequest is POST /api/v1/uploads/{id}/finish's optional body.
type FinishUploadRequest struct {
	SHA256 string `json:"sha256" description:"the file's hex SHA-256, checked against the bytes received"`
}

// ModelUploadForm documents POST /api/v1/models's multipart/form-data fields.
type ModelUploadForm struct {
	File        string `json:"file" format:"binary" required:"true" description:"the model, a fedgrid.model/v1 JSON document (plan plus weights), at most 16 MiB"`
	Name        string `json:"name" description:"default: the plan's name, else the file's name"`
	Description string `json:"description"`
}

// ModelList answers GET /api/v1/models: descriptions only, never weights.
type ModelList struct {
	Models []*store.HostedModel `json:"models"`
}

// Indexing is a dataset's DHT indexing state: whether its tags are provided.
type Indexing struct {
	State string    `json:"state"` // pending, provided, failed or unknown
	At    time.Time `json:"at,omitzero"`
	Error string    `json:"error,omitempty"`
}

// DatasetView is a dataset as the API shows it: its description and its indexing state.
type DatasetView struct {
	*store.Dataset
	Indexing *Indexing `json:"indexing,omitempty"`
}

// DatasetList answers GET /api/v1/datasets.
type DatasetList struct {
	Datasets []DatasetView `json:"datasets"`
}

// PatchDatasetRequest is PATCH /api/v1/datasets/{id}'s body; absent fields stay.
type PatchDatasetRequest struct {
	Name        *string   `json:"name"`
	Description *string   `json:"description"`
	Tags        *[]string `json:"tags"`
	Visibility  *string   `json:"visibility"`
}

// OverrideRequest is PUT /api/v1/datasets/{id}/overrides/{user_id}'s body.
// null or absent fields fall back to the dataset's default.
type OverrideRequest struct {
	Train       *bool `json:"train"`
	AutoRelease *bool `json:"auto_release"`
}

// OverrideList answers GET /api/v1/datasets/{id}/overrides.
type OverrideList struct {
	Overrides []*store.Override `json:"overrides"`
}

// JobList answers GET /api/v1/jobs.
type JobList struct {
	Jobs []JobView `json:"jobs"`
	// NextCursor, when set, fetches the next page (?cursor=) of a list cut by ?limit=.
	NextCursor string `json:"next_cursor,omitempty" description:"pass as ?cursor= for the next page; absent on the last page"`
}

// JobView is a job as the API shows it: the stored job with its durations
// in seconds (the stored record keeps nanoseconds; the outer field wins
// when encoded).
type JobView struct {
	*store.Job
	AttemptTimeout float64 `json:"attempt_timeout,omitempty" description:"how long one attempt may take, in seconds (absent: no limit)"`
}

func jobView(j *store.Job) JobView {
	return JobView{Job: j, AttemptTimeout: j.AttemptTimeout.Seconds()}
}

// NodeList answers GET /api/v1/nodes.
type NodeList struct {
	Nodes []*store.Node `json:"nodes"`
}

// JoinTokenRequest is POST /api/v1/nodes/join-tokens's optional body.
type JoinTokenRequest struct {
	TTLSeconds int64 `json:"ttl_seconds"`
}

// JoinTokenResponse carries a single-use node enrolment token.
type JoinTokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// BudgetRequest is POST /api/v1/users/{id}/budget's body: add (or, negative,
// take away) budget.
type BudgetRequest struct {
	DeltaEpsilon float64 `json:"delta_epsilon" required:"true"`
	Reason       string  `json:"reason"`
}

// CapRequest is PUT /api/v1/users/{id}/caps/{dataset_id}'s body.
type CapRequest struct {
	CapEpsilon float64 `json:"cap_epsilon" required:"true" description:"negative removes the cap"`
}

// LedgerResponse answers GET /api/v1/users/{id}/ledger.
type LedgerResponse struct {
	User      UserView          `json:"user"`
	Movements []*store.Movement `json:"movements"`
}

// AuditList answers GET /api/v1/audit.
type AuditList struct {
	Entries []*store.AuditEntry `json:"entries"`
	// Withheld: what is withheld from the caller and why (the entries after
	// the submission of the caller's own job whose outcome is under review).
	Withheld string `json:"withheld,omitempty"`
}

// AuditVerifyResponse answers GET /api/v1/audit/verify.
type AuditVerifyResponse struct {
	OK bool `json:"ok"`
	// Entries: how many entries were checked, counting only those the
	// caller may read (the whole chain is checked).
	Entries  int    `json:"entries"`
	Withheld string `json:"withheld,omitempty"`
}

// SourceRequest is POST /api/v1/sources's body: a dataset the gateway
// reads itself, with its first snapshot taken at once.
type SourceRequest struct {
	Kind  string `json:"kind" required:"true" enum:"postgres,file" description:"where the data lives: a PostgreSQL database, or a CSV or Parquet file on the gateway's host"`
	URL   string `json:"url" required:"true" description:"postgres://USER@HOST:PORT/DATABASE, never with a password: the gateway reads it from its password file (--pgpass); allowed settings: sslmode, connect_timeout, application_name. Or file:///ABSOLUTE/PATH under a directory the gateway's operator allowed (--source-dir)"`
	Table string `json:"table,omitempty" description:"postgres: a table or view, TABLE or SCHEMA.TABLE (or give query)"`
	Query string `json:"query,omitempty" description:"postgres: one SELECT, run in a read-only transaction (or give table)"`
	// IntervalSeconds, when positive, is how often the gateway snapshots the source by itself.
	IntervalSeconds int64    `json:"interval_seconds,omitempty" description:"snapshot schedule in seconds, 60 to 31622400; 0 or absent: on demand only"`
	Name            string   `json:"name" required:"true"`
	Description     string   `json:"description,omitempty"`
	Tags            []string `json:"tags,omitempty"`
	Visibility      string   `json:"visibility,omitempty" enum:"public,private" description:"default private"`
}

// SourceSnapshot answers POST /api/v1/sources and POST
// /api/v1/datasets/{id}/snapshot: the dataset as stored (its version is
// new when the source's bytes changed) and the source.
type SourceSnapshot struct {
	Dataset *store.Dataset       `json:"dataset"`
	Source  *store.DatasetSource `json:"source"`
}

// SourceList answers GET /api/v1/sources.
type SourceList struct {
	Sources []*store.DatasetSource `json:"sources"`
}

// PatchSourceRequest is PATCH /api/v1/datasets/{id}/source's body.
type PatchSourceRequest struct {
	IntervalSeconds *int64 `json:"interval_seconds" required:"true" description:"snapshot schedule in seconds, 60 to 31622400; 0: on demand only"`
}
