package colstore

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/fedgrid/fedgrid/dataset"
)

// rowReader yields a document's header, then its rows as text. A row's
// slice is only valid until the next call. line is the row's line (CSV) or
// its 1-based position counting the header as line 1 (Parquet).
type rowReader interface {
	header() ([]string, error)
	next() (rec []string, line int, err error)
}

// csvRows reads CSV with the checks and messages of dataset.ReadCSV.
type csvRows struct {
	cr    *csv.Reader
	lr    *dataset.LimitedReader // nil: not limited
	limit int64
}

func newCSVRows(r io.Reader, lr *dataset.LimitedReader, limit int64) *csvRows {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1 // checked by the caller, with a better message
	cr.ReuseRecord = true
	return &csvRows{cr: cr, lr: lr, limit: limit}
}

func (c *csvRows) over() bool { return c.lr != nil && c.lr.Over() }

func (c *csvRows) header() ([]string, error) {
	h, err := c.cr.Read()
	if err != nil {
		if c.over() {
			return nil, bad("csv: input is larger than the limit of %d bytes", c.limit)
		}
		if errors.Is(err, io.EOF) {
			return nil, bad("csv: input is empty; a header row is required")
		}
		return nil, c.err(err)
	}
	return append([]string(nil), h...), nil
}

func (c *csvRows) next() ([]string, int, error) {
	rec, err := c.cr.Read()
	if errors.Is(err, io.EOF) {
		if c.over() {
			return nil, 0, bad("csv: input is larger than the limit of %d bytes", c.limit)
		}
		return nil, 0, io.EOF
	}
	if err != nil {
		if c.over() {
			return nil, 0, bad("csv: input is larger than the limit of %d bytes", c.limit)
		}
		return nil, 0, c.err(err)
	}
	line, _ := c.cr.FieldPos(0)
	return rec, line, nil
}

// err words a CSV syntax error as dataset.ReadCSV does; other errors (of
// the reader under the document) pass as they are.
func (c *csvRows) err(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return bad("csv: line %d, character %d: %v", pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("csv: %w", err)
}

func validUTF8(s string) bool { return utf8.ValidString(s) }
