package crypto

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
)

// ChainHashSize is the size of an audit chain hash.
const ChainHashSize = sha256.Size

// ChainGenesis is the previous hash of the first entry of an audit chain.
var ChainGenesis = make([]byte, ChainHashSize)

// ChainHash returns the hash that links entry seq, with payload, to the entry
// before it: SHA-256("fedgrid-audit-v1" || prev || seq (8 bytes, big endian)
// || len(payload) (8 bytes) || payload). Editing any byte of any payload, or
// removing or reordering entries, changes every later hash.
func ChainHash(prev []byte, seq uint64, payload []byte) []byte {
	h := sha256.New()
	h.Write([]byte("fedgrid-audit-v1"))
	h.Write(prev)
	var n [16]byte
	binary.BigEndian.PutUint64(n[:8], seq)
	binary.BigEndian.PutUint64(n[8:], uint64(len(payload)))
	h.Write(n[:])
	h.Write(payload)
	return h.Sum(nil)
}

// ChainLinkValid reports, in constant time, whether hash is ChainHash(prev, seq, payload).
func ChainLinkValid(prev []byte, seq uint64, payload, hash []byte) bool {
	return subtle.ConstantTimeCompare(ChainHash(prev, seq, payload), hash) == 1
}
