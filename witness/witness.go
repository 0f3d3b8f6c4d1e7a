// Package witness keeps gateways' signed audit checkpoints on a network peer
// (durably, in one file of its data directory), and signs and checks them.
package witness

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/wire"
)

// Limits of what one network peer keeps.
const (
	MaxGateways = 10_000 // gateways with checkpoints
	KeepPerGW   = 8      // latest checkpoints kept per gateway
	fileName    = "witness.json"
	fileVersion = 1
)

var (
	// ErrBackwards: a checkpoint older than one already witnessed, or one of
	// the same sequence number with another hash: the gateway's history
	// changed. The witness keeps what it has.
	ErrBackwards = errors.New("witness: the checkpoint contradicts one already witnessed")
	// ErrFull: the witness keeps checkpoints for no more gateways.
	ErrFull = errors.New("witness: no room for another gateway")
)

// Sign fills cp.Gateway and cp.Signature with sk's peer ID and signature.
func Sign(sk crypto.PrivKey, cp *wire.Checkpoint) error {
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return err
	}
	cp.Gateway = id.String()
	cp.Signature, err = sk.Sign(cp.SigningBytes())
	return err
}

// Verify checks cp's fields and its signature by the key inside cp.Gateway.
func Verify(cp *wire.Checkpoint) error {
	if err := cp.Validate(); err != nil {
		return err
	}
	id, err := peer.Decode(cp.Gateway)
	if err != nil {
		return fmt.Errorf("checkpoint names no valid gateway peer ID: %v", err)
	}
	pk, err := id.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("gateway peer ID carries no public key: %v", err)
	}
	ok, err := pk.Verify(cp.SigningBytes(), cp.Signature)
	if err != nil || !ok {
		return errors.New("checkpoint signature does not verify")
	}
	return nil
}

// Store keeps the latest checkpoints of each gateway in dir/witness.json,
// rewritten atomically (temporary file, fsync, rename) on every change.
type Store struct {
	path string
	mu   sync.Mutex
	gws  map[string][]wire.Checkpoint
}

type file struct {
	Version  int                          `json:"version"`
	Gateways map[string][]wire.Checkpoint `json:"gateways"`
}

// Open loads the witness file of dir (none yet: empty).
func Open(dir string) (*Store, error) {
	s := &Store{path: filepath.Join(dir, fileName), gws: map[string][]wire.Checkpoint{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("witness: %s: %w", s.path, err)
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("witness: %s has version %d, this fedgrid reads %d", s.path, f.Version, fileVersion)
	}
	if f.Gateways != nil {
		s.gws = f.Gateways
	}
	return s, nil
}

// Put records cp (already verified) as the gateway's latest checkpoint. It
// is ErrBackwards if cp goes back on what is kept; the same checkpoint again
// is accepted and changes nothing.
func (s *Store) Put(cp wire.Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.gws[cp.Gateway]
	if kept == nil && len(s.gws) >= MaxGateways {
		return ErrFull
	}
	if n := len(kept); n > 0 {
		last := kept[n-1]
		switch {
		case cp.Seq < last.Seq:
			return fmt.Errorf("%w: sequence %d after %d", ErrBackwards, cp.Seq, last.Seq)
		case cp.Seq == last.Seq && cp.Hash != last.Hash:
			return fmt.Errorf("%w: sequence %d with another hash", ErrBackwards, cp.Seq)
		case cp.Seq == last.Seq:
			return nil
		}
	}
	next := append(slices.Clone(kept), cp)
	if len(next) > KeepPerGW {
		next = next[len(next)-KeepPerGW:]
	}
	s.gws[cp.Gateway] = next
	if err := s.save(); err != nil {
		if kept == nil {
			delete(s.gws, cp.Gateway)
		} else {
			s.gws[cp.Gateway] = kept
		}
		return err
	}
	return nil
}

// Get returns the checkpoints kept for gateway, oldest first.
func (s *Store) Get(gateway string) []wire.Checkpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.gws[gateway])
}

func (s *Store) save() error {
	b, err := json.Marshal(file{Version: fileVersion, Gateways: s.gws})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), fileName+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), s.path)
}
