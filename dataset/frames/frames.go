// Package frames is the binary form of a table read batch by batch: what a
// gateway streams to a node (job/data) and what the node keeps in its shard
// cache. It is a length-prefixed framing of float64 and string columns,
// every frame size-limited and checksummed.
//
// Format, version 1. A stream is a sequence of frames:
//
//	frame   = uvarint n, payload (n bytes, 1 <= n <= the reader's limit), CRC-32C (Castagnoli) of payload (4 bytes, little endian)
//	payload = kind (1 byte), body
//
// Kinds:
//   - 'H' header, first and once: JSON {"columns":[{"name","type"}...],"rows":N}.
//   - 'B' batch: uvarint r (rows, >= 1); then for every column in header
//     order, a "number" column as r float64 (IEEE 754, little endian) and a
//     "category" column as r cells, each uvarint length then UTF-8 bytes.
//   - 'E' end, last and once: uvarint total rows, uvarint batch frames;
//     both must match what came before, and the rows the header's.
//   - 'X' error: the sender failed mid-stream; the body is a UTF-8 message.
//
// A cache file is Magic followed by such a stream, ending with its 'E' frame.
package frames

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"unicode/utf8"

	"github.com/fedgrid/fedgrid/dataset"
)

// Magic starts a cache file.
const Magic = "FGSHARD1"

// Frame kinds.
const (
	KindHeader = 'H'
	KindBatch  = 'B'
	KindEnd    = 'E'
	KindError  = 'X'
)

// DefaultMaxFrame bounds a frame's payload when a caller gives no limit.
const DefaultMaxFrame = 4 << 20

// DefaultChunkRows is the rows a Writer puts in a batch frame (fewer when
// they would not fit the frame limit).
const DefaultChunkRows = 1024

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Header describes the table a stream carries.
type Header struct {
	Columns []dataset.Column `json:"columns"`
	Rows    int              `json:"rows"`
}

// Remote is the message of an 'X' frame: the sender's failure.
type Remote struct{ Message string }

func (e *Remote) Error() string { return "sender failed: " + e.Message }

// Writer writes a stream.
type Writer struct {
	w         io.Writer
	h         Header
	maxFrame  int
	chunkRows int
	rows      int
	batches   int
	buf       []byte
	body      []byte
	pend      dataset.Batch // rows not yet in a frame
	pendBytes int
}

// NewWriter writes h's frame to w. maxFrame bounds every frame's payload
// (0: DefaultMaxFrame).
func NewWriter(w io.Writer, h Header, maxFrame int) (*Writer, error) {
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrame
	}
	for _, c := range h.Columns {
		if c.Type != dataset.TypeNumber && c.Type != dataset.TypeCategory {
			return nil, fmt.Errorf("frames: column %q has type %q", c.Name, c.Type)
		}
	}
	fw := &Writer{w: w, h: h, maxFrame: maxFrame, chunkRows: DefaultChunkRows}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	if err := fw.frame(KindHeader, b); err != nil {
		return nil, err
	}
	return fw, nil
}

// frame writes one frame of kind with body.
func (w *Writer) frame(kind byte, body []byte) error {
	if 1+len(body) > w.maxFrame {
		return fmt.Errorf("frames: a frame of %d bytes is over the limit of %d", 1+len(body), w.maxFrame)
	}
	w.buf = w.buf[:0]
	w.buf = binary.AppendUvarint(w.buf, uint64(1+len(body)))
	at := len(w.buf)
	w.buf = append(w.buf, kind)
	w.buf = append(w.buf, body...)
	w.buf = binary.LittleEndian.AppendUint32(w.buf, crc32.Checksum(w.buf[at:], crcTable))
	_, err := w.w.Write(w.buf)
	return err
}

