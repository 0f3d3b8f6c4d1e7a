package store

import (
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// The source hosts allow list: a data directory written before it existed
// (settings of the previous commit's kinds, no allow list) opens with an
// empty list and its other settings intact; a put is checked, canonical,
// durable across a reopen and audited; a record of a newer format is
// refused, not misread.
func TestSourceSettings(t *testing.T) {
	dir := t.TempDir()
	// What the previous commit wrote: the white-label and federation
	// records, exactly as stored then.
	db, err := badger.Open(badgerOptions(dir, testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte(keySettings), []byte(`{"name":"Clinic","logo_url":"","color":"#112233"}`)); err != nil {
			return err
		}
		return txn.Set([]byte(keyFedSettings), []byte(`{"schema":1,"allow_plain_updates":true}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, dir)
	got, err := s.SourceSettings()
	if err != nil || got.Schema != SourceSettingsSchema || got.AllowedHosts == nil || len(got.AllowedHosts) != 0 {
		t.Fatalf("old data: source settings %+v, %v; want schema %d and an empty list", got, err, SourceSettingsSchema)
	}
	if fs, err := s.FederationSettings(); err != nil || !fs.AllowPlainUpdates {
		t.Fatalf("old data: federation settings %+v, %v", fs, err)
	}

	if _, err := s.PutSourceSettings(SourceSettings{AllowedHosts: []string{"db.example.org", "http://evil"}}, "u1"); err == nil ||
		!strings.Contains(err.Error(), "not a URL") {
		t.Fatalf("a URL in the allow list: %v", err)
	}
	put, err := s.PutSourceSettings(SourceSettings{AllowedHosts: []string{"DB.example.org:5432", "10.1.2.3/16", "db.example.org:5432"}}, "u1")
	want := []string{"db.example.org:5432", "10.1.0.0/16"}
	if err != nil || !slices.Equal(put.AllowedHosts, want) || put.Schema != SourceSettingsSchema {
		t.Fatalf("put: %+v, %v; want %q", put, err, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	if got, err := s.SourceSettings(); err != nil || !slices.Equal(got.AllowedHosts, want) {
		t.Fatalf("after reopening: %+v, %v; want %q", got, err, want)
	}
	audit, err := s.Audit(AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(audit); n == 0 || audit[n-1].Action != "settings.sources" || audit[n-1].Actor != "u1" {
		t.Fatalf("last audit entry %+v; want settings.sources by u1", audit[n-1])
	}

	if err := s.update(func(txn *badger.Txn) error {
		return txn.Set([]byte(keySourceSettings), []byte(`{"schema":99,"allowed_hosts":["x"]}`))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SourceSettings(); err == nil || !strings.Contains(err.Error(), "format 99") {
		t.Fatalf("a newer record: %v", err)
	}
}
