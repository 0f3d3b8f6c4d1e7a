package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/plan"
)

// mlpPlan is a one-hidden-layer MLP on the diabetes features with about
// params parameters (10 per hidden unit), one local epoch per round.
func mlpPlan(b testing.TB, params int) []byte {
	h := max(1, params/10)
	p := map[string]any{
		"format": "fedgrid.plan/v1", "name": "bench-mlp", "label": "diabetes",
		"features":   []string{"pregnant", "glucose", "pressure", "triceps", "insulin", "mass", "pedigree", "age"},
		"preprocess": []any{map[string]any{"op": "standardize", "mean": []float64{3.85, 120.89, 69.11, 20.54, 79.8, 31.99, 0.47, 33.24}, "std": []float64{3.37, 31.95, 19.34, 15.94, 115.17, 7.88, 0.33, 11.75}}},
		"params": map[string]any{
			"w1": map[string]any{"shape": []int{8, h}, "init": "glorot"}, "b1": map[string]any{"shape": []int{h}, "init": "zeros"},
			"w2": map[string]any{"shape": []int{h, 1}, "init": "glorot"}, "b2": map[string]any{"shape": []int{1}, "init": "zeros"},
		},
		"forward": []any{
			map[string]any{"op": "matmul", "in": []string{"x", "w1"}, "out": "h"},
			map[string]any{"op": "add", "in": []string{"h", "b1"}, "out": "h"},
			map[string]any{"op": "relu", "in": []string{"h"}, "out": "h"},
			map[string]any{"op": "matmul", "in": []string{"h", "w2"}, "out": "z"},
			map[string]any{"op": "add", "in": []string{"z", "b2"}, "out": "z"},
			map[string]any{"op": "sigmoid", "in": []string{"z"}, "out": "y_hat"},
		},
		"loss":      map[string]any{"op": "bce", "in": []string{"y_hat", "y"}},
		"optimizer": map[string]any{"name": "adam", "learning_rate": 0.001},
		"train":     map[string]any{"epochs": 1, "batch_size": 32, "seed": 7},
	}
	out, err := json.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := plan.Parse(out); err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkFederatedRound is the time of one federated round across
// in-process gateways (each with its own node; the diabetes training rows
// dealt between them), for models of about 10k, 100k and 1M parameters,
// with secure aggregation on and off (plain updates) in the same run:
// global weights out, one local epoch on each gateway's node, the updates
// back, and with secure aggregation its keys, shares, survivor
// confirmation and unmasking. Each of b.N repetitions runs pairs of
// two-round federations, one in each mode, the order alternating, and
// times the second (warm) round: 3 pairs up to 100k parameters, 1 at 1M.
// secure-s and plain-s are the medians, overhead-% is the median of the
// pairs' secure/plain - 1 (a median, because on a shared machine a burst
// of load can land on one round of a pair). Every peer runs in this one
// process, so on a 2-core machine the gateways do not work in parallel as
// they would on their own machines.
func BenchmarkFederatedRound(b *testing.B) {
	for _, n := range []int{3, 10} {
		b.Run(fmt.Sprintf("gateways=%d", n), func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
			defer cancel()
			_, _, parts := pimaParts(b, n, false)
			f := startFederation(b, ctx, parts)
			for _, gw := range f.gws {
				if _, err := gw.Store().PutFederationSettings(store.FederationSettings{AllowPlainUpdates: true}, "bench"); err != nil {
					b.Fatal(err)
				}
			}
			for _, params := range []int{10_000, 100_000, 1_000_000} {
				b.Run(fmt.Sprintf("params=%d", params), func(b *testing.B) {
					planJSON := mlpPlan(b, params)
					round := func(plain bool) float64 {
						o := f.options(planJSON, 2)
						o.PlainUpdates = plain
						s, err := client.NewFederation(o)
						if err != nil {
							b.Fatal(err)
						}
						s, err = f.cl.Federate(ctx, s, client.FedRunOptions{Poll: 20 * time.Millisecond})
						if err != nil || s.State != client.FedSucceeded || len(s.History) != 2 || len(s.History[1].Participants) != n {
							b.Fatalf("federation (plain %v): %v %s", plain, err, s.Error)
						}
						return s.History[1].Seconds
					}
					pairs := 3
					if params >= 1_000_000 {
						pairs = 1
					}
					var secure, plain, ratio []float64
					b.ResetTimer()
					for i := range b.N * pairs {
						var sec, pl float64
						if i%2 == 0 {
							pl, sec = round(true), round(false)
						} else {
							sec, pl = round(false), round(true)
						}
						secure, plain, ratio = append(secure, sec), append(plain, pl), append(ratio, sec/pl)
					}
					b.StopTimer()
					b.ReportMetric(median(secure), "secure-s")
					b.ReportMetric(median(plain), "plain-s")
					b.ReportMetric(100*(median(ratio)-1), "overhead-%")
				})
			}
		})
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}
