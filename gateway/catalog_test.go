package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TestCatalogPreview: the preview of a private dataset is synthetic (no
// real row, no rare value), carries its DP cost, matches the upload's
// schema, and its noised summary is drawn once and kept; a public dataset's
// preview stays within the data's ranges.
func TestCatalogPreview(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := startCluster(t, ctx)
	st := c.gw.Store()

	csv := readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))
	pima, err := dataset.ReadCSV(bytes.NewReader(csv), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	private := &store.Dataset{Name: "pima private", Tags: []string{"medical"}, Visibility: store.VisibilityPrivate, Columns: pima.Columns(), Rows: pima.NumRows()}
	public := &store.Dataset{Name: "pima public", Tags: []string{"medical"}, Visibility: store.VisibilityPublic, Columns: pima.Columns(), Rows: pima.NumRows()}
	for _, d := range []*store.Dataset{private, public} {
		if err := st.PutDataset(d, csv); err != nil {
			t.Fatal(err)
		}
	}
	// Patients: a unique identifier, a common category, a number.
	var b bytes.Buffer
	b.WriteString("patient,sex,weight\n")
	for i := range 2000 {
		fmt.Fprintf(&b, "P-%05d,%s,%d\n", 31*i+7, []string{"F", "M"}[i%2], 50+i%40)
	}
	patients, err := dataset.ReadCSV(bytes.NewReader(b.Bytes()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := patients.Category("patient")
	pd := &store.Dataset{Name: "patients", Visibility: store.VisibilityPrivate, Columns: patients.Columns(), Rows: patients.NumRows()}
	if err := st.PutDataset(pd, b.Bytes()); err != nil {
		t.Fatal(err)
	}

	// Dial first: the gateway's own dial of its bootstrap peer may not be up yet.
	if err := c.net.Peer().Host.Connect(ctx, peer.AddrInfo{ID: c.gw.Peer().ID(), Addrs: c.gw.Peer().Host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	ask := func(req *wire.CatalogRequest) (*wire.CatalogResponse, error) {
		return p2p.Call[wire.CatalogRequest, wire.CatalogResponse](ctx, c.net.Peer().Host, c.gw.Peer().ID(), c.gw.Peer().Protocol(wire.ProtoCatalog), req,
			p2p.Limits{MaxRequest: wire.MaxSmall, MaxResponse: wire.MaxCatalog, Timeout: 20 * time.Second})
	}
	entries := func(resp *wire.CatalogResponse) map[string]wire.CatalogEntry {
		out := map[string]wire.CatalogEntry{}
		for _, e := range resp.Datasets {
			out[e.ID] = e
		}
		return out
	}
	// Real rows of pima, as numbers, to compare previews against.
	real := map[string]bool{}
	cols := pima.Columns()
	numCols := make([][]float64, len(cols))
	for j, col := range cols {
		numCols[j], _ = pima.Numeric(col.Name)
	}
	key := func(vals []float64) string { return fmt.Sprint(vals) }
	for i := range pima.NumRows() {
		row := make([]float64, len(cols))
		for j := range cols {
			row[j] = numCols[j][i]
		}
		real[key(row)] = true
	}

	summaries := map[string][]byte{}
	for round := range 3 {
		resp, err := ask(&wire.CatalogRequest{PreviewRows: wire.MaxPreviewRows})
		if err != nil {
			t.Fatal(err)
		}
		got := entries(resp)
		if len(got) != 3 {
			t.Fatalf("catalog: %+v", resp)
		}
		for _, d := range []*store.Dataset{private, public} {
			e := got[d.ID]
			p := e.Preview
			if p == nil || !p.Synthetic || len(p.Rows) != wire.MaxPreviewRows {
				t.Fatalf("%s: preview %+v", d.Name, p)
			}
			if !slices.Equal(e.Columns, pima.Columns()) {
				t.Fatalf("%s: schema %+v, uploaded %+v", d.Name, e.Columns, pima.Columns())
			}
			names := make([]string, len(cols))
			for j, col := range cols {
				names[j] = col.Name
			}
			if !slices.Equal(p.Columns, names) {
				t.Fatalf("%s: preview columns %v, want %v", d.Name, p.Columns, names)
			}
			isPrivate := d.Visibility == store.VisibilityPrivate
			if p.DP != isPrivate || isPrivate && (p.Epsilon != gateway.PreviewEpsilon || p.Delta != gateway.PreviewDelta) {
				t.Fatalf("%s: DP marking %+v", d.Name, p)
			}
			for _, row := range p.Rows {
				if len(row) != len(cols) {
					t.Fatalf("%s: row %v", d.Name, row)
				}
				vals := make([]float64, len(row))
				for j, cell := range row {
					if cell == "*" && isPrivate {
						vals[j] = -1 // suppressed: no real value
						continue
					}
					v, err := strconv.ParseFloat(cell, 64)
					if err != nil {
						t.Fatalf("%s: cell %q of number column %s", d.Name, cell, cols[j].Name)
					}
					vals[j] = v
					if !isPrivate && (v < slices.Min(numCols[j]) || v > slices.Max(numCols[j])) {
						t.Fatalf("%s: %s=%v outside the data's range", d.Name, cols[j].Name, v)
					}
				}
				if real[key(vals)] {
					t.Fatalf("%s: preview row %v is a real row", d.Name, row)
				}
			}
		}
		pe := got[pd.ID].Preview
		if pe == nil || !pe.DP || !slices.Equal(pe.Columns, []string{"patient", "sex", "weight"}) {
			t.Fatalf("patients preview: %+v", pe)
		}
		for _, row := range pe.Rows {
			if slices.Contains(ids, row[0]) {
				t.Fatalf("a real patient identifier leaked into the preview: %v", row)
			}
			if row[1] != "F" && row[1] != "M" {
				t.Fatalf("sex %q: the common values should survive the noise", row[1])
			}
		}
		t.Logf("round %d: private pima preview row %v; patients row %v", round, got[private.ID].Preview.Rows[0], pe.Rows[0])

		// The noised summaries are stored once and reused, never redrawn.
		keys, err := st.CatalogSummaryKeys()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []*store.Dataset{private, public, pd} {
			if len(keys[d.ID]) != 1 {
				t.Fatalf("summaries of %s: %v", d.Name, keys[d.ID])
			}
			s, err := st.CatalogSummary(d.ID, keys[d.ID][0])
			if err != nil {
				t.Fatal(err)
			}
			if prev, ok := summaries[d.ID]; ok && !bytes.Equal(prev, s) {
				t.Fatalf("summary of %s was redrawn", d.Name)
			}
			summaries[d.ID] = s
		}
	}

	// Queries without a preview, and refused queries.
	resp, err := ask(&wire.CatalogRequest{Tags: []string{"medical"}, Text: "private", PreviewRows: -1})
	if err != nil || len(resp.Datasets) != 1 || resp.Datasets[0].ID != private.ID || resp.Datasets[0].Preview != nil {
		t.Fatalf("text query without preview: %v %+v", err, resp)
	}
	for _, bad := range []*wire.CatalogRequest{
		{Match: "some"},
		{PreviewRows: wire.MaxPreviewRows + 1},
		{Text: strings.Repeat("x", wire.MaxQueryText+1)},
		{Tags: make([]string, wire.MaxQueryTags+1)},
	} {
		if _, err := ask(bad); !p2p.IsCode(err, p2p.CodeBadRequest) {
			t.Fatalf("%+v: %v", bad, err)
		}
	}

	// A deleted dataset's summary goes with it (the provide loop sweeps).
	if err := st.DeleteDataset(pd.ID); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "summary of a deleted dataset dropped", func() error {
		keys, err := st.CatalogSummaryKeys()
		if err != nil {
			return err
		}
		if len(keys[pd.ID]) != 0 {
			return fmt.Errorf("still there: %v", keys[pd.ID])
		}
		return nil
	})
}
