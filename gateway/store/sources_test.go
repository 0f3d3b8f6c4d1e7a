package store

import (
	"errors"
	"testing"
	"time"
)

// A dataset source belongs to an existing dataset, refuses a URL with a
// password, keeps its schedule within bounds, records snapshots and goes
// with its dataset.
func TestDatasetSourceRecord(t *testing.T) {
	s := openTest(t, t.TempDir())
	src := &DatasetSource{DatasetID: "nosuch", Kind: SourcePostgres, URL: "postgres://reader@db.example:5432/clinic", Table: "patients"}
	if err := s.PutDatasetSource(src, "u1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("source of a missing dataset: %v; want ErrNotFound", err)
	}
	d := &Dataset{Name: "patients", CreatedBy: "u1"}
	if err := s.PutDataset(d, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []DatasetSource{
		{Kind: SourcePostgres, URL: "postgres://reader:hunter2@db.example/clinic", Table: "t"},
		{Kind: SourcePostgres, URL: "postgres://reader@db.example/clinic"},
		{Kind: SourcePostgres, URL: "postgres://reader@db.example/clinic", Table: "t", Query: "SELECT 1"},
		{Kind: "ftp", URL: "ftp://x/y"},
		{Kind: SourcePostgres, URL: "postgres://reader@db.example/clinic", Table: "t", IntervalSeconds: 5},
	} {
		bad.DatasetID = d.ID
		if err := s.PutDatasetSource(&bad, "u1"); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v; want ErrInvalid", bad, err)
		}
	}
	src.DatasetID, src.IntervalSeconds = d.ID, 3600
	if err := s.PutDatasetSource(src, "u1"); err != nil {
		t.Fatal(err)
	}
	got, err := s.DatasetSource(d.ID)
	if err != nil || got.Schema != DatasetSourceSchema || got.Table != "patients" || got.Interval() != time.Hour {
		t.Fatalf("stored source %+v, %v", got, err)
	}
	if got.Due(got.CreatedAt) || !got.Due(got.CreatedAt.Add(time.Hour)) {
		t.Fatalf("a never-snapshotted hourly source: due now %v, due in an hour %v", got.Due(got.CreatedAt), got.Due(got.CreatedAt.Add(time.Hour)))
	}
	if got, err = s.RecordSnapshot(d.ID, 3, "", "u1"); err != nil || got.LastVersion != 3 || got.LastSnapshotAt.IsZero() {
		t.Fatalf("record snapshot: %+v, %v", got, err)
	}
	if got, err = s.RecordSnapshot(d.ID, 3, "connection refused", ""); err != nil || got.LastVersion != 3 || got.LastError != "connection refused" {
		t.Fatalf("record failed snapshot: %+v, %v", got, err)
	}
	if got, err = s.SetSourceInterval(d.ID, 0, "u1"); err != nil || got.IntervalSeconds != 0 || got.Due(time.Now().Add(1000*time.Hour)) {
		t.Fatalf("on demand only: %+v, %v", got, err)
	}
	if err := s.DeleteDataset(d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DatasetSource(d.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("source after its dataset was deleted: %v; want ErrNotFound", err)
	}
}
