// Package wire holds the messages of fedgrid's stream protocols and the job
// offer gossiped on a gateway's topic. Gateways, nodes and clients share it;
// it depends on nothing but the standard library and the dataset schema type.
package wire

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
)

// Protocol names; p2p.ProtocolID turns them into "/fedgrid/<network>/<name>/1.0.0".
// Each protocol's types, limits and callers are its descriptor (protocols.go).
const (
	ProtoCatalog   = "catalog"       // anyone -> gateway: datasets with tags
	ProtoEnroll    = "node/enroll"   // node -> gateway: join with a token
	ProtoClaim     = "job/claim"     // enrolled node -> gateway: ask for a lease
	ProtoFetch     = "job/fetch"     // leased node -> gateway: plan and data shard (nodes of earlier releases)
	ProtoOpen      = "job/open"      // leased node -> gateway: plan, starting weights, what the data is
	ProtoData      = "job/data"      // leased node -> gateway: the data as a stream of frames
	ProtoHeartbeat = "job/heartbeat" // leased node -> gateway: progress, lease renewal
	ProtoResult    = "job/result"    // leased node -> gateway: weights and metrics, or a failure
	ProtoSubmit    = "ds/submit"     // data scientist -> gateway: a plan for a dataset
	ProtoJob       = "ds/job"        // data scientist -> gateway: job state
	ProtoJobs      = "ds/jobs"       // data scientist -> gateway: the caller's own jobs
	ProtoModel     = "ds/model"      // data scientist -> gateway: the released model
	ProtoCancel    = "ds/cancel"     // data scientist -> gateway: cancel a job
	ProtoPing      = "node/ping"     // enrolled node -> gateway: alive, free slots
	ProtoRequest   = "ds/request"    // data scientist -> gateway: ask for budget or a permission
	ProtoRequests  = "ds/requests"   // data scientist -> gateway: the caller's own requests
	ProtoWithdraw  = "ds/withdraw"   // data scientist -> gateway: take back a pending request
	ProtoQuery     = "ds/query"      // data scientist -> gateway: a DP statistics query
)

// JobsTopic is the gossipsub topic (under the network) on which a gateway offers jobs.
func JobsTopic(gateway string) string { return "jobs/" + gateway }

// Size limits of the messages, per protocol.
const (
	MaxSmall   = 64 << 10  // requests with IDs and small fields
	MaxPlan    = 1 << 20   // a plan
	MaxModel   = 64 << 20  // a trained model
	MaxShard   = 256 << 20 // a data shard (CSV) sent to a node
	MaxFrame   = 4 << 20   // one frame of a data stream (job/data)
	MaxCatalog = 4 << 20   // one gateway's catalog answer
	MaxJobInfo = 4 << 20   // one job's view, with per-epoch curves of up to 10,000 epochs
)

// Catalog query matching modes for CatalogRequest.Match.
const (
	MatchAll = "all" // a dataset must carry every tag (the default)
	MatchAny = "any" // a dataset must carry at least one tag
)

// Catalog query limits.
const (
	MaxQueryTags    = 32
	MaxQueryColumns = 32
	MaxQueryText    = 200
	MaxPreviewRows  = 20
)

// CatalogRequest asks a gateway for its datasets matching every given
// criterion: Tags (all of them, or any with Match "any"; none = no tag
// condition), Text (case-insensitive words, each found in the name or the
// description) and Columns (every name is a column, case-insensitive).
type CatalogRequest struct {
	Tags    []string `json:"tags,omitempty"`
	Match   string   `json:"match,omitempty"` // MatchAll (default) or MatchAny
	Text    string   `json:"text,omitempty"`
	Columns []string `json:"columns,omitempty"`
	// PreviewRows is the number of synthetic preview rows per dataset:
	// 0 = the gateway's default (5), negative = no preview, at most MaxPreviewRows.
	PreviewRows int `json:"preview_rows,omitempty"`
}

// CatalogEntry describes one dataset; never its rows.
type CatalogEntry struct {
	ID          string           `json:"id"`
	Name        string           `json:"name"`
	Description string           `json:"description,omitempty"`
	Tags        []string         `json:"tags"`
	Visibility  string           `json:"visibility"`
	Rows        int              `json:"rows"`
	Columns     []dataset.Column `json:"columns"`
	Preview     *CatalogPreview  `json:"preview,omitempty"`
}

