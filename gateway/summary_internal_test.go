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
