// Package wait is the one wait helper of fedgrid's tests: a condition
// polled until a deadline. Tests wait on state this way, never with a fixed
// sleep. It imports nothing of fedgrid, so every package's tests can use it.
package wait

import (
	"context"
	"errors"
	"testing"
	"time"
)

// pollEvery is how often For checks its condition.
const pollEvery = 20 * time.Millisecond

// For polls cond until it returns nil and fails the test if that has not
// happened within timeout. cond's last error says what was seen instead; it
// is part of the failure message. For returns how long the wait took.
func For(t testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	took, err := Context(ctx, cond)
	if err != nil {
		t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
	}
	return took
}

// Context polls cond until it returns nil or ctx ends; then it returns
// ctx's error joined with cond's last one. For benchmarks and helpers that
// have no testing.TB to fail.
func Context(ctx context.Context, cond func() error) (time.Duration, error) {
	start := time.Now()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), errors.Join(ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// Is turns a boolean condition into one for For.
func Is(ok func() bool) func() error {
	return func() error {
		if ok() {
			return nil
		}
		return errNotYet
	}
}

var errNotYet = errors.New("condition not met")
