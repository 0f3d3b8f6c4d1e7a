package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/fedgrid/fedgrid/wire"
)

// Job is one training request and its lifecycle.
type Job struct {
	ID        string `json:"id"`
	DatasetID string `json:"dataset_id"`
	UserID    string `json:"user_id"`
	// Requester is the data scientist's peer ID.
	Requester string          `json:"requester"`
	Plan      json.RawMessage `json:"plan,omitempty"`
	State     string          `json:"state"`
	// Attempt is the fencing token: each Grant increments it, and a node's
	// heartbeat, result or failure counts only with the current attempt.
	Attempt      int             `json:"attempt"`
	Node         string          `json:"node,omitempty"`
	LeaseExpires time.Time       `json:"lease_expires,omitzero"`
	Progress     wire.Progress   `json:"progress"`
	Metrics      json.RawMessage `json:"metrics,omitempty"`
	Error        string          `json:"error,omitempty"`
	CreatedAt    time.Time       `json:"created_at"`
	StartedAt    time.Time       `json:"started_at,omitzero"`
	FinishedAt   time.Time       `json:"finished_at,omitzero"`

	// Retry policy, set when the job is created (zero = no limit).
	// MaxAttempts is the retry budget: a job whose lease is lost that many
	// times fails. AttemptTimeout bounds one attempt; Deadline the whole job.
	MaxAttempts    int           `json:"max_attempts,omitempty"`
	AttemptTimeout time.Duration `json:"attempt_timeout,omitempty"`
	Deadline       time.Time     `json:"deadline,omitzero"`
	// QueuedAt is when the job last entered the queue; NotBefore holds a
	// re-queued job back (backoff) until then.
	QueuedAt  time.Time `json:"queued_at,omitzero"`
	NotBefore time.Time `json:"not_before,omitzero"`
	// Lost counts attempts whose lease expired.
	Lost int `json:"lost,omitempty"`

	// MemoryBytes bounds what training the job needs (plan.TrainMemory on
	// the dataset's rows); 0 for jobs stored before it was recorded.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// StreamMemoryBytes bounds what training the job needs on a node that
	// streams the rows through a bounded buffer (plan.NeedMemory; at most
	// MemoryBytes); 0: not known (jobs created before it was).
	StreamMemoryBytes int64 `json:"stream_memory_bytes,omitempty"`

	// DatasetVersion and DatasetSHA256 name the dataset's contents when the
	// job was created (Dataset.Version, Dataset.SHA256): the version its
	// model was trained on. Empty for jobs stored before versions existed
	// and for datasets not in this gateway's store.
	DatasetVersion int    `json:"dataset_version,omitempty"`
	DatasetSHA256  string `json:"dataset_sha256,omitempty"`

	// Data-parallel training. A coordinated job (Shards > 1, no ParentID) is
	// never offered: the gateway runs it as rounds of shard jobs (ParentID
	// set), each training shard Shard of Shards in round Round from Init.
	// A top-level job with Init starts from those weights (a hosted
	// model's); a coordinated one starts its first round from them.
	ParentID string `json:"parent_id,omitempty"`
	Shard    int    `json:"shard,omitempty"`
	Shards   int    `json:"shards,omitempty"`
	Round    int    `json:"round,omitempty"`
	Rounds   int    `json:"rounds,omitempty"`
	// Federation: this job is the gateway's part in a federation across
	// gateways (that ID), driven round by round by the federation's
	// coordinator (the requester's client): a coordinated job whose rounds
	// the gateway's coordinator loop leaves alone. Shards is then at least 1.
	Federation string `json:"federation,omitempty"`
	// FedConfig is the federation's settings as the gateway accepted them
	// (the gateway's own JSON), kept so that a restarted gateway takes part
	// in the next rounds.
	FedConfig json.RawMessage `json:"fed_config,omitempty"`
	// FedRequestID names the officer's approval of the federation
	// (wire.KindFederation) on review-gated data: no round runs before it.
	FedRequestID string `json:"fed_request_id,omitempty"`
	// FedSent is the last round whose masked update this gateway released
	// (0: none yet): from then on the federation's aggregates carry its data.
	FedSent int `json:"fed_sent,omitempty"`
	// Evaluation: the federation scores a model (`fedgrid eval`): the job
	// has no result of its own; what left are the round's secure sums,
	// under the federation's approval. It succeeds with no release.
	Evaluation bool `json:"evaluation,omitempty"`
	// FedHeardAt is when the federation's coordinator was last heard from,
	// as last stored (the gateway stores it at most about once a minute);
	// zero before the first call after the join (FedLastHeard).
	FedHeardAt time.Time `json:"fed_heard_at,omitzero"`
	// FedKeys is the last round, and the coordinator's try of it, for which
	// this gateway made secure-aggregation keys (nil: none yet). The keys
	// themselves are never stored: a restarted gateway refuses to go on with
	// a round it opened before (the coordinator retries it with a new
	// attempt and fresh keys).
	FedKeys *FedRoundMark `json:"fed_keys,omitempty"`
	// Init is set by whoever creates the job. The store keeps the weights
	// under a key of their own (JobInit reads them): the job record is
	// rewritten on every heartbeat and must stay small. InitSize is their
	// length in bytes.
	Init     json.RawMessage `json:"-"`
	InitSize int             `json:"init_size,omitempty"`
	// LegacyInit: records written before the weights had a key of their own.
	LegacyInit json.RawMessage `json:"init,omitempty"`

	// HostedModel names the hosted model a plan named ("model": "<id>"):
	// Plan is then the resolved plan and Init the hosted weights.
	HostedModel string `json:"hosted_model,omitempty"`

	// Compliance (top-level jobs; set by the gateway at submit, see
	// requests.go). EpsilonMicroEps is what releasing the result costs,
	// computed by the gateway from the plan and the dataset's rows (0 for a
	// plan without DP-SGD, which has no formal guarantee: DP false).
	EpsilonMicroEps int64   `json:"epsilon_micro_eps,omitempty"`
	Delta           float64 `json:"delta,omitempty"`
	DP              bool    `json:"dp,omitempty"`
	// PlanTable is the plan as a readable table of layers, for the reviewer.
	PlanTable string `json:"plan_table,omitempty"`
	// Review: at submit, the result was due for review (CanTrain); the
	// decision is taken again when the job succeeds.
	Review bool `json:"review,omitempty"`
	// ReservationID holds EpsilonMicroEps from submit until the result is
	// released (committed) or denied, or the job fails or is cancelled (refunded).
	ReservationID string `json:"reservation_id,omitempty"`
	// Release is the result's release state once the job succeeded
	// (Release* constants); ReleaseReason says why (a denial's reason).
	Release       string `json:"release,omitempty"`
	ReleaseReason string `json:"release_reason,omitempty"`
	// RequestID names the release request of a result that needed review.
	RequestID string `json:"request_id,omitempty"`
}

