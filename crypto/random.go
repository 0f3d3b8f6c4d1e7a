package crypto

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
)

// RandomBytes returns n bytes from the operating system's CSPRNG.
// crypto/rand.Read never fails on supported platforms (Go 1.24+), it aborts
// the program instead, so there is no error to return.
func RandomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// RandomID returns a random 128-bit identifier as 32 lowercase hex digits.
func RandomID() string {
	return hex.EncodeToString(RandomBytes(16))
}

// RandomToken returns a random 256-bit secret, base64url without padding.
func RandomToken() string {
	return base64.RawURLEncoding.EncodeToString(RandomBytes(32))
}
