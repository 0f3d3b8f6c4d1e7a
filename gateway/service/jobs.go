package service

import (
	"errors"
	"slices"
	"strings"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// Job returns one job as the actor may see it; a job the actor may not see
// is NotFound, so that its existence does not leak.
func (s *Service) Job(a Actor, id string) (*JobView, error) {
	j, err := s.st.Job(id)
	if err != nil {
		return nil, Wrap(err, "job "+id)
	}
	v := s.jobView(a, j)
	if v == nil {
		return nil, Errorf(NotFound, "job %s not found", id)
	}
	return v, nil
}

// View is the job as the actor may see it, nil if not at all.
func (s *Service) View(a Actor, j *store.Job) *JobView { return s.jobView(a, j) }

// JobFilter selects jobs for Jobs; zero fields match everything.
type JobFilter struct {
	State  string // as the actor sees it
	UserID string
}

// Jobs lists the jobs the actor may see, newest first: everyone's with
// can_triage_requests (asking for another user's needs it), else their own.
func (s *Service) Jobs(a Actor, f JobFilter) ([]*JobView, error) {
	if f.State != "" && !slices.Contains(wire.JobStates(), f.State) {
		return nil, FieldError("state", "must be one of %s", strings.Join(wire.JobStates(), ", "))
	}
	if !a.Can(store.PermTriageRequests) {
		if f.UserID != "" && !a.owns(f.UserID) {
			return nil, Errorf(Forbidden, "listing other users' jobs needs %s", store.PermTriageRequests)
		}
		f.UserID = a.UserID()
	}
	js, err := s.st.Jobs(store.JobFilter{UserID: f.UserID})
	if err != nil {
		return nil, err
	}
	out := []*JobView{}
	for _, j := range js {
		v := s.jobView(a, j)
		if v == nil || (f.State != "" && v.Job.State != f.State) {
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

// CancelJob cancels a queued or running job the actor may see (its shards
// with it, in the same transaction). The requester of a job under review
// cancels it whatever became of it meanwhile: a job still going is
// cancelled, a finished one's release is withdrawn (its outcome never
// leaves, its reservation is refunded); both read the same afterwards.
func (s *Service) CancelJob(a Actor, id string) (*JobView, error) {
	v, err := s.Job(a, id)
	if err != nil {
		return nil, err
	}
	reviewed := v.Owner && v.Job.State == wire.StateUnderReview
	j, err := s.st.CancelBy(id, a.UserID())
	if reviewed && errors.Is(err, store.ErrConflictState) {
		// It ended: withdraw its outcome instead.
		cur, gerr := s.st.Job(id)
		if gerr != nil {
			return nil, Wrap(gerr, "job "+id)
		}
		if cur.Release == wire.ReleasePending && cur.RequestID != "" {
			if _, err = s.st.Withdraw(cur.RequestID, a.UserID(), "the requester cancelled the job"); err == nil {
				j, err = s.st.Job(id)
			}
		}
	} else if err == nil && s.hooks.JobCancelled != nil {
		s.hooks.JobCancelled(j)
	}
	if err != nil {
		if reviewed {
			return nil, Errorf(Conflict, "job %s can no longer be cancelled: its outcome was decided", id)
		}
		return nil, Wrap(err, "") // the store says why: "job X is already succeeded"
	}
	s.log.Info("job cancelled", "job", j.ID, "by", a.UserID())
	return s.jobView(a, j), nil
}

// Result serves a job's model to its requester alone, and only once it is
// released: at once on public data, on private data after an officer's
// approval or a matching approval rule (or a per-user override). Each
// fetch is audited.
func (s *Service) Result(a Actor, id string) ([]byte, error) {
	j, err := s.st.Job(id)
	if err != nil || jobSight(a, j) != asOwner {
		return nil, Errorf(NotFound, "job %s not found", id)
	}
	if released := s.released(j); underReview(j, released) {
		var c store.Job
		reviewedView(&c, j)
		switch c.State {
		case wire.StateDenied:
			return nil, Errorf(Forbidden, "job %s: the release of its outcome was denied: %s", j.ID, c.ReleaseReason)
		case wire.StateCancelled:
			return nil, Errorf(Forbidden, "job %s: %s", j.ID, c.ReleaseReason)
		}
		return nil, Errorf(Forbidden, "job %s is under review: %s", j.ID, pendingOutcome)
	}
	if j.State != wire.StateSucceeded {
		return nil, Errorf(Conflict, "job %s has no result: it is %s", j.ID, j.State)
	}
	if !s.released(j) {
		switch j.Release {
		case wire.ReleaseDenied:
			return nil, Errorf(Forbidden, "job %s: the release of its result was denied: %s", j.ID, j.ReleaseReason)
		case wire.ReleasePending:
			return nil, Errorf(Forbidden, "job %s trained on private data: its result waits for a compliance officer's review (request %s)", j.ID, j.RequestID)
		case wire.ReleaseWithdrawn:
			return nil, Errorf(Forbidden, "job %s: you withdrew the release request %s; its result stays with the gateway", j.ID, j.RequestID)
		}
		return nil, Errorf(Forbidden, "job %s: its result has not been released", j.ID)
	}
	b, err := s.st.Result(j.ID)
	if err != nil {
		return nil, Wrap(err, "result of job "+j.ID)
	}
	if err := s.st.AppendAudit(store.AuditEvent{Actor: j.UserID, Action: "release.fetch", Target: "job/" + j.ID,
		Detail: map[string]any{"peer": a.Peer, "release": j.Release, "request_id": j.RequestID}}); err != nil {
		return nil, err
	}
	return b, nil
}

// Info is the view in the p2p protocol's shape (a field-by-field copy:
// the view is already redacted). gateway is the gateway's peer ID.
func (v *JobView) Info(gateway string) *wire.JobInfo {
	j := v.Job
	info := &wire.JobInfo{
		ID: j.ID, Ref: gateway + "/" + j.ID, Gateway: gateway, Dataset: j.DatasetID, State: j.State,
		DatasetVersion: j.DatasetVersion, DatasetSHA256: j.DatasetSHA256,
		Attempt: j.Attempt, Progress: j.Progress, Metrics: j.Metrics, Error: j.Error, CreatedAt: j.CreatedAt,
		Review: v.Review, Epsilon: wire.Epsilon(j.EpsilonMicroEps), DP: j.DP,
		Release: j.Release, ReleaseReason: j.ReleaseReason, Request: j.RequestID,
	}
	if !j.StartedAt.IsZero() {
		t := j.StartedAt
		info.StartedAt = &t
	}
	if !j.FinishedAt.IsZero() {
		t := j.FinishedAt
		info.FinishedAt = &t
	}
	return info
}