// FedRoundMark names one attempt of one round of a federation.
type FedRoundMark struct {
	Round   int `json:"round"`
	Attempt int `json:"attempt"`
}

// Coordinated reports whether the gateway runs this job as rounds of shard jobs.
func (j *Job) Coordinated() bool {
	return (j.Shards > 1 || j.Federation != "") && j.ParentID == ""
}

// ShardJobID is the ID of a coordinated job's shard job: deterministic, so
// a restarted gateway finds its rounds, and prefixed by the parent's ID, so
// the store finds every shard of a parent with one prefix scan.
func ShardJobID(parent string, round, shard int) string {
	return fmt.Sprintf("%s-r%d-s%d", parent, round, shard)
}

// cancelShards cancels every unfinished shard job of a coordinated job that
// has just ended, in the transaction that ends it: no shard trains on for a
// job that failed, was cancelled or was deleted with its user.
func (s *Store) cancelShards(txn *badger.Txn, parent *Job) error {
	shards, err := scanWhere(txn, prefixJob+parent.ID+"-r", func(c *Job) bool { return c.ParentID == parent.ID && !c.Terminal() })
	if err != nil {
		return err
	}
	for _, c := range shards {
		old := c.State
		c.State, c.FinishedAt, c.LeaseExpires = wire.StateCancelled, s.now().UTC(), time.Time{}
		c.Error = "its data-parallel job " + parent.ID + " is " + parent.State
		if err := s.putJob(txn, c, old); err != nil {
			return err
		}
	}
	return nil
}

// jobIndexKey files a job under its state, oldest first, so that the
// scheduler reads the queue and the running set without scanning every job.
func jobIndexKey(j *Job) []byte {
	return []byte(fmt.Sprintf("%s%s/%020d/%s", prefixJobIndex, j.State, j.CreatedAt.UnixNano(), j.ID))
}

