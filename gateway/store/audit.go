package store

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/crypto"
)

const (
	keyAuditHead = "meta/audit-head"
	prefixAudit  = "audit/"
)

// AuditEvent is what an action records.
type AuditEvent struct {
	Actor  string         `json:"actor"`  // user ID, peer ID or "" for the system
	Action string         `json:"action"` // e.g. "auth.login", "user.update", "budget.commit"
	Target string         `json:"target"` // e.g. "user/<id>", "dataset/<id>"
	Detail map[string]any `json:"detail,omitempty"`
}

// AuditEntry is one link of the audit chain.
type AuditEntry struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	AuditEvent
	Prev string `json:"prev"` // hex hash of the entry before (zeros for the first)
	Hash string `json:"hash"` // hex crypto.ChainHash(prev, seq, payload)
}

type auditHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// auditPayload is the hashed part of an entry; its exact bytes are stored.
type auditPayload struct {
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	AuditEvent
	Prev string `json:"prev"`
}

type storedAudit struct {
	Payload json.RawMessage `json:"payload"`
	Hash    string          `json:"hash"`
}

func auditKey(seq uint64) string { return fmt.Sprintf("%s%020d", prefixAudit, seq) }

// audit appends ev to the chain inside txn, so that the action and its record
// commit together or not at all.
func (s *Store) audit(txn *badger.Txn, ev AuditEvent) error {
	var head auditHead
	if err := getJSON(txn, keyAuditHead, &head); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	prev := crypto.ChainGenesis
	if head.Seq > 0 {
		var err error
		if prev, err = hex.DecodeString(head.Hash); err != nil {
			return fmt.Errorf("store: corrupt audit head: %w", err)
		}
	}
	p := auditPayload{Seq: head.Seq + 1, Time: s.now().UTC(), AuditEvent: ev, Prev: hex.EncodeToString(prev)}
	payload, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("store: encode audit entry: %w", err)
	}
	hash := hex.EncodeToString(crypto.ChainHash(prev, p.Seq, payload))
	if err := putJSON(txn, auditKey(p.Seq), storedAudit{Payload: payload, Hash: hash}); err != nil {
		return err
	}
	return putJSON(txn, keyAuditHead, auditHead{Seq: p.Seq, Hash: hash})
}

// AuditFilter selects audit entries. Zero fields match everything.
type AuditFilter struct {
	After  uint64 // entries with Seq > After
	Upto   uint64 // entries with Seq <= Upto (0: no bound)
	Limit  int    // at most this many (0: all)
	Action string // exact action, or a prefix ending in "." (e.g. "budget.")
	Actor  string
}

// Audit returns entries in chain order.
func (s *Store) Audit(f AuditFilter) ([]*AuditEntry, error) {
	var out []*AuditEntry
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefixAudit)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek([]byte(auditKey(f.After + 1))); it.Valid(); it.Next() {
			var e *AuditEntry
			if err := it.Item().Value(func(b []byte) error {
				var err error
				e, err = decodeAudit(b)
				return err
			}); err != nil {
				return err
			}
			if f.Upto > 0 && e.Seq > f.Upto {
				return nil
			}
			if f.Actor != "" && e.Actor != f.Actor {
				continue
			}
			if f.Action != "" && e.Action != f.Action && !(strings.HasSuffix(f.Action, ".") && strings.HasPrefix(e.Action, f.Action)) {
				continue
			}
			out = append(out, e)
			if f.Limit > 0 && len(out) >= f.Limit {
				return nil
			}
		}
		return nil
	})
	return out, err
}

func decodeAudit(b []byte) (*AuditEntry, error) {
	var st storedAudit
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("store: decode audit entry: %w", err)
	}
	var p auditPayload
	if err := json.Unmarshal(st.Payload, &p); err != nil {
		return nil, fmt.Errorf("store: decode audit payload: %w", err)
	}
	return &AuditEntry{Seq: p.Seq, Time: p.Time, AuditEvent: p.AuditEvent, Prev: p.Prev, Hash: st.Hash}, nil
}

// ErrAuditBroken is returned by VerifyAudit when the chain does not check out.
var ErrAuditBroken = errors.New("store: audit chain broken")

// VerifyAudit walks the whole audit chain and checks every link: each entry's
// hash recomputed from its stored bytes, sequence numbers without gaps, each
// entry naming its predecessor's hash, and the last entry matching the
// separately stored head. It returns the number of entries checked, and an
// error wrapping ErrAuditBroken that names the first bad entry.
func (s *Store) VerifyAudit() (int, error) {
	n := 0
	err := s.view(func(txn *badger.Txn) error {
		var head auditHead
		if err := getJSON(txn, keyAuditHead, &head); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: head: %v", ErrAuditBroken, err)
		}
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefixAudit)
		it := txn.NewIterator(opts)
		defer it.Close()
		prev := crypto.ChainGenesis
		var seq uint64
		for it.Rewind(); it.Valid(); it.Next() {
			seq++
			key := string(it.Item().Key())
			if key != auditKey(seq) {
				return fmt.Errorf("%w: expected entry %d, found key %q (entry missing)", ErrAuditBroken, seq, key)
			}
			b, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var st storedAudit
			if err := json.Unmarshal(b, &st); err != nil {
				return fmt.Errorf("%w: entry %d undecodable: %v", ErrAuditBroken, seq, err)
			}
			var p auditPayload
			if err := json.Unmarshal(st.Payload, &p); err != nil {
				return fmt.Errorf("%w: entry %d payload undecodable: %v", ErrAuditBroken, seq, err)
			}
			if p.Seq != seq || p.Prev != hex.EncodeToString(prev) {
				return fmt.Errorf("%w: entry %d does not follow entry %d", ErrAuditBroken, seq, seq-1)
			}
			hash, err := hex.DecodeString(st.Hash)
			if err != nil || !crypto.ChainLinkValid(prev, seq, st.Payload, hash) {
				return fmt.Errorf("%w: entry %d hash mismatch (entry edited)", ErrAuditBroken, seq)
			}
			prev = hash
			n++
		}
		if head.Seq != seq || (seq > 0 && head.Hash != hex.EncodeToString(prev)) {
			return fmt.Errorf("%w: head says %d entries, chain has %d (entries missing at the end)", ErrAuditBroken, head.Seq, seq)
		}
		return nil
	})
	return n, err
}

