package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/dataset/colstore"
)

// Dataset visibilities.
const (
	VisibilityPublic  = "public"
	VisibilityPrivate = "private"
)

// Dataset describes a dataset and its current version. The contents are
// kept apart, as a columnar version directory (OpenVersion).
type Dataset struct {
	ID          string           `json:"id"`
	Name        string           `json:"name"`
	Description string           `json:"description"`
	Tags        []string         `json:"tags"`
	Visibility  string           `json:"visibility"`
	Columns     []dataset.Column `json:"columns"`
	Rows        int              `json:"rows"`
	Size        int64            `json:"size"`
	CreatedAt   time.Time        `json:"created_at"`
	CreatedBy   string           `json:"created_by"`
	// Version counts the dataset's contents: 1 for the first, and one more
	// each time PutDataset stores different bytes under the same ID.
	// SHA256 is the hex SHA-256 of the version's source bytes (the CSV or
	// Parquet document as it was read).
	Version int    `json:"version"`
	SHA256  string `json:"sha256"`
	// Schema is the record's format (DatasetSchema); 0 marks a record
	// written before versions existed, which Open migrates.
	Schema int `json:"schema"`
	// Storage says where the contents are: StorageColumns for a colstore
	// version directory (VersionDir(ID, SHA256)); empty in records written
	// before schema 2, whose CSV bytes were in badger and which Open
	// converts. Source is the format the version was read from ("csv" or
	// "parquet").
	Storage string `json:"storage,omitempty"`
	Source  string `json:"source,omitempty"`
}

// DatasetSchema is the format of Dataset records this code writes:
// 1 added Version, SHA256 and Schema; 2 moved the contents out of badger
// into columnar version directories (Storage, Source).
const DatasetSchema = 2

// StorageColumns marks a dataset whose contents are a colstore version.
const StorageColumns = "columns"

// ContentHash is the hex SHA-256 of a dataset's stored bytes.
func ContentHash(csv []byte) string {
	sum := sha256.Sum256(csv)
	return hex.EncodeToString(sum[:])
}

// Limits on dataset metadata.
const (
	MaxDatasetName = 200
	MaxDescription = 4000
	MaxTags        = 32
	MaxTagLen      = 64
)

// NormalizeTags trims, lower-cases, de-duplicates and sorts tags, dropping
// empty ones.
func NormalizeTags(tags []string) []string {
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		t = strings.ToLower(strings.TrimSpace(t))
		if t != "" && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

func validateDataset(d *Dataset) error {
	d.Name = strings.TrimSpace(d.Name)
	if d.Name == "" {
		return invalid("name", "required")
	}
	if len(d.Name) > MaxDatasetName {
		return invalid("name", "longer than %d characters", MaxDatasetName)
	}
	if len(d.Description) > MaxDescription {
		return invalid("description", "longer than %d characters", MaxDescription)
	}
	d.Tags = NormalizeTags(d.Tags)
	if len(d.Tags) > MaxTags {
		return invalid("tags", "more than %d tags", MaxTags)
	}
	for _, t := range d.Tags {
		if len(t) > MaxTagLen {
			return invalid("tags", "tag longer than %d characters", MaxTagLen)
		}
		if strings.ContainsAny(t, "/,") {
			return invalid("tags", "tag %q contains '/' or ','", t)
		}
	}
	if d.Visibility == "" {
		d.Visibility = VisibilityPrivate
	}
	if d.Visibility != VisibilityPublic && d.Visibility != VisibilityPrivate {
		return invalid("visibility", "must be public or private")
	}
	return nil
}

// PutDataset stores csv as d's contents: PutDatasetFrom with default
// options.
func (s *Store) PutDataset(d *Dataset, csv []byte) error {
	return s.PutDatasetFrom(context.Background(), d, bytes.NewReader(csv), colstore.Options{})
}

// PutDatasetFrom reads a CSV or Parquet document from r, streaming, into a
// columnar version of d (a new dataset when d.ID is empty or names none,
// else a new version of d.ID) and stores the dataset pointing at it.
// Columns, Rows, Size, SHA256, Source and Storage come from the document.
//
// A new dataset is d as given: CreatedAt defaults to now, tags are
// normalised (NormalizeTags), visibility defaults to private, Version is 1.
//
// A new version of a stored dataset changes only those contents fields and
// Version (the stored one for the same bytes, one more for different
// bytes), read and written in one transaction: the name, description,
// tags, visibility and creation fields are the stored record's at that
// moment, not d's, so a metadata edit made while the document was read (a
// PATCH during a long snapshot or upload) is kept. d.CreatedBy is then only
// the actor the audit entry names.
//
// On return d is the stored record. A refused document is a
// *colstore.InputError. Files of versions no longer needed are removed.
func (s *Store) PutDatasetFrom(ctx context.Context, d *Dataset, r io.Reader, opt colstore.Options) error {
	if err := validateDataset(d); err != nil {
		return err
	}
	if d.ID == "" {
		d.ID = newID()
	}
	p, err := colstore.IngestTemp(ctx, r, s.datasetDir(d.ID), opt)
	if err != nil {
		return err
	}
	m := p.Meta
	contents := func(x *Dataset) {
		x.Columns, x.Rows, x.Size = m.DatasetColumns(), int(m.Rows), m.Size
		x.SHA256, x.Source, x.Storage, x.Schema = m.SHA256, m.Source, StorageColumns, DatasetSchema
	}
	actor := d.CreatedBy
	if d.CreatedAt.IsZero() {
		d.CreatedAt = s.now().UTC()
	}
	s.filesMu.Lock()
	defer s.filesMu.Unlock()
	dir, existed, err := p.Commit()
	if err != nil {
		p.Discard()
		return err
	}
	var stored Dataset
	err = s.update(func(txn *badger.Txn) error {
		// Computed from d, m and the stored record only: a retry after a
		// conflict starts again from the same inputs.
		var old Dataset
		switch err := getJSON(txn, prefixDataset+d.ID, &old); {
		case errors.Is(err, ErrNotFound):
			stored = *d
			stored.Version = 1
		case err != nil:
			return err
		default:
			stored = old
			stored.Version = max(old.Version, 1)
			if old.SHA256 != m.SHA256 {
				stored.Version++
			}
		}
		contents(&stored)
		if err := putJSON(txn, prefixDataset+d.ID, &stored); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "dataset.put", Target: "dataset/" + d.ID,
			Detail: map[string]any{"name": stored.Name, "visibility": stored.Visibility, "tags": stored.Tags, "rows": stored.Rows, "size": stored.Size,
				"version": stored.Version, "sha256": stored.SHA256}})
	})
	if err != nil {
		if !existed {
			_ = os.RemoveAll(dir)
		}
		return err
	}
	*d = stored
	if err := s.removeUnusedVersions(d.ID); err != nil {
		s.log.Warn("remove unused dataset versions", "dataset", d.ID, "err", err)
	}
	return nil
}

