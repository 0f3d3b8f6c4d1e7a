package gateway

import (
	"context"
	"encoding/json"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
	"github.com/fedgrid/fedgrid/witness"
)

// witnessLoop publishes the audit chain's head, signed with the gateway's
// peer key, to the network peers it bootstraps from, every
// Config.WitnessInterval when the head moved: they keep the latest
// checkpoints, so that a history rewritten later on this gateway's disk no
// longer matches them (fedgrid audit verify --witness).
func (g *Gateway) witnessLoop(ctx context.Context) {
	witnesses, err := p2p.ParseAddrInfos(g.cfg.Bootstrap)
	if err != nil || len(witnesses) == 0 {
		return
	}
	t := time.NewTicker(g.cfg.WitnessInterval)
	defer t.Stop()
	var published uint64
	for {
		if seq, err := g.publishCheckpoint(ctx, witnesses, published); err != nil {
			g.log.Debug("audit checkpoint", "err", err)
		} else {
			published = seq
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// publishCheckpoint signs the current head and puts it to every witness if
// it moved past published; it returns the sequence number witnessed.
func (g *Gateway) publishCheckpoint(ctx context.Context, witnesses []peer.AddrInfo, published uint64) (uint64, error) {
	seq, hash, err := g.store.AuditHead()
	if err != nil || seq == 0 || seq == published {
		return published, err
	}
	cp := wire.Checkpoint{Seq: seq, Hash: hash, Time: time.Now().UTC()}
	if err := witness.Sign(g.peer.Host.Peerstore().PrivKey(g.peer.ID()), &cp); err != nil {
		return published, err
	}
	var last error
	ok := 0
	for _, w := range witnesses {
		_, err := p2p.Request(ctx, g.peer, w.ID, wire.WitnessPut(), &cp)
		if err != nil {
			if p2p.IsCode(err, p2p.CodeConflict) {
				g.log.Warn("the audit witness refused this gateway's checkpoint: the audit log no longer matches what it witnessed", "witness", w.ID, "seq", seq, "err", err)
			}
			last = err
			continue
		}
		ok++
	}
	if ok == 0 {
		return published, last
	}
	g.log.Info("audit checkpoint witnessed", "seq", seq, "hash", hash, "witnesses", ok)
	return seq, nil
}

// auditExport appends every audit entry after Config.AuditLogFrom to
// Config.AuditLog as one JSON line (the entry as GET /api/v1/audit shows
// it, with its seq, prev and hash), in chain order, as they are committed.
func (g *Gateway) auditExport(ctx context.Context) {
	after := g.cfg.AuditLogFrom
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		after = g.exportAudit(after)
		select {
		case <-ctx.Done():
			g.exportAudit(after) // what the last moments committed
			return
		case <-t.C:
		}
	}
}

// exportAudit writes the entries after seq after and returns the last
// written.
func (g *Gateway) exportAudit(after uint64) uint64 {
	for {
		es, err := g.store.Audit(store.AuditFilter{After: after, Limit: 1000})
		if err != nil {
			g.log.Warn("audit log export", "err", err)
			return after
		}
		for _, e := range es {
			b, err := json.Marshal(e)
			if err == nil {
				_, err = g.cfg.AuditLog.Write(append(b, '\n'))
			}
			if err != nil {
				g.log.Warn("audit log export: write", "seq", e.Seq, "err", err)
				return after
			}
			after = e.Seq
		}
		if len(es) < 1000 {
			return after
		}
	}
}
