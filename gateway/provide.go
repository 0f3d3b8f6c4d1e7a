package gateway

import (
	"context"
	"sort"
	"time"

	"github.com/fedgrid/fedgrid/p2p"
)

// gatewaysTag stands for p2p.GatewaysKey in the provide loop; no dataset tag
// can take this form (tags are printable).
const gatewaysTag = "\x00gateways"

// provideLoop announces one DHT provider record per dataset tag: at start,
// whenever datasets change, and every Reprovide (records expire after 48 h).
// It runs in the background, never on a request's path.
func (g *Gateway) provideLoop(ctx context.Context) {
	provided := map[string]time.Time{}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		tags, err := g.currentTags()
		if err != nil {
			g.log.Error("list dataset tags", "err", err)
		}
		for _, tag := range tags {
			if last, ok := provided[tag]; ok && time.Since(last) < g.cfg.Reprovide {
				continue
			}
			if g.peer.DHT.RoutingTable().Size() == 0 {
				break // nobody to store the record yet; try again on the next tick
			}
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			key := g.peer.TagKey(tag)
			if tag == gatewaysTag {
				key = p2p.GatewaysKey(g.peer.Network)
			}
			err := g.peer.DHT.Provide(pctx, key, true)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				g.log.Warn("provide tag", "tag", tag, "err", err)
				continue
			}
			provided[tag] = time.Now()
			g.log.Info("tag provided", "tag", tag)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.provideCh:
		}
	}
}

func (g *Gateway) currentTags() ([]string, error) {
	dss, err := g.store.Datasets()
	if err != nil {
		return nil, err
	}
	set := map[string]bool{gatewaysTag: true}
	for _, d := range dss {
		for _, t := range d.Tags {
			set[t] = true
		}
	}
	out := make([]string, 0, len(set)+1)
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out, nil
}
