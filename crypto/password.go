// Package crypto holds fedgrid's small security primitives: password hashing,
// signed expiring session tokens, random identifiers and the audit hash chain.
package crypto

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"
)

// Password hashing parameters: argon2id with OWASP's recommended minimum
// (19 MiB, 2 passes, 1 lane), a 16-byte salt and a 32-byte key. Stored as a
// PHC string: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>.
const (
	PasswordMemoryKiB = 19 * 1024
	PasswordTime      = 2
	PasswordThreads   = 1
	passwordSaltLen   = 16
	passwordKeyLen    = 32
)

// MaxPasswordBytes is the longest password accepted.
const MaxPasswordBytes = 1024

var (
	// ErrPasswordMismatch is returned by CheckPassword when the password is wrong.
	ErrPasswordMismatch = errors.New("crypto: password does not match")
	// ErrPasswordTooLong is returned for passwords over MaxPasswordBytes.
	ErrPasswordTooLong = fmt.Errorf("crypto: password longer than %d bytes", MaxPasswordBytes)
	// ErrBadHash is returned when a stored hash cannot be parsed.
	ErrBadHash = errors.New("crypto: malformed password hash")
)

var b64 = base64.RawStdEncoding.Strict()

// HashPassword returns the argon2id hash of password as a PHC string.
func HashPassword(password string) (string, error) {
	if len(password) > MaxPasswordBytes {
		return "", ErrPasswordTooLong
	}
	salt := RandomBytes(passwordSaltLen)
	key := argon2.IDKey([]byte(password), salt, PasswordTime, PasswordMemoryKiB, PasswordThreads, passwordKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, PasswordMemoryKiB, PasswordTime, PasswordThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

type phc struct {
	m    uint32
	t    uint32
	p    uint8
	salt []byte
	key  []byte
}

func parseHash(h string) (phc, error) {
	parts := strings.Split(h, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return phc{}, ErrBadHash
	}
	var x phc
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &x.m, &x.t, &x.p); err != nil {
		return phc{}, ErrBadHash
	}
	// Bound the parameters so that a corrupted hash cannot make a login
	// allocate gigabytes or spin for minutes.
	if x.m < 8 || x.m > 1<<20 || x.t < 1 || x.t > 16 || x.p < 1 || x.p > 16 {
		return phc{}, ErrBadHash
	}
	var err error
	if x.salt, err = b64.DecodeString(parts[4]); err != nil || len(x.salt) < 8 {
		return phc{}, ErrBadHash
	}
	if x.key, err = b64.DecodeString(parts[5]); err != nil || len(x.key) < 16 || len(x.key) > 64 {
		return phc{}, ErrBadHash
	}
	return x, nil
}

// CheckPassword compares password with a hash from HashPassword in constant
// time. It returns nil on a match, ErrPasswordMismatch on a wrong password and
// ErrBadHash if hash is not one HashPassword makes.
func CheckPassword(hash, password string) error {
	x, err := parseHash(hash)
	if err != nil {
		return err
	}
	if len(password) > MaxPasswordBytes {
		WastePasswordCheck(password)
		return ErrPasswordMismatch
	}
	got := argon2.IDKey([]byte(password), x.salt, x.t, x.m, x.p, uint32(len(x.key)))
	if subtle.ConstantTimeCompare(got, x.key) != 1 {
		return ErrPasswordMismatch
	}
	return nil
}

var dummySalt = sync.OnceValue(func() []byte { return RandomBytes(passwordSaltLen) })

// WastePasswordCheck spends the time of one CheckPassword. Call it when there is
// no account to check against, so that login timing does not reveal which
// accounts exist.
func WastePasswordCheck(password string) {
	if len(password) > MaxPasswordBytes {
		password = password[:MaxPasswordBytes]
	}
	_ = argon2.IDKey([]byte(password), dummySalt(), PasswordTime, PasswordMemoryKiB, PasswordThreads, passwordKeyLen)
}

// ErrBusy is returned by a HashLimiter when every slot stayed taken for its
// whole wait.
var ErrBusy = errors.New("crypto: too many password checks in progress; try again")

// HashLimiter bounds how many argon2 evaluations (about PasswordMemoryKiB of
// memory each) run at once. A caller waits up to the limiter's wait for a slot
// and then gets ErrBusy, so a burst of logins costs bounded memory instead of
// one hash buffer per request. It is safe for concurrent use.
type HashLimiter struct {
	slots     chan struct{}
	wait      time.Duration
	evaluated atomic.Int64
}

// NewHashLimiter returns a limiter of n concurrent evaluations (at least 1)
// whose callers wait up to wait for a slot.
func NewHashLimiter(n int, wait time.Duration) *HashLimiter {
	return &HashLimiter{slots: make(chan struct{}, max(n, 1)), wait: wait}
}

func (l *HashLimiter) acquire() error {
	select {
	case l.slots <- struct{}{}:
	default:
		t := time.NewTimer(l.wait)
		defer t.Stop()
		select {
		case l.slots <- struct{}{}:
		case <-t.C:
			return ErrBusy
		}
	}
	l.evaluated.Add(1)
	return nil
}

func (l *HashLimiter) release() { <-l.slots }

// Evaluated returns how many argon2 evaluations the limiter has let run.
func (l *HashLimiter) Evaluated() int64 { return l.evaluated.Load() }

// Hash is HashPassword in a slot of the limiter.
func (l *HashLimiter) Hash(password string) (string, error) {
	if len(password) > MaxPasswordBytes {
		return "", ErrPasswordTooLong
	}
	if err := l.acquire(); err != nil {
		return "", err
	}
	defer l.release()
	return HashPassword(password)
}

// Check is CheckPassword in a slot of the limiter.
func (l *HashLimiter) Check(hash, password string) error {
	if _, err := parseHash(hash); err != nil {
		return err
	}
	if err := l.acquire(); err != nil {
		return err
	}
	defer l.release()
	return CheckPassword(hash, password)
}

// Waste is WastePasswordCheck in a slot of the limiter.
func (l *HashLimiter) Waste(password string) error {
	if err := l.acquire(); err != nil {
		return err
	}
	defer l.release()
	WastePasswordCheck(password)
	return nil
}
