package gateway_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// The admin API's preview (Gateway.Preview) gives synthetic rows with the
// upload's columns and never a real row of a private dataset.
func TestPreviewHasNoRealRow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := startCluster(t, ctx)
	csv := readFile(t, filepath.Join("..", "dataset", "testdata", "pima_diabetes.csv"))
	tbl, err := dataset.ReadCSV(bytesReader(csv), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	ds := &store.Dataset{Name: "pima", Tags: []string{"medical"}, Visibility: store.VisibilityPrivate, Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := c.gw.Store().PutDataset(ds, csv); err != nil {
		t.Fatal(err)
	}
	real := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(csv)), "\n")[1:] {
		real[strings.TrimSpace(line)] = true
	}
	p, err := c.gw.Preview(ds.ID, 20)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Synthetic || !p.DP || len(p.Rows) != 20 || len(p.Columns) != len(tbl.Columns()) {
		t.Fatalf("preview: synthetic %v dp %v, %d rows, columns %v", p.Synthetic, p.DP, len(p.Rows), p.Columns)
	}
	for i, c := range tbl.Columns() {
		if p.Columns[i] != c.Name {
			t.Fatalf("column %d is %q, the upload's is %q", i, p.Columns[i], c.Name)
		}
	}
	for _, row := range p.Rows {
		if real[strings.Join(row, ",")] {
			t.Fatalf("preview row %v is a real row", row)
		}
	}
	if _, err := c.gw.Preview(ds.ID, 0); err == nil {
		t.Fatal("0 rows accepted")
	}
	if _, err := c.gw.Preview("missing", 3); err == nil {
		t.Fatal("preview of a missing dataset")
	}
}