// CatalogPreview is a handful of synthetic rows: each cell is drawn on its
// own from that column's marginal distribution (a histogram), so no row is a
// real row. For private datasets the marginals carry differential-privacy
// noise (Epsilon, Delta: the one-time cost of the whole summary, spent once
// per dataset version, not per query).
type CatalogPreview struct {
	Synthetic bool       `json:"synthetic"` // always true
	DP        bool       `json:"dp"`
	Epsilon   float64    `json:"epsilon,omitempty"`
	Delta     float64    `json:"delta,omitempty"`
	Columns   []string   `json:"columns"`
	Rows      [][]string `json:"rows"`
	// HighCardinality names the text columns with too many distinct
	// values (identifiers, free text) to summarise value by value: their
	// cells show "*".
	HighCardinality []string `json:"high_cardinality,omitempty" description:"text columns with too many distinct values to summarise; their cells show a star (*)"`
}

// CatalogResponse is a gateway's answer. Models are the models the gateway
// hosts (newest first, at most MaxCatalogModels), whatever the query: a plan
// names one with "model": "<id>" and carries only training settings.
type CatalogResponse struct {
	Gateway  string         `json:"gateway"`
	Name     string         `json:"name"`
	Datasets []CatalogEntry `json:"datasets"`
	Models   []CatalogModel `json:"models,omitempty"`
}

// MaxCatalogModels bounds the hosted models in one catalog answer.
const MaxCatalogModels = 100

// CatalogModel describes a hosted model; never its weights.
type CatalogModel struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Features    []string `json:"features"`
	Label       string   `json:"label"`
	Task        string   `json:"task"` // binary, multiclass or regression
	Params      int      `json:"params"`
}

// EnrollRequest joins a node to a gateway. Token may be empty for a node the
// gateway already knows (its key is its credential).
type EnrollRequest struct {
	Token   string `json:"token,omitempty"`
	Slots   int    `json:"slots"`
	Version string `json:"version"`
	// MaxJobMemory as in PingRequest.
	MaxJobMemory int64 `json:"max_job_memory,omitempty"`
}

// EnrollResponse confirms enrolment.
type EnrollResponse struct {
	Gateway string `json:"gateway"`
	Topic   string `json:"topic"`
}

// Offer is gossiped by a gateway for each queued job, again and again until
// it is taken or expires. Seq makes each re-announcement a new message.
// Once a lease is granted the gateway gossips the offer once more with
// Taken set, so that nodes still waiting out their jitter do not claim.
type Offer struct {
	Gateway string    `json:"gateway"`
	Job     string    `json:"job"`
	Expires time.Time `json:"expires"`
	Seq     int64     `json:"seq"`
	Taken   bool      `json:"taken,omitempty"`
	// Free is the gateway's count of free slots on live nodes when it offered:
	// nodes scale their claim jitter to it (no jitter when only one can claim).
	Free int `json:"free,omitempty"`
	// For, when set, names the node the gateway would like to run the job:
	// that node claims at once and the others leave it. An offer nobody
	// claimed is re-announced open (For empty) for any free node.
	For string `json:"for,omitempty"`
	// Memory is an upper bound of the bytes the job needs (0: unknown): a
	// node whose MaxJobMemory is less does not claim it.
	Memory int64 `json:"memory,omitempty"`
	// StreamMemory is the bound for a node that streams the rows through a
	// bounded buffer (0: unknown; then Memory applies).
	StreamMemory int64 `json:"stream_memory,omitempty"`
}

// PingRequest tells the gateway that a node is alive and how busy it is.
// MaxSlots bounds the jobs one node may run at once (enrolment and pings).
const MaxSlots = 256

type PingRequest struct {
	Slots   int      `json:"slots"`
	Free    int      `json:"free"`
	Running []string `json:"running,omitempty"`
	Version string   `json:"version"`
	// MaxJobMemory is the bytes one job may use on this node (its
	// --max-memory over its slots); 0: not said (an older node).
	MaxJobMemory int64 `json:"max_job_memory,omitempty"`
}

// PingResponse answers a ping.
type PingResponse struct {
	OK bool `json:"ok"`
	// NextPing is in how many seconds the gateway wants the node's next
	// ping when it is idle; 0 (left out): the default, 5 s. A gateway with
	// many nodes spaces their pings out so that it hears a bounded number
	// a second (gateway.MaxPingRate).
	NextPing int `json:"next_ping,omitempty"`
}

// Validate checks an offer's fields before a node acts on it.
func (o *Offer) Validate() error {
	if o.Gateway == "" || o.Job == "" || len(o.Job) > 128 {
		return fmt.Errorf("offer lacks a gateway or a job ID")
	}
	return nil
}

