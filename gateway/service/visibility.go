package service

import (
	"fmt"
	"strings"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// The one place that decides what an actor sees of a job or a request.

// sight is how an actor sees a resource.
type sight int

const (
	unseen     sight = iota // it does not exist for the actor (404, never 403)
	asOwner                 // the requester: what leaves only with a release is withheld
	asReviewer              // can_triage_requests on someone else's: everything
)

// jobSight: a requester sees their own top-level jobs; the shard jobs of a
// data-parallel job are the gateway's, not the requester's (their plans
// carry statistics fitted on all the rows, their metrics and loss are
// computed on the data before any review), so not even a requester who is
// a reviewer sees their own. A reviewer sees everyone else's jobs whole.
func jobSight(a Actor, j *store.Job) sight {
	if a.owns(j.UserID) {
		if j.ParentID != "" {
			return unseen
		}
		return asOwner
	}
	if a.Can(store.PermTriageRequests) {
		return asReviewer
	}
	return unseen
}

// requestSight: one's own requests as their requester (a reviewer too);
// everyone's with can_triage_requests.
func requestSight(a Actor, r *store.Request) sight {
	if a.owns(r.UserID) {
		return asOwner
	}
	if a.Can(store.PermTriageRequests) {
		return asReviewer
	}
	return unseen
}

// JobView is a job as one actor may see it.
type JobView struct {
	// Job is a copy of the stored job with what the actor may not see removed.
	Job *store.Job
	// Review: the job's result is, or was, due for a compliance officer's review.
	Review bool
	// Owner: the actor is the job's requester.
	Owner bool
}

// released reports whether a job's result may leave to its requester:
// released without review, or approved; a result stored before release
// states existed (Release empty) is released when its dataset is public.
func (s *Service) released(j *store.Job) bool {
	switch j.Release {
	case wire.ReleaseReleased, wire.ReleaseApproved:
		return j.ParentID == ""
	case "":
		if j.State != wire.StateSucceeded || j.ParentID != "" {
			return false
		}
		ds, err := s.st.Dataset(j.DatasetID)
		return err == nil && ds.Visibility == store.VisibilityPublic
	}
	return false
}

// jobView is THE redaction of a job: nil when the actor may not see it.
//
// A job's starting weights (a hosted model's, or a data-parallel round's
// average) are for the node that trains it, never shown: the store keeps
// them apart (Init is never serialized); only a record from before that
// carries them inline (LegacyInit), removed here for everyone.
//
// Its requester sees neither what is computed on the data before the
// result is released (the metrics of an unreleased result, the training
// loss of a job whose result is due for review) nor anything else that
// would leave with the result.
func (s *Service) jobView(a Actor, j *store.Job) *JobView {
	sg := jobSight(a, j)
	if sg == unseen {
		return nil
	}
	c := *j
	c.LegacyInit = nil
	v := &JobView{Job: &c, Review: j.Review || j.RequestID != "", Owner: sg == asOwner}
	if sg == asReviewer {
		return v
	}
	released := s.released(j)
	if underReview(j, released) {
		reviewedView(&c, j)
		return v
	}
	if j.State == wire.StateSucceeded && !released {
		c.Metrics = nil
	}
	if v.Review && !released {
		c.Progress.Loss, c.Progress.LossWithheld = 0, true
	}
	return v
}

// underReview reports whether a job's outcome is gated by review and not
// released: a job whose result was due for review at submit (private data,
// no override), from submission until an officer releases its outcome.
// A failed job with no release state is a record from before failures
// were reviewed (or a failure released without review): shown as it is.
func underReview(j *store.Job, released bool) bool {
	if !(j.Review || j.RequestID != "") || released {
		return false
	}
	return !(j.State == wire.StateFailed && j.Release == "")
}

// pendingOutcome is what a requester reads while the outcome waits.
const pendingOutcome = "the job trained on review-gated data: its outcome (a model or an error) is shown once a compliance officer releases it"

// reviewedView replaces c, the requester's copy of a job whose outcome is
// under review, by what they may see of it: the same from submission to
// the officer's decision, whatever the outcome and whenever it came. No
// state but under_review, no attempt, node, progress, loss, early-stop
// point, metrics, error, start or end time, release request; only what
// was known at submission. After a denial the state is denied with the
// officer's reason; after the requester withdrew (or cancelled) the job,
// cancelled. Neither says how the job ended.
func reviewedView(c *store.Job, j *store.Job) {
	*c = store.Job{
		ID: j.ID, DatasetID: j.DatasetID, DatasetVersion: j.DatasetVersion, DatasetSHA256: j.DatasetSHA256, UserID: j.UserID, Requester: j.Requester, Plan: j.Plan, CreatedAt: j.CreatedAt,
		MaxAttempts: j.MaxAttempts, AttemptTimeout: j.AttemptTimeout, Deadline: j.Deadline, QueuedAt: j.CreatedAt,
		Shards: j.Shards, Rounds: j.Rounds, InitSize: j.InitSize, HostedModel: j.HostedModel,
		EpsilonMicroEps: j.EpsilonMicroEps, Delta: j.Delta, DP: j.DP, PlanTable: j.PlanTable, Review: j.Review, ReservationID: j.ReservationID,
		State: wire.StateUnderReview, Release: wire.ReleasePending, ReleaseReason: pendingOutcome,
		Progress: wire.Progress{LossWithheld: true},
	}
	switch {
	case j.Release == wire.ReleaseDenied:
		c.State, c.Release, c.ReleaseReason = wire.StateDenied, wire.ReleaseDenied, j.ReleaseReason
	case j.Release == wire.ReleaseWithdrawn || j.State == wire.StateCancelled:
		c.State, c.Release, c.ReleaseReason = wire.StateCancelled, wire.ReleaseWithdrawn, "the job was cancelled before its outcome was released; it stays with the gateway"
	}
}

// RequestView is a request as one actor may see it.
type RequestView struct {
	// Request is a copy with what the actor may not see removed.
	Request *store.Request
	// DecidedBy is "officer", "rule", "override" or "requester"
	// (withdrawn), "" while undecided: who decided, without naming the
	// officer to the requester.
	DecidedBy string
	// Reviewer: the actor sees it as a reviewer (with the requester's history).
	Reviewer bool
}

// requestView is THE redaction of a request: nil when the actor may not
// see it. The requester sees neither the metrics of a release not approved
// nor which officer decided.
func requestView(a Actor, r *store.Request) *RequestView {
	sg := requestSight(a, r)
	if sg == unseen {
		return nil
	}
	c := *r
	v := &RequestView{Request: &c, Reviewer: sg == asReviewer}
	if d := r.Decision; d != nil {
		switch {
		case strings.HasPrefix(d.Reviewer, store.ReviewerRulePrefix):
			v.DecidedBy = "rule"
		case d.Reviewer == store.ReviewerOverride:
			v.DecidedBy = "override"
		case d.Reviewer == store.ReviewerRequester:
			v.DecidedBy = "requester"
		default:
			v.DecidedBy = "officer"
		}
	}
	if sg == asReviewer {
		return v
	}
	if r.Kind == wire.KindRelease && r.State == wire.RequestPending {
		// It is filed when the job ends: its appearing would tell the
		// requester when, and so something of how. The job's view says
		// it is under review until the decision.
		return nil
	}
	if r.Kind == wire.KindRelease && r.State != wire.RequestApproved {
		c.Metrics, c.Error = nil, ""
	}
	if r.Decision != nil {
		d := *r.Decision
		d.Reviewer = ""
		c.Decision = &d
	}
	return v
}

// auditSight is what of the audit log an actor may read. The log records
// every job's grant, completion or failure, error text and retries, the
// release request a job's end files, and the times of all of these; and
// every entry's sequence number and time say when something happened. So
// for the requester of a job whose outcome is under review, the log ends
// just before that job was submitted, until an officer decides: whatever
// came after cannot time or tell the outcome, and that cut depends only on
// the submission. Once decided, a denied or withdrawn job's outcome stays
// with the gateway: the entries about it (its own and its shards', its
// release request's) are withheld, apart from its creation, cancellation
// and the decision, which its requester knows.
type auditSight struct {
	cut     bool            // entries after through are withheld
	through uint64          // the last entry the actor may read when cut
	job     string          // the job under review the cut is for
	targets map[string]bool // entries about these targets are withheld
	jobs    map[string]bool // so are entries whose detail names these jobs
}

// auditKept: what a withheld target's entries may still show.
var auditKept = map[string]bool{"job.create": true, "job.cancel": true, "request.deny": true, "request.withdraw": true}

func (s *Service) auditSight(a Actor) (*auditSight, error) {
	as := &auditSight{targets: map[string]bool{}, jobs: map[string]bool{}}
	if a.UserID() == "" {
		return as, nil
	}
	js, err := s.st.Jobs(store.JobFilter{UserID: a.UserID()})
	if err != nil {
		return nil, err
	}
	var first *store.Job
	for _, j := range js {
		if j.ParentID != "" || !underReview(j, s.released(j)) {
			continue
		}
		var c store.Job
		reviewedView(&c, j)
		if c.State == wire.StateUnderReview {
			if first == nil || j.CreatedAt.Before(first.CreatedAt) {
				first = j
			}
			continue
		}
		as.jobs[j.ID] = true
		as.targets["job/"+j.ID] = true
		if j.RequestID != "" {
			as.targets["request/"+j.RequestID] = true
		}
	}
	for _, j := range js {
		if j.ParentID != "" && as.jobs[j.ParentID] {
			as.jobs[j.ID] = true
			as.targets["job/"+j.ID] = true
		}
	}
	if first == nil {
		return as, nil
	}
	as.cut, as.job = true, first.ID
	creates, err := s.st.Audit(store.AuditFilter{Action: "job.create"})
	if err != nil {
		return nil, err
	}
	for _, e := range creates {
		if e.Target == "job/"+first.ID {
			as.through = e.Seq - 1
			break
		}
	}
	return as, nil // no creation entry found: through 0, nothing shown
}

// shows reports whether the actor may read e.
func (as *auditSight) shows(e *store.AuditEntry) bool {
	if as.cut && e.Seq > as.through {
		return false
	}
	if auditKept[e.Action] {
		return true
	}
	if as.targets[e.Target] {
		return false
	}
	id, _ := e.Detail["job_id"].(string)
	return id == "" || !as.jobs[id]
}

// withheld says to the actor what is withheld, "" when nothing.
func (as *auditSight) withheld() string {
	if !as.cut {
		return ""
	}
	return fmt.Sprintf("entries after seq %d are withheld from you until a compliance officer decides the outcome of your job %s: "+
		"they record when and how it ended", as.through, as.job)
}