// putJob stores j and moves its index entry when its state changed. A
// top-level job's change of state also settles its compliance (release
// request, reservation) in the same transaction: see jobTransition.
func (s *Store) putJob(txn *badger.Txn, j *Job, oldState string) error {
	if oldState != j.State && j.ParentID == "" {
		if err := s.jobTransition(txn, j); err != nil {
			return err
		}
	}
	if oldState != "" && oldState != j.State {
		old := *j
		old.State = oldState
		if err := txn.Delete(jobIndexKey(&old)); err != nil {
			return err
		}
	}
	if oldState != j.State {
		ref, err := json.Marshal(JobRef{ID: j.ID, UserID: j.UserID, DatasetID: j.DatasetID, QueuedAt: j.QueuedAt, NotBefore: j.NotBefore, MemoryBytes: j.MemoryBytes, StreamMemoryBytes: j.StreamMemoryBytes})
		if err != nil {
			return err
		}
		if err := txn.Set(jobIndexKey(j), ref); err != nil {
			return err
		}
	}
	return putJSON(txn, prefixJob+j.ID, j)
}

// JobRef is the little the scheduler needs of a queued job; the state
// index carries it, so listing the queue reads no job records.
type JobRef struct {
	ID        string    `json:"id"`
	UserID    string    `json:"user_id"`
	DatasetID string    `json:"dataset_id"`
	QueuedAt  time.Time `json:"queued_at"`
	NotBefore time.Time `json:"not_before,omitzero"`
	// MemoryBytes is the job's (0 in index entries written before it was).
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// StreamMemoryBytes is the job's (0 when not known).
	StreamMemoryBytes int64 `json:"stream_memory_bytes,omitempty"`
}

// QueuedRefs lists the queued jobs, oldest first, from the state index alone.
func (s *Store) QueuedRefs() ([]JobRef, error) {
	var out []JobRef
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefixJobIndex + wire.StateQueued + "/")
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var r JobRef
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &r) }); err != nil {
				return fmt.Errorf("store: job index %s: %w", it.Item().Key(), err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// jobsInState reads the jobs of one state through the index, oldest first.
func jobsInState(txn *badger.Txn, state string) ([]*Job, error) {
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = []byte(prefixJobIndex + state + "/")
	it := txn.NewIterator(opts)
	defer it.Close()
	var out []*Job
	for it.Rewind(); it.Valid(); it.Next() {
		k := string(it.Item().Key())
		id := k[strings.LastIndexByte(k, '/')+1:]
		var j Job
		if err := getJSON(txn, prefixJob+id, &j); err != nil {
			return nil, fmt.Errorf("store: job index names %s: %w", id, err)
		}
		out = append(out, &j)
	}
	return out, nil
}

// Terminal reports whether the job has finished for good.
func (j *Job) Terminal() bool {
	return wire.Terminal(j.State)
}

// CreateJob stores a new job in state queued. An empty ID is assigned;
// CreatedAt is set to now.
func (s *Store) CreateJob(j *Job) error { return s.createJob(j, 0, nil) }

// CreateJobReserving is CreateJob that also reserves amount micro-epsilon of
// the job's user's budget on its dataset, in the same transaction, and
// records the reservation in j.ReservationID: the job exists only if the
// budget could cover it (else ErrInsufficientBudget, and no job).
func (s *Store) CreateJobReserving(j *Job, amount int64) error {
	if amount <= 0 {
		return invalid("amount", "must be positive")
	}
	return s.createJob(j, amount, nil)
}

// createJob stores a new job, reserving reserve micro-epsilon; extra, when
// set, runs in the same transaction before the job is written (it may set
// the job's fields).
func (s *Store) createJob(j *Job, reserve int64, extra func(*badger.Txn) error) error {
	if j.DatasetID == "" {
		return invalid("dataset_id", "required")
	}
	if j.ID == "" {
		j.ID = newID()
	}
	j.State = wire.StateQueued
	if j.Coordinated() {
		j.State = wire.StateRunning // run by the gateway's coordinator, never offered
	}
	j.Attempt = 0
	j.Node = ""
	j.LeaseExpires = time.Time{}
	j.CreatedAt = s.now().UTC()
	j.QueuedAt = j.CreatedAt
	return s.update(func(txn *badger.Txn) error {
		if ok, err := exists(txn, prefixJob+j.ID); err != nil {
			return err
		} else if ok {
			return fmt.Errorf("%w: job %s", ErrExists, j.ID)
		}
		if j.ParentID != "" {
			// A shard only for a parent still running: a round started
			// from a stale view of a parent cancelled meanwhile creates nothing.
			var parent Job
			if err := getJSON(txn, prefixJob+j.ParentID, &parent); err != nil {
				return fmt.Errorf("parent job %s: %w", j.ParentID, err)
			}
			if parent.Terminal() {
				return fmt.Errorf("%w: parent job %s is %s", ErrConflictState, parent.ID, parent.State)
			}
		}
		j.ReservationID = ""
		var ds Dataset
		switch err := getJSON(txn, prefixDataset+j.DatasetID, &ds); {
		case err == nil:
			j.DatasetVersion, j.DatasetSHA256 = ds.Version, ds.SHA256
		case !errors.Is(err, ErrNotFound):
			return err
		}
		j.InitSize, j.LegacyInit = len(j.Init), nil
		if len(j.Init) > 0 {
			if err := txn.Set([]byte(prefixJobInit+j.ID), j.Init); err != nil {
				return err
			}
		}
		if reserve > 0 {
			res, err := s.reserveTxn(txn, j.UserID, j.DatasetID, reserve, j.UserID, "job "+j.ID)
			if err != nil {
				return err
			}
			j.ReservationID = res.ID
		}
		if extra != nil {
			if err := extra(txn); err != nil {
				return err
			}
		}
		if err := s.putJob(txn, j, ""); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: j.UserID, Action: "job.create", Target: "job/" + j.ID,
			Detail: map[string]any{"dataset_id": j.DatasetID, "dataset_version": j.DatasetVersion, "dataset_sha256": j.DatasetSHA256, "requester": j.Requester}})
	})
}

