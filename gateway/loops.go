package gateway

import (
	"context"
	"time"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// offerLoop gossips an offer for every queued job, again every
// OfferInterval until a node takes it: gossip is lossy, so an offer is
// repeated rather than trusted to arrive once.
func (g *Gateway) offerLoop(ctx context.Context) {
	t := time.NewTicker(g.cfg.OfferInterval)
	defer t.Stop()
	for {
		g.publishOffers(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.kick:
		}
	}
}

// leaseLoop puts jobs whose node stopped heartbeating back in the queue.
func (g *Gateway) leaseLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			expired, err := g.store.ExpireLeases(now)
			if err != nil {
				g.log.Error("expire leases", "err", err)
				continue
			}
			for _, j := range expired {
				g.metrics.leaseExpiries.Inc()
				if j.State == wire.StateFailed {
					g.metrics.jobEnded(wire.StateFailed, j.StartedAt)
				}
				g.log.Warn("lease lost", "job", j.ID, "attempt", j.Attempt, "now", j.State, "error", j.Error)
			}
			if len(expired) > 0 {
				g.wake(g.kick)
			}
		}
	}
}

// uploadSweepLoop removes upload sessions untouched for longer than
// UploadTTL, and their bytes, every tenth of the TTL (at most hourly).
func (g *Gateway) uploadSweepLoop(ctx context.Context) {
	t := time.NewTicker(min(g.cfg.UploadTTL/10, time.Hour))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.sweepUploads(g.cfg.Now())
		}
	}
}

// sweepUploads removes the upload sessions expired at now, and writes how
// many to the audit log (upload.expire).
func (g *Gateway) sweepUploads(now time.Time) {
	n, err := g.uploads.Sweep(now, g.cfg.UploadTTL)
	if err != nil {
		g.log.Warn("sweep upload sessions", "err", err)
	}
	if n == 0 {
		return
	}
	g.log.Info("expired upload sessions removed", "count", n)
	if err := g.store.AppendAudit(store.AuditEvent{Action: "upload.expire", Target: "uploads",
		Detail: map[string]any{"removed": n, "ttl_seconds": int64(g.cfg.UploadTTL / time.Second)}}); err != nil {
		g.log.Error("audit expired upload sessions", "err", err)
	}
}
