// Package store keeps all durable gateway state in badger: users, roles,
// datasets (with their CSV bytes), jobs and their leases, join tokens, nodes,
// the privacy-budget ledger and the audit chain.
//
// Every write happens in one badger transaction that is retried on
// badger.ErrConflict, so concurrent callers see serialisable outcomes: a job
// is granted once, a join token is redeemed once, a budget never goes
// negative.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/crypto"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	ErrNotFound      = errors.New("store: not found")
	ErrStale         = errors.New("store: stale attempt")
	ErrConflictState = errors.New("store: not allowed in the current state")
	ErrExists        = errors.New("store: already exists")
	ErrSetupDone     = errors.New("store: setup already done")
	// ErrInUse: another process (a running gateway) has the store open.
	ErrInUse           = errors.New("store: the database is in use by another process (a running gateway)")
	ErrSetupRequired   = errors.New("store: setup not done")
	ErrForbidden       = errors.New("store: permission denied")
	ErrBadCredentials  = errors.New("store: wrong email or password")
	ErrUnauthenticated = errors.New("store: invalid or revoked token")
	ErrTokenInvalid    = errors.New("store: invalid or expired join token")
	ErrProtected       = errors.New("store: the Owner role and account are protected")
	ErrInvalid         = errors.New("store: invalid value")
	// ErrBusy: every password-hashing slot stayed taken; try again shortly.
	ErrBusy = errors.New("store: too many logins in progress; try again shortly")
)

// InvalidError reports a bad field value. It matches ErrInvalid with errors.Is.
type InvalidError struct {
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return fmt.Sprintf("store: invalid %s: %s", e.Field, e.Reason) }

// Unwrap lets errors.Is(err, ErrInvalid) match.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Key prefixes. One badger database holds everything.
const (
	keySecret         = "meta/secret"
	keyOwner          = "meta/owner"
	prefixUser        = "user/"
	prefixUserEmail   = "user-email/"
	prefixUserPeer    = "user-peer/"
	prefixRole        = "role/"
	prefixDataset     = "dataset/"
	prefixCSV         = "dataset-csv/"
	prefixJob         = "job/"
	prefixJobIndex    = "job-state/"
	prefixResult      = "result/"
	prefixJobInit     = "job-init/"
	prefixJoin        = "join/"
	prefixNode        = "node/"
	prefixNodeRevoked = "node-revoked/"
)

// MaxConcurrentPasswordHashes argon2 evaluations (about 19 MiB each) run at
// once; a login or password change waits up to PasswordHashWait for a slot and
// then fails with ErrBusy.
const (
	MaxConcurrentPasswordHashes = 4
	PasswordHashWait            = 3 * time.Second
)

// maxConflictRetries bounds the retries of one transaction on badger.ErrConflict.
const maxConflictRetries = 10000

// Store is the gateway's durable state. It is safe for concurrent use.
type Store struct {
	db     *badger.DB
	log    *slog.Logger
	tokens *crypto.TokenSigner
	now    func() time.Time
	// hashes bounds concurrent argon2 evaluations (logins, new passwords).
	hashes *crypto.HashLimiter

	// wmu serialises this process's read-write transactions. Every audited
	// write reads and writes the audit head, so concurrent writers would
	// conflict and retry anyway; queueing them here instead of in a retry
	// storm is several times faster under contention (see BENCHMARKS.md).
	// Conflict detection stays on and conflicts are still retried.
	wmu sync.Mutex

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// badgerOptions are the store's badger settings: every commit synced to disk
// before it returns, and modest caches.
func badgerOptions(dir string, logger *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{logger.With("component", "badger")}).
		WithSyncWrites(true).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(8 << 20).
		WithValueLogFileSize(256 << 20).
		WithNumVersionsToKeep(1)
}

// Open opens (creating if needed) the store in dir. logger may be nil.
func Open(dir string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	db, err := badger.Open(badgerOptions(dir, logger))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Store{db: db, log: logger, now: time.Now,
		hashes: crypto.NewHashLimiter(MaxConcurrentPasswordHashes, PasswordHashWait)}
	secret, err := s.loadSecret()
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	if s.tokens, err = crypto.NewTokenSigner(secret); err != nil {
		_ = db.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go s.gcLoop(ctx)
	return s, nil
}

// Close stops background work and closes the database. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// gcLoop reclaims value-log space now and then.
func (s *Store) gcLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for s.db.RunValueLogGC(0.5) == nil {
				if ctx.Err() != nil {
					return
				}
			}
		}
	}
}

// loadSecret returns the per-gateway token secret, creating it on first open.
func (s *Store) loadSecret() ([]byte, error) {
	var secret []byte
	err := s.update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keySecret))
		if errors.Is(err, badger.ErrKeyNotFound) {
			secret = crypto.RandomBytes(32)
			return txn.Set([]byte(keySecret), secret)
		}
		if err != nil {
			return err
		}
		secret, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: token secret: %w", err)
	}
	return secret, nil
}

// update runs fn in a read-write transaction, retrying on badger.ErrConflict
// with a short jittered backoff. fn must not keep state across calls other than
// what it resets at its start.
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	for attempt := 0; ; attempt++ {
		s.wmu.Lock()
		err := s.db.Update(fn)
		s.wmu.Unlock()
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
		if attempt >= maxConflictRetries {
			return fmt.Errorf("store: gave up after %d conflicting retries: %w", attempt, err)
		}
		// Back off between 0 and min(2^attempt, 1000) microseconds.
		ceiling := min(1<<min(attempt, 10), 1000)
		time.Sleep(time.Duration(rand.IntN(ceiling)+1) * time.Microsecond)
	}
}

func (s *Store) view(fn func(txn *badger.Txn) error) error { return s.db.View(fn) }

// getJSON reads key into v. It returns ErrNotFound for a missing key.
func getJSON(txn *badger.Txn, key string, v any) error {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return item.Value(func(b []byte) error {
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("store: decode %s: %w", key, err)
		}
		return nil
	})
}

func putJSON(txn *badger.Txn, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode %s: %w", key, err)
	}
	return txn.Set([]byte(key), b)
}

func exists(txn *badger.Txn, key string) (bool, error) {
	_, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

func getBytes(txn *badger.Txn, key string) ([]byte, error) {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

// scanJSON decodes every value under prefix with decode, in key order.
func scanJSON(txn *badger.Txn, prefix string, decode func(b []byte) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefix)
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := it.Item().Value(decode); err != nil {
			return err
		}
	}
	return nil
}

func scanAll[T any](txn *badger.Txn, prefix string) ([]*T, error) {
	var out []*T
	err := scanJSON(txn, prefix, func(b []byte) error {
		v := new(T)
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("store: decode %s*: %w", prefix, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// scanWhere decodes every value under prefix and keeps those keep accepts.
func scanWhere[T any](txn *badger.Txn, prefix string, keep func(*T) bool) ([]*T, error) {
	all, err := scanAll[T](txn, prefix)
	out := all[:0]
	for _, v := range all {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out, err
}

// newID returns a random 64-bit identifier as 16 hex digits.
func newID() string { return crypto.RandomID()[:16] }

// badgerLogger routes badger's logs to slog. Badger's info chatter goes to
// debug level so that a gateway's log stays quiet.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debug(trim(fmt.Sprintf(f, a...))) }

func trim(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}