// Job returns one job, or ErrNotFound.
func (s *Store) Job(id string) (*Job, error) {
	var j Job
	if err := s.view(func(txn *badger.Txn) error { return getJSON(txn, prefixJob+id, &j) }); err != nil {
		return nil, err
	}
	return &j, nil
}

// JobInit returns the weights a job starts from, or nil when it starts
// from scratch.
func (s *Store) JobInit(id string) (json.RawMessage, error) {
	var out json.RawMessage
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = jobInit(txn, id, nil)
		return err
	})
	return out, err
}

// jobInit reads a job's initial weights; j, when not nil, is the job
// already read in txn.
func jobInit(txn *badger.Txn, id string, j *Job) (json.RawMessage, error) {
	b, err := getBytes(txn, prefixJobInit+id)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if j == nil {
		j = new(Job)
		if err := getJSON(txn, prefixJob+id, j); err != nil {
			return nil, err
		}
	}
	return j.LegacyInit, nil
}

// JobInputs is what a node fetches for a job from the store: the job and
// its initial weights (nil: from scratch).
type JobInputs struct {
	Job  *Job
	Init json.RawMessage
}

// JobInputs reads a job and its starting weights in one transaction (every read
// transaction waits for the commit in flight: one wait, not three).
// ErrNotFound names the job missing. The rows are on disk (OpenDatasetVersion).
func (s *Store) JobInputs(id string) (*JobInputs, error) {
	var in JobInputs
	err := s.view(func(txn *badger.Txn) error {
		var j Job
		if err := getJSON(txn, prefixJob+id, &j); err != nil {
			return fmt.Errorf("job %s: %w", id, err)
		}
		in.Job = &j
		init, err := jobInit(txn, id, &j)
		if err != nil {
			return fmt.Errorf("initial weights of job %s: %w", id, err)
		}
		in.Init = init
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &in, nil
}

// JobFilter selects jobs. Zero fields match everything.
type JobFilter struct {
	UserID    string
	Requester string
	DatasetID string
	State     string
}

func (f JobFilter) match(j *Job) bool {
	return (f.UserID == "" || j.UserID == f.UserID) && (f.Requester == "" || j.Requester == f.Requester) &&
		(f.DatasetID == "" || j.DatasetID == f.DatasetID) && (f.State == "" || j.State == f.State)
}

func (s *Store) jobs(f JobFilter) ([]*Job, error) {
	var out []*Job
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = scanWhere(txn, prefixJob, f.match)
		return err
	})
	return out, err
}

