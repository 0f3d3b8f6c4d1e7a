package secagg

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/chacha20poly1305"
)

// Party is one participant's state for one round. Its methods are the
// protocol's steps and must be called in order: Advertise, ShareKeys,
// MaskInput, SignSurvivors, Unmask. A Party is not safe for concurrent use.
type Party struct {
	p      Params
	self   string
	idx    int
	signer Signer
	verify VerifyFunc
	g      graph

	encKey, maskKey *ecdh.PrivateKey
	seed            []byte

	step     int
	ads      map[string]Advertisement // U1, checked
	held     map[string][2][]byte     // v -> my shares of (b_v, s_v), U2 incl. self
	u2       []string
	revealed []string // the U3 this party revealed for (at most one)
	reveal   Reveal
}

// NewParty starts a round for party self.
func NewParty(p Params, self string, signer Signer, verify VerifyFunc) (*Party, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	idx := p.index(self)
	if idx < 0 {
		return nil, fmt.Errorf("secagg: %s is not a party of this round", self)
	}
	if signer == nil || verify == nil {
		return nil, errors.New("secagg: a party needs a signer and a verifier")
	}
	enc, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("secagg: key pair: %w", err)
	}
	mask, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("secagg: key pair: %w", err)
	}
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("secagg: seed: %w", err)
	}
	return &Party{p: p, self: self, idx: idx, signer: signer, verify: verify, g: newGraph(p), encKey: enc, maskKey: mask, seed: seed}, nil
}

func (c *Party) next(step int, name string) error {
	if c.step != step {
		return fmt.Errorf("secagg: %s out of order", name)
	}
	c.step++
	return nil
}

// Advertise returns this party's signed public keys.
func (c *Party) Advertise() (Advertisement, error) {
	if err := c.next(0, "advertise"); err != nil {
		return Advertisement{}, err
	}
	a := Advertisement{Party: c.self, EncKey: c.encKey.PublicKey().Bytes(), MaskKey: c.maskKey.PublicKey().Bytes()}
	sig, err := c.signer.Sign(a.signingBytes(c.p.Context))
	if err != nil {
		return Advertisement{}, fmt.Errorf("secagg: sign keys: %w", err)
	}
	a.Sig = sig
	return a, nil
}

// checkAds verifies a set of advertisements: known, distinct parties, valid
// keys and signatures, this party's own unchanged, at least the threshold.
func checkAds(p Params, verify VerifyFunc, ads []Advertisement) (map[string]Advertisement, error) {
	out := make(map[string]Advertisement, len(ads))
	for _, a := range ads {
		if p.index(a.Party) < 0 {
			return nil, fmt.Errorf("secagg: keys from %s, who is not a party of this round", a.Party)
		}
		if _, dup := out[a.Party]; dup {
			return nil, fmt.Errorf("secagg: keys from %s twice", a.Party)
		}
		if _, err := ecdh.X25519().NewPublicKey(a.EncKey); err != nil {
			return nil, fmt.Errorf("secagg: bad key from %s: %w", a.Party, err)
		}
		if _, err := ecdh.X25519().NewPublicKey(a.MaskKey); err != nil {
			return nil, fmt.Errorf("secagg: bad key from %s: %w", a.Party, err)
		}
		if err := verify(a.Party, a.signingBytes(p.Context), a.Sig); err != nil {
			return nil, fmt.Errorf("secagg: the keys of %s are not signed by it: %w", a.Party, err)
		}
		out[a.Party] = a
	}
	if len(out) < p.Threshold {
		return nil, fmt.Errorf("%w: %d advertised keys, threshold %d", ErrBelowThreshold, len(out), p.Threshold)
	}
	return out, nil
}

func shareKey(p Params, priv *ecdh.PrivateKey, pubBytes []byte, from, to string) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(pubBytes)
	if err != nil {
		return nil, fmt.Errorf("secagg: public key: %w", err)
	}
	secret, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("secagg: key agreement: %w", err)
	}
	return deriveKey(secret, p.Context, labelShareKey, from, to)
}

func shareAD(p Params, from, to string) []byte {
	return lp(lp(lp(nil, p.Context), []byte(from)), []byte(to))
}

