// Package testcluster runs fedgrid peers in one test process: a network
// peer, gateways, nodes and data scientists' clients, on loopback TCP with
// ephemeral ports or on libp2p's mocknet, where a test can cut, delay and
// heal the link between two peers. It also holds the one wait helper the
// in-process tests use: a condition polled until a deadline.
//
// It is test support: only _test.go files import it.
package testcluster

import (
	"context"
	"errors"
	"testing"
	"time"
)

// pollEvery is how often Wait checks its condition.
const pollEvery = 20 * time.Millisecond

// Wait polls cond until it returns nil and fails the test if that has not
// happened within timeout. cond's last error says what was seen instead; it
// is part of the failure message. Wait returns how long the wait took.
func Wait(t testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	took, err := WaitContext(ctx, cond)
	if err != nil {
		t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
	}
	return took
}

// WaitContext polls cond until it returns nil or ctx ends; then it returns
// ctx's error joined with cond's last one. For benchmarks and helpers that
// have no testing.TB to fail.
func WaitContext(ctx context.Context, cond func() error) (time.Duration, error) {
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

// Is turns a boolean condition into one for Wait.
func Is(ok func() bool) func() error {
	return func() error {
		if ok() {
			return nil
		}
		return errNotYet
	}
}

var errNotYet = errors.New("condition not met")
