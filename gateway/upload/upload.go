// Package upload keeps resumable upload sessions on disk: a session's bytes
// are appended in chunks at the offset the session has reached, so an upload
// cut in the middle resumes where the last stored byte ends, and completing
// it hashes the file by streaming, never holding it whole in memory.
//
// Each session is a directory under the root holding meta.json (the
// Session, with its format version) and data (the bytes received so far).
// A finished session keeps only meta.json, recording what its bytes became,
// until Sweep removes it; so does an abandoned one.
package upload

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fedgrid/fedgrid/crypto"
)

// SessionSchema is the format of meta.json this code writes.
const SessionSchema = 1

// Errors a caller maps to answers.
var (
	ErrNotFound = errors.New("upload: no such session")
	ErrOffset   = errors.New("upload: offset does not match the bytes received")
	ErrTooLarge = errors.New("upload: more bytes than the session allows")
	ErrBusy     = errors.New("upload: another chunk of this session is being written")
	ErrShort    = errors.New("upload: fewer bytes than the session's declared size")
	ErrNoSpace  = errors.New("upload: not enough free disk space")
	ErrDone     = errors.New("upload: the session is finished")
	ErrTooMany  = errors.New("upload: too many open sessions")
)

// Session describes one upload. The fields after CreatedAt are the
// caller's, stored with it (all optional: meta.json files written without
// them read as empty).
type Session struct {
	Schema    int       `json:"schema"`
	ID        string    `json:"id"`
	Owner     string    `json:"owner"`
	Size      int64     `json:"size"` // declared total, 0 if unknown
	CreatedAt time.Time `json:"created_at"`

	// What the bytes are for: the dataset's format, and either a new
	// dataset's description or the ID of the dataset they are a new
	// version of.
	Format      string   `json:"format,omitempty"`
	Name        string   `json:"name,omitempty"`
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	Visibility  string   `json:"visibility,omitempty"`
	DatasetID   string   `json:"dataset_id,omitempty"`
	// SHA256 is the hex SHA-256 the uploader says the bytes have ("" none).
	SHA256 string `json:"sha256,omitempty"`
	// Synced marks a session whose durable length is recorded in its
	// "synced" file (see Append: made with SyncBytes > 0); other sessions,
	// and those written before it, are synced at every chunk, so their
	// data file's length is durable.
	Synced bool `json:"synced,omitempty"`
	// Result is set once Finish has turned the bytes into something.
	Result *Result `json:"result,omitempty"`
}

// Result is what a finished session's bytes became.
type Result struct {
	DatasetID string    `json:"dataset_id"`
	Version   int       `json:"version"`
	SHA256    string    `json:"sha256"` // of the uploaded bytes
	At        time.Time `json:"at"`
}

// Store holds the sessions under one directory.
type Store struct {
	dir     string
	maxSize int64
	// MaxOpen bounds the unfinished sessions of one owner (default 16).
	MaxOpen int
	// Free reports the bytes free on the store's disk (default: statfs;
	// tests replace it); a negative answer means unknown and skips the check.
	Free func() (int64, error)
	// IngestFree, when set (SetIngestDir), reports the bytes free on the
	// disk where finished uploads are ingested: Create and Finish also
	// count the columnar version each upload becomes there (IngestEstimate).
	// IngestSameDisk says it is the store's own disk, so that one check
	// counts both. A negative answer skips the check.
	IngestFree     func() (int64, error)
	IngestSameDisk bool
	// Now is the clock (default time.Now).
	Now func() time.Time
	// SyncBytes is how many received bytes of a session may wait in the
	// page cache before Append syncs them and records them as durable;
	// 0: every chunk is synced. The last chunk is always synced.
	SyncBytes int64

	mu   sync.Mutex
	busy map[string]bool
	// written is, per session, the data file's length as this process
	// wrote it: trusted without a sync (a killed process's writes stay in
	// the page cache); after a restart only the recorded durable length is.
	written map[string]int64
}

// DefaultSyncBytes is the SyncBytes the gateway uses: a session's bytes
// are synced every 64 MiB (8 of the CLI's chunks) and at its last chunk.
// BenchmarkAppendSync measured 1.34x the throughput of a sync at every
// 8 MiB chunk (medians of 10 interleaved runs, docs/INTERNALS.md).
const DefaultSyncBytes = 64 << 20

