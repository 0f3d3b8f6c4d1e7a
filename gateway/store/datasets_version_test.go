package store

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// A data directory written before dataset versions existed opens: its
// dataset records gain version 1 and the hash of their stored bytes, and
// later puts count versions from there.
func TestOldDatasetRecordsMigrate(t *testing.T) {
	dir := t.TempDir()
	csv := []byte("age,label\n31,0\n52,1\n")
	// The exact record the previous format wrote: no version, hash or schema.
	old := `{"id":"ds1","name":"old","description":"","tags":["x"],"visibility":"public",` +
		`"columns":[{"name":"age","type":"number"},{"name":"label","type":"number"}],"rows":2,"size":20,` +
		`"created_at":"2026-11-01T10:00:00Z","created_by":"u1"}`
	db, err := badger.Open(badgerOptions(dir, testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte(prefixDataset+"ds1"), []byte(old)); err != nil {
			return err
		}
		return txn.Set([]byte(prefixCSV+"ds1"), csv)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, dir)
	d, err := s.Dataset("ds1")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(csv)
	want := hex.EncodeToString(sum[:])
	if d.Version != 1 || d.SHA256 != want || d.Schema != DatasetSchema || d.Name != "old" || d.Rows != 2 {
		t.Fatalf("migrated record %+v, want version 1, sha256 %s, schema %d", d, want, DatasetSchema)
	}

	// A job names the version it was created on.
	j1 := &Job{DatasetID: "ds1", UserID: "u1"}
	if err := s.CreateJob(j1); err != nil {
		t.Fatal(err)
	}
	if j1.DatasetVersion != 1 || j1.DatasetSHA256 != want {
		t.Fatalf("job on v1 records %d %q", j1.DatasetVersion, j1.DatasetSHA256)
	}

	// The same bytes again keep the version; new bytes make the next one.
	d.Description = "same bytes"
	if err := s.PutDataset(d, csv); err != nil {
		t.Fatal(err)
	}
	if d.Version != 1 || d.SHA256 != want {
		t.Fatalf("same bytes: version %d hash %s", d.Version, d.SHA256)
	}
	csv2 := append(csv, []byte("47,1\n")...)
	d.Size = 0
	if err := s.PutDataset(d, csv2); err != nil {
		t.Fatal(err)
	}
	if d.Version != 2 || d.SHA256 != ContentHash(csv2) || d.SHA256 == want {
		t.Fatalf("new bytes: version %d hash %s", d.Version, d.SHA256)
	}
	j2 := &Job{DatasetID: "ds1", UserID: "u1"}
	if err := s.CreateJob(j2); err != nil {
		t.Fatal(err)
	}
	if j2.DatasetVersion != 2 || j2.DatasetSHA256 != ContentHash(csv2) {
		t.Fatalf("job on v2 records %d %q", j2.DatasetVersion, j2.DatasetSHA256)
	}
	// The first job still names the version it trained on, after a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	got, err := s.Job(j1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.DatasetVersion != 1 || got.DatasetSHA256 != want {
		t.Fatalf("reopened job %s names %d %q", got.ID, got.DatasetVersion, got.DatasetSHA256)
	}
	if d, err := s.Dataset("ds1"); err != nil || d.Version != 2 || d.Schema != DatasetSchema {
		t.Fatalf("reopened dataset %+v, %v", d, err)
	}
}