// ShareKeys checks the round's advertisements (U1) and returns this party's
// encrypted shares for each other party in U1 (each neighbour, with a Degree).
func (c *Party) ShareKeys(ads []Advertisement) ([]EncryptedShare, error) {
	if err := c.next(1, "share keys"); err != nil {
		return nil, err
	}
	u1, err := checkAds(c.p, c.verify, ads)
	if err != nil {
		return nil, err
	}
	mine, ok := u1[c.self]
	if !ok || !bytes.Equal(mine.EncKey, c.encKey.PublicKey().Bytes()) || !bytes.Equal(mine.MaskKey, c.maskKey.PublicKey().Bytes()) {
		return nil, errors.New("secagg: this party's own keys are missing or altered in the round's key list")
	}
	c.ads = u1
	n := len(c.p.Parties)
	seedShares, err := split(c.seed, c.p.shareThreshold(), n)
	if err != nil {
		return nil, err
	}
	keyShares, err := split(c.maskKey.Bytes(), c.p.shareThreshold(), n)
	if err != nil {
		return nil, err
	}
	c.held = map[string][2][]byte{c.self: {encodeElem(seedShares[c.idx].y), encodeElem(keyShares[c.idx].y)}}
	var out []EncryptedShare
	for _, v := range c.p.Parties {
		a, ok := u1[v]
		j := c.p.index(v)
		if !ok || v == c.self || !c.g.adjacent(c.idx, j) {
			continue
		}
		key, err := shareKey(c.p, c.encKey, a.EncKey, c.self, v)
		if err != nil {
			return nil, err
		}
		aead, err := chacha20poly1305.New(key)
		if err != nil {
			return nil, fmt.Errorf("secagg: share cipher: %w", err)
		}
		// The key is used for this one message (from, to and round are in
		// its derivation), so a zero nonce never repeats.
		pt := append(encodeElem(seedShares[j].y), encodeElem(keyShares[j].y)...)
		ct := aead.Seal(nil, make([]byte, chacha20poly1305.NonceSize), pt, shareAD(c.p, c.self, v))
		out = append(out, EncryptedShare{From: c.self, To: v, Ciphertext: ct})
	}
	return out, nil
}

// pairKey is the mask key party u agrees with party v (the same at both).
func pairKey(p Params, priv *ecdh.PrivateKey, pubBytes []byte, u, v string) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(pubBytes)
	if err != nil {
		return nil, fmt.Errorf("secagg: public key: %w", err)
	}
	secret, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("secagg: key agreement: %w", err)
	}
	lo, hi := min(u, v), max(u, v)
	return deriveKey(secret, p.Context, labelPairMask, lo, hi)
}

// MaskInput decrypts the shares sent to this party (their senders form U2)
// and returns x masked. x has Params.Length words; it is not modified.
func (c *Party) MaskInput(x []uint32, in []EncryptedShare) (MaskedInput, error) {
	if err := c.next(2, "mask input"); err != nil {
		return MaskedInput{}, err
	}
	if len(x) != c.p.Length {
		return MaskedInput{}, fmt.Errorf("secagg: input of %d words, the round has %d", len(x), c.p.Length)
	}
	for _, s := range in {
		a, ok := c.ads[s.From]
		if !ok || s.To != c.self || s.From == c.self || !c.g.adjacent(c.idx, c.p.index(s.From)) {
			return MaskedInput{}, fmt.Errorf("secagg: a share from %s to %s does not belong here", s.From, s.To)
		}
		if _, dup := c.held[s.From]; dup {
			return MaskedInput{}, fmt.Errorf("secagg: shares from %s twice", s.From)
		}
		key, err := shareKey(c.p, c.encKey, a.EncKey, s.From, c.self)
		if err != nil {
			return MaskedInput{}, err
		}
		aead, err := chacha20poly1305.New(key)
		if err != nil {
			return MaskedInput{}, fmt.Errorf("secagg: share cipher: %w", err)
		}
		pt, err := aead.Open(nil, make([]byte, chacha20poly1305.NonceSize), s.Ciphertext, shareAD(c.p, s.From, c.self))
		if err != nil || len(pt) != 2*fieldBytes {
			return MaskedInput{}, fmt.Errorf("secagg: the shares from %s do not decrypt", s.From)
		}
		c.held[s.From] = [2][]byte{pt[:fieldBytes], pt[fieldBytes:]}
	}
	for v := range c.held {
		c.u2 = append(c.u2, v)
	}
	slices.Sort(c.u2)
	if t := c.p.shareThreshold(); len(c.u2) < t {
		return MaskedInput{}, fmt.Errorf("%w: shares from %d parties, threshold %d", ErrBelowThreshold, len(c.u2), t)
	}
	y := slices.Clone(x)
	self, err := deriveKey(c.seed, c.p.Context, labelSelfMask)
	if err != nil {
		return MaskedInput{}, err
	}
	if err := applyMask(y, self, +1); err != nil {
		return MaskedInput{}, err
	}
	for _, v := range c.u2 {
		if v == c.self {
			continue
		}
		key, err := pairKey(c.p, c.maskKey, c.ads[v].MaskKey, c.self, v)
		if err != nil {
			return MaskedInput{}, err
		}
		sign := +1
		if v < c.self {
			sign = -1
		}
		if err := applyMask(y, key, sign); err != nil {
			return MaskedInput{}, err
		}
	}
	return MaskedInput{Party: c.self, Words: y}, nil
}

