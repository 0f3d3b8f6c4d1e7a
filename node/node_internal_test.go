package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/p2p"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o deadline reached" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestConnectionLost: only a lost connection gives a job back; the
// gateway's refusal, a timeout (a shard too large for the link times out
// again) and a malformed answer are the job's failure, reported.
func TestConnectionLost(t *testing.T) {
	for err, want := range map[error]bool{
		fmt.Errorf("open stream: %w", errors.New("failed to dial: connection refused")): true,
		fmt.Errorf("read response: %w", errors.New("stream reset")):                     true,
		p2p.Errorf(p2p.CodeNotFound, "dataset gone"):                                    false,
		fmt.Errorf("fetch to gw: %w", context.DeadlineExceeded):                         false,
		fmt.Errorf("send request: %w", os.ErrDeadlineExceeded):                          false,
		fmt.Errorf("send request: %w", timeoutErr{}):                                    false,
		fmt.Errorf("%w: response: bad json", p2p.ErrMalformed):                          false,
		fmt.Errorf("%w: 9 MiB", p2p.ErrTooLarge):                                        false,
	} {
		if got := connectionLost(err); got != want {
			t.Errorf("connectionLost(%v) = %v, want %v", err, got, want)
		}
	}
}

// TestNextPing: the interval a gateway's ping answer asks for is kept within
// [pingInterval, maxPingInterval]; none named is the default.
func TestNextPing(t *testing.T) {
	for _, tc := range []struct {
		seconds int
		want    time.Duration
	}{{0, pingInterval}, {-3, pingInterval}, {1, pingInterval}, {5, pingInterval}, {15, 15 * time.Second}, {60, time.Minute}, {86400, maxPingInterval}} {
		if got := nextPing(tc.seconds); got != tc.want {
			t.Errorf("next_ping %d: %v, want %v", tc.seconds, got, tc.want)
		}
	}
}
