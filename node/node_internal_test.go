package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

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
