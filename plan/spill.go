package plan

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"unsafe"
)

// spill is the scratch file of a streamed run (TrainOptions.ScratchDir):
// every block's rows as the run prepared them, so that the epochs after the
// first read them back with one read each instead of reading, decoding,
// checking and preprocessing the source again.
//
// Layout: the rows of the source in order, each block's at byte
// from*(d+1)*8 (from: its first row, d: the inputs): its k rows of inputs
// (k*d values), then its k labels, as float64 in the machine's byte order.
// The file is this run's alone: created with a random name, unlinked at
// once where the system allows (so a crash leaves nothing behind; else
// removed on close, and any "*.tmp" file in the directory is fair game to
// its owner's next start), never read by another process. It is what the
// run would otherwise hold in memory, written and read back by the same
// process within minutes, so it carries no checksum, as memory does not:
// the source's checksums are checked when a block is first read from it,
// and a failing read or write is an error the kernel reports, after which
// the run reads that block and all later ones from the source again.
type spill struct {
	f    *os.File
	name string // to remove on close; "" once unlinked
	d    int
	in   []bool // per block number: its prepared rows are in the file
}

// newSpill creates the scratch file of a run over n rows of d inputs in
// blocks of blockRows rows, or returns nil when there is no directory, the
// file would be more than max bytes (max > 0), or it cannot be created.
func newSpill(dir string, max int64, n, d, blockRows int) *spill {
	if dir == "" || n == 0 {
		return nil
	}
	if size := float64(n) * float64(d+1) * 8; size > math.MaxInt64/2 || (max > 0 && int64(size) > max) {
		return nil
	}
	f, err := os.CreateTemp(dir, "train-*.tmp")
	if err != nil {
		return nil
	}
	s := &spill{f: f, d: d, in: make([]bool, (n+blockRows-1)/blockRows)}
	if os.Remove(f.Name()) != nil {
		s.name = f.Name()
	}
	return s
}

// has reports whether block number b is in the file.
func (s *spill) has(b int) bool { return s != nil && s.f != nil && s.in[b] }

// bytesOf is v's memory as bytes (no copy).
func bytesOf(v []float64) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), len(v)*8)
}

func (s *spill) offset(blk block) int64 { return int64(blk.from) * int64(s.d+1) * 8 }

// write stores block number b (blk's k rows: x holds k*d inputs, y k
// labels). A failed write ends the spill: the run reads the source again.
func (s *spill) write(b int, blk block, x, y []float64) {
	if s == nil || s.f == nil {
		return
	}
	off := s.offset(blk)
	if _, err := s.f.WriteAt(bytesOf(x), off); err != nil {
		s.close()
		return
	}
	if _, err := s.f.WriteAt(bytesOf(y), off+int64(len(x))*8); err != nil {
		s.close()
		return
	}
	s.in[b] = true
}

// read fills x (k*d inputs) and y (k labels) with block number b, which
// must be in the file (has). A failed read ends the spill and is an error
// the caller recovers from by reading the source.
func (s *spill) read(b int, blk block, x, y []float64) error {
	k := blk.to - blk.from
	x, y = x[:k*s.d], y[:k]
	off := s.offset(blk)
	if err := readFull(s.f, bytesOf(x), off); err != nil {
		s.close()
		return err
	}
	if err := readFull(s.f, bytesOf(y), off+int64(len(x))*8); err != nil {
		s.close()
		return err
	}
	return nil
}

func readFull(f *os.File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("scratch file: %w", err)
}

// close closes (and if need be removes) the file; the spill then holds no
// block.
func (s *spill) close() {
	if s == nil || s.f == nil {
		return
	}
	_ = s.f.Close()
	if s.name != "" {
		_ = os.Remove(s.name)
	}
	s.f = nil
}