// ClaimRequest asks for the lease of a job.
type ClaimRequest struct {
	Job string `json:"job"`
	// MaxJobMemory as in PingRequest: the gateway grants no job that needs more.
	MaxJobMemory int64 `json:"max_job_memory,omitempty"`
	// Streams: the node streams rows it cannot hold (job/data) and so
	// needs the job's stream memory, not its in-memory bound.
	Streams bool `json:"streams,omitempty"`
}

// ClaimResponse grants a lease; Attempt is the fencing token every later
// message of this attempt carries.
type ClaimResponse struct {
	Job          string `json:"job"`
	Attempt      int    `json:"attempt"`
	LeaseSeconds int    `json:"lease_seconds"`
}

// FetchRequest asks for what a leased attempt needs.
type FetchRequest struct {
	Job     string `json:"job"`
	Attempt int    `json:"attempt"`
}

// FetchResponse carries the plan and the data shard (CSV with header).
type FetchResponse struct {
	Job     string          `json:"job"`
	Attempt int             `json:"attempt"`
	Dataset string          `json:"dataset"`
	Plan    json.RawMessage `json:"plan"`
	CSV     []byte          `json:"csv"`
	// Init, for a shard of data-parallel training, holds the round's starting
	// parameters (fedgrid.model/v1 "params" JSON).
	Init json.RawMessage `json:"init,omitempty"`
}

// OpenResponse is what a leased attempt needs but its rows: the plan, the
// starting weights and a description of the rows, whose Key tells a node
// whether its shard cache already holds them (job/data sends them).
type OpenResponse struct {
	Job     string          `json:"job"`
	Attempt int             `json:"attempt"`
	Dataset string          `json:"dataset"`
	Plan    json.RawMessage `json:"plan"`
	// Init, for a shard of data-parallel training, holds the round's starting
	// parameters (fedgrid.model/v1 "params" JSON).
	Init json.RawMessage `json:"init,omitempty"`
	Data DataSpec        `json:"data"`
}

// DataSpec describes the rows a job trains on.
type DataSpec struct {
	// Key names these rows: the hex SHA-256 of the dataset version's content
	// hash, its row count, the shard definition and the columns. Equal keys
	// are equal rows: a node caches shards by it.
	Key     string           `json:"key"`
	Version int              `json:"version,omitempty"`
	SHA256  string           `json:"sha256"` // the dataset version's content hash
	Rows    int              `json:"rows"`   // rows sent (the shard's)
	Columns []dataset.Column `json:"columns"`
	// Shard, for a shard job of data-parallel training, says which rows of
	// the dataset it has; nil: every row.
	Shard *ShardSpec `json:"shard,omitempty"`
}

// ShardSpec defines a shard of a data-parallel job: the dataset's rows are
// cut into blocks of BlockRows consecutive rows, the blocks put in a seeded
// random order (Seed) and dealt in turn to Shards shards; shard Index has
// its blocks' rows in row order.
type ShardSpec struct {
	DatasetRows int   `json:"dataset_rows"`
	Shards      int   `json:"shards"`
	Index       int   `json:"index"`
	Seed        int64 `json:"seed"`
	BlockRows   int   `json:"block_rows"`
}

