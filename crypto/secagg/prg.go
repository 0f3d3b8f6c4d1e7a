package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Domain-separation labels: every key derived here names its use, so no two
// uses ever share a key.
const (
	labelAdvertise   = "fedgrid/secagg/v1/advertise"
	labelSurvivors   = "fedgrid/secagg/v1/survivors"
	labelShareKey    = "fedgrid/secagg/v1/share-key"
	labelPairMask    = "fedgrid/secagg/v1/pair-mask"
	labelSelfMask    = "fedgrid/secagg/v1/self-mask"
	prgChunkWords    = 4096
	maxContextLength = 512
)

// lp appends b to dst prefixed with its length (4 bytes, big-endian), so a
// concatenation of several fields has one reading.
func lp(dst []byte, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// deriveKey returns a 32-byte key from secret, bound to the round context and
// to label and the parts.
func deriveKey(secret, context []byte, label string, parts ...string) ([]byte, error) {
	info := lp(nil, []byte(label))
	for _, p := range parts {
		info = lp(info, []byte(p))
	}
	k, err := hkdf.Key(sha256.New, secret, context, string(info), 32)
	if err != nil {
		return nil, fmt.Errorf("secagg: derive key: %w", err)
	}
	return k, nil
}

// applyMask adds (sign > 0) or subtracts (sign < 0) the AES-256-CTR
// keystream of key (zero IV: every key is derived for one use), read as
// little-endian uint32 words, to v mod 2^32. AES-CTR rather than ChaCha20:
// with AES instructions it expands masks several times faster, and the masks
// are most of secure aggregation's cost.
func applyMask(v []uint32, key []byte, sign int) error {
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("secagg: mask cipher: %w", err)
	}
	c := cipher.NewCTR(block, make([]byte, aes.BlockSize))
	buf := make([]byte, 4*prgChunkWords)
	for off := 0; off < len(v); off += prgChunkWords {
		n := min(prgChunkWords, len(v)-off)
		b := buf[:4*n]
		clear(b)
		c.XORKeyStream(b, b)
		w := v[off : off+n]
		if sign > 0 {
			for i := range w {
				w[i] += binary.LittleEndian.Uint32(b[4*i:])
			}
		} else {
			for i := range w {
				w[i] -= binary.LittleEndian.Uint32(b[4*i:])
			}
		}
	}
	return nil
}
