package api

import (
	"slices"
	"sync"
	"time"
)

// throttle limits login attempts. Each key (an account, a client address, or
// both) may make max attempts within window. An attempt is checked and
// counted in one critical section before any password is hashed, so a burst
// of concurrent guesses cannot all pass the check before the first is
// counted; a successful login gives its attempt back. The map is bounded:
// expired entries are swept when it grows, and past maxKeys new keys share
// one bucket so that an attacker cannot exhaust memory.
type throttle struct {
	mu     sync.Mutex
	window time.Duration
	now    func() time.Time
	hits   map[string][]time.Time
}

// limit is one throttle key and the attempts it may make per window.
type limit struct {
	key string
	max int
}

const maxThrottleKeys = 100_000

func newThrottle(window time.Duration, now func() time.Time) *throttle {
	return &throttle{window: window, now: now, hits: map[string][]time.Time{}}
}

func (t *throttle) prune(key string, now time.Time) []time.Time {
	hs := t.hits[key]
	i := 0
	for i < len(hs) && now.Sub(hs[i]) >= t.window {
		i++
	}
	hs = hs[i:]
	if len(hs) == 0 {
		delete(t.hits, key)
		return nil
	}
	t.hits[key] = hs
	return hs
}

func (t *throttle) bucket(key string) string {
	if _, ok := t.hits[key]; ok || len(t.hits) < maxThrottleKeys {
		return key
	}
	return "\x00overflow"
}

// take counts one attempt against every limit and returns its time, or, if
// any limit is used up, counts nothing and returns how long to wait.
func (t *throttle) take(limits ...limit) (at time.Time, wait time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.hits) >= maxThrottleKeys {
		for k := range t.hits {
			t.prune(k, now)
		}
	}
	for _, l := range limits {
		hs := t.prune(t.bucket(l.key), now)
		if len(hs) >= l.max {
			wait = max(wait, t.window-now.Sub(hs[len(hs)-l.max]))
		}
	}
	if wait > 0 {
		return time.Time{}, wait
	}
	for _, l := range limits {
		k := t.bucket(l.key)
		t.hits[k] = append(t.hits[k], now)
	}
	return now, 0
}

// giveBack removes the attempt take counted at time at from every limit.
func (t *throttle) giveBack(at time.Time, limits ...limit) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range limits {
		k := t.bucket(l.key)
		hs := t.hits[k]
		if i := slices.IndexFunc(hs, func(h time.Time) bool { return h.Equal(at) }); i >= 0 {
			hs = slices.Delete(hs, i, i+1)
		}
		if len(hs) == 0 {
			delete(t.hits, k)
		} else {
			t.hits[k] = hs
		}
	}
}

// reset forgets every attempt of key.
func (t *throttle) reset(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.hits, key)
}
