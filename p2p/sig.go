package p2p

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// VerifyPeerSignature checks that sig is a signature of msg by the key a
// peer ID names (Ed25519 peer IDs carry their public key).
func VerifyPeerSignature(id string, msg, sig []byte) error {
	pid, err := peer.Decode(id)
	if err != nil {
		return fmt.Errorf("%q is not a peer ID", id)
	}
	pk, err := pid.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("peer ID %s carries no public key", id)
	}
	ok, err := pk.Verify(msg, sig)
	if err != nil || !ok {
		return errors.New("signature invalid")
	}
	return nil
}
