// Package secagg is secure aggregation that tolerates dropouts (Bonawitz et
// al., "Practical Secure Aggregation for Privacy-Preserving Machine
// Learning", CCS 2017): n parties each hold a vector of words mod 2^32; a
// server (the federation's coordinator) learns their sum and nothing else,
// and the sum is still recovered when parties drop out after masking, as long
// as at least a threshold t of them take part to the end.
//
// One round, for party u among the round's parties P (sorted IDs):
//
//  0. Advertise: u makes two X25519 key pairs, c_u for encrypting shares and
//     s_u for masks, and signs both public keys with its long-term (libp2p
//     peer) key, bound to the round context. The server cannot substitute a
//     key: every party checks every signature.
//  1. ShareKeys: u draws a self-mask seed b_u, Shamir-shares b_u and the
//     private key s_u t-of-n over GF(2^521-1) and sends each other party v
//     its shares encrypted (ChaCha20-Poly1305) under a key agreed from c_u
//     and c_v. U1 is the set whose advertisements reached the server.
//  2. MaskInput: with U2 the parties whose shares reached u, u sends
//     y_u = x_u + PRG(b_u) + sum_{v in U2, v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv),
//     where s_uv is agreed by X25519 from s_u and s_v, stretched by HKDF
//     and AES-256-CTR. The pairwise masks cancel in the sum over U2.
//  3. Consistency: U3 is the set whose masked inputs reached the server; each
//     survivor signs U3, and nobody reveals anything before t signatures on
//     the same U3 (so the server cannot tell parties different drop sets).
//  4. Unmask: each survivor reveals its share of b_v for every v in U3 and of
//     s_v for every v in U2 \ U3 — never both for one v. The server rebuilds
//     the survivors' self-masks and the dropped parties' pairwise masks and
//     subtracts them: the sum over U3 of x_u is left.
//
// A masked vector y_u, seen without the other parties' masks, is uniformly
// distributed: the self-mask alone makes it so even if every pairwise mask
// were known. Reals travel as fixed point (Quantizer).
//
// With Params.Degree set, a round runs SecAgg+ (Bell et al., CCS 2020;
// graph.go): steps 1, 2 and 4 involve only each party's neighbours in a
// random regular graph of that degree.
//
// Threat model as in the paper's semi-honest-server-with-signatures setting:
// the server may be curious and may lie about who dropped, but fewer than t
// parties collude with it. Shamir arithmetic uses math/big, which is not
// constant time; secrets are per-round and the timing seen over a network
// round trip is not an oracle for them.
package secagg

import (
	"errors"
	"fmt"
	"slices"
)

// Limits on what a round may ask for.
const (
	// MaxParties bounds the parties of one round.
	MaxParties = 1000
	// MaxLength bounds the words of one vector (64 Mi words, 256 MiB).
	MaxLength = 1 << 26
)

// ErrBelowThreshold means fewer than the threshold of parties are left at
// some step: the round cannot complete and must be retried.
var ErrBelowThreshold = errors.New("secagg: fewer parties than the threshold are left")

// Params are the public parameters of one round, the same at every party and
// at the server.
type Params struct {
	// Context names the round (federation and round number); it is bound into
	// every signature, key and ciphertext, so nothing carries over from one
	// round to another.
	Context []byte
	// Parties are the IDs of the round's parties (gateway peer IDs), sorted and distinct.
	Parties []string
	// Threshold is t: the fewest parties that must survive to the end.
	Threshold int
	// Length is the number of words of every vector.
	Length int
	// Degree, when not 0, runs SecAgg+ (graph.go): masks and shares only
	// between the neighbours of a random Degree-regular graph derived from
	// Context; NeighbourThreshold (0: a majority of Degree+1) is then the
	// shares that rebuild one party's secrets. Threshold stays the fewest
	// parties that must survive to the end.
	Degree             int
	NeighbourThreshold int
}

