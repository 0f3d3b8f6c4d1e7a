package secagg

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkRound measures one round of secure aggregation for n parties
// and vectors of the given length, all parties and the server in this one
// goroutine (so ns/op is the sum of everyone's work), beside the plain
// sum of the same vectors. It reports each party's share of the work
// (party-ns) and the server's (server-ns): in a federation the parties
// work in parallel on their own machines, so a round waits about
// party-ns + server-ns longer than without secure aggregation.
func BenchmarkRound(b *testing.B) {
	for _, n := range []int{3, 10} {
		for _, length := range []int{10_000, 100_000, 1_000_000} {
			x := randomInputs(partyIDs(n), length, 1)
			b.Run(fmt.Sprintf("parties=%d/params=%d/plain", n, length), func(b *testing.B) {
				for b.Loop() {
					sum := make([]uint32, length)
					for _, v := range x {
						for i, w := range v {
							sum[i] += w
						}
					}
				}
			})
			b.Run(fmt.Sprintf("parties=%d/params=%d/secagg", n, length), func(b *testing.B) {
				var party, server float64
				for b.Loop() {
					p, s := benchRound(b, n, length, x)
					party += p
					server += s
				}
				b.ReportMetric(party/float64(b.N)/float64(n), "party-ns")
				b.ReportMetric(server/float64(b.N), "server-ns")
			})
		}
	}
}

// BenchmarkRoundGraph compares, at 100 parties, secure aggregation with
// every party masking and sharing with every other (degree 0) against
// SecAgg+ with a random graph of degree DegreeFor(100) = 16: per-party work
// and the server's, as in BenchmarkRound.
func BenchmarkRoundGraph(b *testing.B) {
	const n, length = 100, 10_000
	x := randomInputs(partyIDs(n), length, 1)
	for _, degree := range []int{0, DegreeFor(n)} {
		b.Run(fmt.Sprintf("parties=%d/params=%d/degree=%d", n, length, degree), func(b *testing.B) {
			var party, server float64
			for b.Loop() {
				p, s := benchGraphRound(b, n, length, degree, x)
				party += p
				server += s
			}
			b.ReportMetric(party/float64(b.N)/float64(n), "party-ns")
			b.ReportMetric(server/float64(b.N), "server-ns")
		})
	}
}

func partyIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("gw-%02d", i)
	}
	return ids
}

// benchRound plays one round without dropouts and returns the nanoseconds
// spent in the parties' steps and in the server's.
func benchRound(b *testing.B, n, length int, x map[string][]uint32) (party, server float64) {
	return benchGraphRound(b, n, length, 0, x)
}

// benchGraphRound is benchRound with SecAgg+ of the given degree (0: every
// party with every other).
func benchGraphRound(b *testing.B, n, length, degree int, x map[string][]uint32) (party, server float64) {
	b.StopTimer()
	f := newGraphFixture(b, n, length, degree)
	b.StartTimer()
	clock := func(acc *float64, fn func()) {
		t0 := nowNanos()
		fn()
		*acc += float64(nowNanos() - t0)
	}
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	var ads []Advertisement
	for _, id := range f.p.Parties {
		clock(&party, func() {
			a, err := f.parties[id].Advertise()
			must(err)
			ads = append(ads, a)
		})
		clock(&server, func() { must(f.srv.AddAdvertisement(ads[len(ads)-1])) })
	}
	clock(&server, func() {
		var err error
		ads, err = f.srv.Advertisements()
		must(err)
	})
	for _, id := range f.p.Parties {
		var sh []EncryptedShare
		clock(&party, func() {
			var err error
			sh, err = f.parties[id].ShareKeys(ads)
			must(err)
		})
		clock(&server, func() { must(f.srv.AddShares(id, sh)) })
	}
	for _, id := range f.p.Parties {
		var in []EncryptedShare
		clock(&server, func() {
			var err error
			in, err = f.srv.SharesFor(id)
			must(err)
		})
		var y MaskedInput
		clock(&party, func() {
			var err error
			y, err = f.parties[id].MaskInput(x[id], in)
			must(err)
		})
		clock(&server, func() { must(f.srv.AddMasked(y)) })
	}
	var u3 []string
	clock(&server, func() {
		var err error
		u3, err = f.srv.Survivors()
		must(err)
	})
	for _, id := range u3 {
		var c Consistency
		clock(&party, func() {
			var err error
			c, err = f.parties[id].SignSurvivors(u3)
			must(err)
		})
		clock(&server, func() { must(f.srv.AddConsistency(c)) })
	}
	var sigs []Consistency
	clock(&server, func() {
		var err error
		sigs, err = f.srv.Consistencies()
		must(err)
	})
	for _, id := range u3 {
		var r Reveal
		clock(&party, func() {
			var err error
			r, err = f.parties[id].Unmask(u3, sigs)
			must(err)
		})
		clock(&server, func() { must(f.srv.AddReveal(r)) })
	}
	clock(&server, func() {
		_, err := f.srv.Sum()
		must(err)
	})
	return party, server
}

func nowNanos() int64 { return time.Now().UnixNano() }
