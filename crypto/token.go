package crypto

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MinSecretBytes is the shortest HMAC secret a TokenSigner accepts.
const MinSecretBytes = 32

// maxTokenBytes bounds the work Verify does on attacker-supplied input.
const maxTokenBytes = 4096

const tokenPrefix = "fg1."

var (
	// ErrTokenInvalid means the token is malformed or its signature is wrong.
	ErrTokenInvalid = errors.New("crypto: invalid token")
	// ErrTokenExpired means the token's signature is good but it has expired.
	ErrTokenExpired = errors.New("crypto: token expired")
)

// Claims is what a session token carries.
type Claims struct {
	// UserID is the account the token was issued to.
	UserID string `json:"uid"`
	// Generation is the account's token generation at issue time. Raising the
	// account's generation (password change, deletion) revokes older tokens.
	Generation uint64 `json:"gen"`
	// Expires is when the token stops being accepted (second precision).
	Expires time.Time `json:"-"`
}

type wireClaims struct {
	UserID     string `json:"uid"`
	Generation uint64 `json:"gen"`
	Expires    int64  `json:"exp"`
}

// TokenSigner signs and verifies session tokens with HMAC-SHA256.
// Token format: "fg1." base64url(JSON claims) "." base64url(HMAC).
type TokenSigner struct {
	key []byte
}

// NewTokenSigner returns a signer keyed with secret, which must hold at least
// MinSecretBytes bytes. The secret is copied.
func NewTokenSigner(secret []byte) (*TokenSigner, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("crypto: token secret has %d bytes, need at least %d", len(secret), MinSecretBytes)
	}
	return &TokenSigner{key: append([]byte(nil), secret...)}, nil
}

// Sign returns the token for c.
func (s *TokenSigner) Sign(c Claims) (string, error) {
	if c.UserID == "" {
		return "", errors.New("crypto: token without user ID")
	}
	if c.Expires.IsZero() {
		return "", errors.New("crypto: token without expiry")
	}
	payload, err := json.Marshal(wireClaims{UserID: c.UserID, Generation: c.Generation, Expires: c.Expires.Unix()})
	if err != nil {
		return "", fmt.Errorf("crypto: encode claims: %w", err)
	}
	body := tokenPrefix + base64.RawURLEncoding.EncodeToString(payload)
	return body + "." + base64.RawURLEncoding.EncodeToString(s.mac(body)), nil
}

// Verify checks the token's signature and expiry at now and returns its
// claims. It returns ErrTokenInvalid or ErrTokenExpired.
func (s *TokenSigner) Verify(token string, now time.Time) (Claims, error) {
	if len(token) > maxTokenBytes || !strings.HasPrefix(token, tokenPrefix) || !tokenChars(token) {
		return Claims{}, ErrTokenInvalid
	}
	dot := strings.LastIndexByte(token, '.')
	if dot <= len(tokenPrefix) {
		return Claims{}, ErrTokenInvalid
	}
	body, sigText := token[:dot], token[dot+1:]
	sig, err := base64.RawURLEncoding.Strict().DecodeString(sigText)
	if err != nil || !hmac.Equal(sig, s.mac(body)) {
		return Claims{}, ErrTokenInvalid
	}
	payload, err := base64.RawURLEncoding.Strict().DecodeString(body[len(tokenPrefix):])
	if err != nil {
		return Claims{}, ErrTokenInvalid
	}
	var w wireClaims
	if err := json.Unmarshal(payload, &w); err != nil || w.UserID == "" || w.Expires == 0 {
		return Claims{}, ErrTokenInvalid
	}
	c := Claims{UserID: w.UserID, Generation: w.Generation, Expires: time.Unix(w.Expires, 0).UTC()}
	if !now.Before(c.Expires) {
		return c, ErrTokenExpired
	}
	return c, nil
}

// tokenChars reports whether t holds only base64url characters and dots.
// Go's base64 decoders skip CR and LF even in strict mode, so without this
// check "fg1.xx.yy" with a newline inside would verify too: one token, many
// spellings (found by FuzzTokenVerify).
func tokenChars(t string) bool {
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

func (s *TokenSigner) mac(body string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(body))
	return m.Sum(nil)
}