// Validate checks the parameters. The threshold must be a majority (more
// than n/2) and at least 2, as the paper requires against a server that lies
// about dropouts.
func (p Params) Validate() error {
	n := len(p.Parties)
	switch {
	case len(p.Context) == 0 || len(p.Context) > maxContextLength:
		return fmt.Errorf("secagg: round context must have 1 to %d bytes", maxContextLength)
	case n < 2 || n > MaxParties:
		return fmt.Errorf("secagg: a round needs 2 to %d parties, not %d", MaxParties, n)
	case !slices.IsSorted(p.Parties):
		return errors.New("secagg: the parties must be sorted")
	case p.Threshold < 2 || 2*p.Threshold <= n || p.Threshold > n:
		return fmt.Errorf("secagg: threshold %d of %d parties: it must be more than half and at least 2", p.Threshold, n)
	case p.Length < 1 || p.Length > MaxLength:
		return fmt.Errorf("secagg: vector length %d outside 1..%d", p.Length, MaxLength)
	}
	for i, id := range p.Parties {
		if id == "" || i > 0 && p.Parties[i-1] == id {
			return errors.New("secagg: party IDs must be non-empty and distinct")
		}
	}
	return p.validateGraph()
}

// MinThreshold is the smallest valid threshold for n parties.
func MinThreshold(n int) int { return max(2, n/2+1) }

// index returns the position of party in p.Parties, or -1.
func (p Params) index(party string) int {
	i, ok := slices.BinarySearch(p.Parties, party)
	if !ok {
		return -1
	}
	return i
}

// Signer signs with a party's long-term key (a libp2p crypto.PrivKey is one).
type Signer interface {
	Sign(msg []byte) ([]byte, error)
}

// VerifyFunc checks that sig is party's signature of msg with its long-term
// key (for a gateway: the key its peer ID names).
type VerifyFunc func(party string, msg, sig []byte) error

// Advertisement is a party's two public keys for one round, signed.
type Advertisement struct {
	Party   string `json:"party"`
	EncKey  []byte `json:"enc_key"`
	MaskKey []byte `json:"mask_key"`
	Sig     []byte `json:"sig"`
}

func (a Advertisement) signingBytes(ctx []byte) []byte {
	b := lp(nil, []byte(labelAdvertise))
	b = lp(b, ctx)
	b = lp(b, []byte(a.Party))
	b = lp(b, a.EncKey)
	return lp(b, a.MaskKey)
}

// EncryptedShare carries From's shares of its two secrets to To, encrypted so
// that only To reads them.
type EncryptedShare struct {
	From       string `json:"from"`
	To         string `json:"to"`
	Ciphertext []byte `json:"ciphertext"`
}

// MaskedInput is a party's masked vector.
type MaskedInput struct {
	Party string   `json:"party"`
	Words []uint32 `json:"words"`
}

// Consistency is a survivor's signature of the survivor set U3.
type Consistency struct {
	Party string `json:"party"`
	Sig   []byte `json:"sig"`
}

func survivorsBytes(ctx []byte, u3 []string) []byte {
	b := lp(nil, []byte(labelSurvivors))
	b = lp(b, ctx)
	for _, u := range u3 {
		b = lp(b, []byte(u))
	}
	return b
}

// Reveal is one survivor's shares for unmasking: of each survivor's self-mask
// seed, and of each dropped party's mask key.
type Reveal struct {
	Party    string            `json:"party"`
	Seeds    map[string][]byte `json:"seeds"`
	MaskKeys map[string][]byte `json:"mask_keys"`
}

// checkSubset reports whether set is sorted, distinct and within of.
func checkSubset(set []string, of []string) error {
	if !slices.IsSorted(set) {
		return errors.New("secagg: party set not sorted")
	}
	for i, u := range set {
		if i > 0 && set[i-1] == u {
			return errors.New("secagg: party set has duplicates")
		}
		if !slices.Contains(of, u) {
			return fmt.Errorf("secagg: party %s was not in the previous step", u)
		}
	}
	return nil
}