// rowBytes is the encoded size of row i of b.
func (w *Writer) rowBytes(b *dataset.Batch, i int) int {
	n := 0
	for c, col := range w.h.Columns {
		if col.Type == dataset.TypeNumber {
			n += 8
			continue
		}
		s := b.Raw[c][i]
		n += uvarintLen(uint64(len(s))) + len(s)
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// Write adds b's rows to the stream. Rows are written in batch frames of
// DefaultChunkRows rows, whatever the batches given (fewer only where the
// frame limit needs it, and in the last frame), so that a reader of the
// file reads whole chunks.
func (w *Writer) Write(b *dataset.Batch) error {
	if len(b.Num) < len(w.h.Columns) || len(b.Raw) < len(w.h.Columns) {
		return fmt.Errorf("frames: batch has %d columns, the header %d", min(len(b.Num), len(b.Raw)), len(w.h.Columns))
	}
	for c, col := range w.h.Columns {
		if col.Type == dataset.TypeNumber && len(b.Num[c]) < b.Len {
			return fmt.Errorf("frames: number column %q: batch has %d numbers for %d rows", col.Name, len(b.Num[c]), b.Len)
		}
		if col.Type == dataset.TypeCategory && len(b.Raw[c]) < b.Len {
			return fmt.Errorf("frames: category column %q: batch has %d cells for %d rows", col.Name, len(b.Raw[c]), b.Len)
		}
	}
	if len(w.pend.Num) != len(w.h.Columns) {
		w.pend.Num, w.pend.Raw = make([][]float64, len(w.h.Columns)), make([][]string, len(w.h.Columns))
		w.pendBytes = 1 + binary.MaxVarintLen64
	}
	for i := 0; i < b.Len; i++ {
		r := w.rowBytes(b, i)
		if 1+binary.MaxVarintLen64+r > w.maxFrame {
			return fmt.Errorf("frames: row %d is %d bytes, over the frame limit of %d", b.Start+i, r, w.maxFrame)
		}
		if w.pendBytes+r > w.maxFrame {
			if err := w.flush(); err != nil {
				return err
			}
		}
		for c, col := range w.h.Columns {
			if col.Type == dataset.TypeNumber {
				w.pend.Num[c] = append(w.pend.Num[c], b.Num[c][i])
			} else {
				w.pend.Raw[c] = append(w.pend.Raw[c], b.Raw[c][i])
			}
		}
		w.pend.Len++
		w.pendBytes += r
		if w.pend.Len == w.chunkRows {
			if err := w.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush writes the pending rows as one batch frame.
func (w *Writer) flush() error {
	if w.pend.Len == 0 {
		return nil
	}
	if err := w.batch(&w.pend, 0, w.pend.Len); err != nil {
		return err
	}
	for c := range w.pend.Num {
		w.pend.Num[c], w.pend.Raw[c] = w.pend.Num[c][:0], w.pend.Raw[c][:0]
	}
	w.pend.Len = 0
	w.pendBytes = 1 + binary.MaxVarintLen64
	return nil
}

func (w *Writer) batch(b *dataset.Batch, from, to int) error {
	body := binary.AppendUvarint(w.body[:0], uint64(to-from))
	for c, col := range w.h.Columns {
		if col.Type == dataset.TypeNumber {
			for _, v := range b.Num[c][from:to] {
				body = binary.LittleEndian.AppendUint64(body, math.Float64bits(v))
			}
			continue
		}
		for _, s := range b.Raw[c][from:to] {
			body = binary.AppendUvarint(body, uint64(len(s)))
			body = append(body, s...)
		}
	}
	w.body = body
	if err := w.frame(KindBatch, body); err != nil {
		return err
	}
	w.rows += to - from
	w.batches++
	return nil
}

// Close writes the end frame; the rows written must be the header's.
func (w *Writer) Close() error {
	if err := w.flush(); err != nil {
		return err
	}
	if w.rows != w.h.Rows {
		return fmt.Errorf("frames: %d rows written, the header says %d", w.rows, w.h.Rows)
	}
	body := binary.AppendUvarint(nil, uint64(w.rows))
	body = binary.AppendUvarint(body, uint64(w.batches))
	return w.frame(KindEnd, body)
}

// Fail writes an error frame: the reader stops with *Remote.
func (w *Writer) Fail(msg string) error {
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	return w.frame(KindError, []byte(msg))
}

// ErrMalformed wraps every error about the bytes of a stream.
var ErrMalformed = errors.New("malformed shard stream")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Limits bound what a Reader accepts.
type Limits struct {
	MaxFrame   int // payload bytes of one frame; 0: DefaultMaxFrame
	MaxRows    int // rows of the table; 0: no limit but the header's
	MaxColumns int // 0: dataset.DefaultMaxColumns
}

// Reader reads a stream.
type Reader struct {
	r       *bufio.Reader
	lim     Limits
	h       Header
	rows    int
	batches int
	done    bool
	frame   []byte // the last frame as read, prefix and checksum included
	hdr     []byte // the header frame as read
	batch   dataset.Batch
}

// NewReader reads the header frame.
func NewReader(r io.Reader, lim Limits) (*Reader, error) {
	if lim.MaxFrame <= 0 {
		lim.MaxFrame = DefaultMaxFrame
	}
	if lim.MaxColumns <= 0 {
		lim.MaxColumns = dataset.DefaultMaxColumns
	}
	fr := &Reader{r: bufio.NewReaderSize(r, 64<<10), lim: lim}
	kind, body, err := fr.next()
	if err != nil {
		return nil, err
	}
	if kind != KindHeader {
		return nil, malformed("the first frame is %q, not the header", kind)
	}
	h, err := ParseHeader(body, lim)
	if err != nil {
		return nil, err
	}
	fr.h = h
	fr.hdr = append([]byte(nil), fr.frame...)
	return fr, nil
}

// HeaderFrame is the header frame exactly as read.
func (r *Reader) HeaderFrame() []byte { return r.hdr }

// ParseHeader decodes and checks a header frame's body.
func ParseHeader(body []byte, lim Limits) (Header, error) {
	var h Header
	if err := json.Unmarshal(body, &h); err != nil {
		return h, malformed("header: %v", err)
	}
	if lim.MaxColumns <= 0 {
		lim.MaxColumns = dataset.DefaultMaxColumns
	}
	if len(h.Columns) == 0 || len(h.Columns) > lim.MaxColumns {
		return h, malformed("header has %d columns (1 to %d)", len(h.Columns), lim.MaxColumns)
	}
	seen := map[string]bool{}
	for _, c := range h.Columns {
		if c.Name == "" || seen[c.Name] || !utf8.ValidString(c.Name) || (c.Type != dataset.TypeNumber && c.Type != dataset.TypeCategory) {
			return h, malformed("header column %q of type %q", c.Name, c.Type)
		}
		seen[c.Name] = true
	}
	if h.Rows < 0 || (lim.MaxRows > 0 && h.Rows > lim.MaxRows) {
		return h, malformed("header says %d rows (limit %d)", h.Rows, lim.MaxRows)
	}
	return h, nil
}

// Header is the stream's header.
func (r *Reader) Header() Header { return r.h }

// next reads one frame and checks its checksum.
func (r *Reader) next() (byte, []byte, error) {
	n, err := binary.ReadUvarint(r.r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, malformed("the stream ended before its end frame")
		}
		return 0, nil, fmt.Errorf("%w: frame length: %w", ErrMalformed, err)
	}
	if n < 1 || n > uint64(r.lim.MaxFrame) {
		return 0, nil, malformed("a frame of %d bytes (limit %d)", n, r.lim.MaxFrame)
	}
	pre := uvarintLen(n)
	need := pre + int(n) + 4
	if cap(r.frame) < need {
		r.frame = make([]byte, need)
	}
	r.frame = r.frame[:need]
	binary.PutUvarint(r.frame, n)
	if _, err := io.ReadFull(r.r, r.frame[pre:]); err != nil {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes cut short: %w", ErrMalformed, n, err)
	}
	payload := r.frame[pre : pre+int(n)]
	if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(r.frame[pre+int(n):]) {
		return 0, nil, malformed("a frame's checksum does not match")
	}
	return payload[0], payload[1:], nil
}

// Next returns the next batch, and the frame it came from exactly as read
// (both valid until the next call). After the end frame, checked against
// what came before, it returns io.EOF; an error frame gives *Remote.
func (r *Reader) Next() (*dataset.Batch, []byte, error) {
	if r.done {
		return nil, nil, io.EOF
	}
	kind, body, err := r.next()
	if err != nil {
		return nil, nil, err
	}
	switch kind {
	case KindBatch:
		if err := decodeBatch(body, r.h.Columns, &r.batch); err != nil {
			return nil, nil, err
		}
		r.batch.Start = r.rows
		r.rows += r.batch.Len
		r.batches++
		if r.rows > r.h.Rows {
			return nil, nil, malformed("more rows than the header's %d", r.h.Rows)
		}
		return &r.batch, r.frame, nil
	case KindEnd:
		rows, batches, err := decodeEnd(body)
		if err != nil {
			return nil, nil, err
		}
		if rows != r.rows || batches != r.batches || rows != r.h.Rows {
			return nil, nil, malformed("the end frame says %d rows in %d batches; %d rows in %d batches came, the header says %d rows", rows, batches, r.rows, r.batches, r.h.Rows)
		}
		r.done = true
		return nil, r.frame, io.EOF
	case KindError:
		return nil, nil, &Remote{Message: string(body)}
	}
	return nil, nil, malformed("a frame of unknown kind %q", kind)
}

func decodeEnd(body []byte) (rows, batches int, err error) {
	a, n := binary.Uvarint(body)
	if n <= 0 || a > math.MaxInt32*64 {
		return 0, 0, malformed("end frame")
	}
	b, m := binary.Uvarint(body[n:])
	if m <= 0 || n+m != len(body) || b > a {
		return 0, 0, malformed("end frame")
	}
	return int(a), int(b), nil
}

// decodeBatch decodes a batch frame's body into out, reusing its slices.
func decodeBatch(body []byte, cols []dataset.Column, out *dataset.Batch) error {
	rows, n := binary.Uvarint(body)
	if n <= 0 || rows < 1 || rows > uint64(len(body)) {
		return malformed("batch frame: bad row count")
	}
	r := int(rows)
	body = body[n:]
	if len(out.Num) != len(cols) {
		out.Num, out.Raw = make([][]float64, len(cols)), make([][]string, len(cols))
	}
	out.Len = r
	for c, col := range cols {
		if col.Type == dataset.TypeNumber {
			if len(body) < 8*r {
				return malformed("batch frame: column %q cut short", col.Name)
			}
			v := out.Num[c]
			if cap(v) < r {
				v = make([]float64, r)
			}
			v = v[:r]
			for i := range v {
				v[i] = math.Float64frombits(binary.LittleEndian.Uint64(body[8*i:]))
			}
			out.Num[c], out.Raw[c] = v, nil
			body = body[8*r:]
			continue
		}
		s := out.Raw[c]
		if cap(s) < r {
			s = make([]string, r)
		}
		s = s[:r]
		for i := range s {
			l, k := binary.Uvarint(body)
			if k <= 0 || l > uint64(len(body)-k) {
				return malformed("batch frame: column %q cut short", col.Name)
			}
			cell := body[k : k+int(l)]
			if !utf8.Valid(cell) {
				return malformed("batch frame: column %q holds text that is not UTF-8", col.Name)
			}
			s[i] = string(cell)
			body = body[k+int(l):]
		}
		out.Raw[c], out.Num[c] = s, nil
	}
	if len(body) != 0 {
		return malformed("batch frame: %d bytes after the last column", len(body))
	}
	return nil
}
