// Package ingest turns a dataset's bytes, whatever their source (an HTTP
// upload, a file on the gateway's host, a database snapshot), into a stored
// dataset version. Every source goes through Dataset, so checks, limits and
// the storage format live in one place.
package ingest

import (
	"context"
	"errors"
	"io"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/dataset/colstore"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// BadInputError is a dataset whose content was refused (malformed CSV, over
// a limit); its message names the mistake and is safe to show the uploader.
type BadInputError struct{ Err error }

func (e *BadInputError) Error() string { return e.Err.Error() }
func (e *BadInputError) Unwrap() error { return e.Err }

// Dataset reads a CSV document or a Parquet file (told apart by Parquet's
// "PAR1" magic) from r, streaming, and stores it as d's contents: a new
// dataset when d.ID is empty, else a new version of d.ID. The document is
// never whole in memory: it becomes a columnar version on the gateway's
// disk (dataset/colstore).
//
// lim bounds the document: lim.MaxBytes and lim.MaxRows apply when set
// (zero means no limit here, unlike dataset.ReadCSV: a transport bounds
// what it carries), lim.MaxColumns defaults to dataset.DefaultMaxColumns.
// On return d holds what was stored (ID, columns, rows, size, version,
// hash). A refused document is a *BadInputError.
func Dataset(ctx context.Context, st *store.Store, d *store.Dataset, r io.Reader, lim dataset.Limits) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	opt := colstore.Options{MaxBytes: lim.MaxBytes, MaxRows: int64(lim.MaxRows), MaxColumns: lim.MaxColumns}
	err := st.PutDatasetFrom(ctx, d, r, opt)
	var in *colstore.InputError
	if errors.As(err, &in) {
		return &BadInputError{Err: in.Err}
	}
	return err
}