// DatasetsDir is the directory of the datasets' version directories:
// DIR/ID/SHA256 (see dataset/colstore).
func (s *Store) DatasetsDir() string { return s.colDir }

func (s *Store) datasetDir(id string) string { return filepath.Join(s.colDir, id) }

// VersionDir is where the version of dataset id with the given content
// hash is kept.
func (s *Store) VersionDir(id, sha256 string) string { return filepath.Join(s.colDir, id, sha256) }

// ErrNotConverted is a dataset whose record is older than columnar
// storage and whose CSV could not be converted when the store was opened.
var ErrNotConverted = errors.New("store: the dataset is in the old format and could not be converted; upload it again")

// OpenVersion opens the contents of d (as read from the store) for
// reading; the caller closes it. ErrNotFound when the version's files are
// gone (the dataset was deleted or replaced since d was read).
func (s *Store) OpenVersion(d *Dataset) (*colstore.Version, error) {
	if d.Storage != StorageColumns {
		return nil, ErrNotConverted
	}
	v, err := colstore.Open(s.VersionDir(d.ID, d.SHA256))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("dataset %s version %d: %w", d.ID, d.Version, ErrNotFound)
	}
	return v, err
}

// OpenDataset returns a dataset's description and its current version,
// opened for reading; the caller closes it.
func (s *Store) OpenDataset(id string) (*Dataset, *colstore.Version, error) {
	for try := 0; ; try++ {
		d, err := s.Dataset(id)
		if err != nil {
			return nil, nil, err
		}
		v, err := s.OpenVersion(d)
		if errors.Is(err, ErrNotFound) && try < 3 {
			continue // replaced between the two reads: read the record again
		}
		if err != nil {
			return nil, nil, err
		}
		return d, v, nil
	}
}

// OpenDatasetVersion opens the version of dataset id with the given
// content hash (a job's DatasetSHA256), or its current version when sha256
// is empty (a job created before versions). ErrNotFound when its files are
// gone.
func (s *Store) OpenDatasetVersion(id, sha256 string) (*colstore.Version, error) {
	if sha256 == "" {
		_, v, err := s.OpenDataset(id)
		return v, err
	}
	d, err := s.Dataset(id)
	if err != nil {
		return nil, err
	}
	if d.SHA256 == sha256 {
		return s.OpenVersion(d)
	}
	v, err := colstore.Open(s.VersionDir(id, sha256))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("dataset %s version %s: %w", id, sha256, ErrNotFound)
	}
	return v, err
}

