package gateway

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// --- catalog -------------------------------------------------------------

func (g *Gateway) handleCatalog(_ context.Context, _ peer.ID, req *wire.CatalogRequest) (*wire.CatalogResponse, error) {
	if len(req.Tags) > 32 {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "at most 32 tags per query, got %d", len(req.Tags))
	}
	dss, err := g.store.DatasetsWithTags(req.Tags)
	if err != nil {
		return nil, err
	}
	resp := &wire.CatalogResponse{Gateway: g.ID(), Name: g.cfg.Name, Datasets: []wire.CatalogEntry{}}
	for _, d := range dss {
		resp.Datasets = append(resp.Datasets, wire.CatalogEntry{
			ID: d.ID, Name: d.Name, Description: d.Description, Tags: d.Tags,
			Visibility: d.Visibility, Rows: d.Rows, Columns: d.Columns,
		})
	}
	return resp, nil
}