func (c *Party) checkSurvivors(u3 []string) error {
	known := c.u2 // every survivor shared with this party
	if c.p.Degree > 0 {
		known = known[:0:0] // only neighbours did: every survivor sent keys
		for v := range c.ads {
			known = append(known, v)
		}
	}
	if err := checkSubset(u3, known); err != nil {
		return err
	}
	if !slices.Contains(u3, c.self) {
		return errors.New("secagg: this party is not among the survivors")
	}
	if len(u3) < c.p.Threshold {
		return fmt.Errorf("%w: %d survivors, threshold %d", ErrBelowThreshold, len(u3), c.p.Threshold)
	}
	return nil
}

// SignSurvivors signs the survivor set U3 the server announced.
func (c *Party) SignSurvivors(u3 []string) (Consistency, error) {
	if c.step != 3 {
		return Consistency{}, errors.New("secagg: sign survivors out of order")
	}
	if err := c.checkSurvivors(u3); err != nil {
		return Consistency{}, err
	}
	sig, err := c.signer.Sign(survivorsBytes(c.p.Context, u3))
	if err != nil {
		return Consistency{}, fmt.Errorf("secagg: sign survivors: %w", err)
	}
	return Consistency{Party: c.self, Sig: sig}, nil
}

// Unmask reveals this party's shares for the survivor set u3, once at least
// the threshold of survivors signed that same set. A party reveals for one
// survivor set only: asked again with the same set it answers the same, with
// another it refuses, so nobody obtains both the self-mask and the mask key
// of one party.
func (c *Party) Unmask(u3 []string, sigs []Consistency) (Reveal, error) {
	if c.step < 3 {
		return Reveal{}, errors.New("secagg: unmask out of order")
	}
	if c.revealed != nil {
		if slices.Equal(c.revealed, u3) {
			return c.reveal, nil
		}
		return Reveal{}, errors.New("secagg: this party already revealed for another survivor set")
	}
	if err := c.checkSurvivors(u3); err != nil {
		return Reveal{}, err
	}
	msg := survivorsBytes(c.p.Context, u3)
	signed := map[string]bool{}
	for _, s := range sigs {
		if !slices.Contains(u3, s.Party) || signed[s.Party] {
			continue
		}
		if c.verify(s.Party, msg, s.Sig) == nil {
			signed[s.Party] = true
		}
	}
	if len(signed) < c.p.Threshold {
		return Reveal{}, fmt.Errorf("%w: %d survivors confirmed the survivor set, threshold %d", ErrBelowThreshold, len(signed), c.p.Threshold)
	}
	r := Reveal{Party: c.self, Seeds: map[string][]byte{}, MaskKeys: map[string][]byte{}}
	for _, v := range c.u2 {
		if slices.Contains(u3, v) {
			r.Seeds[v] = c.held[v][0]
		} else {
			r.MaskKeys[v] = c.held[v][1]
		}
	}
	c.revealed, c.reveal, c.step = slices.Clone(u3), r, 4
	return r, nil
}
