package gateway

import (
	"encoding/json"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// TestWithhold: what a requester sees of a job. The loss and metrics are
// computed on the data; for a result due for review they leave with the
// released result and not before.
func TestWithhold(t *testing.T) {
	metrics := json.RawMessage(`{"train_loss":[0.69,0.61]}`)
	for _, c := range []struct {
		name        string
		job         store.Job
		lossShown   bool
		metricsShow bool
	}{
		{"public, running", store.Job{State: wire.StateRunning}, true, true},
		{"public, released", store.Job{State: wire.StateSucceeded, Release: wire.ReleaseReleased}, true, true},
		{"private, running", store.Job{State: wire.StateRunning, Review: true}, false, true},
		{"private, pending", store.Job{State: wire.StateSucceeded, Review: true, Release: wire.ReleasePending, RequestID: "r1"}, false, false},
		{"private, denied", store.Job{State: wire.StateSucceeded, Review: true, Release: wire.ReleaseDenied, RequestID: "r1"}, false, false},
		{"private, approved", store.Job{State: wire.StateSucceeded, Review: true, Release: wire.ReleaseApproved, RequestID: "r1"}, true, true},
		{"private, failed", store.Job{State: wire.StateFailed, Review: true}, false, true},
	} {
		info := &wire.JobInfo{Progress: wire.Progress{Epoch: 2, Epochs: 2, Loss: 0.61}, Metrics: metrics}
		withhold(info, &c.job)
		if shown := info.Progress.Loss == 0.61 && !info.Progress.LossWithheld; shown != c.lossShown {
			t.Errorf("%s: progress %+v, loss shown %v want %v", c.name, info.Progress, shown, c.lossShown)
		}
		if !c.lossShown && (info.Progress.Loss != 0 || !info.Progress.LossWithheld) {
			t.Errorf("%s: withheld loss must read 0 and say so: %+v", c.name, info.Progress)
		}
		if shown := info.Metrics != nil; shown != c.metricsShow {
			t.Errorf("%s: metrics shown %v want %v", c.name, shown, c.metricsShow)
		}
		if want := c.job.Review || c.job.RequestID != ""; info.Review != want {
			t.Errorf("%s: review %v want %v", c.name, info.Review, want)
		}
	}
}