// Jobs lists matching jobs, newest first.
func (s *Store) Jobs(f JobFilter) ([]*Job, error) {
	out, err := s.jobs(f)
	slices.SortStableFunc(out, func(a, b *Job) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, err
}

// QueuedJobs lists the queued jobs, oldest first.
func (s *Store) QueuedJobs() ([]*Job, error) {
	var out []*Job
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = jobsInState(txn, wire.StateQueued)
		return err
	})
	return out, err
}

// CountJobs counts the jobs in a state from the state index alone, without
// reading a job: cheap enough for a metrics scrape with many jobs running.
func (s *Store) CountJobs(state string) (int, error) {
	n := 0
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefixJobIndex + state + "/")
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// RunningJobs lists the running jobs, oldest first.
func (s *Store) RunningJobs() ([]*Job, error) {
	var out []*Job
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = jobsInState(txn, wire.StateRunning)
		return err
	})
	return out, err
}

// modifyJob loads a job in a transaction, lets fn change it and stores it.
// fn's error aborts the transaction.
func (s *Store) modifyJob(id string, fn func(txn *badger.Txn, j *Job) error) (*Job, error) {
	var out Job
	err := s.update(func(txn *badger.Txn) error {
		var j Job
		if err := getJSON(txn, prefixJob+id, &j); err != nil {
			return err
		}
		old := j.State
		if err := fn(txn, &j); err != nil {
			out = j
			return err
		}
		out = j
		return s.putJob(txn, &j, old)
	})
	if errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return &out, err
}

// Grant leases a queued job to node for lease, in one transaction: the job
// becomes running with Attempt incremented. Any other state: ErrConflictState.
func (s *Store) Grant(jobID, node string, lease time.Duration) (*Job, error) {
	return s.GrantFitting(jobID, node, lease, 0, false)
}

// ErrNoFit: the job needs more memory than the claiming node allows one job.
var ErrNoFit = errors.New("store: the job needs more memory than the node allows one job")

