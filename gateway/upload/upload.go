// Package upload keeps resumable upload sessions on disk: a session's bytes
// are appended in chunks at the offset the session has reached, so an upload
// cut in the middle resumes where the last stored byte ends, and completing
// it hashes the file by streaming, never holding it whole in memory.
//
// Each session is a directory under the root holding meta.json (the
// Session, with its format version) and data (the bytes received so far).
// The package is not yet wired to HTTP routes.
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
)

// Session describes one upload.
type Session struct {
	Schema    int       `json:"schema"`
	ID        string    `json:"id"`
	Owner     string    `json:"owner"`
	Size      int64     `json:"size"` // declared total, 0 if unknown
	CreatedAt time.Time `json:"created_at"`
}

// Store holds the sessions under one directory.
type Store struct {
	dir     string
	maxSize int64

	mu   sync.Mutex
	busy map[string]bool
}

// Open uses (creating if needed) dir; no session may exceed maxSize bytes.
func Open(dir string, maxSize int64) (*Store, error) {
	if maxSize <= 0 {
		return nil, errors.New("upload: maxSize must be positive")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	return &Store{dir: dir, maxSize: maxSize, busy: map[string]bool{}}, nil
}

var validID = regexp.MustCompile(`^[0-9a-f]{16,64}$`)

func (s *Store) path(id, name string) (string, error) {
	if !validID.MatchString(id) {
		return "", ErrNotFound
	}
	return filepath.Join(s.dir, id, name), nil
}

// Create starts a session for owner; size is the declared total (0 unknown).
func (s *Store) Create(owner string, size int64) (*Session, error) {
	if size < 0 || size > s.maxSize {
		return nil, fmt.Errorf("%w: declared %d bytes, limit %d", ErrTooLarge, size, s.maxSize)
	}
	sess := &Session{Schema: SessionSchema, ID: crypto.RandomID()[:32], Owner: owner, Size: size, CreatedAt: time.Now().UTC()}
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
	return sess, nil
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

// Offset is how many bytes session id has received: where the next chunk starts.
func (s *Store) Offset(id string) (int64, error) {
	if _, err := s.Session(id); err != nil {
		return 0, err
	}
	p, _ := s.path(id, "data")
	fi, err := os.Stat(p)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	return fi.Size(), nil
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
func (s *Store) Append(id string, offset int64, r io.Reader, maxChunk int64) (int64, error) {
	sess, err := s.Session(id)
	if err != nil {
		return 0, err
	}
	if err := s.acquire(id); err != nil {
		return 0, err
	}
	defer s.release(id)
	p, _ := s.path(id, "data")
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("upload: %w", err)
	}
	if end != offset {
		return end, fmt.Errorf("%w: %d received, chunk starts at %d", ErrOffset, end, offset)
	}
	limit := s.maxSize
	if sess.Size > 0 {
		limit = sess.Size
	}
	room := min(maxChunk, limit-end)
	n, cerr := io.Copy(f, io.LimitReader(r, room))
	if serr := f.Sync(); serr != nil && cerr == nil {
		cerr = fmt.Errorf("upload: %w", serr)
	}
	end += n
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
	sess, err := s.Session(id)
	if err != nil {
		return "", "", 0, err
	}
	if err := s.acquire(id); err != nil {
		return "", "", 0, err
	}
	defer s.release(id)
	path, _ = s.path(id, "data")
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

// Remove deletes session id and its bytes.
func (s *Store) Remove(id string) error {
	p, err := s.path(id, "")
	if err != nil {
		return err
	}
	return os.RemoveAll(p)
}
