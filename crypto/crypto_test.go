package crypto

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPasswordHashAndCheck(t *testing.T) {
	h, err := HashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q is not argon2id with the documented parameters", h)
	}
	if h2, _ := HashPassword("correct horse battery staple"); h2 == h {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	if err := CheckPassword(h, "correct horse battery staple"); err != nil {
		t.Fatalf("right password refused: %v", err)
	}
	if err := CheckPassword(h, "correct horse battery stapl"); !errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("wrong password: got %v, want ErrPasswordMismatch", err)
	}
	if _, err := HashPassword(strings.Repeat("x", MaxPasswordBytes+1)); !errors.Is(err, ErrPasswordTooLong) {
		t.Fatalf("long password: got %v", err)
	}
	if err := CheckPassword(h, strings.Repeat("x", MaxPasswordBytes+1)); !errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("long password check: got %v", err)
	}
	for _, bad := range []string{"not a hash", "", strings.Replace(h, "m=19456", "m=99999999", 1), strings.Replace(h, "argon2id", "argon2i", 1), h[:len(h)-10]} {
		if err := CheckPassword(bad, "x"); !errors.Is(err, ErrBadHash) {
			t.Fatalf("corrupt hash %q: got %v, want ErrBadHash", bad, err)
		}
	}
}

func TestTokenRoundTripAndTamper(t *testing.T) {
	s, err := NewTokenSigner(RandomBytes(32))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	tok, err := s.Sign(Claims{UserID: "u1", Generation: 7, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Verify(tok, now)
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != "u1" || c.Generation != 7 || !c.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("claims %+v", c)
	}
	if _, err := s.Verify(tok, now.Add(time.Hour)); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired: got %v", err)
	}
	// Flip every character of the token in turn: none may verify.
	for i := range len(tok) {
		b := []byte(tok)
		b[i] ^= 0x01
		if _, err := s.Verify(string(b), now); err == nil {
			t.Fatalf("tampered token (byte %d) verified", i)
		}
	}
	other, _ := NewTokenSigner(RandomBytes(32))
	if _, err := other.Verify(tok, now); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("other key: got %v", err)
	}
	for _, bad := range []string{"", "fg1.", "fg1..", "abc", "fg1.e30.", strings.Repeat("a", 10000)} {
		if _, err := s.Verify(bad, now); !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("%q: got %v", bad, err)
		}
	}
	if _, err := NewTokenSigner(make([]byte, 16)); err == nil {
		t.Fatal("short secret accepted")
	}
}

func TestRandom(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := RandomID()
		if len(id) != 32 || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
	if len(RandomToken()) != 43 {
		t.Fatal("token length")
	}
}

func FuzzTokenVerify(f *testing.F) {
	s, _ := NewTokenSigner(make([]byte, 32))
	tok, _ := s.Sign(Claims{UserID: "u", Expires: time.Unix(2_000_000_000, 0)})
	f.Add(tok)
	f.Add("fg1.e30.AAAA")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := s.Verify(in, time.Unix(1_000_000_000, 0))
		if err == nil && in != tok {
			// Only a token signed with the key may verify.
			t.Fatalf("forged token verified: %q -> %+v", in, c)
		}
	})
}

func TestChainHash(t *testing.T) {
	h1 := ChainHash(ChainGenesis, 1, []byte(`{"a":1}`))
	h2 := ChainHash(h1, 2, []byte(`{"b":2}`))
	if !ChainLinkValid(ChainGenesis, 1, []byte(`{"a":1}`), h1) || !ChainLinkValid(h1, 2, []byte(`{"b":2}`), h2) {
		t.Fatal("valid chain refused")
	}
	if ChainLinkValid(ChainGenesis, 1, []byte(`{"a":2}`), h1) {
		t.Fatal("edited payload accepted")
	}
	if ChainLinkValid(ChainGenesis, 2, []byte(`{"b":2}`), h2) {
		t.Fatal("entry with the wrong predecessor accepted")
	}
	if ChainLinkValid(h1, 3, []byte(`{"b":2}`), h2) {
		t.Fatal("wrong sequence number accepted")
	}
}

func TestHashLimiterBusy(t *testing.T) {
	l := NewHashLimiter(1, time.Millisecond)
	h, err := l.Hash("a password")
	if err != nil || l.Evaluated() != 1 {
		t.Fatalf("hash: %v, %d evaluated", err, l.Evaluated())
	}
	if err := l.acquire(); err != nil { // hold the only slot
		t.Fatal(err)
	}
	if err := l.Check(h, "a password"); !errors.Is(err, ErrBusy) {
		t.Fatalf("check with every slot taken: %v, want ErrBusy", err)
	}
	if err := l.Waste("x"); !errors.Is(err, ErrBusy) {
		t.Fatalf("waste with every slot taken: %v", err)
	}
	if err := l.Check("not a hash", "x"); !errors.Is(err, ErrBadHash) {
		t.Fatalf("a malformed hash is refused before waiting: %v", err)
	}
	l.release()
	if err := l.Check(h, "a password"); err != nil || l.Evaluated() != 3 {
		t.Fatalf("check after release: %v, %d evaluated", err, l.Evaluated())
	}
}