// IngestRatio bounds, for the free-space checks, the bytes of the
// columnar version the ingest writes per byte of an upload. Measured with
// bench/ingestbench (`make bench-ingest`, RESULT stored; docs/INTERNALS.md):
// 1.19 for the shared wdbc data (long decimals), 1.68 for the bench's
// generated CSV (numbers whose text is kept beside them), 2.41 for the
// shared pima data (short integers: 8 bytes each where the CSV has 2 to 4);
// a column of one-digit numbers would be 4. Small files add their
// statistics (IngestOverhead).
const IngestRatio = 2.5

// IngestOverhead is the most a version's statistics (meta.json: per
// column up to 1,000 distinct values) add regardless of the upload's size.
const IngestOverhead = 4 << 20

// IngestEstimate is the disk space the ingest of an upload of size bytes
// is counted to need.
func IngestEstimate(size int64) int64 {
	return int64(float64(size)*IngestRatio) + IngestOverhead
}

// SetIngestDir makes Create and Finish count the ingest's output on dir's
// disk (see IngestFree).
// dir need not exist yet: its nearest existing parent is measured.
func (s *Store) SetIngestDir(dir string) error {
	dir = filepath.Clean(dir)
	for {
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	same, err := sameDisk(s.dir, dir)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	s.IngestFree = func() (int64, error) { return diskFree(dir) }
	s.IngestSameDisk = same
	return nil
}

// Open uses (creating if needed) dir; no session may exceed maxSize bytes.
func Open(dir string, maxSize int64) (*Store, error) {
	if maxSize <= 0 {
		return nil, errors.New("upload: maxSize must be positive")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	s := &Store{dir: dir, maxSize: maxSize, MaxOpen: 16, Now: time.Now, busy: map[string]bool{}, written: map[string]int64{}}
	s.Free = func() (int64, error) { return diskFree(dir) }
	return s, nil
}

// MaxSize is the largest session the store accepts.
func (s *Store) MaxSize() int64 { return s.maxSize }

// Compiled on first use, not at start: a bounded repetition compiles to
// hundreds of allocations that every fedgrid process (a node too) would
// pay in its initialisers (issue 18).
var validID = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]{16,64}$`) })

func (s *Store) path(id, name string) (string, error) {
	if !validID().MatchString(id) {
		return "", ErrNotFound
	}
	return filepath.Join(s.dir, id, name), nil
}

// Create starts a session from tmpl: its Owner, declared Size (0 unknown)
// and the caller's fields; ID, Schema and CreatedAt are set here. A size
// over the store's limit is ErrTooLarge; more than the free disk space holds
// beside what the open sessions still await is ErrNoSpace; an owner with
// MaxOpen unfinished sessions gets ErrTooMany.
func (s *Store) Create(tmpl Session) (*Session, error) {
	if tmpl.Size < 0 || tmpl.Size > s.maxSize {
		return nil, fmt.Errorf("%w: declared %d bytes, limit %d", ErrTooLarge, tmpl.Size, s.maxSize)
	}
	// One creation at a time, so two cannot both count the same free space.
	s.mu.Lock()
	defer s.mu.Unlock()
	list, err := s.list()
	if err != nil {
		return nil, err
	}
	var awaited, pending int64 // bytes the open sessions still await; their ingests' output
	open := 0
	for _, o := range list {
		if o.Result != nil {
			continue
		}
		if o.Owner == tmpl.Owner {
			open++
		}
		if o.Size > 0 {
			got, _ := s.received(o.ID)
			awaited += max(o.Size-got, 0)
			pending += IngestEstimate(o.Size)
		}
	}
	if s.MaxOpen > 0 && open >= s.MaxOpen {
		return nil, fmt.Errorf("%w: %d unfinished uploads; finish or cancel one first", ErrTooMany, open)
	}
	if err := s.checkSpace(tmpl.Size, awaited, pending); err != nil {
		return nil, err
	}
	sess := tmpl
	// With SyncBytes 0 every chunk is synced: the data file's length is
	// durable and needs no record.
	sess.Schema, sess.ID, sess.CreatedAt, sess.Result, sess.Synced = SessionSchema, crypto.RandomID()[:32], s.Now().UTC(), nil, s.SyncBytes > 0
	dir := filepath.Join(s.dir, sess.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	b, err := json.Marshal(sess)
	if err != nil {
		return nil, err
	}
	if err := writeSynced(filepath.Join(dir, "meta.json"), b); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("upload: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	return &sess, nil
}

// checkSpace refuses (ErrNoSpace) an upload of size bytes when the disks
// cannot hold its bytes beside the awaited bytes of the open sessions, or
// the columnar version it becomes (IngestEstimate) beside the pending
// ingests' output.
func (s *Store) checkSpace(size, awaited, pending int64) error {
	up, in := size+awaited, IngestEstimate(size)+pending
	freeUp, freeIn := int64(-1), int64(-1)
	var err error
	if s.Free != nil {
		if freeUp, err = s.Free(); err != nil {
			return fmt.Errorf("upload: free disk space: %w", err)
		}
	}
	if s.IngestFree != nil && !s.IngestSameDisk {
		if freeIn, err = s.IngestFree(); err != nil {
			return fmt.Errorf("upload: free disk space for datasets: %w", err)
		}
	}
	ingest := fmt.Sprintf("the dataset version it becomes (about %.1f times the file, %s)", IngestRatio, mb(IngestEstimate(size)))
	switch {
	case s.IngestFree != nil && s.IngestSameDisk && freeUp >= 0 && up+in > freeUp:
		return fmt.Errorf("%w: this upload needs about %s on the gateway's disk: %s for the file and %s for %s; "+
			"other unfinished uploads hold %s more; %s is free. Free disk space on the gateway or upload a smaller file",
			ErrNoSpace, mb(size+IngestEstimate(size)), mb(size), mb(IngestEstimate(size)), ingest, mb(awaited+pending), mb(freeUp))
	case freeUp >= 0 && up > freeUp:
		return fmt.Errorf("%w: %s declared, %s awaited by other uploads, %s free for uploads. Free disk space on the gateway or upload a smaller file",
			ErrNoSpace, mb(size), mb(awaited), mb(freeUp))
	case freeIn >= 0 && in > freeIn:
		return fmt.Errorf("%w: the datasets' disk has %s free, and this upload needs %s for %s beside %s for other unfinished uploads. "+
			"Free disk space on the gateway or upload a smaller file", ErrNoSpace, mb(freeIn), mb(IngestEstimate(size)), ingest, mb(pending))
	}
	return nil
}

// mb writes a byte count for people.
func mb(n int64) string {
	switch {
	case n >= 10<<30:
		return fmt.Sprintf("%.0f GiB", float64(n)/(1<<30))
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

// List returns owner's sessions, oldest first.
func (s *Store) List(owner string) ([]*Session, error) {
	all, err := s.list()
	if err != nil {
		return nil, err
	}
	var out []*Session
	for _, sess := range all {
		if sess.Owner == owner {
			out = append(out, sess)
		}
	}
	slices.SortFunc(out, func(a, b *Session) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// list reads every session's description (unreadable ones are skipped).
func (s *Store) list() ([]*Session, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	var out []*Session
	for _, e := range ents {
		if !e.IsDir() || !validID().MatchString(e.Name()) {
			continue
		}
		if sess, err := s.Session(e.Name()); err == nil {
			out = append(out, sess)
		}
	}
	return out, nil
}

// received is the size of a session's data file.
func (s *Store) received(id string) (int64, error) {
	p, _ := s.path(id, "data")
	fi, err := os.Stat(p)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	return fi.Size(), nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return nil
}

// Session returns a session's description, or ErrNotFound.
func (s *Store) Session(id string) (*Session, error) {
	p, err := s.path(id, "meta.json")
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	var sess Session
	if err := json.Unmarshal(b, &sess); err != nil {
		return nil, fmt.Errorf("upload: session %s: %w", id, err)
	}
	if sess.Schema != SessionSchema {
		return nil, fmt.Errorf("upload: session %s has format %d, this gateway reads %d", id, sess.Schema, SessionSchema)
	}
	return &sess, nil
}

// Offset is how many bytes session id has received: where the next chunk
// starts (a finished session's size). Bytes not yet synced count only
// while the process that wrote them runs (see Append).
func (s *Store) Offset(id string) (int64, error) {
	sess, err := s.Session(id)
	if err != nil {
		return 0, err
	}
	if sess.Result != nil {
		return sess.Size, nil
	}
	end, _, err := s.trusted(sess)
	return end, err
}

// trusted returns how many of a session's bytes are known good, and its
// data file's length: the length this process wrote, else (after a
// restart, or a crash that may have kept a torn tail) the length last
// recorded as durable; a session written before durable lengths were
// recorded synced every chunk, so its whole file.
func (s *Store) trusted(sess *Session) (end, size int64, err error) {
	if size, err = s.received(sess.ID); err != nil {
		return 0, 0, err
	}
	s.mu.Lock()
	w, ok := s.written[sess.ID]
	s.mu.Unlock()
	if (ok && w == size) || !sess.Synced {
		return size, size, nil
	}
	d, err := s.durable(sess.ID)
	if err != nil {
		return 0, 0, err
	}
	return min(d, size), size, nil
}

// durable is session id's recorded durable length (0 when none yet).
func (s *Store) durable(id string) (int64, error) {
	p, _ := s.path(id, "synced")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	d, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("upload: session %s: unreadable durable length %q", id, b)
	}
	return d, nil
}

// markDurable records n as session id's durable length, after its data
// file was synced: written beside and renamed over, so that a crash leaves
// the old record or the new one.
func (s *Store) markDurable(id string, n int64) error {
	p, _ := s.path(id, "synced")
	tmp := p + ".tmp"
	_ = os.Remove(tmp)
	if err := writeSynced(tmp, []byte(strconv.FormatInt(n, 10))); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return nil
}

// Touched is when session id last changed: its last chunk, or its creation
// or finish.
func (s *Store) Touched(id string) (time.Time, error) {
	var last time.Time
	for _, name := range []string{"meta.json", "data"} {
		p, err := s.path(id, name)
		if err != nil {
			return time.Time{}, err
		}
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("upload: %w", err)
		}
		if fi.ModTime().After(last) {
			last = fi.ModTime()
		}
	}
	if last.IsZero() {
		return time.Time{}, ErrNotFound
	}
	return last, nil
}

func (s *Store) acquire(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[id] {
		return ErrBusy
	}
	s.busy[id] = true
	return nil
}

func (s *Store) release(id string) {
	s.mu.Lock()
	delete(s.busy, id)
	s.mu.Unlock()
}

// Append writes at most maxChunk bytes of r to session id, which must have
// received exactly offset bytes (else ErrOffset). It returns the new offset;
// when r fails midway, the bytes that arrived are kept and synced, and the
// returned offset (with the error) is where the upload resumes. More than
// maxChunk bytes in r, or more than the session allows, is ErrTooLarge.
//
// The data file is synced, and its length recorded as durable, once
// SyncBytes have arrived since the last sync (every chunk when 0), on the
// last chunk and on a failed one. Bytes written since are trusted while
// this process runs (a killed process's writes are in the page cache);
// after a restart the session resumes from the durable length (a machine
// that lost power may have kept a torn tail), which Append then cuts the
// file back to.
func (s *Store) Append(id string, offset int64, r io.Reader, maxChunk int64) (int64, error) {
	if err := s.acquire(id); err != nil {
		return 0, err
	}
	defer s.release(id)
	sess, err := s.Session(id)
	if err != nil {
		return 0, err
	}
	if sess.Result != nil {
		return sess.Size, ErrDone
	}
	p, _ := s.path(id, "data")
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	end, size, err := s.trusted(sess)
	if err != nil {
		return 0, err
	}
	durable := end // unread when every chunk is synced
	if sess.Synced {
		if durable, err = s.durable(id); err != nil {
			return end, err
		}
	}
	if end != offset {
		return end, fmt.Errorf("%w: %d received, chunk starts at %d", ErrOffset, end, offset)
	}
	if size > end { // an untrusted tail, after a restart
		if err := f.Truncate(end); err != nil {
			return end, fmt.Errorf("upload: %w", err)
		}
	}
	if _, err := f.Seek(end, io.SeekStart); err != nil {
		return end, fmt.Errorf("upload: %w", err)
	}
	limit := s.maxSize
	if sess.Size > 0 {
		limit = sess.Size
	}
	room := min(maxChunk, limit-end)
	n, cerr := io.Copy(f, io.LimitReader(r, room))
	end += n
	if s.SyncBytes <= 0 || !sess.Synced || cerr != nil || end == limit || end-durable >= s.SyncBytes {
		serr := f.Sync()
		if serr == nil && sess.Synced {
			serr = s.markDurable(id, end)
		}
		if serr != nil && cerr == nil {
			cerr = fmt.Errorf("upload: %w", serr)
		}
	}
	s.mu.Lock()
	s.written[id] = end
	s.mu.Unlock()
	if cerr != nil {
		return end, cerr
	}
	if n == room {
		// Anything beyond the room is refused; the room's bytes stay.
		var one [1]byte
		if k, _ := io.ReadFull(r, one[:]); k > 0 {
			return end, fmt.Errorf("%w: chunk limit %d bytes, session limit %d", ErrTooLarge, maxChunk, limit)
		}
	}
	return end, nil
}

// Complete checks that session id received its declared size and returns
// the path of its bytes, their hex SHA-256 and their size, read streaming.
// The file stays until Remove.
func (s *Store) Complete(id string) (path, sha string, size int64, err error) {
	if err := s.acquire(id); err != nil {
		return "", "", 0, err
	}
	defer s.release(id)
	sess, err := s.Session(id)
	if err != nil {
		return "", "", 0, err
	}
	return s.complete(sess)
}

func (s *Store) complete(sess *Session) (path, sha string, size int64, err error) {
	if sess.Result != nil {
		return "", "", 0, ErrDone
	}
	path, _ = s.path(sess.ID, "data")
	end, got, err := s.trusted(sess)
	if err != nil {
		return "", "", 0, err
	}
	if got > end { // an untrusted tail, after a restart: not the upload's
		if err := os.Truncate(path, end); err != nil {
			return "", "", 0, fmt.Errorf("upload: %w", err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", "", 0, fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err = io.Copy(h, f)
	if err != nil {
		return "", "", 0, fmt.Errorf("upload: %w", err)
	}
	if sess.Size > 0 && size != sess.Size {
		return "", "", 0, fmt.Errorf("%w: %d of %d bytes received", ErrShort, size, sess.Size)
	}
	return path, hex.EncodeToString(h.Sum(nil)), size, nil
}

// Finish completes session id (as Complete) and calls use with its bytes'
// file, hex SHA-256 and size, holding the session so that no chunk, cancel
// or sweep touches it meanwhile. When use succeeds, its Result is recorded
// in the session and the bytes are deleted: asking again returns the same
// Result with ErrDone. When use fails, the session stays as it was.
func (s *Store) Finish(id string, use func(f *os.File, sha string, size int64) (Result, error)) (*Session, error) {
	if err := s.acquire(id); err != nil {
		return nil, err
	}
	defer s.release(id)
	sess, err := s.Session(id)
	if err != nil {
		return nil, err
	}
	if sess.Result != nil {
		return sess, ErrDone
	}
	path, sha, size, err := s.complete(sess)
	if err != nil {
		return nil, err
	}
	// The ingest's output must fit now (other uploads or datasets may have
	// filled the disk since Create); the received bytes are already on it.
	if s.IngestFree != nil {
		free, err := s.IngestFree()
		if err != nil {
			return nil, fmt.Errorf("upload: free disk space for datasets: %w", err)
		}
		if need := IngestEstimate(size); free >= 0 && need > free {
			return nil, fmt.Errorf("%w: the dataset version these %s become needs about %s on the datasets' disk, which has %s free. "+
				"Free disk space on the gateway and finish again (the upload is kept)", ErrNoSpace, mb(size), mb(need), mb(free))
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	res, err := use(f, sha, size)
	_ = f.Close()
	if err != nil {
		return nil, err
	}
	if res.At.IsZero() {
		res.At = s.Now().UTC()
	}
	res.SHA256 = sha
	sess.Result = &res
	b, err := json.Marshal(sess)
	if err != nil {
		return nil, err
	}
	meta, _ := s.path(id, "meta.json")
	tmp := meta + ".tmp"
	_ = os.Remove(tmp)
	if err := writeSynced(tmp, b); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, meta); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	s.mu.Lock()
	delete(s.written, id)
	s.mu.Unlock()
	return sess, nil
}

// Remove deletes session id and its bytes; a session a chunk or Finish is
// using is ErrBusy.
func (s *Store) Remove(id string) error {
	p, err := s.path(id, "")
	if err != nil {
		return err
	}
	if err := s.acquire(id); err != nil {
		return err
	}
	defer s.release(id)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return ErrNotFound
	}
	s.mu.Lock()
	delete(s.written, id)
	s.mu.Unlock()
	return os.RemoveAll(p)
}

// Sweep removes the sessions untouched (see Touched) for longer than ttl
// before now, finished or not, skipping those in use. It returns how many
// it removed.
func (s *Store) Sweep(now time.Time, ttl time.Duration) (int, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	n := 0
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !validID().MatchString(e.Name()) {
			continue
		}
		last, err := s.Touched(e.Name())
		if err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		if err == nil && now.Sub(last) <= ttl {
			continue
		}
		if err := s.Remove(e.Name()); err != nil {
			if !errors.Is(err, ErrBusy) && !errors.Is(err, ErrNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
