package secagg

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
)

// Shamir secret sharing over the prime field GF(p), p = 2^521 - 1 (a
// Mersenne prime), large enough to hold any 32-byte secret as one element.
// A share is the evaluation of a random polynomial of degree t-1 whose
// constant term is the secret, at x = 1..n; any t shares give the secret
// back by Lagrange interpolation at 0, fewer say nothing about it.

// fieldBytes is the fixed size of an encoded field element (521 bits).
const fieldBytes = 66

var prime = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 521), big.NewInt(1))

// share is one point (x, y) of a sharing polynomial.
type share struct {
	x int
	y *big.Int
}

// split shares secret (at most 32 bytes) t-of-n; share i is the value at x = i+1.
func split(secret []byte, t, n int) ([]share, error) {
	if len(secret) > 32 {
		return nil, fmt.Errorf("secagg: secret of %d bytes, at most 32", len(secret))
	}
	if t < 1 || t > n {
		return nil, fmt.Errorf("secagg: threshold %d of %d shares", t, n)
	}
	coef := make([]*big.Int, t)
	coef[0] = new(big.Int).SetBytes(secret)
	for i := 1; i < t; i++ {
		c, err := rand.Int(rand.Reader, prime)
		if err != nil {
			return nil, fmt.Errorf("secagg: random coefficient: %w", err)
		}
		coef[i] = c
	}
	out := make([]share, n)
	for i := range out {
		out[i] = share{x: i + 1, y: evalPoly(coef, big.NewInt(int64(i+1)))}
	}
	return out, nil
}

// evalPoly evaluates the polynomial with coefficients coef (constant first) at x, mod p (Horner).
func evalPoly(coef []*big.Int, x *big.Int) *big.Int {
	y := new(big.Int)
	for i := len(coef) - 1; i >= 0; i-- {
		y.Mul(y, x)
		y.Add(y, coef[i])
		y.Mod(y, prime)
	}
	return y
}

// interpolate returns the value at x of the polynomial of degree len(pts)-1
// through pts, mod p. The x coordinates must be distinct.
func interpolate(pts []share, x int) *big.Int {
	X := big.NewInt(int64(x))
	sum := new(big.Int)
	num, den, tmp := new(big.Int), new(big.Int), new(big.Int)
	for i, pi := range pts {
		num.SetInt64(1)
		den.SetInt64(1)
		for j, pj := range pts {
			if i == j {
				continue
			}
			num.Mul(num, tmp.Sub(X, big.NewInt(int64(pj.x))))
			num.Mod(num, prime)
			den.Mul(den, tmp.SetInt64(int64(pi.x-pj.x)))
			den.Mod(den, prime)
		}
		den.ModInverse(den, prime)
		term := new(big.Int).Mul(pi.y, num)
		term.Mul(term, den)
		sum.Add(sum, term)
		sum.Mod(sum, prime)
	}
	return sum
}

// errInconsistentShares means the shares do not lie on one polynomial of
// degree t-1: one of them is wrong.
var errInconsistentShares = errors.New("secagg: the revealed shares are inconsistent")

// combine returns the secret (out bytes, big-endian) from at least t shares
// with distinct x. Shares beyond the first t are checked against the
// polynomial the first t define, so a wrong share is detected whenever more
// than t were revealed.
func combine(shares []share, t, out int) ([]byte, error) {
	if len(shares) < t {
		return nil, fmt.Errorf("%w: %d shares, need %d", ErrBelowThreshold, len(shares), t)
	}
	seen := make(map[int]bool, len(shares))
	for _, s := range shares {
		if seen[s.x] || s.x < 1 {
			return nil, errors.New("secagg: duplicate or invalid share index")
		}
		seen[s.x] = true
	}
	base := shares[:t]
	for _, s := range shares[t:] {
		if interpolate(base, s.x).Cmp(s.y) != 0 {
			return nil, errInconsistentShares
		}
	}
	v := interpolate(base, 0)
	if v.BitLen() > 8*out {
		return nil, errInconsistentShares
	}
	return v.FillBytes(make([]byte, out)), nil
}

// encodeElem writes a field element in fieldBytes big-endian bytes.
func encodeElem(v *big.Int) []byte { return v.FillBytes(make([]byte, fieldBytes)) }

// decodeElem reads a field element, refusing values outside [0, p).
func decodeElem(b []byte) (*big.Int, error) {
	if len(b) != fieldBytes {
		return nil, fmt.Errorf("secagg: share of %d bytes, want %d", len(b), fieldBytes)
	}
	v := new(big.Int).SetBytes(b)
	if v.Cmp(prime) >= 0 {
		return nil, errors.New("secagg: share outside the field")
	}
	return v, nil
}
