// Package ingest turns a dataset's bytes, whatever their source (an HTTP
// upload, a file on the gateway's host, a database snapshot), into a stored
// dataset version. Every source goes through Dataset, so checks, limits and
// the storage format live in one place.
package ingest

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// BadInputError is a dataset whose content was refused (malformed CSV, over
// a limit); its message names the mistake and is safe to show the uploader.
type BadInputError struct{ Err error }

func (e *BadInputError) Error() string { return e.Err.Error() }
func (e *BadInputError) Unwrap() error { return e.Err }

// Dataset reads a CSV document from r (within lim) and stores it as d's
// contents: a new dataset when d.ID is empty, else a new version of d.ID.
// On return d holds what was stored (ID, columns, rows, size, version,
// hash). A refused document is a *BadInputError.
func Dataset(ctx context.Context, st *store.Store, d *store.Dataset, r io.Reader, lim dataset.Limits) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// For now the document is read whole and parsed in memory; the storage
	// behind PutDataset keeps the CSV bytes.
	buf, err := io.ReadAll(io.LimitReader(r, limitOrDefault(lim)+1))
	if err != nil {
		return fmt.Errorf("read dataset: %w", err)
	}
	tbl, err := dataset.ReadCSV(bytes.NewReader(buf), lim)
	if err != nil {
		return &BadInputError{Err: err}
	}
	d.Columns, d.Rows, d.Size = tbl.Columns(), tbl.NumRows(), int64(len(buf))
	return st.PutDataset(d, buf)
}

func limitOrDefault(lim dataset.Limits) int64 {
	if lim.MaxBytes > 0 {
		return lim.MaxBytes
	}
	return dataset.DefaultMaxBytes
}
