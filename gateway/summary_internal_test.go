package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// TestSummaryNoiseDrawnOnce: a private dataset's catalog summary is noised
// once per version. The background refresh works from a dataset list that
// may be seconds old; a dataset uploaded since, whose summary a query has
// already stored, must keep it: a second draw of fresh noise would let the
// two noisy versions be averaged.
func TestSummaryNoiseDrawnOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, err := Start(ctx, Config{DataDir: t.TempDir(), Network: "sumtest", NoHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Close() }()
	var b strings.Builder
	b.WriteString("age,sex,score\n")
	for i := range 200 {
		fmt.Fprintf(&b, "%d,%s,%d\n", 20+i%60, []string{"F", "M"}[i%2], i%7)
	}
	tbl, err := dataset.ReadCSV(strings.NewReader(b.String()), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := g.store.Datasets() // the list a refresh started with
	if err != nil {
		t.Fatal(err)
	}
	d := &store.Dataset{Name: "cohort", Visibility: store.VisibilityPrivate, Columns: tbl.Columns(), Rows: tbl.NumRows()}
	if err := g.store.PutDataset(d, []byte(b.String())); err != nil {
		t.Fatal(err)
	}
	first, err := g.summary(d)
	if err != nil {
		t.Fatal(err)
	}
	g.refreshSummaries(ctx, stale)
	again, err := g.summary(d)
	if err != nil {
		t.Fatal(err)
	}
	j1, _ := json.Marshal(first)
	j2, _ := json.Marshal(again)
	if !bytes.Equal(j1, j2) {
		t.Fatal("the summary of a current dataset was dropped and its noise drawn again")
	}
	// A deleted dataset's summary goes.
	if err := g.store.DeleteDataset(d.ID); err != nil {
		t.Fatal(err)
	}
	g.refreshSummaries(ctx, nil)
	if keys, _ := g.store.CatalogSummaryKeys(); len(keys[d.ID]) != 0 {
		t.Fatalf("summary of a deleted dataset kept: %v", keys[d.ID])
	}
}

// TestSummaryHighCardinality: a dataset whose id column has 100k distinct
// values is summarised in one scan of its stored version (the number
// column's range comes from the stored statistics); the summary marks the
// id column high-cardinality with no per-value marginal, and the preview
// names it and shows no identifier.
func TestSummaryHighCardinality(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, err := Start(ctx, Config{DataDir: t.TempDir(), Network: "sumtest", NoHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Close() }()
	const rows = 100_000
	var b strings.Builder
	b.WriteString("id,sex,age\n")
	for i := range rows {
		fmt.Fprintf(&b, "p%06d,%s,%d\n", i, []string{"F", "M"}[i%2], 20+i%60)
	}
	for _, vis := range []string{store.VisibilityPublic, store.VisibilityPrivate} {
		d := &store.Dataset{Name: "cohort-" + vis, Visibility: vis}
		if err := g.store.PutDataset(d, []byte(b.String())); err != nil {
			t.Fatal(err)
		}
		if d, err = g.store.Dataset(d.ID); err != nil {
			t.Fatal(err)
		}
		scans := g.DatasetScans()
		m, err := g.summary(d)
		if err != nil {
			t.Fatal(err)
		}
		if n := g.DatasetScans() - scans; n != 1 {
			t.Fatalf("%s: the summary took %d scans, want 1", vis, n)
		}
		id, sex, age := m.Columns[0], m.Columns[1], m.Columns[2]
		if !id.HighCardinality || id.Values != nil || id.Counts != nil {
			t.Fatalf("%s: id column %v high cardinality with %d values", vis, id.HighCardinality, len(id.Values))
		}
		if sex.HighCardinality || strings.Join(sex.Values, ",") != "F,M" || age.HighCardinality || len(age.Counts) == 0 {
			t.Fatalf("%s: other columns %+v %+v", vis, sex, age)
		}
		if vis == store.VisibilityPublic && (age.Edges[0] != 20 || age.Edges[len(age.Edges)-1] != 79 || sex.Counts[0] != rows/2) {
			t.Fatalf("public summary: age edges %v, sex counts %v", age.Edges, sex.Counts)
		}
		p, err := g.Preview(d.ID, 20)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(p.HighCardinality, ",") != "id" {
			t.Fatalf("%s: preview names %v high-cardinality", vis, p.HighCardinality)
		}
		for _, row := range p.Rows {
			if row[0] != suppressed {
				t.Fatalf("%s: preview shows id %q", vis, row[0])
			}
		}
	}
}

// TestSummarySchema1Opens: a summary stored by the previous release (no
// schema field, no high-cardinality flag) is read as it is, not computed
// again (its noise was drawn once), and a summary from a newer release is
// refused with a clear error.
func TestSummarySchema1Opens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g, err := Start(ctx, Config{DataDir: t.TempDir(), Network: "sumtest", NoHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Close() }()
	d := &store.Dataset{Name: "old", Visibility: store.VisibilityPrivate}
	if err := g.store.PutDataset(d, []byte("sex,age\nF,30\nM,41\n")); err != nil {
		t.Fatal(err)
	}
	if d, err = g.store.Dataset(d.ID); err != nil {
		t.Fatal(err)
	}
	ver := summaryVersion(d)
	// As written by computeMarginals before schema 2.
	old := `{"version":"` + ver + `","dp":true,"epsilon":1,"delta":0.000001,"columns":[` +
		`{"name":"sex","type":"category","values":["F","M"],"counts":[4107,3893]},` +
		`{"name":"age","type":"number","edges":[0,10,100],"integer":true,"decimals":-1,"counts":[0,8000]}]}`
	if _, err := g.store.PutCatalogSummaryOnce(d.ID, ver, []byte(old)); err != nil {
		t.Fatal(err)
	}
	scans := g.DatasetScans()
	m, err := g.summary(d)
	if err != nil {
		t.Fatal(err)
	}
	if g.DatasetScans() != scans || m.Schema != 0 || m.Columns[0].Counts[0] != 4107 || m.Columns[0].HighCardinality {
		t.Fatalf("old summary not kept as it was: %+v (%d scans)", m, g.DatasetScans()-scans)
	}
	p, err := g.Preview(d.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range p.Rows {
		if (row[0] != "F" && row[0] != "M") || row[1] == suppressed {
			t.Fatalf("preview row %v", row)
		}
	}
	if err := g.store.DeleteCatalogSummary(d.ID, ver); err != nil {
		t.Fatal(err)
	}
	newer := strings.Replace(old, `{"version"`, `{"schema":99,"version"`, 1)
	if _, err := g.store.PutCatalogSummaryOnce(d.ID, ver, []byte(newer)); err != nil {
		t.Fatal(err)
	}
	if _, err := g.summary(d); err == nil || !strings.Contains(err.Error(), "newer fedgrid") {
		t.Fatalf("summary from a newer release: %v", err)
	}
}
