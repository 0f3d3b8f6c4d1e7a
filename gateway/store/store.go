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
	"path/filepath"
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
	db  *badger.DB
	log *slog.Logger
	// colDir holds the datasets' columnar versions (DatasetsDir); filesMu
	// orders making a version visible and recording it against removing
	// the versions nothing records.
	colDir  string
	filesMu sync.Mutex
	tokens  *crypto.TokenSigner
	now     func() time.Time
	// hashes bounds concurrent argon2 evaluations (logins, new passwords).
	hashes *crypto.HashLimiter

	// writes carries every read-write transaction to the committer, the
	// one goroutine that runs them (see update). It is unbuffered: a write
	// is either taken by the committer, which then answers it, or refused
	// because the store is closing.
	writes chan *write

	// enrolled holds the peer IDs of the enrolled nodes (the keys under
	// prefixNode), so that the check of every request a node makes reads
	// no badger transaction: a read waits for the commit in flight, and a
	// thousand nodes' pings would wait for every fsync. The committer
	// changes it right after the commit that enrolled or removed a node,
	// in commit order (see updateThen).
	enrolledMu sync.RWMutex
	enrolled   map[string]struct{}

	cancel    context.CancelFunc
	stopped   <-chan struct{} // closed when Close begins
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// badgerOptions are the store's badger settings: every commit synced to disk
// before it returns, and modest caches. Two compactors (badger's least, its
// default is four): each wakes on a ticker whether or not there is work, and
// a gateway's store is small; with 300 gateways on one machine the four took
// a tenth of their idle CPU (BENCHMARKS.md, "300 gateways"). The number of
// compactors changes no data on disk.
func badgerOptions(dir string, logger *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{logger.With("component", "badger")}).
		WithSyncWrites(true).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(8 << 20).
		WithValueLogFileSize(256 << 20).
		WithNumVersionsToKeep(1).
		WithNumCompactors(2)
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
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{db: db, log: logger, colDir: filepath.Join(dir, "datasets"), now: time.Now, writes: make(chan *write), cancel: cancel, enrolled: map[string]struct{}{},
		hashes: crypto.NewHashLimiter(MaxConcurrentPasswordHashes, PasswordHashWait)}
	s.stopped = ctx.Done()
	s.wg.Add(2)
	go s.commitLoop(ctx)
	go s.gcLoop(ctx)
	secret, err := s.loadSecret()
	if err == nil {
		s.tokens, err = crypto.NewTokenSigner(secret)
	}
	if err == nil {
		err = s.migrateDatasets()
	}
	if err == nil {
		err = s.cleanDatasetFiles()
	}
	if err == nil {
		err = s.loadEnrolled()
	}
	if err != nil {
		_ = s.Close()
		return nil, err
	}
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

// ErrClosed is returned by a write to a store that is closing or closed.
var ErrClosed = errors.New("store: closed")

// maxBatch bounds how many writes share one transaction.
const maxBatch = 256

// write is one read-write transaction function waiting for the committer.
type write struct {
	fn    func(txn *badger.Txn) error
	after func()     // run by the committer once the write is durable; may be nil
	done  chan error // the outcome, once committed (buffered, 1)
	err   error      // a failure, held until the batch has committed
}

// update runs fn in a read-write transaction and returns once that
// transaction is durable (or failed).
//
// Writes are group-committed. One goroutine, the committer, takes every
// write waiting when it is free, runs them one after the other in a single
// badger transaction and commits that transaction once, so writes that
// arrive together share one fsync. A write sees the effects of the writes
// before it in its batch, as if they had committed one by one in that order;
// its caller hears back only after the commit that made it durable. A write
// whose fn fails is answered with its error (once the writes before it are
// durable) and the others of its batch run again in a fresh transaction without it (badger has no savepoints), so fn
// may run more than once: it must not keep state across calls other than
// what it resets at its start. Conflict detection stays on; a commit that
// conflicts (with a transaction run outside the committer) is retried.
func (s *Store) update(fn func(txn *badger.Txn) error) error { return s.updateThen(fn, nil) }

// updateThen is update, and after a successful write the committer calls
// after (when not nil) once the write is durable and before the next batch
// runs: in-memory state that mirrors stored state changes in commit order.
// after must be quick and must not write to the store.
func (s *Store) updateThen(fn func(txn *badger.Txn) error, after func()) error {
	w := &write{fn: fn, after: after, done: make(chan error, 1)}
	select {
	case s.writes <- w:
	case <-s.stopped:
		return ErrClosed
	}
	return <-w.done
}

// commitLoop is the committer: it owns every read-write transaction.
func (s *Store) commitLoop(ctx context.Context) {
	defer s.wg.Done()
	batch := make([]*write, 0, maxBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case w := <-s.writes:
			batch = append(batch[:0], w)
		}
		// Take every write already waiting: they share this commit.
	gather:
		for len(batch) < maxBatch {
			select {
			case w := <-s.writes:
				batch = append(batch, w)
			default:
				break gather
			}
		}
		s.commitBatch(batch)
		clear(batch)
	}
}

// commitBatch commits ws in as few transactions as it can and answers each.
func (s *Store) commitBatch(ws []*write) {
	var refused []*write
	defer func() {
		for _, w := range refused {
			w.done <- w.err
		}
	}()
	conflicts := 0
	limit := len(ws) // run at most ws[:limit] in the next transaction
	for len(ws) > 0 {
		txn := s.db.NewTransaction(true)
		in := 0 // ws[:in] have run in txn
		var failed error
		for ; in < limit; in++ {
			if failed = runWrite(ws[in].fn, txn); failed != nil {
				break
			}
		}
		if failed != nil {
			// ws[in] may have written part of its work: this transaction
			// cannot be committed.
			txn.Discard()
			if in > 0 && errors.Is(failed, badger.ErrTxnTooBig) {
				// It did not fit beside ws[:in]: those go first, alone.
				limit = in
				continue
			}
			// ws[in] fails on its own; the others run again without it.
			// Its answer waits for their commit: it may rest on their
			// writes (a budget they exhausted), which must be durable
			// before a refusal is.
			ws[in].err = failed
			refused = append(refused, ws[in])
			ws = append(ws[:in:in], ws[in+1:]...)
			limit = len(ws)
			continue
		}
		// ws[:in] commit together, in one fsync.
		err := txn.Commit()
		txn.Discard()
		if errors.Is(err, badger.ErrConflict) && conflicts < maxConflictRetries {
			conflicts++
			// Back off between 0 and min(2^n, 1000) microseconds.
			ceiling := min(1<<min(conflicts, 10), 1000)
			time.Sleep(time.Duration(rand.IntN(ceiling)+1) * time.Microsecond)
			continue
		}
		if errors.Is(err, badger.ErrConflict) {
			err = fmt.Errorf("store: gave up after %d conflicting retries: %w", conflicts, err)
		}
		for _, w := range ws[:in] {
			if err == nil && w.after != nil {
				w.after()
			}
			w.done <- err
		}
		ws = ws[in:]
		limit = len(ws)
	}
}

// runWrite runs fn in txn; a panic in fn becomes that write's error rather
// than the committer's end.
func runWrite(fn func(txn *badger.Txn) error, txn *badger.Txn) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: transaction panicked: %v", r)
		}
	}()
	return fn(txn)
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
