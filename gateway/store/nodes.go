package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/crypto"
)

// Node is an enrolled worker peer.
type Node struct {
	PeerID     string    `json:"peer_id"`
	Slots      int       `json:"slots"`
	Version    string    `json:"version"`
	EnrolledAt time.Time `json:"enrolled_at"`
	LastSeen   time.Time `json:"last_seen"`
}

type joinToken struct {
	Expires time.Time `json:"expires"`
}

// Join tokens are stored by hash, so a copy of the database does not reveal
// tokens that are still redeemable.
func joinKey(token string) string {
	h := sha256.Sum256([]byte(token))
	return prefixJoin + hex.EncodeToString(h[:])
}

// CreateJoinToken makes a single-use enrolment token valid for ttl.
func (s *Store) CreateJoinToken(ttl time.Duration) (token string, expires time.Time, err error) {
	return s.CreateJoinTokenBy(ttl, "")
}

// CreateJoinTokenBy is CreateJoinToken with the acting user recorded in the audit log.
func (s *Store) CreateJoinTokenBy(ttl time.Duration, actor string) (token string, expires time.Time, err error) {
	if ttl <= 0 {
		return "", time.Time{}, invalid("ttl", "must be positive")
	}
	token = crypto.RandomToken()
	expires = s.now().UTC().Add(ttl)
	err = s.update(func(txn *badger.Txn) error {
		if err := putJSON(txn, joinKey(token), joinToken{Expires: expires}); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "node.join_token", Target: "join-token", Detail: map[string]any{"expires": expires}})
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return token, expires, nil
}

// RedeemJoinToken enrols peerID with a join token, in one transaction. The
// token is consumed; an unknown, used or expired token is ErrTokenInvalid.
// An already enrolled peer may re-enrol with a fresh token.
func (s *Store) RedeemJoinToken(token, peerID string, slots int, version string) (*Node, error) {
	if peerID == "" {
		return nil, invalid("peer_id", "required")
	}
	if slots < 1 {
		slots = 1
	}
	var n Node
	err := s.updateThen(func(txn *badger.Txn) error {
		var jt joinToken
		if err := getJSON(txn, joinKey(token), &jt); err != nil {
			if errors.Is(err, ErrNotFound) {
				return ErrTokenInvalid
			}
			return err
		}
		if revoked, err := exists(txn, prefixNodeRevoked+peerID); err != nil {
			return err
		} else if revoked {
			return fmt.Errorf("%w: node %s was removed by an administrator", ErrTokenInvalid, peerID)
		}
		now := s.now().UTC()
		if !now.Before(jt.Expires) {
			return fmt.Errorf("%w: expired at %s", ErrTokenInvalid, jt.Expires.Format(time.RFC3339))
		}
		if err := txn.Delete([]byte(joinKey(token))); err != nil {
			return err
		}
		n = Node{PeerID: peerID, Slots: slots, Version: version, EnrolledAt: now, LastSeen: now}
		if err := putJSON(txn, prefixNode+peerID, &n); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: peerID, Action: "node.enrol", Target: "node/" + peerID, Detail: map[string]any{"slots": slots, "version": version}})
	}, func() { s.setEnrolled(peerID, true) })
	if err != nil {
		return nil, err
	}
	return &n, nil
}

// Node returns an enrolled node, or ErrNotFound.
func (s *Store) Node(peerID string) (*Node, error) {
	var n Node
	if err := s.view(func(txn *badger.Txn) error { return getJSON(txn, prefixNode+peerID, &n) }); err != nil {
		return nil, err
	}
	return &n, nil
}

// Nodes lists enrolled nodes, by peer ID.
func (s *Store) Nodes() ([]*Node, error) {
	var out []*Node
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = scanAll[Node](txn, prefixNode)
		return err
	})
	slices.SortFunc(out, func(a, b *Node) int {
		if a.PeerID < b.PeerID {
			return -1
		}
		if a.PeerID > b.PeerID {
			return 1
		}
		return 0
	})
	return out, err
}

// TouchNode records that a node was seen at at. Unknown node: ErrNotFound.
func (s *Store) TouchNode(peerID string, at time.Time) error {
	return s.update(func(txn *badger.Txn) error {
		var n Node
		if err := getJSON(txn, prefixNode+peerID, &n); err != nil {
			return err
		}
		if at.After(n.LastSeen) {
			n.LastSeen = at.UTC()
		}
		return putJSON(txn, prefixNode+peerID, &n)
	})
}

// RemoveNode un-enrols a node. Unknown node: ErrNotFound.
func (s *Store) RemoveNode(peerID string) error { return s.RemoveNodeBy(peerID, "") }

// RemoveNodeBy is RemoveNode with the acting user recorded in the audit log.
func (s *Store) RemoveNodeBy(peerID, actor string) error {
	return s.updateThen(func(txn *badger.Txn) error {
		if ok, err := exists(txn, prefixNode+peerID); err != nil {
			return err
		} else if !ok {
			return ErrNotFound
		}
		if err := txn.Delete([]byte(prefixNode + peerID)); err != nil {
			return err
		}
		// The identity stays refused: a removed node cannot come back with an old
		// or a new token (a fresh data directory makes a new node).
		if err := putJSON(txn, prefixNodeRevoked+peerID, map[string]time.Time{"removed_at": s.now().UTC()}); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "node.remove", Target: "node/" + peerID})
	}, func() { s.setEnrolled(peerID, false) })
}

// Enrolled reports whether peerID is an enrolled node. It reads the
// in-memory mirror of the stored nodes, not a transaction: it answers at
// once even while a commit is being synced.
func (s *Store) Enrolled(peerID string) bool {
	s.enrolledMu.RLock()
	defer s.enrolledMu.RUnlock()
	_, ok := s.enrolled[peerID]
	return ok
}

func (s *Store) setEnrolled(peerID string, on bool) {
	s.enrolledMu.Lock()
	defer s.enrolledMu.Unlock()
	if on {
		s.enrolled[peerID] = struct{}{}
	} else {
		delete(s.enrolled, peerID)
	}
}

// loadEnrolled fills the in-memory set of enrolled nodes from the store.
func (s *Store) loadEnrolled() error {
	set := map[string]struct{}{}
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefixNode)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			set[string(it.Item().Key()[len(prefixNode):])] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: list nodes: %w", err)
	}
	s.enrolledMu.Lock()
	s.enrolled = set
	s.enrolledMu.Unlock()
	return nil
}

// RevokedNodes lists the peer IDs of removed nodes, which stay refused.
func (s *Store) RevokedNodes() ([]string, error) {
	var out []string
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = []byte(prefixNodeRevoked)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			out = append(out, string(it.Item().Key()[len(prefixNodeRevoked):]))
		}
		return nil
	})
	return out, err
}
