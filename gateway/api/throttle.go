package api

import (
	"sync"
	"time"
)

// throttle slows repeated failed logins. Each key (client address and email)
// may fail max times within window; after that every attempt is refused until
// the oldest counted failure leaves the window. The map is bounded: expired
// entries are swept when it grows, and past maxKeys new keys share one bucket
// so that an attacker cannot exhaust memory.
type throttle struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	now    func() time.Time
	fails  map[string][]time.Time
}

const maxThrottleKeys = 100_000

func newThrottle(max int, window time.Duration, now func() time.Time) *throttle {
	return &throttle{max: max, window: window, now: now, fails: map[string][]time.Time{}}
}

func (t *throttle) prune(key string, now time.Time) []time.Time {
	fs := t.fails[key]
	i := 0
	for i < len(fs) && now.Sub(fs[i]) >= t.window {
		i++
	}
	fs = fs[i:]
	if len(fs) == 0 {
		delete(t.fails, key)
		return nil
	}
	t.fails[key] = fs
	return fs
}

func (t *throttle) bucket(key string) string {
	if _, ok := t.fails[key]; ok || len(t.fails) < maxThrottleKeys {
		return key
	}
	return "\x00overflow"
}

// blocked returns how long key must wait, or 0.
func (t *throttle) blocked(key string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	fs := t.prune(t.bucket(key), now)
	if len(fs) < t.max {
		return 0
	}
	return t.window - now.Sub(fs[len(fs)-t.max])
}

func (t *throttle) fail(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.fails) >= maxThrottleKeys {
		for k := range t.fails {
			t.prune(k, now)
		}
	}
	k := t.bucket(key)
	t.fails[k] = append(t.prune(k, now), now)
	if len(t.fails[k]) > t.max {
		t.fails[k] = t.fails[k][len(t.fails[k])-t.max:]
	}
}

func (t *throttle) reset(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.fails, key)
}
