package service

import (
	"encoding/json"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// TestWithhold: what a requester sees of their job. The loss and metrics
// are computed on the data; for a result due for review they leave with
// the released result and not before. A reviewer sees others' jobs whole.
func TestWithhold(t *testing.T) {
	s := &Service{}
	owner := Actor{Kind: User, User: &store.User{ID: "u"}}
	reviewer := Actor{Kind: User, User: &store.User{ID: "r"}, perms: []store.Permission{store.PermTriageRequests}}
	metrics := json.RawMessage(`{"train_loss":[0.69,0.61]}`)
	for _, c := range []struct {
		name        string
		job         store.Job
		lossShown   bool
		metricsShow bool
		state       string // as the requester sees it
	}{
		{"public, running", store.Job{State: wire.StateRunning}, true, true, wire.StateRunning},
		{"public, released", store.Job{State: wire.StateSucceeded, Release: wire.ReleaseReleased}, true, true, wire.StateSucceeded},
		{"private, running", store.Job{State: wire.StateRunning, Review: true}, false, false, wire.StateUnderReview},
		{"private, pending", store.Job{State: wire.StateSucceeded, Review: true, Release: wire.ReleasePending, RequestID: "r1"}, false, false, wire.StateUnderReview},
		{"private, failed, pending", store.Job{State: wire.StateFailed, Error: "loss became +Inf in epoch 1", Review: true, Release: wire.ReleasePending, RequestID: "r1"}, false, false, wire.StateUnderReview},
		{"private, denied", store.Job{State: wire.StateSucceeded, Review: true, Release: wire.ReleaseDenied, RequestID: "r1"}, false, false, wire.StateDenied},
		{"private, failure denied", store.Job{State: wire.StateFailed, Error: "x", Review: true, Release: wire.ReleaseDenied, RequestID: "r1"}, false, false, wire.StateDenied},
		{"private, withdrawn", store.Job{State: wire.StateSucceeded, Review: true, Release: wire.ReleaseWithdrawn, RequestID: "r1"}, false, false, wire.StateCancelled},
		{"private, cancelled running", store.Job{State: wire.StateCancelled, Review: true}, false, false, wire.StateCancelled},
		{"private, approved", store.Job{State: wire.StateSucceeded, Review: true, Release: wire.ReleaseApproved, RequestID: "r1"}, true, true, wire.StateSucceeded},
		{"private, failure approved", store.Job{State: wire.StateFailed, Error: "x", Review: true, Release: wire.ReleaseApproved, RequestID: "r1"}, true, true, wire.StateFailed},
		{"private, failed before failures were reviewed", store.Job{State: wire.StateFailed, Error: "x", Review: true}, false, true, wire.StateFailed},
	} {
		c.job.UserID, c.job.Progress, c.job.Metrics = "u", wire.Progress{Epoch: 2, Epochs: 2, Loss: 0.61}, metrics
		c.job.Attempt, c.job.Node = 2, "12D3KooWnode"
		v := s.jobView(owner, &c.job)
		if v.Job.State != c.state {
			t.Errorf("%s: state %q, want %q", c.name, v.Job.State, c.state)
		}
		if hidden := c.state == wire.StateUnderReview || c.state == wire.StateDenied || (c.state == wire.StateCancelled && c.job.Review); hidden &&
			(v.Job.Error != "" || v.Job.Attempt != 0 || v.Job.Node != "" || v.Job.RequestID != "" || v.Job.Progress != (wire.Progress{LossWithheld: true})) {
			t.Errorf("%s: a job whose outcome is not released shows %+v", c.name, v.Job)
		}
		if shown := v.Job.Progress.Loss == 0.61 && !v.Job.Progress.LossWithheld; shown != c.lossShown {
			t.Errorf("%s: progress %+v, loss shown %v want %v", c.name, v.Job.Progress, shown, c.lossShown)
		}
		if !c.lossShown && (v.Job.Progress.Loss != 0 || !v.Job.Progress.LossWithheld) {
			t.Errorf("%s: withheld loss must read 0 and say so: %+v", c.name, v.Job.Progress)
		}
		if shown := v.Job.Metrics != nil; shown != c.metricsShow {
			t.Errorf("%s: metrics shown %v want %v", c.name, shown, c.metricsShow)
		}
		if want := c.job.Review || c.job.RequestID != ""; v.Review != want {
			t.Errorf("%s: review %v want %v", c.name, v.Review, want)
		}
		if c.job.Progress.Loss != 0.61 || c.job.Metrics == nil {
			t.Errorf("%s: the stored job was changed", c.name)
		}
		if rv := s.jobView(reviewer, &c.job); rv.Job.Progress.Loss != 0.61 || rv.Job.Metrics == nil {
			t.Errorf("%s: a reviewer sees %+v", c.name, rv.Job)
		}
		if sv := s.jobView(Actor{Kind: User, User: &store.User{ID: "x"}}, &c.job); sv != nil {
			t.Errorf("%s: someone else sees the job", c.name)
		}
	}
}
