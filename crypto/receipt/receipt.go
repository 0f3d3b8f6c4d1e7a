// Package receipt is the provenance of a federated model: every round, each
// gateway whose masked update went into the sum signs a receipt binding the
// federation, the round, the SHA-256 of the weights it started from and of
// the masked update it sent; the coordinator collects them, and the released
// model lists them round by round with the hashes of each round's start and
// result weights. Verify checks the receipts' signatures and the chain: every
// round starts from the previous round's result, the first from the plan's
// initial weights, and the model's weights are the last round's result.
//
// The package knows weights only by their hashes (package plan computes
// them) and signatures only through a Signer and a VerifyFunc (a gateway's
// libp2p peer key), so it depends on nothing else of fedgrid.
package receipt

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Domain separates a receipt's signature from every other signature made
// with a gateway's peer key (models, audit checkpoints, secure-aggregation
// keys): the signed bytes start with it.
const Domain = "fedgrid/federation-receipt/v1"

// Receipt is one gateway's signed statement of what it did in one round.
type Receipt struct {
	Federation string `json:"federation"`
	Round      int    `json:"round"`
	// Attempt is the coordinator's try of the round that completed.
	Attempt int `json:"attempt"`
	// Gateway is the signer's peer ID.
	Gateway string `json:"gateway"`
	// StartSHA256 is the hex SHA-256 of the weights the gateway trained
	// from (plan.WeightsSHA256), UpdateSHA256 of the masked update it sent
	// (UpdateSHA256).
	StartSHA256  string `json:"start_sha256"`
	UpdateSHA256 string `json:"update_sha256"`
	// RowsCommitment is the gateway's commitment to its row count when the
	// round carries one (empty otherwise; signed either way).
	RowsCommitment string    `json:"rows_commitment,omitempty"`
	Time           time.Time `json:"time"`
	// Signature is base64 of the gateway's signature over SigningBytes.
	Signature string `json:"signature"`
}

