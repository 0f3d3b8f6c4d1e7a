package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/dataset"
)

// Dataset visibilities.
const (
	VisibilityPublic  = "public"
	VisibilityPrivate = "private"
)

// Dataset describes an uploaded CSV. The bytes are kept apart (DatasetCSV).
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
	// SHA256 is the hex SHA-256 of the stored CSV bytes of that version.
	Version int    `json:"version"`
	SHA256  string `json:"sha256"`
	// Schema is the record's format (DatasetSchema); 0 marks a record
	// written before versions existed, which Open migrates.
	Schema int `json:"schema"`
}

// DatasetSchema is the format of Dataset records this code writes:
// 1 added Version, SHA256 and Schema.
const DatasetSchema = 1

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

// PutDataset stores d and its CSV bytes in one transaction. An empty ID is
// assigned; an existing ID is replaced. Size defaults to len(csv), CreatedAt
// to now. Tags are normalised (NormalizeTags); visibility defaults to private.
// SHA256 is set to the bytes' hash and Version to 1 for a new dataset, to the
// stored version for the same bytes and to one more for different bytes.
func (s *Store) PutDataset(d *Dataset, csv []byte) error {
	if err := validateDataset(d); err != nil {
		return err
	}
	if d.ID == "" {
		d.ID = newID()
	}
	if d.Size == 0 {
		d.Size = int64(len(csv))
	}
	if d.CreatedAt.IsZero() {
		d.CreatedAt = s.now().UTC()
	}
	d.SHA256 = ContentHash(csv)
	d.Schema = DatasetSchema
	return s.update(func(txn *badger.Txn) error {
		var old Dataset
		switch err := getJSON(txn, prefixDataset+d.ID, &old); {
		case errors.Is(err, ErrNotFound):
			d.Version = 1
		case err != nil:
			return err
		case old.SHA256 == d.SHA256:
			d.Version = max(old.Version, 1)
		default:
			d.Version = max(old.Version, 1) + 1
		}
		if err := putJSON(txn, prefixDataset+d.ID, d); err != nil {
			return err
		}
		if err := txn.Set([]byte(prefixCSV+d.ID), csv); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: d.CreatedBy, Action: "dataset.put", Target: "dataset/" + d.ID,
			Detail: map[string]any{"name": d.Name, "visibility": d.Visibility, "tags": d.Tags, "rows": d.Rows, "size": d.Size,
				"version": d.Version, "sha256": d.SHA256}})
	})
}

// migrateDatasets brings Dataset records written before DatasetSchema up to
// it: each old record gets Version 1 and the SHA-256 of its stored bytes.
// One transaction per dataset, so a large store does not exceed badger's
// transaction size; an interrupted migration resumes on the next Open.
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
		err := s.update(func(txn *badger.Txn) error {
			var d Dataset
			if err := getJSON(txn, prefixDataset+id, &d); err != nil {
				return err
			}
			if d.Schema >= DatasetSchema {
				return nil
			}
			csv, err := getBytes(txn, prefixCSV+id)
			if err != nil {
				return fmt.Errorf("dataset %s bytes: %w", id, err)
			}
			d.SHA256, d.Schema = ContentHash(csv), DatasetSchema
			if d.Version == 0 {
				d.Version = 1
			}
			return putJSON(txn, prefixDataset+id, &d)
		})
		if err != nil {
			return fmt.Errorf("store: migrate dataset %s: %w", id, err)
		}
	}
	return nil
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

// DatasetWithCSV returns a dataset's description and CSV bytes, read in one
// transaction so that they belong together, or ErrNotFound.
func (s *Store) DatasetWithCSV(id string) (*Dataset, []byte, error) {
	var d Dataset
	var b []byte
	err := s.view(func(txn *badger.Txn) error {
		if err := getJSON(txn, prefixDataset+id, &d); err != nil {
			return err
		}
		var err error
		b, err = getBytes(txn, prefixCSV+id)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return &d, b, nil
}

// DatasetCSV returns a dataset's CSV bytes, or ErrNotFound.
func (s *Store) DatasetCSV(id string) ([]byte, error) {
	var b []byte
	err := s.view(func(txn *badger.Txn) error {
		var err error
		b, err = getBytes(txn, prefixCSV+id)
		return err
	})
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

// DeleteDataset removes a dataset, its CSV, its source and its per-user overrides.
func (s *Store) DeleteDataset(id string) error { return s.DeleteDatasetBy(id, "") }

// DeleteDatasetBy is DeleteDataset with the acting user recorded in the audit log.
func (s *Store) DeleteDatasetBy(id, actor string) error {
	return s.update(func(txn *badger.Txn) error {
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
