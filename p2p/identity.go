package p2p

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// IdentityFile is the name of a peer's private key inside its data directory.
const IdentityFile = "identity.key"

// maxKeyFile bounds what we read from a key file.
const maxKeyFile = 16 << 10

// GenerateIdentity makes a new Ed25519 key pair.
func GenerateIdentity() (crypto.PrivKey, error) {
	sk, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return sk, nil
}

// WriteIdentity stores a private key at path (mode 0600). It refuses to
// overwrite an existing file so that nobody loses an identity by accident.
func WriteIdentity(path string, sk crypto.PrivKey) error {
	b, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("key file %s already exists; refusing to overwrite it", path)
		}
		return fmt.Errorf("create key file: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	return f.Close()
}

// ReadIdentity loads a private key written by WriteIdentity.
func ReadIdentity(path string) (crypto.PrivKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open key file: %w", err)
	}
	defer f.Close()
	b := make([]byte, maxKeyFile+1)
	n, err := f.Read(b)
	if err != nil {
		return nil, fmt.Errorf("read key file %s: %w", path, err)
	}
	if n > maxKeyFile {
		return nil, fmt.Errorf("key file %s is larger than %d bytes: not a fedgrid key", path, maxKeyFile)
	}
	sk, err := crypto.UnmarshalPrivateKey(b[:n])
	if err != nil {
		return nil, fmt.Errorf("key file %s is not a fedgrid key: %w", path, err)
	}
	return sk, nil
}

// LoadOrCreateIdentity returns the key at path, creating it on first use.
func LoadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	sk, err := ReadIdentity(path)
	if err == nil {
		return sk, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	sk, err = GenerateIdentity()
	if err != nil {
		return nil, err
	}
	if err := WriteIdentity(path, sk); err != nil {
		return nil, err
	}
	return sk, nil
}

// PeerIDOf returns the peer ID of a private key.
func PeerIDOf(sk crypto.PrivKey) (peer.ID, error) {
	return peer.IDFromPrivateKey(sk)
}
