package service_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// TestLongestJobFitsItsAnswer: a job of the most epochs a plan may ask for,
// with every per-epoch curve at its longest spelling, must fit the answer
// limit of ds/job and ds/cancel. Under the old 64 KiB limit a job of about
// 800 epochs could no longer be read (fedgrid job and train --wait failed).
func TestLongestJobFitsItsAnswer(t *testing.T) {
	curve := make([]float64, plan.MaxEpochs)
	for i := range curve {
		curve[i] = -math.SmallestNonzeroFloat64 * 3 // the longest float spelling
	}
	m, err := json.Marshal(plan.Metrics{TrainLoss: curve, ValidationLossHistory: curve,
		ValidationAccuracyHistory: curve, ValidationAUCHistory: curve, Epochs: plan.MaxEpochs})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	info := wire.JobInfo{ID: strings.Repeat("a", 16), Ref: strings.Repeat("b", 70), Gateway: strings.Repeat("c", 52),
		Dataset: strings.Repeat("d", 16), State: wire.StateSucceeded, Metrics: m, Error: strings.Repeat("e", 500),
		CreatedAt: now, StartedAt: &now, FinishedAt: &now}
	raw, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []wire.Descriptor{wire.Job().Descriptor, wire.Cancel().Descriptor} {
		if len(raw) > d.MaxResponse {
			t.Errorf("%s: a %d-epoch job's answer is %d bytes, over its limit of %d", d.Name, plan.MaxEpochs, len(raw), d.MaxResponse)
		}
	}
}
