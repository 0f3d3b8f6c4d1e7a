package wait

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	For(t, 10*time.Second, "the third call", func() error {
		if calls.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if n := calls.Load(); n != 3 {
		t.Fatalf("condition called %d times, want 3", n)
	}
}

func TestContextEndsWithTheLastError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Context(ctx, func() error { return errors.New("job is queued") })
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "job is queued") {
		t.Fatalf("got %v, want the context's error and the condition's", err)
	}
	if _, err := Context(ctx, Is(func() bool { return true })); err != nil {
		t.Fatalf("a condition that holds at once: %v", err)
	}
}