// ValidKey reports whether k has the form of a DataSpec.Key (so a node may
// name a file by it).
func ValidKey(k string) bool {
	if len(k) != 64 {
		return false
	}
	for _, c := range k {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// DataRequest asks for the rows of a leased attempt that job/open
// described with Key.
type DataRequest struct {
	Job     string `json:"job"`
	Attempt int    `json:"attempt"`
	Key     string `json:"key"`
}

// Frames marks a response that is a stream of frames (package
// dataset/frames) after an empty envelope, not one message.
type Frames struct{}

// HeartbeatRequest renews a lease and reports progress.
type HeartbeatRequest struct {
	Job     string  `json:"job"`
	Attempt int     `json:"attempt"`
	Epoch   int     `json:"epoch"`
	Epochs  int     `json:"epochs"`
	Loss    float64 `json:"loss"`
}

// HeartbeatResponse tells the node whether to go on.
type HeartbeatResponse struct {
	Cancelled    bool `json:"cancelled"`
	LeaseSeconds int  `json:"lease_seconds"`
}

// ResultRequest returns a trained model, or the reason training failed.
type ResultRequest struct {
	Job     string          `json:"job"`
	Attempt int             `json:"attempt"`
	Model   json.RawMessage `json:"model,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// Ack acknowledges a request that returns nothing else.
type Ack struct {
	OK bool `json:"ok"`
}

// SubmitRequest asks a gateway to train Plan on Dataset.
type SubmitRequest struct {
	Dataset string          `json:"dataset"`
	Plan    json.RawMessage `json:"plan"`
}

// JobRequest names one job of the caller's.
type JobRequest struct {
	Job string `json:"job"`
}

// Progress of a running job.
type Progress struct {
	Epoch  int     `json:"epoch"`
	Epochs int     `json:"epochs"`
	Loss   float64 `json:"loss"`
	// LossWithheld is set only in views for the requester (never stored):
	// the job's result waits for review, and the training loss, computed on
	// the data like the metrics, leaves with it (Loss is 0).
	LossWithheld bool `json:"loss_withheld,omitempty"`
}

// JobInfo is what a data scientist sees of a job.
type JobInfo struct {
	ID      string `json:"id"`
	Ref     string `json:"ref"` // GATEWAY_PEER_ID/JOB_ID
	Gateway string `json:"gateway"`
	Dataset string `json:"dataset"`
	State   string `json:"state"`
	Attempt int    `json:"attempt"`
	// DatasetVersion and DatasetSHA256 name the dataset contents the job
	// trains on (empty from gateways that do not record them).
	DatasetVersion int             `json:"dataset_version,omitempty"`
	DatasetSHA256  string          `json:"dataset_sha256,omitempty"`
	Progress       Progress        `json:"progress"`
	Metrics        json.RawMessage `json:"metrics,omitempty"`
	Error          string          `json:"error,omitempty"`
	CreatedAt      time.Time       `json:"created_at"`
	StartedAt      *time.Time      `json:"started_at,omitempty"`
	FinishedAt     *time.Time      `json:"finished_at,omitempty"`

	// Review: whether the result needs a compliance officer (private data),
	// what its release costs and where it stands.
	Review bool `json:"review,omitempty"`
	// Epsilon the release costs (reserved at submit, charged on approval);
	// 0 with DP false: the plan has no formal privacy guarantee.
	Epsilon float64 `json:"epsilon,omitempty"`
	DP      bool    `json:"dp,omitempty"`
	// Release: "" until the job ends, then released, pending, approved,
	// denied or withdrawn. A requester sees "pending" from submission on
	// while the job is under review.
	Release string `json:"release,omitempty"`
	// ReleaseReason says why (a denial's reason).
	ReleaseReason string `json:"release_reason,omitempty"`
	Request       string `json:"request,omitempty"` // the release request's ID
}

// Release states of a succeeded job's result (JobInfo.Release).
const (
	ReleaseReleased = "released" // released without review (public data or a per-user override)
	ReleasePending  = "pending"  // waits for a compliance officer
	ReleaseApproved = "approved" // approved by an officer or an approval rule
	ReleaseDenied   = "denied"   // refused; the reason is in ReleaseReason
	// ReleaseWithdrawn: the requester withdrew the release request; the
	// result never leaves and nothing is charged.
	ReleaseWithdrawn = "withdrawn"
)

// Request kinds: a release of a job's result (filed by the gateway), or a
// data scientist's ask for budget or a permission.
const (
	KindRelease    = "release"
	KindBudget     = "budget"
	KindPermission = "permission"
)

// Request states.
const (
	RequestPending   = "pending"
	RequestApproved  = "approved"
	RequestDenied    = "denied"
	RequestWithdrawn = "withdrawn" // by the requester, before a decision
)

// Permissions a data scientist may ask for on a dataset.
const (
	AskTrain       = "train"        // may train on the dataset
	AskAutoRelease = "auto_release" // results skip review
)

// RequestCreate asks a gateway's compliance officers for budget (Epsilon,
// optionally for Dataset) or for a permission on Dataset (Permission is
// AskTrain or AskAutoRelease). Reason is required.
type RequestCreate struct {
	Kind       string  `json:"kind"`
	Dataset    string  `json:"dataset,omitempty"`
	Epsilon    float64 `json:"epsilon,omitempty"`
	Permission string  `json:"permission,omitempty"`
	Reason     string  `json:"reason"`
}

// JobsQuery lists the caller's own jobs, newest first; State filters.
type JobsQuery struct {
	State string `json:"state,omitempty"`
}

// JobList answers JobsQuery: at most MaxJobsListed jobs, newest first.
type JobList struct {
	Jobs []JobInfo `json:"jobs"`
}

// MaxJobsListed bounds JobList.
const MaxJobsListed = 500

// RequestsQuery reads the caller's own requests: one by ID, or all (State filters).
type RequestsQuery struct {
	ID    string `json:"id,omitempty"`
	State string `json:"state,omitempty"`
}

// RequestWithdraw takes back one of the caller's pending requests. A
// release request withdrawn refunds the job's reserved epsilon; its result
// never leaves. Reason is optional.
type RequestWithdraw struct {
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// RequestInfo is what a data scientist sees of one of their requests.
type RequestInfo struct {
	ID         string     `json:"id"`
	Kind       string     `json:"kind"` // release, budget or permission
	State      string     `json:"state"`
	Dataset    string     `json:"dataset,omitempty"`
	Job        string     `json:"job,omitempty"`
	Epsilon    float64    `json:"epsilon,omitempty"`
	Permission string     `json:"permission,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	DecidedAt  *time.Time `json:"decided_at,omitempty"`
	// DecidedBy is "officer", "rule", "override" or "requester" (withdrawn);
	// the officer stays anonymous.
	DecidedBy      string  `json:"decided_by,omitempty"`
	DecisionReason string  `json:"decision_reason,omitempty"`
	Charged        float64 `json:"charged,omitempty"`
}

// RequestList is the caller's requests, newest first.
type RequestList struct {
	Requests []RequestInfo `json:"requests"`
}

// DP statistics.
const (
	StatCount     = "count"
	StatSum       = "sum"
	StatMean      = "mean"
	StatHistogram = "histogram"

	MechanismLaplace  = "laplace"
	MechanismGaussian = "gaussian"

	MaxQueryBins = 1000
)

// QueryRequest asks for a differentially private statistic of a numeric
// column. Values are clamped to [Lower, Upper] (count: only rows within the
// bounds are counted); Epsilon is charged to the caller's budget whether or
// not the question was asked before. Mechanism is laplace (default) or
// gaussian (then Delta, 0 < Delta < 1e-3, is required).
type QueryRequest struct {
	Dataset   string  `json:"dataset"`
	Stat      string  `json:"stat"`
	Column    string  `json:"column"`
	Epsilon   float64 `json:"epsilon"`
	Delta     float64 `json:"delta,omitempty"`
	Mechanism string  `json:"mechanism,omitempty"`
	Lower     float64 `json:"lower"`
	Upper     float64 `json:"upper"`
	Bins      int     `json:"bins,omitempty"`
}

// QueryResponse is a noisy answer. Value holds count, sum or mean; Counts
// the histogram's bins (Edges has Bins+1 bounds). Scale is the standard
// deviation of the noise added to Value (for a histogram: to each count);
// CI95 is the 95% interval around Value that the noise promises (for a
// histogram: the interval of the noise itself, to add to each count).
type QueryResponse struct {
	Query     string     `json:"query"` // the query's ID (in the gateway's ledger)
	Stat      string     `json:"stat"`
	Column    string     `json:"column"`
	Value     float64    `json:"value,omitempty"`
	Counts    []float64  `json:"counts,omitempty"`
	Edges     []float64  `json:"edges,omitempty"`
	Mechanism string     `json:"mechanism"`
	Epsilon   float64    `json:"epsilon"`
	Delta     float64    `json:"delta,omitempty"`
	Scale     float64    `json:"scale"`
	CI95      [2]float64 `json:"ci95"`
	// Rows is the dataset's row count (public in the catalog), used for the mean.
	Rows int `json:"rows"`
	// Remaining is the caller's budget left after this query.
	Remaining float64 `json:"remaining"`
}

// Job states.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// States a requester sees instead of the job's own while the outcome of a
// job on review-gated (private) data waits for, or was refused by, a
// compliance officer: neither the outcome (succeeded or failed) nor when it
// came is shown before the decision. They are never stored.
const (
	// StateUnderReview: from submission to the officer's decision.
	StateUnderReview = "under_review"
	// StateDenied: the officer refused to release the outcome (ReleaseReason says why).
	StateDenied = "denied"
)

// JobStates lists every job state, in lifecycle order, then the states
// only a requester's view carries.
func JobStates() []string {
	return []string{StateQueued, StateRunning, StateSucceeded, StateFailed, StateCancelled, StateUnderReview, StateDenied}
}

// RequestStates lists every request state.
func RequestStates() []string {
	return []string{RequestPending, RequestApproved, RequestDenied, RequestWithdrawn}
}

// RequestKinds lists every request kind.
func RequestKinds() []string { return []string{KindRelease, KindBudget, KindPermission} }

// Terminal reports whether a job in state s will not change any more
// (a denial, as a requester sees it, is final too).
func Terminal(s string) bool {
	return s == StateSucceeded || s == StateFailed || s == StateCancelled || s == StateDenied
}

// ModelResponse carries a released model (fedgrid.model/v1 JSON).
type ModelResponse struct {
	Model json.RawMessage `json:"model"`
}