// GrantFitting is Grant for a node whose jobs may use memory bytes each (0:
// not said): a queued job whose MemoryBytes is more is refused with ErrNoFit
// (its StreamMemoryBytes, when known, for a node that streams).
func (s *Store) GrantFitting(jobID, node string, lease time.Duration, memory int64, streams bool) (*Job, error) {
	j, err := s.modifyJob(jobID, func(txn *badger.Txn, j *Job) error {
		now := s.now().UTC()
		if j.State != wire.StateQueued || j.Coordinated() {
			return fmt.Errorf("%w: job %s is %s", ErrConflictState, j.ID, j.State)
		}
		if need := j.MemoryNeed(streams); memory > 0 && need > memory {
			return fmt.Errorf("%w: it needs %d bytes, the node allows %d", ErrNoFit, need, memory)
		}
		if now.Before(j.NotBefore) {
			return fmt.Errorf("%w: job %s is backing off until %s", ErrConflictState, j.ID, j.NotBefore.Format(time.RFC3339Nano))
		}
		j.State = wire.StateRunning
		j.Attempt++
		j.Node = node
		j.LeaseExpires = now.Add(lease)
		j.StartedAt = now
		return s.audit(txn, AuditEvent{Actor: node, Action: "job.grant", Target: "job/" + j.ID, Detail: map[string]any{"attempt": j.Attempt}})
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

func checkLease(j *Job, attempt int, node string) error {
	if j.State != wire.StateRunning || j.Attempt != attempt || j.Node != node {
		return fmt.Errorf("%w: job %s is %s at attempt %d on %q, not running attempt %d on %q",
			ErrStale, j.ID, j.State, j.Attempt, j.Node, attempt, node)
	}
	return nil
}

// Heartbeat records progress and extends the lease of a running job's current
// attempt. For any other state, attempt or node it returns ErrStale together
// with the job as stored, so that the caller can see e.g. that it was cancelled.
//
// A heartbeat that brings no new progress while the stored lease still has
// at least half of lease to run writes nothing: it only reads. Nodes
// heartbeat every second or so, and a synced write for each would make the
// store's work grow with the jobs running at once (300 jobs on 300 nodes:
// 300 writes a second). The stored lease never runs out while its node
// heartbeats, so fencing is as before: the lease still ends lease after
// the last heartbeat at the latest, lease/2 at the earliest.
//
// A heartbeat whose lease the read already shows gone (the job ended, or
// went back to the queue, or to another attempt: attempt numbers only
// grow) is refused from that read too: a refused write would make the
// committer run every other write of its batch again (see update), and
// nodes heartbeat while their result is being stored.
func (s *Store) Heartbeat(jobID string, attempt int, node string, p wire.Progress, lease time.Duration) (*Job, error) {
	if j, err := s.Job(jobID); err == nil {
		if err := checkLease(j, attempt, node); err != nil {
			return j, err
		}
		if j.Progress == p && j.LeaseExpires.Sub(s.now()) >= lease/2 {
			return j, nil
		}
	}
	return s.modifyJob(jobID, func(_ *badger.Txn, j *Job) error {
		if err := checkLease(j, attempt, node); err != nil {
			return err
		}
		j.Progress = p
		j.LeaseExpires = s.now().UTC().Add(lease)
		return nil
	})
}

// Complete stores a running attempt's model and metrics and marks the job
// succeeded, in one transaction. A stale attempt or node: ErrStale.
func (s *Store) Complete(jobID string, attempt int, node string, model []byte, metrics json.RawMessage) error {
	_, err := s.modifyJob(jobID, func(txn *badger.Txn, j *Job) error {
		if err := checkLease(j, attempt, node); err != nil {
			return err
		}
		if err := txn.Set([]byte(prefixResult+j.ID), model); err != nil {
			return err
		}
		j.State = wire.StateSucceeded
		j.Metrics = metrics
		j.FinishedAt = s.now().UTC()
		j.LeaseExpires = time.Time{}
		return s.audit(txn, AuditEvent{Actor: node, Action: "job.complete", Target: "job/" + j.ID, Detail: map[string]any{"attempt": attempt}})
	})
	return err
}

// Fail marks a running attempt's job failed with msg. A stale attempt or node: ErrStale.
func (s *Store) Fail(jobID string, attempt int, node string, msg string) error {
	_, err := s.modifyJob(jobID, func(txn *badger.Txn, j *Job) error {
		if err := checkLease(j, attempt, node); err != nil {
			return err
		}
		j.State = wire.StateFailed
		j.Error = msg
		j.FinishedAt = s.now().UTC()
		j.LeaseExpires = time.Time{}
		return s.audit(txn, AuditEvent{Actor: node, Action: "job.fail", Target: "job/" + j.ID, Detail: map[string]any{"attempt": attempt, "error": msg}})
	})
	return err
}

// Cancel cancels a queued or running job. A finished job: ErrConflictState.
func (s *Store) Cancel(jobID string) error {
	_, err := s.CancelBy(jobID, "")
	return err
}

// CancelBy is Cancel with the acting user recorded; it returns the cancelled job.
func (s *Store) CancelBy(jobID, actor string) (*Job, error) {
	j, err := s.modifyJob(jobID, func(txn *badger.Txn, j *Job) error {
		if j.Terminal() {
			return fmt.Errorf("%w: job %s is already %s", ErrConflictState, j.ID, j.State)
		}
		j.State = wire.StateCancelled
		j.FinishedAt = s.now().UTC()
		j.LeaseExpires = time.Time{}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "job.cancel", Target: "job/" + j.ID})
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

// Result returns a succeeded job's model bytes, or ErrNotFound.
func (s *Store) Result(jobID string) ([]byte, error) {
	var b []byte
	err := s.view(func(txn *badger.Txn) error {
		var err error
		b, err = getBytes(txn, prefixResult+jobID)
		return err
	})
	return b, err
}

// ExpireLeases puts every running job whose lease ended before now, or whose
// attempt ran past its AttemptTimeout, back in the queue (Attempt kept, so the
// next grant is Attempt+1) with an exponential backoff, and fails it instead
// once MaxAttempts attempts were lost. Jobs past their Deadline fail. It
// returns the jobs it changed.
func (s *Store) ExpireLeases(now time.Time) ([]*Job, error) {
	// Find the candidates in a read-only view, outside the write mutex:
	// this runs every second, and most seconds nothing expires, while
	// heartbeats and grants would wait behind a scan of every job.
	var due []string
	err := s.view(func(txn *badger.Txn) error {
		running, err := jobsInState(txn, wire.StateRunning)
		if err != nil {
			return err
		}
		queued, err := jobsInState(txn, wire.StateQueued)
		if err != nil {
			return err
		}
		for _, j := range append(running, queued...) {
			if expire(j, now) {
				due = append(due, j.ID)
			}
		}
		return nil
	})
	if err != nil || len(due) == 0 {
		return nil, err
	}
	var out []*Job
	err = s.update(func(txn *badger.Txn) error {
		out = out[:0]
		for _, id := range due {
			var j Job
			if err := getJSON(txn, prefixJob+id, &j); err != nil {
				return err
			}
			old, prevNode := j.State, j.Node
			if j.Terminal() || !expire(&j, now) { // changed since the view (a heartbeat, a result)
				continue
			}
			if err := s.putJob(txn, &j, old); err != nil {
				return err
			}
			if err := s.audit(txn, AuditEvent{Action: "job.lease_expired", Target: "job/" + j.ID,
				Detail: map[string]any{"attempt": j.Attempt, "node": prevNode, "state": j.State}}); err != nil {
				return err
			}
			out = append(out, &j)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// expire applies ExpireLeases' rules to one queued or running job at now
// and reports whether it changed j.
func expire(j *Job, now time.Time) bool {
	switch {
	case !j.Deadline.IsZero() && now.After(j.Deadline):
		j.State = wire.StateFailed
		j.Error = fmt.Sprintf("job timed out: not finished by its deadline %s (after %d attempts)", j.Deadline.Format(time.RFC3339), j.Attempt)
	case j.State != wire.StateRunning, j.Coordinated():
		return false
	case j.LeaseExpires.Before(now), j.AttemptTimeout > 0 && now.Sub(j.StartedAt) > j.AttemptTimeout:
		j.Lost++
		if j.MaxAttempts > 0 && j.Attempt >= j.MaxAttempts {
			j.State = wire.StateFailed
			j.Error = fmt.Sprintf("gave up after %d attempts: the node running it stopped answering or ran out of time", j.Attempt)
		} else {
			j.State = wire.StateQueued
			j.QueuedAt = now
			j.NotBefore = now.Add(Backoff(j.Lost))
		}
	default:
		return false
	}
	j.Node = ""
	j.LeaseExpires = time.Time{}
	if j.State == wire.StateFailed {
		j.FinishedAt = now
	}
	return true
}

// Backoff is how long a job whose lease was lost n times waits before it is
// offered again: 250 ms doubling, at most 30 s.
func Backoff(n int) time.Duration {
	d := 250 * time.Millisecond
	for i := 1; i < n && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

// SetProgress records a coordinated job's progress (round of rounds).
func (s *Store) SetProgress(jobID string, p wire.Progress) error {
	_, err := s.modifyJob(jobID, func(_ *badger.Txn, j *Job) error {
		if !j.Coordinated() || j.State != wire.StateRunning {
			return fmt.Errorf("%w: job %s is not a running coordinated job", ErrConflictState, j.ID)
		}
		j.Progress = p
		return nil
	})
	return err
}

// FinishCoordinated ends a coordinated job: with its averaged model and
// metrics (succeeded), or with errMsg (failed). Only a running coordinated
// job can finish; anything else is ErrConflictState.
func (s *Store) FinishCoordinated(jobID string, model []byte, metrics json.RawMessage, errMsg string) error {
	_, err := s.modifyJob(jobID, func(txn *badger.Txn, j *Job) error {
		if !j.Coordinated() || j.State != wire.StateRunning {
			return fmt.Errorf("%w: job %s is not a running coordinated job", ErrConflictState, j.ID)
		}
		j.FinishedAt = s.now().UTC()
		if errMsg != "" {
			j.State = wire.StateFailed
			j.Error = errMsg
			return s.audit(txn, AuditEvent{Action: "job.fail", Target: "job/" + j.ID, Detail: map[string]any{"error": errMsg}})
		}
		if err := txn.Set([]byte(prefixResult+j.ID), model); err != nil {
			return err
		}
		j.State = wire.StateSucceeded
		j.Metrics = metrics
		return s.audit(txn, AuditEvent{Action: "job.complete", Target: "job/" + j.ID, Detail: map[string]any{"rounds": j.Rounds}})
	})
	return err
}

// MemoryNeed is the memory the job needs on a node: StreamMemoryBytes
// when the node streams and it is known, else MemoryBytes.
func (j *Job) MemoryNeed(streams bool) int64 {
	if streams && j.StreamMemoryBytes > 0 {
		return j.StreamMemoryBytes
	}
	return j.MemoryBytes
}

// MemoryNeed is Job.MemoryNeed for an index entry.
func (r *JobRef) MemoryNeed(streams bool) int64 {
	if streams && r.StreamMemoryBytes > 0 {
		return r.StreamMemoryBytes
	}
	return r.MemoryBytes
}
