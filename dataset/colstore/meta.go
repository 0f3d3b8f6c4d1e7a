// Package colstore keeps dataset versions on disk as typed, chunked columns:
// one Apache Arrow IPC file of record batches plus a JSON description with
// per-column statistics. Ingest reads a CSV or Parquet document once,
// streaming, into a version directory; Open reads one back as a
// dataset.Source, a batch at a time, so memory stays bounded whatever the
// dataset's size. See docs/INTERNALS.md ("Columnar storage").
package colstore

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/fedgrid/fedgrid/dataset"
)

// Format is the version of the directory layout this code writes (the
// "format" field of meta.json). Open refuses a newer one.
const Format = 1

// Files of a version directory.
const (
	MetaFile = "meta.json"
	DataFile = "data.arrow"
)

// Source formats.
const (
	SourceCSV     = "csv"
	SourceParquet = "parquet"
)

// Meta describes a stored version: what meta.json holds.
type Meta struct {
	Format int `json:"format"`
	// Source is the document's format (SourceCSV or SourceParquet), SHA256
	// the hex SHA-256 of its bytes as they were read and Size their count.
	Source string `json:"source"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Rows   int64  `json:"rows"`
	// ChunkStarts[i] is the first row of record batch i of the data file;
	// batches cover the rows in order.
	ChunkStarts []int64      `json:"chunk_starts"`
	Columns     []ColumnMeta `json:"columns"`
}

// ColumnMeta describes one column: its name and type, where its data is in
// the record batches and its statistics.
type ColumnMeta struct {
	dataset.Column
	// Field is the index of the column's values in the Arrow schema:
	// float64 for a number column, utf8 for a category. RawField, for a
	// number column some of whose cells are not spelled as
	// dataset.FormatNumber spells their value, is the index of a utf8 field
	// with every cell's text; -1 when the numbers say it all.
	Field    int         `json:"field"`
	RawField int         `json:"raw_field"`
	Stats    ColumnStats `json:"stats"`
}

// ColumnStats are a column's statistics over every row.
type ColumnStats struct {
	Count int64 `json:"count"`
	// Number columns only.
	Min   float64 `json:"min,omitempty"`
	Max   float64 `json:"max,omitempty"`
	Sum   Float   `json:"sum,omitempty"`
	SumSq Float   `json:"sum_sq,omitempty"`
	// Integral: every value is a whole number. Decimals: the most digits
	// after the decimal point in any cell's text (before an exponent),
	// at most MaxDecimals.
	Integral bool `json:"integral,omitempty"`
	Decimals int  `json:"decimals,omitempty"`
	// Distinct holds each distinct cell text with its count, sorted by
	// text, when the column has at most the ingest's distinct cap of them;
	// else it is empty and DistinctOver is set.
	Distinct     []ValueCount `json:"distinct,omitempty"`
	DistinctOver bool         `json:"distinct_over,omitempty"`
}

// MaxDecimals bounds ColumnStats.Decimals.
const MaxDecimals = 17

// ValueCount is one distinct value of a column and how many rows hold it.
type ValueCount struct {
	Value string `json:"value"`
	Count int64  `json:"count"`
}

// Float is a float64 that survives JSON when infinite (a sum of squares
// can overflow): ±Inf is written as the string "+Inf" or "-Inf".
type Float float64

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsInf(v, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (f *Float) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("colstore: float %q: %w", s, err)
		}
		*f = Float(v)
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = Float(v)
	return nil
}

// DatasetColumns returns the columns as dataset.Column values.
func (m *Meta) DatasetColumns() []dataset.Column {
	out := make([]dataset.Column, len(m.Columns))
	for i, c := range m.Columns {
		out[i] = c.Column
	}
	return out
}

// Column returns the named column's description and whether it exists.
func (m *Meta) Column(name string) (*ColumnMeta, bool) {
	for i := range m.Columns {
		if m.Columns[i].Name == name {
			return &m.Columns[i], true
		}
	}
	return nil, false
}
