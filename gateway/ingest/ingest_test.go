package ingest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
)

func TestDatasetStoresVersionsAndRefusesBadCSV(t *testing.T) {
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx := context.Background()

	d := &store.Dataset{Name: "pima", CreatedBy: "alice"}
	if err := Dataset(ctx, st, d, strings.NewReader("age,label\n31,0\n52,1\n"), dataset.Limits{}); err != nil {
		t.Fatal(err)
	}
	if d.ID == "" || d.Rows != 2 || d.Version != 1 || len(d.Columns) != 2 || d.Columns[0].Type != dataset.TypeNumber {
		t.Fatalf("stored %+v", d)
	}
	next := &store.Dataset{ID: d.ID, Name: "pima", CreatedBy: "alice"}
	if err := Dataset(ctx, st, next, strings.NewReader("age,label\n31,0\n52,1\n40,0\n"), dataset.Limits{}); err != nil {
		t.Fatal(err)
	}
	if next.Version != 2 || next.Rows != 3 || next.SHA256 == d.SHA256 {
		t.Fatalf("second version %+v after %+v", next, d)
	}

	err = Dataset(ctx, st, &store.Dataset{Name: "bad"}, strings.NewReader("a,b\n1\n"), dataset.Limits{})
	var bad *BadInputError
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("short row: %v", err)
	}
	err = Dataset(ctx, st, &store.Dataset{Name: "big"}, strings.NewReader("a\n1\n2\n3\n"), dataset.Limits{MaxBytes: 4})
	if !errors.As(err, &bad) {
		t.Fatalf("over the limit: %v", err)
	}
}
