package frames

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/fedgrid/fedgrid/dataset"
)

// File is a cache file (Magic and a stream) opened as a dataset.Source.
// Open checks its layout (header, frame lengths, end frame, size); every
// frame's checksum is checked when the frame is read. Scans are serialised.
type File struct {
	mu     sync.Mutex
	f      *os.File
	h      Header
	lim    Limits
	frames []ref // batch frames in order
	chunk  int   // rows of every batch frame but the last; 0 when they differ
	cur    int   // index of the decoded frame; -1 for none
	buf    []byte
	batch  dataset.Batch
	view   dataset.Batch
}

// ref is one batch frame of a file.
type ref struct {
	off         int64
	size        int // whole frame: prefix, payload, checksum
	start, rows int
}

var _ dataset.Source = (*File)(nil)

// Open opens a cache file written by a Writer after Magic.
func Open(path string, lim Limits) (_ *File, err error) {
	if lim.MaxFrame <= 0 {
		lim.MaxFrame = DefaultMaxFrame
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	fl := &File{f: f, lim: lim, cur: -1}
	var magic [len(Magic)]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil || string(magic[:]) != Magic {
		return nil, malformed("%s is not a shard cache file", path)
	}
	off := int64(len(Magic))
	// head reads a frame's length prefix and its first bytes.
	head := make([]byte, binary.MaxVarintLen64+1+binary.MaxVarintLen64)
	frameAt := func(off int64) (n uint64, pre int, err error) {
		k, err := f.ReadAt(head, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, 0, err
		}
		n, pre = binary.Uvarint(head[:k])
		if pre <= 0 || n < 1 || n > uint64(lim.MaxFrame) || off+int64(pre)+int64(n)+4 > st.Size() {
			return 0, 0, malformed("%s: bad frame at byte %d", path, off)
		}
		return n, pre, nil
	}
	whole := func(off int64, n uint64, pre int) ([]byte, error) {
		b := make([]byte, pre+int(n)+4)
		if _, err := f.ReadAt(b, off); err != nil {
			return nil, err
		}
		p := b[pre : pre+int(n)]
		if crc32.Checksum(p, crcTable) != binary.LittleEndian.Uint32(b[pre+int(n):]) {
			return nil, malformed("%s: a frame's checksum does not match", path)
		}
		return p, nil
	}
	n, pre, err := frameAt(off)
	if err != nil {
		return nil, err
	}
	p, err := whole(off, n, pre)
	if err != nil {
		return nil, err
	}
	if p[0] != KindHeader {
		return nil, malformed("%s: no header frame", path)
	}
	if fl.h, err = ParseHeader(p[1:], lim); err != nil {
		return nil, err
	}
	off += int64(pre) + int64(n) + 4
	rows := 0
	for {
		n, pre, err := frameAt(off)
		if err != nil {
			return nil, err
		}
		size := pre + int(n) + 4
		switch head[pre] {
		case KindBatch:
			r, k := binary.Uvarint(head[pre+1:])
			if k <= 0 || r < 1 || r > n {
				return nil, malformed("%s: bad batch frame at byte %d", path, off)
			}
			fl.frames = append(fl.frames, ref{off: off, size: size, start: rows, rows: int(r)})
			rows += int(r)
		case KindEnd:
			p, err := whole(off, n, pre)
			if err != nil {
				return nil, err
			}
			total, batches, err := decodeEnd(p[1:])
			if err != nil {
				return nil, err
			}
			if total != rows || batches != len(fl.frames) || rows != fl.h.Rows || off+int64(size) != st.Size() {
				return nil, malformed("%s: the end frame does not match the file", path)
			}
			fl.chunk = chunkOf(fl.frames)
			return fl, nil
		default:
			return nil, malformed("%s: a frame of kind %q at byte %d", path, head[pre], off)
		}
		off += int64(size)
	}
}

func chunkOf(fr []ref) int {
	if len(fr) == 0 {
		return 0
	}
	c := fr[0].rows
	for _, r := range fr[:len(fr)-1] {
		if r.rows != c {
			return 0
		}
	}
	if fr[len(fr)-1].rows > c {
		return 0
	}
	return c
}

// Columns implements dataset.Source.
func (f *File) Columns() []dataset.Column { return append([]dataset.Column(nil), f.h.Columns...) }

// NumRows implements dataset.Source.
func (f *File) NumRows() int { return f.h.Rows }

// ChunkRows is the rows of every batch frame (the last may have fewer), or
// 0 when they differ: a reader that reads whole chunks reads each frame once.
func (f *File) ChunkRows() int { return f.chunk }

// load decodes frame i into f.batch, checking its checksum.
func (f *File) load(i int) error {
	if f.cur == i {
		return nil
	}
	f.cur = -1
	r := f.frames[i]
	if cap(f.buf) < r.size {
		f.buf = make([]byte, r.size)
	}
	b := f.buf[:r.size]
	if _, err := f.f.ReadAt(b, r.off); err != nil {
		return fmt.Errorf("read shard cache: %w", err)
	}
	n, pre := binary.Uvarint(b)
	if pre <= 0 || pre+int(n)+4 != r.size {
		return malformed("the cache file changed under its reader")
	}
	p := b[pre : pre+int(n)]
	if crc32.Checksum(p, crcTable) != binary.LittleEndian.Uint32(b[pre+int(n):]) {
		return malformed("a frame's checksum does not match: the cache file is damaged")
	}
	if err := decodeBatch(p[1:], f.h.Columns, &f.batch); err != nil {
		return err
	}
	if f.batch.Len != r.rows {
		return malformed("the cache file changed under its reader")
	}
	f.cur = i
	return nil
}

// Scan implements dataset.Source.
func (f *File) Scan(ctx context.Context, from, to, batchRows int, fn func(*dataset.Batch) error) error {
	if from < 0 || to > f.h.Rows || from > to {
		return fmt.Errorf("scan rows [%d, %d) of a table of %d rows", from, to, f.h.Rows)
	}
	if batchRows < 1 {
		return fmt.Errorf("scan batch of %d rows: must be at least 1", batchRows)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cols := len(f.h.Columns)
	if len(f.view.Num) != cols {
		f.view.Num, f.view.Raw = make([][]float64, cols), make([][]string, cols)
	}
	i := sort.Search(len(f.frames), func(i int) bool { return f.frames[i].start+f.frames[i].rows > from })
	for pos := from; pos < to; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f.load(i); err != nil {
			return err
		}
		r := f.frames[i]
		end := min(to, r.start+r.rows)
		for pos < end {
			k := min(end, pos+batchRows)
			a, b := pos-r.start, k-r.start
			for c := range cols {
				if v := f.batch.Num[c]; v != nil {
					f.view.Num[c] = v[a:b:b]
				} else {
					f.view.Num[c] = nil
				}
				if v := f.batch.Raw[c]; v != nil {
					f.view.Raw[c] = v[a:b:b]
				} else {
					f.view.Raw[c] = nil
				}
			}
			f.view.Start, f.view.Len = pos, k-pos
			if err := fn(&f.view); err != nil {
				return err
			}
			pos = k
		}
	}
	return nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Verify reads every batch frame and checks its checksum and contents.
func (f *File) Verify() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.frames {
		if err := f.load(i); err != nil {
			return err
		}
	}
	return nil
}
