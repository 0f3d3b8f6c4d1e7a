package gateway

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
)

// job/fetch renders a job's rows as CSV only up to what its response
// carries (maxFetchCSV, lowered here): a larger dataset is refused with
// too_large and what the node needs, before the gateway holds more than
// that; within the limit the rows are the version's, whole.
func TestJobCSVBounded(t *testing.T) {
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var b strings.Builder
	b.WriteString("x,y\n")
	for i := range 5000 {
		fmt.Fprintf(&b, "%d,%d\n", i, i%2)
	}
	d := &store.Dataset{Name: "x"}
	if err := st.PutDataset(d, []byte(b.String())); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{store: st}
	j := &store.Job{DatasetID: d.ID}
	got, err := g.jobCSV(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.OpenDatasetVersion(d.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var want bytes.Buffer
	if err := dataset.WriteSourceCSV(context.Background(), v, &want); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) || len(got) < 20_000 {
		t.Fatalf("jobCSV gave %d bytes, the version as CSV is %d", len(got), want.Len())
	}

	defer func(m int) { maxFetchCSV = m }(maxFetchCSV)
	maxFetchCSV = 10_000
	_, err = g.jobCSV(context.Background(), j)
	if !p2p.IsCode(err, p2p.CodeTooLarge) || !strings.Contains(err.Error(), "job/open and job/data") {
		t.Fatalf("a version over the limit: %v", err)
	}
}
