package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
)

// TestP2PErrorNeverLeaksInternalText: an error the gateway did not mean
// to give a peer is answered "internal error", whatever it says; store
// errors get their kind's code; every service kind but Internal has a code.
func TestP2PErrorNeverLeaksInternalText(t *testing.T) {
	g := &Gateway{log: slog.New(slog.DiscardHandler)}
	for _, err := range []error{
		errors.New("open /var/lib/fedgrid/db/000042.vlog: permission denied"),
		fmt.Errorf("decode summary of d1: %w", errors.New("unexpected end of JSON input")),
	} {
		var pe *p2p.Error
		if !errors.As(g.p2pError("ds/job", err), &pe) || pe.Code != p2p.CodeInternal || pe.Message != "internal error" {
			t.Errorf("%v answered %+v", err, pe)
		}
	}
	for err, code := range map[error]string{
		fmt.Errorf("%w: job x", store.ErrNotFound):                           p2p.CodeNotFound,
		fmt.Errorf("%w: available 0", store.ErrInsufficientBudget):           p2p.CodeInsufficientBudget,
		fmt.Errorf("%w: job x", store.ErrStale):                              p2p.CodeStale,
		fmt.Errorf("%w: job x is already succeeded", store.ErrConflictState): p2p.CodeConflict,
	} {
		var pe *p2p.Error
		if !errors.As(g.p2pError("ds/job", err), &pe) || pe.Code != code || strings.Contains(pe.Message, "store:") {
			t.Errorf("%v answered %+v, want code %s", err, pe, code)
		}
	}
	for k := service.Invalid; k <= service.Unavailable; k++ {
		if _, ok := p2pCode(k); !ok {
			t.Errorf("service kind %d has no p2p code", k)
		}
	}
	if _, ok := p2pCode(service.Internal); ok {
		t.Error("Internal has a p2p code other than internal")
	}
}
