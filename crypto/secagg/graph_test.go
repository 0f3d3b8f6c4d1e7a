package secagg

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The neighbour graph is k-regular and symmetric, the same for everyone who
// knows the round's context, and another round gets another graph.
func TestGraph(t *testing.T) {
	for _, n := range []int{8, 31, 100} {
		k := DegreeFor(n)
		if k == 0 {
			k = 4
		}
		p := Params{Context: []byte("round 1"), Parties: partyIDs(n), Threshold: MinThreshold(n), Length: 1, Degree: k}
		if err := p.Validate(); err != nil {
			t.Fatalf("n=%d k=%d: %v", n, k, err)
		}
		nb := map[string][]string{}
		for _, u := range p.Parties {
			nb[u] = p.Neighbours(u)
			if len(nb[u]) != k {
				t.Fatalf("n=%d: %s has %d neighbours, want %d", n, u, len(nb[u]), k)
			}
		}
		for u, vs := range nb {
			for _, v := range vs {
				if !slices.Contains(nb[v], u) {
					t.Fatalf("n=%d: %s is a neighbour of %s but not the other way", n, v, u)
				}
			}
		}
		q := p
		q.Context = []byte("round 2")
		same := 0
		for _, u := range p.Parties {
			if slices.Equal(q.Neighbours(u), nb[u]) {
				same++
			}
		}
		if same == n {
			t.Fatalf("n=%d: round 2 has the graph of round 1", n)
		}
	}
	if k := DegreeFor(10); k != 0 {
		t.Errorf("DegreeFor(10) = %d: with 10 parties a log-degree graph is (almost) complete, want 0", k)
	}
	if k := DegreeFor(100); k != 16 {
		t.Errorf("DegreeFor(100) = %d, want 16", k)
	}
}

func TestGraphParamsValidate(t *testing.T) {
	base := Params{Context: []byte("c"), Parties: partyIDs(9), Threshold: 5, Length: 1}
	for _, tc := range []struct {
		degree, nt int
		ok         bool
	}{
		{4, 0, true}, {8, 0, true}, {4, 3, true}, {4, 5, true},
		{3, 0, false},  // odd
		{10, 0, false}, // more than n-1
		{4, 2, false},  // not a majority of the neighbourhood of 5
		{4, 6, false},  // more than the neighbourhood
		{0, 3, false},  // a neighbourhood threshold without a graph
	} {
		p := base
		p.Degree, p.NeighbourThreshold = tc.degree, tc.nt
		if err := p.Validate(); (err == nil) != tc.ok {
			t.Errorf("degree %d, neighbourhood threshold %d: %v, want ok %v", tc.degree, tc.nt, err, tc.ok)
		}
	}
}

// With SecAgg+ every party shares with its k neighbours only, and the sum
// is the survivors' sum whoever drops out at whichever step, as long as
// every neighbourhood keeps its threshold.
func TestGraphSumWithDropouts(t *testing.T) {
	const n, k, length = 20, 6, 301
	cases := []struct {
		name string
		d    drops
	}{
		{"none", nil},
		{"before keys", drops{"gw-03": "keys"}},
		{"before shares", drops{"gw-05": "shares", "gw-11": "shares"}},
		{"after sharing, before masking", drops{"gw-00": "mask", "gw-07": "mask", "gw-19": "mask"}},
		{"after masking, before reveal", drops{"gw-02": "reveal", "gw-13": "reveal"}},
		{"mixed", drops{"gw-01": "keys", "gw-04": "mask", "gw-09": "mask", "gw-15": "reveal"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newGraphFixture(t, n, length, k)
			for _, id := range f.p.Parties {
				if got := len(f.p.Neighbours(id)); got != k {
					t.Fatalf("%s has %d neighbours", id, got)
				}
			}
			x := randomInputs(f.p.Parties, length, 11)
			sum, u3, err := f.run(t, x, tc.d)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, id := range f.p.Parties {
				if s, ok := tc.d[id]; !ok || s == "reveal" {
					want = append(want, id)
				}
			}
			if !slices.Equal(u3, want) {
				t.Fatalf("survivors %v, want %v", u3, want)
			}
			if !slices.Equal(sum, plainSum(x, want, length)) {
				t.Fatal("unmasked sum differs from the survivors' plain sum")
			}
		})
	}
}

// Each party sends shares to its k neighbours only, and the server refuses
// a party's shares addressed to a non-neighbour.
func TestGraphSharesOnlyToNeighbours(t *testing.T) {
	f := newGraphFixture(t, 12, 8, 4)
	for _, id := range f.p.Parties {
		a, err := f.parties[id].Advertise()
		if err != nil {
			t.Fatal(err)
		}
		if err := f.srv.AddAdvertisement(a); err != nil {
			t.Fatal(err)
		}
	}
	ads, err := f.srv.Advertisements()
	if err != nil {
		t.Fatal(err)
	}
	u := f.p.Parties[0]
	sh, err := f.parties[u].ShareKeys(ads)
	if err != nil {
		t.Fatal(err)
	}
	var to []string
	for _, e := range sh {
		to = append(to, e.To)
	}
	slices.Sort(to)
	if !slices.Equal(to, f.p.Neighbours(u)) {
		t.Fatalf("%s sent shares to %v, its neighbours are %v", u, to, f.p.Neighbours(u))
	}
	var stranger string
	for _, v := range f.p.Parties[1:] {
		if !slices.Contains(to, v) {
			stranger = v
			break
		}
	}
	forged := append(slices.Clone(sh[1:]), EncryptedShare{From: u, To: stranger, Ciphertext: sh[0].Ciphertext})
	if err := f.srv.AddShares(u, forged); err == nil {
		t.Fatal("the server took a share for a non-neighbour")
	}
	if err := f.srv.AddShares(u, sh); err != nil {
		t.Fatal(err)
	}
}

// A round fails cleanly when a surviving party's neighbourhood keeps fewer
// than the neighbourhood threshold of revealers, though the survivors
// overall are many.
func TestGraphBelowNeighbourhoodThreshold(t *testing.T) {
	const n, k = 20, 4
	f := newGraphFixture(t, n, 16, k)
	victim := f.p.Parties[0]
	d := drops{}
	for _, v := range f.p.Neighbours(victim)[:k-1] { // the victim and one neighbour reveal: 2 < 3
		d[v] = "reveal"
	}
	_, _, err := f.run(t, randomInputs(f.p.Parties, 16, 3), d)
	if !errors.Is(err, ErrBelowThreshold) {
		t.Fatalf("err %v, want ErrBelowThreshold", err)
	}
	if want := fmt.Sprintf("self-mask of %s", victim); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err %v does not name %s", err, want)
	}
}
