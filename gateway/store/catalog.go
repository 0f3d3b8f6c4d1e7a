package store

import (
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// prefixCatalogSummary keys the catalog's per-dataset summaries (the
// marginals behind a synthetic preview): catalog-summary/<dataset>/<version>.
const prefixCatalogSummary = "catalog-summary/"

// CatalogSummary returns the summary stored for one version of a dataset, or
// ErrNotFound. The store does not interpret it.
func (s *Store) CatalogSummary(datasetID, version string) ([]byte, error) {
	var b []byte
	err := s.view(func(txn *badger.Txn) error {
		var err error
		b, err = getBytes(txn, prefixCatalogSummary+datasetID+"/"+version)
		return err
	})
	return b, err
}

// PutCatalogSummaryOnce stores b for one version of a dataset unless a
// summary is already there, and returns the one that is kept. A summary with
// privacy noise is released once: two racing computations must not both be
// shown, so the first stored wins and the other is thrown away unseen.
func (s *Store) PutCatalogSummaryOnce(datasetID, version string, b []byte) ([]byte, error) {
	if datasetID == "" || strings.Contains(datasetID, "/") || version == "" {
		return nil, invalid("catalog summary", "bad dataset ID or version")
	}
	key := prefixCatalogSummary + datasetID + "/" + version
	var kept []byte
	err := s.update(func(txn *badger.Txn) error {
		old, err := getBytes(txn, key)
		if err == nil {
			kept = old
			return nil
		}
		if err != ErrNotFound {
			return err
		}
		kept = b
		return txn.Set([]byte(key), b)
	})
	return kept, err
}

// CatalogSummaryKeys lists the stored summaries as dataset ID -> versions.
func (s *Store) CatalogSummaryKeys() (map[string][]string, error) {
	out := map[string][]string{}
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefixCatalogSummary)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			rest := strings.TrimPrefix(string(it.Item().Key()), prefixCatalogSummary)
			if id, ver, ok := strings.Cut(rest, "/"); ok {
				out[id] = append(out[id], ver)
			}
		}
		return nil
	})
	return out, err
}

// DeleteCatalogSummary removes one stored summary (a missing one is no error).
func (s *Store) DeleteCatalogSummary(datasetID, version string) error {
	return s.update(func(txn *badger.Txn) error {
		return txn.Delete([]byte(prefixCatalogSummary + datasetID + "/" + version))
	})
}
