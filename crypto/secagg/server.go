package secagg

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Server is the coordinator's state for one round. It routes the parties'
// messages and, at the end, learns the sum of the survivors' inputs. Each
// getter closes the step before it: Advertisements fixes U1, SharesFor U2,
// Survivors U3. A Server is not safe for concurrent use.
type Server struct {
	p      Params
	verify VerifyFunc
	g      graph

	ads     map[string]Advertisement
	u1      []string
	shares  map[string][]EncryptedShare // by sender
	u2      []string
	masked  map[string][]uint32
	u3      []string
	sigs    map[string]Consistency
	reveals map[string]Reveal
}

// NewServer starts a round's aggregation.
func NewServer(p Params, verify VerifyFunc) (*Server, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if verify == nil {
		return nil, errors.New("secagg: the server needs a verifier")
	}
	return &Server{p: p, verify: verify, g: newGraph(p), ads: map[string]Advertisement{}, shares: map[string][]EncryptedShare{},
		masked: map[string][]uint32{}, sigs: map[string]Consistency{}, reveals: map[string]Reveal{}}, nil
}

// AddAdvertisement takes a party's signed keys.
func (s *Server) AddAdvertisement(a Advertisement) error {
	if s.u1 != nil {
		return errors.New("secagg: keys arrived after the key list was sent")
	}
	one, err := checkAds(Params{Context: s.p.Context, Parties: s.p.Parties, Threshold: 0}, s.verify, []Advertisement{a})
	if err != nil {
		return err
	}
	if _, dup := s.ads[a.Party]; dup {
		return fmt.Errorf("secagg: keys from %s twice", a.Party)
	}
	s.ads[a.Party] = one[a.Party]
	return nil
}

// Advertisements closes the key step and returns U1's keys, for every party.
func (s *Server) Advertisements() ([]Advertisement, error) {
	if len(s.ads) < s.p.Threshold {
		return nil, fmt.Errorf("%w: %d parties sent keys, threshold %d", ErrBelowThreshold, len(s.ads), s.p.Threshold)
	}
	if s.u1 == nil {
		for u := range s.ads {
			s.u1 = append(s.u1, u)
		}
		slices.Sort(s.u1)
	}
	out := make([]Advertisement, 0, len(s.u1))
	for _, u := range s.u1 {
		out = append(out, s.ads[u])
	}
	return out, nil
}

// AddShares takes a party's encrypted shares: exactly one for each other
// party in U1 (each neighbour in U1, with a Degree).
func (s *Server) AddShares(from string, in []EncryptedShare) error {
	if s.u1 == nil || s.u2 != nil {
		return errors.New("secagg: shares out of order")
	}
	if !slices.Contains(s.u1, from) {
		return fmt.Errorf("secagg: shares from %s, who sent no keys", from)
	}
	if _, dup := s.shares[from]; dup {
		return fmt.Errorf("secagg: shares from %s twice", from)
	}
	to := make([]string, 0, len(in))
	for _, e := range in {
		if e.From != from {
			return fmt.Errorf("secagg: %s sent a share in the name of %s", from, e.From)
		}
		to = append(to, e.To)
	}
	sort.Strings(to)
	fi := s.p.index(from)
	want := slices.DeleteFunc(slices.Clone(s.u1), func(u string) bool { return u == from || !s.g.adjacent(fi, s.p.index(u)) })
	if !slices.Equal(to, want) {
		return fmt.Errorf("secagg: %s did not send exactly one share to each other party", from)
	}
	s.shares[from] = in
	return nil
}