// VerifyAuditDir verifies the audit chain of the store in dir without a
// running gateway: it is what `fedgrid audit verify --data DIR` runs. It
// refuses a directory that holds no store (rather than creating one), opens
// the store read-only, and falls back to a normal open only if badger refuses
// read-only. The store must not be open elsewhere (badger locks its directory).
//
// A store a running gateway holds open is ErrInUse: nothing was checked.
func VerifyAuditDir(dir string) (int, error) {
	return VerifyAuditDirWitnessed(dir, nil)
}

// Witnessed is an audit checkpoint a witness kept: the chain had Seq
// entries, the last with hash Hash.
type Witnessed struct {
	Seq  uint64
	Hash string
	Time time.Time
}

// ErrAuditRewritten: the chain verifies on its own but no longer matches a
// witnessed checkpoint (truncated, or rewritten and rehashed).
var ErrAuditRewritten = errors.New("store: audit history differs from a witnessed checkpoint")

// VerifyAuditDirWitnessed is VerifyAuditDir, and then checks the chain
// against checkpoints a witness kept: each must name an entry that exists
// and has that hash. The first that does not (by sequence number) is named
// in an error wrapping ErrAuditRewritten.
func VerifyAuditDirWitnessed(dir string, cps []Witnessed) (int, error) {
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		return 0, fmt.Errorf("store: no store in %s: %w", dir, err)
	}
	logger := slog.New(slog.DiscardHandler)
	db, err := badger.Open(badgerOptions(dir, logger).WithReadOnly(true))
	if err != nil {
		// Read-only refused (e.g. a log to replay after a crash): a normal
		// open replays it; the chain is checked all the same.
		var rwErr error
		if db, rwErr = badger.Open(badgerOptions(dir, logger)); rwErr == nil {
			err = nil
		}
	}
	if err != nil {
		// badger formats its lock error with %+v, so it can only be recognised by its text.
		if errors.Is(err, syscall.EWOULDBLOCK) || strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return 0, fmt.Errorf("%w: %s", ErrInUse, dir)
		}
		return 0, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Store{db: db, log: logger, now: time.Now}
	n, verr := s.VerifyAudit()
	if verr == nil {
		verr = s.checkWitnessed(cps)
	}
	return n, errors.Join(verr, db.Close())
}

func (s *Store) checkWitnessed(cps []Witnessed) error {
	cps = slices.Clone(cps)
	slices.SortFunc(cps, func(a, b Witnessed) int { return cmp.Compare(a.Seq, b.Seq) })
	head, _, err := s.AuditHead()
	if err != nil {
		return err
	}
	for _, cp := range cps {
		at := cp.Time.UTC().Format(time.RFC3339)
		if cp.Seq > head {
			return fmt.Errorf("%w: checkpoint %d (hash %.16s..., witnessed %s) is past the end of the log, which has %d entries: history truncated", ErrAuditRewritten, cp.Seq, cp.Hash, at, head)
		}
		es, err := s.Audit(AuditFilter{After: cp.Seq - 1, Limit: 1})
		if err != nil {
			return err
		}
		if len(es) == 0 || es[0].Seq != cp.Seq {
			return fmt.Errorf("%w: checkpoint %d (witnessed %s): the log has no entry %d", ErrAuditRewritten, cp.Seq, at, cp.Seq)
		}
		if es[0].Hash != cp.Hash {
			return fmt.Errorf("%w: checkpoint %d (hash %.16s..., witnessed %s) no longer matches: entry %d now hashes to %.16s...: history rewritten", ErrAuditRewritten, cp.Seq, cp.Hash, at, cp.Seq, es[0].Hash)
		}
	}
	return nil
}

// AppendAudit records an event that has no store change of its own (e.g. a
// result released to a user, a p2p request refused) in its own transaction.
func (s *Store) AppendAudit(ev AuditEvent) error {
	if ev.Action == "" {
		return invalid("action", "required")
	}
	return s.update(func(txn *badger.Txn) error { return s.audit(txn, ev) })
}

// AuditHead returns the audit chain's length and last hash (0, "" if empty).
func (s *Store) AuditHead() (uint64, string, error) {
	var head auditHead
	err := s.view(func(txn *badger.Txn) error { return getJSON(txn, keyAuditHead, &head) })
	if errors.Is(err, ErrNotFound) {
		return 0, "", nil
	}
	return head.Seq, head.Hash, err
}
