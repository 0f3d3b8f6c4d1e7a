package upload

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cutReader yields n bytes of r and then fails, like a connection cut.
type cutReader struct {
	r io.Reader
	n int
}

var errCut = errors.New("connection reset")

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, errCut
	}
	if len(p) > c.n {
		p = p[:c.n]
	}
	k, err := c.r.Read(p)
	c.n -= k
	return k, err
}

func testData(size int) []byte {
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}

const chunk = 1 << 20

func uploadAll(t *testing.T, s *Store, data []byte) string {
	t.Helper()
	sess, err := s.Create(Session{Owner: "u1", Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	var off int64
	for off < int64(len(data)) {
		end := min(off+chunk, int64(len(data)))
		if off, err = s.Append(sess.ID, off, bytes.NewReader(data[off:end]), chunk); err != nil {
			t.Fatal(err)
		}
	}
	_, sum, size, err := s.Complete(sess.ID)
	if err != nil || size != int64(len(data)) {
		t.Fatalf("complete: %d bytes, %v", size, err)
	}
	return sum
}

// Acceptance 4 of issue 19: an upload cut in the middle resumes (here also
// across a reopen of the store) and ends with the same content hash as an
// uninterrupted one.
func TestCutUploadResumesToSameHash(t *testing.T) {
	dir := t.TempDir()
	data := testData(3*chunk + 12345)
	s, err := Open(dir, 8*chunk)
	if err != nil {
		t.Fatal(err)
	}
	whole := uploadAll(t, s, data)
	want := sha256.Sum256(data)
	if whole != hex.EncodeToString(want[:]) {
		t.Fatalf("uninterrupted upload hash %s, want %x", whole, want)
	}

	sess, err := s.Create(Session{Owner: "u1", Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	off, err := s.Append(sess.ID, 0, bytes.NewReader(data[:chunk]), chunk)
	if err != nil || off != chunk {
		t.Fatalf("first chunk: offset %d, %v", off, err)
	}
	// The second chunk is cut after 300000 bytes.
	off, err = s.Append(sess.ID, off, &cutReader{r: bytes.NewReader(data[chunk : 2*chunk]), n: 300000}, chunk)
	if !errors.Is(err, errCut) || off != chunk+300000 {
		t.Fatalf("cut chunk: offset %d, %v", off, err)
	}
	if _, _, _, err := s.Complete(sess.ID); !errors.Is(err, ErrShort) {
		t.Fatalf("complete of a cut upload: %v, want ErrShort", err)
	}
	// The client resends from its old offset: refused, with the real one.
	if got, err := s.Append(sess.ID, chunk, bytes.NewReader(data[chunk:2*chunk]), chunk); !errors.Is(err, ErrOffset) || got != off {
		t.Fatalf("stale offset: %d, %v", got, err)
	}

	// The gateway restarts; the session and its bytes are still there.
	s, err = Open(dir, 8*chunk)
	if err != nil {
		t.Fatal(err)
	}
	off, err = s.Offset(sess.ID)
	if err != nil || off != chunk+300000 {
		t.Fatalf("offset after reopen: %d, %v", off, err)
	}
	for off < int64(len(data)) {
		end := min(off+chunk, int64(len(data)))
		if off, err = s.Append(sess.ID, off, bytes.NewReader(data[off:end]), chunk); err != nil {
			t.Fatal(err)
		}
	}
	path, sum, size, err := s.Complete(sess.ID)
	if err != nil || size != int64(len(data)) {
		t.Fatalf("complete: %d bytes, %v", size, err)
	}
	if sum != whole {
		t.Fatalf("resumed upload hash %s, uninterrupted %s", sum, whole)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored bytes differ from the upload (%v)", err)
	}
	if err := s.Remove(sess.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Offset(sess.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed session: %v", err)
	}
}

func TestUploadLimits(t *testing.T) {
	s, err := Open(t.TempDir(), 4*chunk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(Session{Owner: "u1", Size: 4*chunk + 1}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("declared size over the limit: %v", err)
	}
	sess, err := s.Create(Session{Owner: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	data := testData(4*chunk + 10)
	// A chunk longer than the chunk limit: its first maxChunk bytes stay, the rest is refused.
	off, err := s.Append(sess.ID, 0, bytes.NewReader(data[:2*chunk]), chunk)
	if !errors.Is(err, ErrTooLarge) || off != chunk {
		t.Fatalf("oversized chunk: offset %d, %v", off, err)
	}
	for off < 4*chunk {
		if off, err = s.Append(sess.ID, off, bytes.NewReader(data[off:off+chunk]), chunk); err != nil {
			t.Fatal(err)
		}
	}
	// The session is full: one more byte is too many.
	if _, err := s.Append(sess.ID, off, bytes.NewReader(data[off:]), chunk); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("byte past the session limit: %v", err)
	}
	for _, id := range []string{"../../etc", "", "ZZZZZZZZZZZZZZZZ"} {
		if _, err := s.Offset(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("session %q: %v", id, err)
		}
	}
}

func TestCreateRefusesWhatTheDiskCannotHold(t *testing.T) {
	s, err := Open(t.TempDir(), 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	free := int64(10 * chunk)
	s.Free = func() (int64, error) { return free, nil }
	a, err := s.Create(Session{Owner: "u1", Size: 6 * chunk})
	if err != nil {
		t.Fatal(err)
	}
	// 6 chunks are awaited by a: 5 more do not fit in 10 free.
	if _, err := s.Create(Session{Owner: "u2", Size: 5 * chunk}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("second session beyond the free space: %v, want ErrNoSpace", err)
	}
	// Once a has received 2 chunks, only 4 are awaited (and the disk,
	// here unchanged, is taken as it reports).
	data := testData(2 * chunk)
	if _, err := s.Append(a.ID, 0, bytes.NewReader(data), 2*chunk); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(Session{Owner: "u2", Size: 5 * chunk}); err != nil {
		t.Fatalf("second session within the free space: %v", err)
	}
	s.MaxOpen = 1
	if _, err := s.Create(Session{Owner: "u1", Size: 1}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("u1's second open session with MaxOpen 1: %v, want ErrTooMany", err)
	}
}

func TestFinishRecordsResultAndSweepExpires(t *testing.T) {
	s, err := Open(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	data := testData(chunk + 7)
	sess, err := s.Create(Session{Owner: "u1", Size: int64(len(data)), Name: "table", Format: "csv"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(sess.ID, 0, bytes.NewReader(data), 2*chunk); err != nil {
		t.Fatal(err)
	}
	failed := errors.New("ingest refused it")
	if _, err := s.Finish(sess.ID, func(*os.File, string, int64) (Result, error) { return Result{}, failed }); !errors.Is(err, failed) {
		t.Fatalf("finish whose use fails: %v", err)
	}
	var read []byte
	done, err := s.Finish(sess.ID, func(f *os.File, sha string, size int64) (Result, error) {
		var err error
		read, err = io.ReadAll(f)
		return Result{DatasetID: "d1", Version: 3}, err
	})
	if err != nil || !bytes.Equal(read, data) {
		t.Fatalf("finish after a failed one: %v (read %d bytes)", err, len(read))
	}
	want := sha256.Sum256(data)
	if done.Result == nil || done.Result.DatasetID != "d1" || done.Result.SHA256 != hex.EncodeToString(want[:]) {
		t.Fatalf("result %+v", done.Result)
	}
	again, err := s.Finish(sess.ID, func(*os.File, string, int64) (Result, error) {
		t.Fatal("use called for a finished session")
		return Result{}, nil
	})
	if !errors.Is(err, ErrDone) || again.Result.Version != 3 || again.Name != "table" {
		t.Fatalf("finish again: %+v, %v", again, err)
	}
	if off, err := s.Offset(sess.ID); err != nil || off != int64(len(data)) {
		t.Fatalf("offset of a finished session: %d, %v", off, err)
	}
	if _, err := s.Append(sess.ID, int64(len(data)), bytes.NewReader(nil), chunk); !errors.Is(err, ErrDone) {
		t.Fatalf("append to a finished session: %v", err)
	}

	open, err := s.Create(Session{Owner: "u1", Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.Touched(open.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(last.Add(time.Hour), 2*time.Hour); err != nil || n != 0 {
		t.Fatalf("sweep of fresh sessions removed %d (%v)", n, err)
	}
	// A chunk in progress holds its session: the sweep passes it by.
	if err := s.acquire(open.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(last.Add(3*time.Hour), 2*time.Hour); err != nil || n != 1 {
		t.Fatalf("sweep with one session busy removed %d (%v), want the finished one", n, err)
	}
	s.release(open.ID)
	if n, err := s.Sweep(last.Add(3*time.Hour), 2*time.Hour); err != nil || n != 1 {
		t.Fatalf("second sweep removed %d (%v)", n, err)
	}
	for _, id := range []string{sess.ID, open.ID} {
		if _, err := s.Session(id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("swept session %s: %v", id, err)
		}
	}
}

// The free-space check counts the columnar version an upload becomes
// (IngestEstimate): on the same disk as the upload's bytes, or on another;
// and Finish checks it again before ingesting, keeping the upload when it
// does not fit.
func TestSpaceForTheIngest(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "uploads"), 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetIngestDir(filepath.Join(dir, "db", "datasets")); err != nil { // not made yet
		t.Fatal(err)
	}
	if !s.IngestSameDisk || s.IngestFree == nil {
		t.Fatalf("a directory beside the uploads is not on the same disk (same %v)", s.IngestSameDisk)
	}
	const size = 100 << 20
	need := size + IngestEstimate(size)
	if IngestEstimate(size) < size*2 {
		t.Fatalf("IngestEstimate(%d) = %d: less than the ratio measured on the shared pima data", size, IngestEstimate(size))
	}
	free := int64(need - 1)
	s.Free = func() (int64, error) { return free, nil }
	s.IngestFree = s.Free
	_, err = s.Create(Session{Owner: "u", Size: size})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "dataset version") || !strings.Contains(err.Error(), "100.0 MiB for the file") {
		t.Fatalf("an upload whose bytes fit but not its dataset version: %v; want ErrNoSpace naming the dataset version", err)
	}
	free = need
	a, err := s.Create(Session{Owner: "u", Size: size})
	if err != nil {
		t.Fatalf("an upload that fits with its dataset version: %v", err)
	}
	// a's ingest is pending: a second upload must fit beside it.
	if _, err := s.Create(Session{Owner: "u", Size: 1}); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("a second upload with no room beside a's pending ingest: %v", err)
	}
	if err := s.Remove(a.ID); err != nil {
		t.Fatal(err)
	}

	// Another disk for datasets: each disk holds its part.
	s.IngestSameDisk = false
	s.Free = func() (int64, error) { return size, nil }
	inFree := IngestEstimate(size) - 1
	s.IngestFree = func() (int64, error) { return inFree, nil }
	if _, err := s.Create(Session{Owner: "u", Size: size}); !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "datasets' disk") {
		t.Fatalf("the datasets' disk too small: %v; want ErrNoSpace naming it", err)
	}
	inFree = IngestEstimate(size)
	b, err := s.Create(Session{Owner: "u", Size: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(b.ID, 0, strings.NewReader("a\n1\n"), 5); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(b.ID, 4, strings.NewReader("\n"), 5); err != nil {
		t.Fatal(err)
	}
	// Filled meanwhile: Finish refuses before ingesting and keeps the upload.
	inFree = IngestOverhead
	used := false
	use := func(*os.File, string, int64) (Result, error) {
		used = true
		return Result{DatasetID: "d", Version: 1}, nil
	}
	if _, err := s.Finish(b.ID, use); !errors.Is(err, ErrNoSpace) || used || !strings.Contains(err.Error(), "finish again") {
		t.Fatalf("finish without room for the dataset version: %v (ingest called: %v)", err, used)
	}
	if off, err := s.Offset(b.ID); err != nil || off != 5 {
		t.Fatalf("the refused upload: offset %d, %v; want its 5 bytes kept", off, err)
	}
	inFree = IngestEstimate(5)
	if _, err := s.Finish(b.ID, use); err != nil || !used {
		t.Fatalf("finish with room: %v", err)
	}
}

// With SyncBytes set, chunks are synced every SyncBytes and on the last
// one; the bytes written since are the offset while the store that wrote
// them runs. A restarted store (a new Store on the directory) trusts only
// the durable length, even when the data file is longer (a torn tail a
// power loss may leave, here written by hand), cuts the tail off when the
// upload resumes there, and ends with the bytes' own hash.
func TestSyncAtIntervalsResumesFromDurableLength(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	s.SyncBytes = 2 * chunk
	data := testData(5 * chunk)
	sess, err := s.Create(Session{Owner: "u", Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.Append(sess.ID, int64(i*chunk), bytes.NewReader(data[i*chunk:(i+1)*chunk]), chunk); err != nil {
			t.Fatal(err)
		}
	}
	if off, err := s.Offset(sess.ID); err != nil || off != 3*chunk {
		t.Fatalf("offset in the writing store: %d, %v; want %d", off, err, 3*chunk)
	}

	// Restarted, with a torn tail after the third chunk.
	f, err := os.OpenFile(filepath.Join(dir, sess.ID, "data"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, chunk/2)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	r.SyncBytes = 2 * chunk
	if off, err := r.Offset(sess.ID); err != nil || off != 2*chunk {
		t.Fatalf("offset after a restart: %d, %v; want the durable %d", off, err, 2*chunk)
	}
	if _, err := r.Append(sess.ID, 3*chunk, bytes.NewReader(data[3*chunk:4*chunk]), chunk); !errors.Is(err, ErrOffset) {
		t.Fatalf("a chunk after the untrusted tail: %v; want ErrOffset", err)
	}
	if _, _, _, err := r.Complete(sess.ID); !errors.Is(err, ErrShort) {
		t.Fatalf("complete with the tail cut: %v; want ErrShort", err)
	}
	for off := 2 * chunk; off < len(data); off += chunk {
		if _, err := r.Append(sess.ID, int64(off), bytes.NewReader(data[off:off+chunk]), chunk); err != nil {
			t.Fatal(err)
		}
	}
	sum := sha256.Sum256(data)
	_, sha, size, err := r.Complete(sess.ID)
	if err != nil || size != int64(len(data)) || sha != hex.EncodeToString(sum[:]) {
		t.Fatalf("after resuming from the durable length: %d bytes, sha %s, %v; want %d bytes of the data's hash", size, sha, err, len(data))
	}

	// A session made with SyncBytes keeps its durable length (its first
	// chunk was not synced); one of a store that syncs every chunk (or of
	// an older gateway) trusts its file's length after a restart.
	every, err := s.Create(Session{Owner: "u", Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(every.ID, 0, bytes.NewReader(data[:chunk]), chunk); err != nil {
		t.Fatal(err)
	}
	s.SyncBytes = 0
	old, err := s.Create(Session{Owner: "u", Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(old.ID, 0, bytes.NewReader(data[:chunk]), chunk); err != nil {
		t.Fatal(err)
	}
	r, err = Open(dir, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	if off, err := r.Offset(every.ID); err != nil || off != 0 {
		t.Fatalf("a SyncBytes session's unsynced first chunk after a restart: offset %d, %v; want 0", off, err)
	}
	if off, err := r.Offset(old.ID); err != nil || off != chunk {
		t.Fatalf("a session synced at every chunk, after a restart: offset %d, %v; want %d", off, err, chunk)
	}
}

// BenchmarkAppendSync sends 256 MiB in 8 MiB chunks (the CLI's chunk size)
// to a session synced at every chunk and to one synced every 64 MiB, in
// the same run (make bench does not run it: go test -run XXX -bench
// AppendSync -benchtime 5x ./gateway/upload/).
func BenchmarkAppendSync(b *testing.B) {
	const total, piece = 256 << 20, 8 << 20
	data := testData(piece)
	for _, c := range []struct {
		name string
		sync int64
	}{{"every-chunk", 0}, {"every-64MiB", 64 << 20}, {"every-chunk-again", 0}, {"every-64MiB-again", 64 << 20}} {
		b.Run(c.name, func(b *testing.B) {
			s, err := Open(b.TempDir(), 1<<40)
			if err != nil {
				b.Fatal(err)
			}
			s.SyncBytes = c.sync
			s.Free = nil
			b.SetBytes(total)
			for range b.N {
				sess, err := s.Create(Session{Owner: "u", Size: total})
				if err != nil {
					b.Fatal(err)
				}
				for off := int64(0); off < total; off += piece {
					if _, err := s.Append(sess.ID, off, bytes.NewReader(data), piece); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Remove(sess.ID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
