package colstore

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"

	"github.com/fedgrid/fedgrid/dataset"
)

// parquetRows reads a flat Parquet file (every top-level field a leaf,
// required or optional) row by row, as text: a number prints as
// dataset.FormatNumber would read back (integers in plain digits, floats in
// their shortest form), a boolean as "true" or "false", a null as an empty
// cell, a byte array as its bytes. The same typing rule as CSV then applies,
// so a Parquet file and its CSV export make the same columns.
type parquetRows struct {
	f        *parquet.File
	names    []string
	unsigned []bool
	groups   []parquet.RowGroup
	g        int
	rows     parquet.Rows
	buf      []parquet.Row
	n, i     int
	line     int
	rec      []string
	scratch  []byte
}

func openParquet(r io.ReaderAt, size int64) (*parquetRows, error) {
	f, err := parquet.OpenFile(r, size)
	if err != nil {
		return nil, bad("parquet: %v", err)
	}
	p := &parquetRows{f: f, groups: f.RowGroups(), buf: make([]parquet.Row, 256), line: 1}
	for _, fld := range f.Schema().Fields() {
		if !fld.Leaf() || fld.Repeated() {
			return nil, bad("parquet: column %q is nested or repeated; only flat columns can be read", fld.Name())
		}
		uns := false
		if lt := fld.Type().LogicalType(); lt != nil {
			if it, ok := lt.Value.(*format.IntType); ok && !it.IsSigned {
				uns = true
			}
		}
		p.names = append(p.names, fld.Name())
		p.unsigned = append(p.unsigned, uns)
	}
	if len(p.names) == 0 {
		return nil, bad("parquet: the file has no columns")
	}
	p.rec = make([]string, len(p.names))
	return p, nil
}

func (p *parquetRows) header() ([]string, error) { return append([]string(nil), p.names...), nil }

func (p *parquetRows) next() ([]string, int, error) {
	for p.i >= p.n {
		if err := p.fill(); err != nil {
			return nil, 0, err
		}
	}
	row := p.buf[p.i]
	p.i++
	p.line++
	for c := range p.rec {
		p.rec[c] = ""
	}
	for _, v := range row {
		c := v.Column()
		if c < 0 || c >= len(p.rec) {
			return nil, 0, bad("parquet: row %d has a value of column %d, the file has %d", p.line-1, c, len(p.rec))
		}
		s, err := p.text(v, p.unsigned[c])
		if err != nil {
			return nil, 0, bad("parquet: row %d, column %q: %v", p.line-1, p.names[c], err)
		}
		p.rec[c] = s
	}
	return p.rec, p.line, nil
}

// fill reads the next rows into buf.
func (p *parquetRows) fill() error {
	for {
		if p.rows == nil {
			if p.g >= len(p.groups) {
				return io.EOF
			}
			p.rows = p.groups[p.g].Rows()
			p.g++
		}
		n, err := p.rows.ReadRows(p.buf)
		if n > 0 {
			p.n, p.i = n, 0
			if errors.Is(err, io.EOF) {
				_ = p.rows.Close()
				p.rows = nil
			} else if err != nil {
				return bad("parquet: %v", err)
			}
			return nil
		}
		_ = p.rows.Close()
		p.rows = nil
		if err != nil && !errors.Is(err, io.EOF) {
			return bad("parquet: %v", err)
		}
	}
}

func (p *parquetRows) text(v parquet.Value, unsigned bool) (string, error) {
	if v.IsNull() {
		return "", nil
	}
	b := p.scratch[:0]
	switch v.Kind() {
	case parquet.Boolean:
		b = strconv.AppendBool(b, v.Boolean())
	case parquet.Int32:
		if unsigned {
			b = strconv.AppendUint(b, uint64(uint32(v.Int32())), 10)
		} else {
			b = strconv.AppendInt(b, int64(v.Int32()), 10)
		}
	case parquet.Int64:
		if unsigned {
			b = strconv.AppendUint(b, uint64(v.Int64()), 10)
		} else {
			b = strconv.AppendInt(b, v.Int64(), 10)
		}
	case parquet.Float:
		if f := float64(v.Float()); f == math.Trunc(f) {
			b = dataset.AppendNumber(b, f)
		} else {
			b = strconv.AppendFloat(b, f, 'g', -1, 32)
		}
	case parquet.Double:
		b = dataset.AppendNumber(b, v.Double())
	case parquet.ByteArray, parquet.FixedLenByteArray:
		s := string(v.ByteArray())
		if !validUTF8(s) {
			return "", errors.New("value is not valid UTF-8")
		}
		return s, nil
	default:
		return "", fmt.Errorf("values of type %v cannot be read", v.Kind())
	}
	p.scratch = b
	return string(b), nil
}
