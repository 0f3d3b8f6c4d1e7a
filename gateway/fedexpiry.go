package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// A federation's part at this gateway lives as long as its coordinator (the
// data scientist's client) keeps calling. One that is not heard from for
// Config.FederationTimeout expires (store.ExpireFederation): without it a
// coordinator that never returns would leave the job running and its
// epsilon reserved for ever.

// fedSeen remembers when each federation job's coordinator last called, and
// when that was last stored: calls come every poll (fed/update), the store
// is written at most every fedTouchEvery.
type fedSeen struct {
	mu     sync.Mutex
	heard  map[string]time.Time // job -> last call
	stored map[string]time.Time // job -> last call written to the store
}

// fedTouchEvery is how stale the stored time may be: a quarter of the
// timeout, at most a minute. The expiry loop reads the memory first, so
// only a restarted gateway goes by the stored time.
func (g *Gateway) fedTouchEvery() time.Duration {
	return min(g.cfg.FederationTimeout/4, time.Minute)
}

// fedHeard records a call of job j's coordinator.
func (g *Gateway) fedHeard(j *store.Job) {
	now := g.cfg.Now()
	f := &g.fedSeen
	f.mu.Lock()
	if f.heard == nil {
		f.heard, f.stored = map[string]time.Time{}, map[string]time.Time{}
	}
	f.heard[j.ID] = now
	last, ok := f.stored[j.ID]
	if !ok {
		last = j.FedLastHeard()
	}
	write := now.Sub(last) >= g.fedTouchEvery()
	if write {
		f.stored[j.ID] = now
	}
	f.mu.Unlock()
	if write {
		if err := g.store.TouchFederation(j.ID, now); err != nil && !errors.Is(err, store.ErrConflictState) {
			g.log.Warn("store when a federation's coordinator was heard", "job", j.ID, "err", err)
		}
	}
}

// lastHeard is the latest call of job's coordinator this process saw.
func (f *fedSeen) lastHeard(job string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.heard[job]
	return t, ok
}

func (f *fedSeen) forget(job string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.heard, job)
	delete(f.stored, job)
}

// fedExpiryLoop expires the federation parts whose coordinator went quiet.
func (g *Gateway) fedExpiryLoop(ctx context.Context) {
	t := time.NewTicker(max(time.Second/4, min(g.cfg.FederationTimeout/8, 30*time.Second)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.expireFederations()
		}
	}
}

// expireFederations expires every federation part not heard from within
// Config.FederationTimeout.
func (g *Gateway) expireFederations() {
	timeout := g.cfg.FederationTimeout
	cutoff := g.cfg.Now().Add(-timeout)
	idle, err := g.store.IdleFederations(cutoff)
	if err != nil {
		g.log.Error("list idle federations", "err", err)
		return
	}
	for _, j := range idle {
		if t, ok := g.fedSeen.lastHeard(j.ID); ok && !t.Before(cutoff) {
			continue // heard since it was last stored
		}
		why := fmt.Sprintf("the federation's coordinator was not heard from for %s (last at %s): this gateway's part expired", timeout, j.FedLastHeard().UTC().Format(time.RFC3339))
		done, err := g.store.ExpireFederation(j.ID, cutoff, why)
		if errors.Is(err, store.ErrConflictState) || errors.Is(err, store.ErrNotFound) {
			continue // heard, finished or gone meanwhile
		}
		if err != nil {
			g.log.Error("expire federation", "job", j.ID, "err", err)
			continue
		}
		g.fed.drop(j.ID)
		g.fedSeen.forget(j.ID)
		g.metrics.jobEnded(wire.StateCancelled, done.StartedAt)
		g.log.Warn("federation expired", "federation", done.Federation, "job", done.ID, "last_heard", j.FedLastHeard(), "rounds_released", done.FedSent)
	}
}