// SigningBytes is what a gateway signs: the domain and every field but the
// signature, one "name=value" line each, in this order (language neutral,
// so that anyone can check a receipt with the gateway's public key).
func (r *Receipt) SigningBytes() []byte {
	var b strings.Builder
	b.WriteString(Domain + "\n")
	for _, kv := range [][2]string{
		{"federation", r.Federation}, {"round", strconv.Itoa(r.Round)}, {"attempt", strconv.Itoa(r.Attempt)},
		{"gateway", r.Gateway}, {"start_sha256", r.StartSHA256}, {"update_sha256", r.UpdateSHA256},
		{"rows_commitment", r.RowsCommitment}, {"time", r.Time.UTC().Format(time.RFC3339Nano)},
	} {
		b.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	return []byte(b.String())
}

// Signer signs with a gateway's long-term key (its libp2p peer key).
type Signer interface {
	Sign(msg []byte) ([]byte, error)
}

// VerifyFunc checks that sig is the signature of msg by the key of the peer
// ID party (p2p.VerifyPeerSignature).
type VerifyFunc func(party string, msg, sig []byte) error

// Sign fills r.Signature.
func (r *Receipt) Sign(s Signer) error {
	sig, err := s.Sign(r.SigningBytes())
	if err != nil {
		return fmt.Errorf("sign receipt: %w", err)
	}
	r.Signature = base64.StdEncoding.EncodeToString(sig)
	return nil
}

// VerifySignature checks that the receipt was signed by its Gateway.
func (r *Receipt) VerifySignature(verify VerifyFunc) error {
	sig, err := base64.StdEncoding.DecodeString(r.Signature)
	if err != nil || len(sig) == 0 {
		return errors.New("its signature is missing or not base64")
	}
	if err := verify(r.Gateway, r.SigningBytes(), sig); err != nil {
		return fmt.Errorf("its signature does not verify with gateway %s's key (forged, or changed after signing): %v", r.Gateway, err)
	}
	return nil
}

// UpdateSHA256 is the hex SHA-256 of a masked update: its words, 4 bytes
// each, little-endian.
func UpdateSHA256(words []uint32) string {
	h := sha256.New()
	var buf [4]byte
	for _, w := range words {
		binary.LittleEndian.PutUint32(buf[:], w)
		h.Write(buf[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Gateway is one gateway that took part in a federation.
type Gateway struct {
	PeerID  string `json:"peer_id"`
	Name    string `json:"name"`
	Dataset string `json:"dataset,omitempty"`
}

// Round is one completed round: the hashes of the weights it started from
// and of the weights it produced (after the strategy moved them by the
// securely aggregated update), the gateways whose updates were summed, and
// their receipts.
type Round struct {
	Round        int       `json:"round"`
	StartSHA256  string    `json:"start_sha256"`
	ResultSHA256 string    `json:"result_sha256"`
	Participants []string  `json:"participants"`
	Receipts     []Receipt `json:"receipts"`
}

// Federation is the provenance of a federated model (plan.Provenance.Federation).
type Federation struct {
	ID       string    `json:"id"`
	Gateways []Gateway `json:"gateways"`
	Rounds   []Round   `json:"rounds"`
}

// Limits of a provenance record (it travels in fed/finish and in models).
const (
	MaxRounds   = 1000
	MaxGateways = 100
)

// Compiled on first use, not at start: a bounded repetition compiles to
// hundreds of allocations that every fedgrid process (a node too) would
// pay in its initialisers (issue 18).
var hexHash = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]{64}$`) })

// Problem is one thing about a federated model's provenance that does not hold.
type Problem struct {
	// Round is the round concerned (0: the whole record).
	Round   int    `json:"round,omitempty"`
	Message string `json:"message"`
}

func (p Problem) Error() string {
	if p.Round > 0 {
		return fmt.Sprintf("round %d: %s", p.Round, p.Message)
	}
	return p.Message
}

// Error lists every problem Verify found.
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return "federation provenance does not verify: " + strings.Join(msgs, "; ")
}

// Verify checks a federation's provenance: the record is well formed;
// rounds are numbered 1, 2, ... in order; every participant of a round has
// exactly one receipt in it, from a gateway the record lists, signed by that
// gateway, naming this federation and round and the round's start weights;
// each round starts from the previous round's result, the first from
// initialSHA256 (the plan's initial weights; "" skips that check); and the
// last round's result is finalSHA256 (the model's weights). It returns nil
// or an *Error listing every problem, each in words a person understands.
func Verify(f *Federation, initialSHA256, finalSHA256 string, verify VerifyFunc) error {
	var probs []Problem
	add := func(round int, format string, a ...any) {
		probs = append(probs, Problem{Round: round, Message: fmt.Sprintf(format, a...)})
	}
	switch {
	case f == nil:
		return &Error{Problems: []Problem{{Message: "the model carries no federation provenance"}}}
	case len(f.Rounds) == 0:
		add(0, "the record lists no rounds")
	case len(f.Rounds) > MaxRounds || len(f.Gateways) > MaxGateways:
		add(0, "the record lists %d rounds and %d gateways, more than %d and %d", len(f.Rounds), len(f.Gateways), MaxRounds, MaxGateways)
		return &Error{Problems: probs}
	}
	listed := map[string]bool{}
	for _, g := range f.Gateways {
		if listed[g.PeerID] {
			add(0, "gateway %s is listed twice", g.PeerID)
		}
		listed[g.PeerID] = true
	}
	// Out of order, the chain says nothing more: it is checked only in order.
	ordered := true
	for i, r := range f.Rounds {
		if r.Round != i+1 {
			add(0, "rounds out of order: entry %d of the record is round %d, want round %d", i+1, r.Round, i+1)
			ordered = false
		}
	}
	for i, r := range f.Rounds {
		n := r.Round
		if !hexHash().MatchString(r.StartSHA256) || !hexHash().MatchString(r.ResultSHA256) {
			add(n, "its start or result weights hash is not a hex SHA-256")
		}
		if len(r.Participants) == 0 {
			add(n, "no gateway's update was summed")
		}
		byGateway := map[string]int{}
		for _, rc := range r.Receipts {
			byGateway[rc.Gateway]++
		}
		for _, p := range r.Participants {
			if !listed[p] {
				add(n, "participant %s is not among the federation's gateways", p)
			}
			switch byGateway[p] {
			case 0:
				add(n, "no receipt from gateway %s, whose update was summed (a receipt was dropped)", p)
			case 1:
			default:
				add(n, "gateway %s has %d receipts, want one", p, byGateway[p])
			}
		}
		for _, rc := range r.Receipts {
			if !slices.Contains(r.Participants, rc.Gateway) {
				add(n, "a receipt from gateway %s, which is not a participant of the round", rc.Gateway)
				continue
			}
			if err := rc.VerifySignature(verify); err != nil {
				add(n, "receipt of gateway %s: %v", rc.Gateway, err)
				continue
			}
			switch {
			case rc.Federation != f.ID:
				add(n, "receipt of gateway %s is for federation %q, not %q", rc.Gateway, rc.Federation, f.ID)
			case rc.Round != r.Round:
				add(n, "receipt of gateway %s is signed for round %d (rounds reordered or renumbered)", rc.Gateway, rc.Round)
			case rc.StartSHA256 != r.StartSHA256:
				add(n, "gateway %s signed that it started from weights %s, the record says the round started from %s", rc.Gateway, short(rc.StartSHA256), short(r.StartSHA256))
			}
		}
		if !ordered {
			continue
		}
		if i == 0 && initialSHA256 != "" && r.StartSHA256 != initialSHA256 {
			add(n, "it did not start from the plan's initial weights (sha256 %s, the round says %s)", short(initialSHA256), short(r.StartSHA256))
		}
		if i > 0 && r.StartSHA256 != f.Rounds[i-1].ResultSHA256 {
			add(n, "the chain of weights is broken: it started from %s, but the round before produced %s", short(r.StartSHA256), short(f.Rounds[i-1].ResultSHA256))
		}
	}
	if k := len(f.Rounds); ordered && k > 0 && f.Rounds[k-1].ResultSHA256 != finalSHA256 {
		add(0, "the model's weights (sha256 %s) are not the last round's result (%s): they were changed after training", short(finalSHA256), short(f.Rounds[k-1].ResultSHA256))
	}
	if len(probs) > 0 {
		return &Error{Problems: probs}
	}
	return nil
}

// short abbreviates a hash for messages.
func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

// Count is the number of receipts in the record.
func (f *Federation) Count() int {
	n := 0
	for _, r := range f.Rounds {
		n += len(r.Receipts)
	}
	return n
}

// BytesSHA256 is the hex SHA-256 of an update sent as bytes (a plain
// update's packed float64 values; a masked update's packed words hash as
// UpdateSHA256 of the words).
func BytesSHA256(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
