package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fedgrid/fedgrid/gateway/store"
)

// WaitSummary waits until the gateway's background loop has stored the
// catalog summary of dataset id's current version (computeMarginals: one
// scan of every row, counted in DatasetScans), so that a test or benchmark
// measuring scans or CPU starts after it.
func (g *Gateway) WaitSummary(ctx context.Context, id string) error {
	for {
		d, err := g.store.Dataset(id)
		if err != nil {
			return err
		}
		if _, err := g.store.CatalogSummary(d.ID, summaryVersion(d)); err == nil {
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no catalog summary of dataset %s: %w", id, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