// SharesFor closes the share step (fixing U2) and returns the shares addressed to party.
func (s *Server) SharesFor(party string) ([]EncryptedShare, error) {
	if s.u1 == nil {
		return nil, errors.New("secagg: shares requested before the key list")
	}
	if s.u2 == nil {
		if len(s.shares) < s.p.Threshold {
			return nil, fmt.Errorf("%w: %d parties sent shares, threshold %d", ErrBelowThreshold, len(s.shares), s.p.Threshold)
		}
		for u := range s.shares {
			s.u2 = append(s.u2, u)
		}
		slices.Sort(s.u2)
	}
	if !slices.Contains(s.u2, party) {
		return nil, fmt.Errorf("secagg: %s sent no shares", party)
	}
	var out []EncryptedShare
	for _, v := range s.u2 {
		for _, e := range s.shares[v] {
			if e.To == party {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// AddMasked takes a party's masked input.
func (s *Server) AddMasked(in MaskedInput) error {
	if s.u2 == nil || s.u3 != nil {
		return errors.New("secagg: masked input out of order")
	}
	if !slices.Contains(s.u2, in.Party) {
		return fmt.Errorf("secagg: masked input from %s, who sent no shares", in.Party)
	}
	if _, dup := s.masked[in.Party]; dup {
		return fmt.Errorf("secagg: masked input from %s twice", in.Party)
	}
	if len(in.Words) != s.p.Length {
		return fmt.Errorf("secagg: masked input of %d words from %s, the round has %d", len(in.Words), in.Party, s.p.Length)
	}
	s.masked[in.Party] = slices.Clone(in.Words)
	return nil
}

// Survivors closes the masking step and returns U3, the parties whose masked
// input arrived.
func (s *Server) Survivors() ([]string, error) {
	if s.u2 == nil {
		return nil, errors.New("secagg: survivors asked before the shares step")
	}
	if s.u3 == nil {
		if len(s.masked) < s.p.Threshold {
			return nil, fmt.Errorf("%w: %d parties sent masked input, threshold %d", ErrBelowThreshold, len(s.masked), s.p.Threshold)
		}
		for u := range s.masked {
			s.u3 = append(s.u3, u)
		}
		slices.Sort(s.u3)
	}
	return slices.Clone(s.u3), nil
}

// Dropped returns U2 \ U3: the parties that shared keys but sent no masked input.
func (s *Server) Dropped() []string {
	var out []string
	for _, u := range s.u2 {
		if !slices.Contains(s.u3, u) {
			out = append(out, u)
		}
	}
	return out
}

// AddConsistency takes a survivor's signature of U3.
func (s *Server) AddConsistency(c Consistency) error {
	if s.u3 == nil {
		return errors.New("secagg: survivor signature out of order")
	}
	if !slices.Contains(s.u3, c.Party) {
		return fmt.Errorf("secagg: survivor signature from %s, who is not a survivor", c.Party)
	}
	if err := s.verify(c.Party, survivorsBytes(s.p.Context, s.u3), c.Sig); err != nil {
		return fmt.Errorf("secagg: the survivor signature of %s is invalid: %w", c.Party, err)
	}
	s.sigs[c.Party] = c
	return nil
}

// Consistencies returns the survivors' signatures, to send with the unmask request.
func (s *Server) Consistencies() ([]Consistency, error) {
	if len(s.sigs) < s.p.Threshold {
		return nil, fmt.Errorf("%w: %d survivors confirmed, threshold %d", ErrBelowThreshold, len(s.sigs), s.p.Threshold)
	}
	out := make([]Consistency, 0, len(s.sigs))
	for _, u := range s.u3 {
		if c, ok := s.sigs[u]; ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// AddReveal takes a survivor's shares for unmasking.
func (s *Server) AddReveal(r Reveal) error {
	if s.u3 == nil {
		return errors.New("secagg: reveal out of order")
	}
	if !slices.Contains(s.u3, r.Party) {
		return fmt.Errorf("secagg: reveal from %s, who is not a survivor", r.Party)
	}
	ri := s.p.index(r.Party)
	for v, b := range r.Seeds {
		if v != r.Party && !s.g.adjacent(ri, s.p.index(v)) {
			return fmt.Errorf("secagg: %s revealed a share of %s, who is not its neighbour", r.Party, v)
		}
		if !slices.Contains(s.u3, v) {
			return fmt.Errorf("secagg: %s revealed a self-mask share of %s, who is not a survivor", r.Party, v)
		}
		if _, err := decodeElem(b); err != nil {
			return err
		}
	}
	for v, b := range r.MaskKeys {
		if v == r.Party || !s.g.adjacent(ri, s.p.index(v)) {
			return fmt.Errorf("secagg: %s revealed a mask-key share of %s, who is not its neighbour", r.Party, v)
		}
		if !slices.Contains(s.u2, v) || slices.Contains(s.u3, v) {
			return fmt.Errorf("secagg: %s revealed a mask-key share of %s, who did not drop out", r.Party, v)
		}
		if _, err := decodeElem(b); err != nil {
			return err
		}
	}
	s.reveals[r.Party] = r
	return nil
}

// gather collects the revealed shares of party v's secret (seed or mask key).
func (s *Server) gather(v string, seed bool) []share {
	var out []share
	for _, u := range s.u3 {
		r, ok := s.reveals[u]
		if !ok {
			continue
		}
		b, ok := r.MaskKeys[v]
		if seed {
			b, ok = r.Seeds[v]
		}
		if !ok {
			continue
		}
		y, err := decodeElem(b)
		if err != nil {
			continue // checked in AddReveal
		}
		out = append(out, share{x: s.p.index(u) + 1, y: y})
	}
	return out
}

// Sum removes the masks and returns the sum, mod 2^32, of the survivors' inputs.
func (s *Server) Sum() ([]uint32, error) {
	if s.u3 == nil {
		return nil, errors.New("secagg: sum asked before the survivors are known")
	}
	if len(s.reveals) < s.p.Threshold {
		return nil, fmt.Errorf("%w: %d survivors revealed shares, threshold %d", ErrBelowThreshold, len(s.reveals), s.p.Threshold)
	}
	sum := make([]uint32, s.p.Length)
	for _, u := range s.u3 {
		for i, w := range s.masked[u] {
			sum[i] += w
		}
		seed, err := combine(s.gather(u, true), s.p.shareThreshold(), 32)
		if err != nil {
			return nil, fmt.Errorf("secagg: self-mask of %s: %w", u, err)
		}
		key, err := deriveKey(seed, s.p.Context, labelSelfMask)
		if err != nil {
			return nil, err
		}
		if err := applyMask(sum, key, -1); err != nil {
			return nil, err
		}
	}
	for _, v := range s.Dropped() {
		raw, err := combine(s.gather(v, false), s.p.shareThreshold(), 32)
		if err != nil {
			return nil, fmt.Errorf("secagg: mask key of %s: %w", v, err)
		}
		priv, err := ecdh.X25519().NewPrivateKey(raw)
		if err != nil {
			return nil, fmt.Errorf("secagg: mask key of %s: %w", v, err)
		}
		if !bytes.Equal(priv.PublicKey().Bytes(), s.ads[v].MaskKey) {
			return nil, fmt.Errorf("secagg: mask key of %s: %w", v, errInconsistentShares)
		}
		vi := s.p.index(v)
		for _, u := range s.u3 {
			if !s.g.adjacent(vi, s.p.index(u)) {
				continue // no mask between them
			}
			key, err := pairKey(s.p, priv, s.ads[u].MaskKey, v, u)
			if err != nil {
				return nil, err
			}
			// u added PRG(s_uv) if v > u, subtracted it if v < u: undo that.
			sign := -1
			if v < u {
				sign = +1
			}
			if err := applyMask(sum, key, sign); err != nil {
				return nil, err
			}
		}
	}
	return sum, nil
}