// removeUnusedVersions removes the version directories of dataset id that
// neither its record nor any job names (all of them when the dataset is
// gone). Jobs keep the version they were created on: its files stay while
// the job record exists.
func (s *Store) removeUnusedVersions(id string) error { return s.removeUnusedVersionsOf(id, nil) }

// removeUnusedVersionsOf is removeUnusedVersions with the jobs' references
// already read (nil: read them).
func (s *Store) removeUnusedVersionsOf(id string, refs map[string]map[string]bool) error {
	keep := map[string]bool{}
	d, err := s.Dataset(id)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	default:
		keep[d.SHA256] = true
		if refs == nil {
			if refs, err = s.jobVersionRefs(); err != nil {
				return err
			}
		}
		for sha := range refs[id] {
			keep[sha] = true
		}
	}
	dir := s.datasetDir(id)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	left := 0
	for _, e := range ents {
		if keep[e.Name()] || strings.HasPrefix(e.Name(), ".") { // .tmp-*: an ingest under way
			left++
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	if left == 0 {
		return os.Remove(dir)
	}
	return nil
}

// jobVersionRefs maps dataset ID to the content hashes jobs name.
func (s *Store) jobVersionRefs() (map[string]map[string]bool, error) {
	refs := map[string]map[string]bool{}
	err := s.view(func(txn *badger.Txn) error {
		return scanJSON(txn, prefixJob, func(b []byte) error {
			var j struct {
				DatasetID     string `json:"dataset_id"`
				DatasetSHA256 string `json:"dataset_sha256"`
			}
			if err := json.Unmarshal(b, &j); err != nil {
				return fmt.Errorf("store: decode job record: %w", err)
			}
			if j.DatasetSHA256 != "" {
				if refs[j.DatasetID] == nil {
					refs[j.DatasetID] = map[string]bool{}
				}
				refs[j.DatasetID][j.DatasetSHA256] = true
			}
			return nil
		})
	})
	return refs, err
}

// cleanDatasetFiles removes, when the store opens, what interrupted
// ingests left and the version directories nothing names.
func (s *Store) cleanDatasetFiles() error {
	ents, err := os.ReadDir(s.colDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	s.filesMu.Lock()
	defer s.filesMu.Unlock()
	refs, err := s.jobVersionRefs()
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if err := colstore.CleanTemp(s.datasetDir(e.Name())); err != nil {
			return err
		}
		if err := s.removeUnusedVersionsOf(e.Name(), refs); err != nil {
			return err
		}
	}
	return nil
}

// migrateDatasets brings Dataset records written before DatasetSchema up to
// it: a record without a version gets version 1; CSV bytes kept in badger
// (schema < 2) are converted into a columnar version (whose hash is the
// SHA-256 of the same bytes) and removed from badger. One dataset at a
// time, each record rewritten in its own transaction, so a large store
// does not exceed badger's transaction size and an interrupted migration
// resumes on the next Open. A CSV that cannot be converted (which the
// checks at upload made rare) is left as it was and logged; reading it
// gives ErrNotConverted.
func (s *Store) migrateDatasets() error {
	var ids []string
	err := s.view(func(txn *badger.Txn) error {
		return scanJSON(txn, prefixDataset, func(b []byte) error {
			var d Dataset
			if err := json.Unmarshal(b, &d); err != nil {
				return fmt.Errorf("store: decode dataset record: %w", err)
			}
			if d.Schema < DatasetSchema {
				ids = append(ids, d.ID)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := s.migrateDataset(id); err != nil {
			return fmt.Errorf("store: migrate dataset %s: %w", id, err)
		}
	}
	return nil
}

func (s *Store) migrateDataset(id string) error {
	var csv []byte
	err := s.view(func(txn *badger.Txn) error {
		var err error
		csv, err = getBytes(txn, prefixCSV+id)
		return err
	})
	if err != nil {
		return fmt.Errorf("bytes: %w", err)
	}
	m, _, err := colstore.Ingest(context.Background(), bytes.NewReader(csv), s.datasetDir(id), colstore.Options{})
	var in *colstore.InputError
	if errors.As(err, &in) {
		s.log.Warn("dataset not converted to columnar storage; it stays unreadable until uploaded again", "dataset", id, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	return s.update(func(txn *badger.Txn) error {
		var d Dataset
		if err := getJSON(txn, prefixDataset+id, &d); err != nil {
			return err
		}
		if d.Schema >= DatasetSchema {
			return nil
		}
		if d.Version == 0 {
			d.Version = 1
		}
		d.SHA256, d.Source, d.Storage, d.Schema = m.SHA256, m.Source, StorageColumns, DatasetSchema
		if err := putJSON(txn, prefixDataset+id, &d); err != nil {
			return err
		}
		return txn.Delete([]byte(prefixCSV + id))
	})
}

// Dataset returns one dataset's description, or ErrNotFound.
func (s *Store) Dataset(id string) (*Dataset, error) {
	var d Dataset
	err := s.view(func(txn *badger.Txn) error { return getJSON(txn, prefixDataset+id, &d) })
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// DatasetWithCSV returns a dataset's description and its current version
// written as CSV (the header, then every row's cells as stored), or
// ErrNotFound. It holds the whole document in memory: for small datasets
// and tests; readers of any size use OpenDataset.
func (s *Store) DatasetWithCSV(id string) (*Dataset, []byte, error) {
	d, v, err := s.OpenDataset(id)
	if err != nil {
		return nil, nil, err
	}
	defer v.Close()
	var b bytes.Buffer
	if err := dataset.WriteSourceCSV(context.Background(), v, &b); err != nil {
		return nil, nil, err
	}
	return d, b.Bytes(), nil
}

// DatasetCSV is DatasetWithCSV without the description.
func (s *Store) DatasetCSV(id string) ([]byte, error) {
	_, b, err := s.DatasetWithCSV(id)
	return b, err
}

// Datasets lists every dataset, newest first.
func (s *Store) Datasets() ([]*Dataset, error) {
	var out []*Dataset
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = scanAll[Dataset](txn, prefixDataset)
		return err
	})
	slices.SortStableFunc(out, func(a, b *Dataset) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, err
}

// DatasetsWithTags lists the datasets that carry every one of tags (all
// datasets for none), newest first. Tags compare after NormalizeTags.
func (s *Store) DatasetsWithTags(tags []string) ([]*Dataset, error) {
	all, err := s.Datasets()
	if err != nil {
		return nil, err
	}
	want := NormalizeTags(tags)
	out := all[:0]
	for _, d := range all {
		ok := true
		for _, t := range want {
			if !slices.Contains(d.Tags, t) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// DatasetUpdate names the metadata to change; nil fields stay.
type DatasetUpdate struct {
	Name, Description, Visibility *string
	Tags                          *[]string
	Actor                         string
}

// UpdateDataset changes a dataset's metadata and returns the new version.
func (s *Store) UpdateDataset(id string, upd DatasetUpdate) (*Dataset, error) {
	var out Dataset
	err := s.update(func(txn *badger.Txn) error {
		var d Dataset
		if err := getJSON(txn, prefixDataset+id, &d); err != nil {
			return err
		}
		if upd.Name != nil {
			d.Name = *upd.Name
		}
		if upd.Description != nil {
			d.Description = *upd.Description
		}
		if upd.Visibility != nil {
			if *upd.Visibility == "" {
				return invalid("visibility", "must be public or private")
			}
			d.Visibility = *upd.Visibility
		}
		if upd.Tags != nil {
			d.Tags = *upd.Tags
		}
		if err := validateDataset(&d); err != nil {
			return err
		}
		if err := putJSON(txn, prefixDataset+id, &d); err != nil {
			return err
		}
		out = d
		return s.audit(txn, AuditEvent{Actor: upd.Actor, Action: "dataset.update", Target: "dataset/" + id,
			Detail: map[string]any{"name": d.Name, "visibility": d.Visibility, "tags": d.Tags}})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteDataset removes a dataset, its files, its source and its per-user overrides.
func (s *Store) DeleteDataset(id string) error { return s.DeleteDatasetBy(id, "") }

// DeleteDatasetBy is DeleteDataset with the acting user recorded in the audit log.
func (s *Store) DeleteDatasetBy(id, actor string) error {
	err := s.update(func(txn *badger.Txn) error {
		var d Dataset
		if err := getJSON(txn, prefixDataset+id, &d); err != nil {
			return err
		}
		for _, k := range []string{prefixDataset + id, prefixCSV + id, prefixSource + id} {
			if err := txn.Delete([]byte(k)); err != nil {
				return err
			}
		}
		if err := deletePrefix(txn, prefixOverride+id+"/"); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "dataset.delete", Target: "dataset/" + id, Detail: map[string]any{"name": d.Name}})
	})
	if err != nil {
		return err
	}
	s.filesMu.Lock()
	defer s.filesMu.Unlock()
	if err := s.removeUnusedVersions(id); err != nil {
		s.log.Warn("remove files of a deleted dataset", "dataset", id, "err", err)
	}
	return nil
}

func deletePrefix(txn *badger.Txn, prefix string) error {
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = []byte(prefix)
	it := txn.NewIterator(opts)
	var keys [][]byte
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
	}
	it.Close()
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
