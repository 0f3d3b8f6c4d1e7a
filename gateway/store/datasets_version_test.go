package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/dataset"
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
	if d.Version != 1 || d.SHA256 != want || d.Schema != DatasetSchema || d.Name != "old" || d.Rows != 2 || d.Storage != StorageColumns {
		t.Fatalf("migrated record %+v, want version 1, sha256 %s, schema %d", d, want, DatasetSchema)
	}
	checkConverted(t, s, "ds1", csv)

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

// checkConverted fails unless dataset id's contents are a columnar version
// holding csv's cells and its CSV bytes are gone from badger.
func checkConverted(t *testing.T, s *Store, id string, csv []byte) {
	t.Helper()
	err := s.view(func(txn *badger.Txn) error {
		_, err := getBytes(txn, prefixCSV+id)
		return err
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("CSV bytes of %s still in badger: %v", id, err)
	}
	d, v, err := s.OpenDataset(id)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want, err := dataset.ReadCSV(bytes.NewReader(csv), dataset.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := dataset.Collect(context.Background(), v, 0)
	if err != nil {
		t.Fatal(err)
	}
	gb, _ := got.Bytes()
	wb, _ := want.Bytes()
	if string(gb) != string(wb) || v.Meta().SHA256 != d.SHA256 || filepath.Dir(v.Dir()) != filepath.Join(s.DatasetsDir(), id) {
		t.Fatalf("converted %s reads %q (hash %s, in %s), want %q (hash %s)", id, gb, v.Meta().SHA256, v.Dir(), wb, d.SHA256)
	}
}

// A data directory written by the commit before columnar storage (schema
// 1: version and hash in the record, the CSV bytes in badger) opens: the
// bytes become a columnar version with the same hash, and jobs keep naming
// their version.
func TestSchema1DatasetsConvertToColumns(t *testing.T) {
	dir := t.TempDir()
	csv := []byte("age,city\n31,Lyon\n52,\"Saint-Denis, Réunion\"\n 7,Oslo\n")
	sum := sha256.Sum256(csv)
	hash := hex.EncodeToString(sum[:])
	rec := `{"id":"ds2","name":"two","description":"","tags":[],"visibility":"private",` +
		`"columns":[{"name":"age","type":"number"},{"name":"city","type":"category"}],"rows":3,"size":60,` +
		`"created_at":"2026-11-20T10:00:00Z","created_by":"u1","version":3,"sha256":"` + hash + `","schema":1}`
	job := `{"id":"j1","dataset_id":"ds2","user_id":"u1","state":"done","dataset_version":3,"dataset_sha256":"` + hash + `"}`
	db, err := badger.Open(badgerOptions(dir, testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		for k, v := range map[string][]byte{prefixDataset + "ds2": []byte(rec), prefixCSV + "ds2": csv, prefixJob + "j1": []byte(job)} {
			if err := txn.Set([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, dir)
	d, err := s.Dataset("ds2")
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != 3 || d.SHA256 != hash || d.Schema != DatasetSchema || d.Source != "csv" {
		t.Fatalf("converted record %+v", d)
	}
	checkConverted(t, s, "ds2", csv)
	// A new version keeps the old one's files, which job j1 names.
	d.Size = 0
	if err := s.PutDataset(d, []byte("age,city\n1,Nice\n")); err != nil {
		t.Fatal(err)
	}
	if d.Version != 4 {
		t.Fatalf("new version %d", d.Version)
	}
	if _, err := os.Stat(s.VersionDir("ds2", hash)); err != nil {
		t.Fatalf("the version job j1 names is gone: %v", err)
	}
	// Reopening changes nothing.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	if d, err := s.Dataset("ds2"); err != nil || d.Version != 4 || d.Rows != 1 {
		t.Fatalf("reopened %+v %v", d, err)
	}
	if _, err := os.Stat(s.VersionDir("ds2", hash)); err != nil {
		t.Fatalf("the version job j1 names is gone after a reopen: %v", err)
	}
}

// Version files: a replaced version nothing names is removed, a deleted
// dataset's files go, and what a crash leaves (a half-written ingest, a
// version never recorded) is removed when the store opens.
func TestDatasetVersionFiles(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	d := &Dataset{Name: "d"}
	if err := s.PutDataset(d, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	v1 := s.VersionDir(d.ID, d.SHA256)
	if err := s.PutDataset(d, []byte("a\n1\n2\n")); err != nil {
		t.Fatal(err)
	}
	v2 := s.VersionDir(d.ID, d.SHA256)
	if _, err := os.Stat(v1); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("replaced version nothing names: %v", err)
	}
	j := &Job{DatasetID: d.ID, UserID: "u"}
	if err := s.CreateJob(j); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDataset(d, []byte("a\n3\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(v2); err != nil || j.DatasetSHA256 != filepath.Base(v2) {
		t.Fatalf("the version a job names: %v", err)
	}
	if err := s.DeleteDataset(d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.DatasetsDir(), d.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("files of a deleted dataset: %v", err)
	}
	if _, _, err := s.OpenDataset(d.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open a deleted dataset: %v", err)
	}

	e := &Dataset{Name: "e"}
	if err := s.PutDataset(e, []byte("b\nx\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	leftovers := []string{
		filepath.Join(s.DatasetsDir(), e.ID, ".tmp-crashed"),
		filepath.Join(s.DatasetsDir(), e.ID, "0123abcd"),
		filepath.Join(s.DatasetsDir(), "never-recorded", "0123abcd"),
	}
	for _, p := range leftovers {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s = openTest(t, dir)
	for _, p := range leftovers {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s survived a reopen: %v", p, err)
		}
	}
	if _, v, err := s.OpenDataset(e.ID); err != nil {
		t.Fatal(err)
	} else {
		_ = v.Close()
	}
}

// A new version written from a stale copy of the record (read before a
// metadata edit, as a snapshot or an upload of a new version does) keeps
// the stored metadata and changes only the contents and version; the
// audit entry names the actor given in CreatedBy.
func TestNewVersionKeepsStoredMetadata(t *testing.T) {
	s := openTest(t, t.TempDir())
	d := &Dataset{Name: "first", Description: "d1", Tags: []string{"a"}, Visibility: VisibilityPublic, CreatedBy: "creator"}
	if err := s.PutDataset(d, []byte("x\n1\n")); err != nil {
		t.Fatal(err)
	}
	stale := *d
	name, vis, tags := "renamed", VisibilityPrivate, []string{"b", "c"}
	if _, err := s.UpdateDataset(d.ID, DatasetUpdate{Name: &name, Visibility: &vis, Tags: &tags, Actor: "editor"}); err != nil {
		t.Fatal(err)
	}
	stale.CreatedBy = "uploader"
	if err := s.PutDataset(&stale, []byte("x\n1\n2\n")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Dataset(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != name || got.Visibility != vis || len(got.Tags) != 2 || got.Description != "d1" || got.CreatedBy != "creator" || !got.CreatedAt.Equal(d.CreatedAt) {
		t.Fatalf("after a new version from a stale record: %+v", got)
	}
	if got.Version != 2 || got.Rows != 2 || got.SHA256 == d.SHA256 || stale.Version != 2 || stale.Name != name {
		t.Fatalf("new version %+v (returned %+v); want version 2 with 2 rows", got, stale)
	}
	es, err := s.Audit(AuditFilter{Action: "dataset.put"})
	if err != nil {
		t.Fatal(err)
	}
	if last := es[len(es)-1]; last.Actor != "uploader" || last.Detail["name"] != name {
		t.Fatalf("audit of the new version: %+v", last)
	}
}
