package secagg

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
)

// SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, "Secure Single-Server
// Aggregation with (Poly)Logarithmic Overhead", CCS 2020): with Degree k > 0
// a party agrees masks and shares its secrets only with its k neighbours in
// a random k-regular graph, not with every other party, so its work and
// messages grow with k (O(log n) suffices) rather than n. The graph is a
// Harary graph (each position joined to the k/2 positions on either side
// of it around a ring) over the parties placed in a random order drawn from
// the round's public context: every party and the server derive the same
// graph, and nobody chooses it. A party's secrets are Shamir-shared among
// its neighbourhood (the party and its k neighbours) with the
// neighbourhood threshold; a dropped party's masks are removed from the
// sum with the shares of its surviving neighbours.

const labelGraph = "fedgrid/secagg/v1/graph"

// Degree choice for n parties: DegreeFor returns the smallest even k with
// k >= 2*ceil(log2 n)+2, or 0 (every party with every other) when that is
// not below n-1.
func DegreeFor(n int) int {
	k := 2
	for m := 1; m < n; m *= 2 {
		k += 2
	}
	if k >= n-1 {
		return 0
	}
	return k
}

// neighbourhoodThreshold is the shares needed to rebuild one party's
// secrets: Threshold for the complete graph; with Degree k,
// NeighbourThreshold or, when 0, a majority of the k+1 parties of a
// neighbourhood.
func (p Params) shareThreshold() int {
	if p.Degree == 0 {
		return p.Threshold
	}
	if p.NeighbourThreshold > 0 {
		return p.NeighbourThreshold
	}
	return MinThreshold(p.Degree + 1)
}

func (p Params) validateGraph() error {
	n, k := len(p.Parties), p.Degree
	if k == 0 {
		if p.NeighbourThreshold != 0 {
			return fmt.Errorf("secagg: a neighbourhood threshold needs a degree")
		}
		return nil
	}
	if k < 2 || k%2 != 0 || k > n-1 {
		return fmt.Errorf("secagg: degree %d for %d parties: it must be even, 2 to %d", k, n, n-1)
	}
	if t := p.NeighbourThreshold; t != 0 && (t < 2 || 2*t <= k+1 || t > k+1) {
		return fmt.Errorf("secagg: neighbourhood threshold %d of %d: it must be more than half and at least 2", t, k+1)
	}
	return nil
}

// graph is the round's neighbour graph: pos[i] is party i's place on the ring.
type graph struct {
	n, half int // half = k/2; 0: complete graph
	pos     []int
}

// newGraph derives the round's graph from its public context.
func newGraph(p Params) graph {
	n := len(p.Parties)
	g := graph{n: n, half: p.Degree / 2}
	if p.Degree == 0 {
		return g
	}
	seed := sha256.Sum256(lp(lp(nil, []byte(labelGraph)), p.Context))
	r := rand.NewChaCha8(seed)
	// Fisher-Yates with unbiased bounded draws (rejection), written out so
	// that the order does not depend on a library's choice of algorithm.
	g.pos = make([]int, n)
	for i := range g.pos {
		g.pos[i] = i
	}
	for i := n - 1; i > 0; i-- {
		bound := uint64(i + 1)
		limit := -bound % bound // 2^64 mod bound
		var x uint64
		for {
			if x = r.Uint64(); x >= limit {
				break
			}
		}
		j := int(x % bound)
		g.pos[i], g.pos[j] = g.pos[j], g.pos[i]
	}
	return g
}

// adjacent reports whether parties i and j (indices, i != j) are neighbours.
func (g graph) adjacent(i, j int) bool {
	if g.half == 0 {
		return true
	}
	d := g.pos[i] - g.pos[j]
	if d < 0 {
		d = -d
	}
	return min(d, g.n-d) <= g.half
}

// Neighbours returns the parties that party shares masks and secrets with
// in this round (every other party with Degree 0), sorted.
func (p Params) Neighbours(party string) []string {
	i := p.index(party)
	if i < 0 {
		return nil
	}
	g := newGraph(p)
	var out []string
	for j, v := range p.Parties {
		if j != i && g.adjacent(i, j) {
			out = append(out, v)
		}
	}
	return out
}
