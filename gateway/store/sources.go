package store

import (
	"fmt"
	"net/url"
	"time"

	"github.com/dgraph-io/badger/v4"
)

const prefixSource = "dataset-source/" // dataset-source/<dataset ID>

// Kinds of DatasetSource.
const (
	SourceFile     = "file"
	SourcePostgres = "postgres"
)

// DatasetSourceSchema is the format of DatasetSource records this code
// writes (1: the first).
const DatasetSourceSchema = 1

// Limits on a DatasetSource.
const (
	MaxSourceURL   = 2048
	MaxSourceTable = 200
	MaxSourceQuery = 64 << 10
	// MinSourceInterval is the shortest schedule; MaxSourceInterval the longest.
	MinSourceInterval = time.Minute
	MaxSourceInterval = 366 * 24 * time.Hour
)

// DatasetSource is where the gateway itself reads a dataset's contents
// from, so that it can take a new version when asked or on a schedule. It
// never holds a credential: URL carries no password (a PostgreSQL password
// stays in the gateway host's password file).
type DatasetSource struct {
	Schema    int    `json:"schema"`
	DatasetID string `json:"dataset_id"`
	// Kind is SourcePostgres or SourceFile.
	Kind string `json:"kind"`
	// URL names the data: postgres://user@host:port/database (no
	// password), or file:///path on the gateway's host.
	URL string `json:"url"`
	// Table or Query (one of them, postgres only): a table or view, possibly
	// schema-qualified, or one read-only SELECT.
	Table string `json:"table,omitempty"`
	Query string `json:"query,omitempty"`
	// IntervalSeconds, when positive, is how often the gateway takes a
	// snapshot by itself (at least MinSourceInterval); 0: on demand only.
	IntervalSeconds int64     `json:"interval_seconds"`
	CreatedAt       time.Time `json:"created_at"`
	CreatedBy       string    `json:"created_by"`
	// LastSnapshotAt is when the last snapshot (of either outcome) ended;
	// LastVersion the dataset version it produced or kept; LastError its
	// failure ("" after a success).
	LastSnapshotAt time.Time `json:"last_snapshot_at,omitzero"`
	LastVersion    int       `json:"last_version,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
}

// Interval is IntervalSeconds as a duration.
func (s *DatasetSource) Interval() time.Duration {
	return time.Duration(s.IntervalSeconds) * time.Second
}

// Due reports whether a scheduled snapshot of s is due at now: an
// interval after its last snapshot (or its creation, before any).
func (s *DatasetSource) Due(now time.Time) bool {
	last := s.LastSnapshotAt
	if last.Before(s.CreatedAt) {
		last = s.CreatedAt
	}
	return s.IntervalSeconds > 0 && !now.Before(last.Add(s.Interval()))
}

// Validate checks a source's fields (not whether its data can be read).
func (s *DatasetSource) Validate() error {
	switch s.Kind {
	case SourcePostgres:
		if (s.Table == "") == (s.Query == "") {
			return invalid("table", "give a table or a query, not both")
		}
	case SourceFile:
		if s.Table != "" || s.Query != "" {
			return invalid("table", "a file source has no table or query")
		}
	default:
		return invalid("kind", "must be %s or %s", SourcePostgres, SourceFile)
	}
	if s.URL == "" {
		return invalid("url", "required")
	}
	if len(s.URL) > MaxSourceURL {
		return invalid("url", "longer than %d characters", MaxSourceURL)
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		return invalid("url", "not a URL")
	}
	if _, has := u.User.Password(); has {
		return invalid("url", "must not carry a password")
	}
	if len(s.Table) > MaxSourceTable {
		return invalid("table", "longer than %d characters", MaxSourceTable)
	}
	if len(s.Query) > MaxSourceQuery {
		return invalid("query", "longer than %d bytes", MaxSourceQuery)
	}
	if iv := s.Interval(); s.IntervalSeconds != 0 && (iv < MinSourceInterval || iv > MaxSourceInterval) {
		return invalid("interval_seconds", "must be 0 (on demand only) or from %d to %d", int64(MinSourceInterval/time.Second), int64(MaxSourceInterval/time.Second))
	}
	return nil
}

// PutDatasetSource stores (replaces) the source of an existing dataset.
func (s *Store) PutDatasetSource(src *DatasetSource, actor string) error {
	if err := src.Validate(); err != nil {
		return err
	}
	src.Schema = DatasetSourceSchema
	if src.CreatedAt.IsZero() {
		src.CreatedAt = s.now().UTC()
	}
	return s.update(func(txn *badger.Txn) error {
		if ok, err := exists(txn, prefixDataset+src.DatasetID); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: dataset %s", ErrNotFound, src.DatasetID)
		}
		if err := putJSON(txn, prefixSource+src.DatasetID, src); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "dataset.source", Target: "dataset/" + src.DatasetID,
			Detail: map[string]any{"kind": src.Kind, "url": src.URL, "table": src.Table, "query": src.Query, "interval_seconds": src.IntervalSeconds}})
	})
}

// SetSourceInterval changes how often a dataset's source is snapshotted
// (0: on demand only) and returns the source.
func (s *Store) SetSourceInterval(datasetID string, seconds int64, actor string) (*DatasetSource, error) {
	var out DatasetSource
	err := s.update(func(txn *badger.Txn) error {
		if err := getJSON(txn, prefixSource+datasetID, &out); err != nil {
			return err
		}
		out.IntervalSeconds = seconds
		if err := out.Validate(); err != nil {
			return err
		}
		if err := putJSON(txn, prefixSource+datasetID, &out); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "dataset.source", Target: "dataset/" + datasetID,
			Detail: map[string]any{"interval_seconds": seconds}})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// RecordSnapshot notes a snapshot's outcome on the dataset's source: the
// version it produced (or kept) or its error. The audit log gets the
// outcome with actor ("" for the gateway's schedule).
func (s *Store) RecordSnapshot(datasetID string, version int, snapErr string, actor string) (*DatasetSource, error) {
	var out DatasetSource
	err := s.update(func(txn *badger.Txn) error {
		if err := getJSON(txn, prefixSource+datasetID, &out); err != nil {
			return err
		}
		out.LastSnapshotAt, out.LastError = s.now().UTC(), snapErr
		if snapErr == "" {
			out.LastVersion = version
		}
		if err := putJSON(txn, prefixSource+datasetID, &out); err != nil {
			return err
		}
		detail := map[string]any{"kind": out.Kind, "version": version}
		if snapErr != "" {
			detail = map[string]any{"kind": out.Kind, "error": snapErr}
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "dataset.snapshot", Target: "dataset/" + datasetID, Detail: detail})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DatasetSource returns a dataset's source, or ErrNotFound when the
// dataset has none (it was uploaded).
func (s *Store) DatasetSource(datasetID string) (*DatasetSource, error) {
	var out DatasetSource
	err := s.view(func(txn *badger.Txn) error { return getJSON(txn, prefixSource+datasetID, &out) })
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DatasetSources lists every dataset source, in dataset ID order.
func (s *Store) DatasetSources() ([]*DatasetSource, error) {
	var out []*DatasetSource
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = scanAll[DatasetSource](txn, prefixSource)
		return err
	})
	return out, err
}
