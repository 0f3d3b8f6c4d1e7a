package secagg

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"math/big"
	mrand "math/rand/v2"
	"slices"
	"testing"
)

// edSigner signs with an ed25519 key, like a libp2p peer key does.
type edSigner ed25519.PrivateKey

func (k edSigner) Sign(msg []byte) ([]byte, error) {
	return ed25519.Sign(ed25519.PrivateKey(k), msg), nil
}

type keyring map[string]ed25519.PublicKey

func (kr keyring) verify(party string, msg, sig []byte) error {
	pub, ok := kr[party]
	if !ok || !ed25519.Verify(pub, msg, sig) {
		return errors.New("bad signature")
	}
	return nil
}

type fixture struct {
	p       Params
	kr      keyring
	parties map[string]*Party
	srv     *Server
}

func newFixture(t testing.TB, n, length int) *fixture {
	t.Helper()
	return newGraphFixture(t, n, length, 0)
}

// newGraphFixture is a round of SecAgg+ with the given degree (0: every
// party with every other).
func newGraphFixture(t testing.TB, n, length, degree int) *fixture {
	t.Helper()
	f := &fixture{kr: keyring{}, parties: map[string]*Party{}}
	ids := make([]string, n)
	signers := map[string]edSigner{}
	for i := range ids {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = fmt.Sprintf("gw-%02d", i)
		f.kr[ids[i]] = pub
		signers[ids[i]] = edSigner(priv)
	}
	f.p = Params{Context: []byte("test federation/round 1"), Parties: ids, Threshold: MinThreshold(n), Length: length, Degree: degree}
	for _, id := range ids {
		c, err := NewParty(f.p, id, signers[id], f.kr.verify)
		if err != nil {
			t.Fatal(err)
		}
		f.parties[id] = c
	}
	srv, err := NewServer(f.p, f.kr.verify)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	return f
}

// drops says who stops before which step: "keys", "shares", "mask" (after
// sharing, before sending the masked input), "reveal" (after masking).
type drops map[string]string

// run plays one round with inputs x and returns the server's sum and the survivors.
func (f *fixture) run(t *testing.T, x map[string][]uint32, d drops) ([]uint32, []string, error) {
	t.Helper()
	alive := func(id, step string) bool {
		s, ok := d[id]
		if !ok {
			return true
		}
		order := []string{"keys", "shares", "mask", "reveal"}
		return slices.Index(order, step) < slices.Index(order, s)
	}
	for _, id := range f.p.Parties {
		if !alive(id, "keys") {
			continue
		}
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
		return nil, nil, err
	}
	for _, id := range f.p.Parties {
		if !alive(id, "shares") {
			continue
		}
		sh, err := f.parties[id].ShareKeys(ads)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.srv.AddShares(id, sh); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range f.p.Parties {
		if !alive(id, "mask") {
			continue
		}
		in, err := f.srv.SharesFor(id)
		if err != nil {
			return nil, nil, err
		}
		y, err := f.parties[id].MaskInput(x[id], in)
		if err != nil {
			return nil, nil, err
		}
		if err := f.srv.AddMasked(y); err != nil {
			t.Fatal(err)
		}
	}
	u3, err := f.srv.Survivors()
	if err != nil {
		return nil, nil, err
	}
	for _, id := range u3 {
		if !alive(id, "reveal") {
			continue
		}
		c, err := f.parties[id].SignSurvivors(u3)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.srv.AddConsistency(c); err != nil {
			t.Fatal(err)
		}
	}
	sigs, err := f.srv.Consistencies()
	if err != nil {
		return nil, nil, err
	}
	for _, id := range u3 {
		if !alive(id, "reveal") {
			continue
		}
		r, err := f.parties[id].Unmask(u3, sigs)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.srv.AddReveal(r); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := f.srv.Sum()
	return sum, u3, err
}

func randomInputs(ids []string, length int, seed uint64) map[string][]uint32 {
	r := mrand.New(mrand.NewPCG(seed, 1))
	x := map[string][]uint32{}
	for _, id := range ids {
		v := make([]uint32, length)
		for i := range v {
			v[i] = r.Uint32()
		}
		x[id] = v
	}
	return x
}

func plainSum(x map[string][]uint32, ids []string, length int) []uint32 {
	s := make([]uint32, length)
	for _, id := range ids {
		for i, w := range x[id] {
			s[i] += w
		}
	}
	return s
}

func TestSumWithoutDropouts(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			f := newFixture(t, n, 1000)
			x := randomInputs(f.p.Parties, 1000, uint64(n))
			sum, u3, err := f.run(t, x, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(u3, f.p.Parties) {
				t.Fatalf("survivors %v", u3)
			}
			if !slices.Equal(sum, plainSum(x, f.p.Parties, 1000)) {
				t.Fatal("unmasked sum differs from the plain sum")
			}
		})
	}
}

func TestSumWithDropouts(t *testing.T) {
	cases := []struct {
		name string
		n    int
		d    drops
	}{
		{"before keys", 5, drops{"gw-01": "keys"}},
		{"before shares", 5, drops{"gw-03": "shares"}},
		{"after sharing, before masking", 3, drops{"gw-00": "mask"}},
		{"two after sharing", 5, drops{"gw-00": "mask", "gw-04": "mask"}},
		{"after masking, before reveal", 3, drops{"gw-02": "reveal"}},
		{"one before and one after masking", 5, drops{"gw-01": "mask", "gw-02": "reveal"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.n, 257)
			x := randomInputs(f.p.Parties, 257, 7)
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
			if !slices.Equal(sum, plainSum(x, want, 257)) {
				t.Fatal("unmasked sum differs from the survivors' plain sum")
			}
		})
	}
}

func TestBelowThreshold(t *testing.T) {
	for _, d := range []drops{
		{"gw-00": "keys", "gw-01": "keys"},
		{"gw-00": "mask", "gw-02": "mask"},
		{"gw-00": "reveal", "gw-01": "reveal"},
	} {
		f := newFixture(t, 3, 16)
		_, _, err := f.run(t, randomInputs(f.p.Parties, 16, 1), d)
		if !errors.Is(err, ErrBelowThreshold) {
			t.Fatalf("drops %v: err %v, want ErrBelowThreshold", d, err)
		}
	}
}

func TestParamsValidate(t *testing.T) {
	ok := Params{Context: []byte("c"), Parties: []string{"a", "b", "c"}, Threshold: 2, Length: 1}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []func(p *Params){
		func(p *Params) { p.Context = nil },
		func(p *Params) { p.Parties = []string{"b", "a", "c"} },
		func(p *Params) { p.Parties = []string{"a", "a", "c"} },
		func(p *Params) { p.Parties = []string{"a"} },
		func(p *Params) { p.Threshold = 1 },
		func(p *Params) { p.Threshold = 4 },
		func(p *Params) { p.Parties = []string{"a", "b", "c", "d"} }, // 2 of 4 is no majority
		func(p *Params) { p.Length = 0 },
	}
	for i, mod := range bad {
		p := ok
		mod(&p)
		if p.Validate() == nil {
			t.Errorf("case %d: invalid params accepted", i)
		}
	}
}

// A coordinator that swaps a party's mask key for its own is caught by every
// other party: the key is not signed by the party it names.
func TestSubstitutedKeyRefused(t *testing.T) {
	f := newFixture(t, 3, 8)
	var ads []Advertisement
	for _, id := range f.p.Parties {
		a, err := f.parties[id].Advertise()
		if err != nil {
			t.Fatal(err)
		}
		ads = append(ads, a)
	}
	evil, err := NewParty(f.p, "gw-01", edSigner(ed25519.NewKeyFromSeed(make([]byte, 32))), f.kr.verify)
	if err != nil {
		t.Fatal(err)
	}
	ea, err := evil.Advertise()
	if err != nil {
		t.Fatal(err)
	}
	ads[1].MaskKey = ea.MaskKey
	if _, err := f.parties["gw-00"].ShareKeys(ads); err == nil {
		t.Fatal("a substituted key was accepted")
	}
	if err := f.srv.AddAdvertisement(ads[1]); err == nil {
		t.Fatal("the server accepted a substituted key")
	}
}

// A party reveals for one survivor set only, and only once the threshold of
// survivors signed it.
func TestRevealOnceAndOnlyWhenConfirmed(t *testing.T) {
	f := newFixture(t, 3, 8)
	ads := []Advertisement{}
	for _, id := range f.p.Parties {
		a, _ := f.parties[id].Advertise()
		ads = append(ads, a)
	}
	shares := map[string][]EncryptedShare{}
	for _, id := range f.p.Parties {
		sh, err := f.parties[id].ShareKeys(ads)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range sh {
			shares[e.To] = append(shares[e.To], e)
		}
	}
	for _, id := range f.p.Parties {
		if _, err := f.parties[id].MaskInput(make([]uint32, 8), shares[id]); err != nil {
			t.Fatal(err)
		}
	}
	all := f.p.Parties
	two := []string{"gw-00", "gw-01"}
	p0 := f.parties["gw-00"]
	own, err := p0.SignSurvivors(all)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p0.Unmask(all, []Consistency{own}); !errors.Is(err, ErrBelowThreshold) {
		t.Fatalf("revealed with one confirmation: %v", err)
	}
	c1, _ := f.parties["gw-01"].SignSurvivors(all)
	forged := Consistency{Party: "gw-02", Sig: own.Sig}
	if _, err := p0.Unmask(all, []Consistency{own, forged}); !errors.Is(err, ErrBelowThreshold) {
		t.Fatalf("a forged confirmation counted: %v", err)
	}
	r, err := p0.Unmask(all, []Consistency{own, c1})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Seeds) != 3 || len(r.MaskKeys) != 0 {
		t.Fatalf("reveal for all survivors: %d seeds, %d mask keys", len(r.Seeds), len(r.MaskKeys))
	}
	// The same server now claims gw-02 dropped: revealing gw-02's mask key
	// too would unmask its input. Refused.
	s0, _ := p0.SignSurvivors(two)
	s1, _ := f.parties["gw-01"].SignSurvivors(two)
	if _, err := p0.Unmask(two, []Consistency{s0, s1}); err == nil {
		t.Fatal("revealed for a second survivor set")
	}
	if _, err := f.parties["gw-02"].SignSurvivors(two); err == nil {
		t.Fatal("a party signed a survivor set without itself")
	}
}

func TestMaskedInputTampered(t *testing.T) {
	f := newFixture(t, 3, 8)
	ads := []Advertisement{}
	for _, id := range f.p.Parties {
		a, _ := f.parties[id].Advertise()
		ads = append(ads, a)
	}
	shares := map[string][]EncryptedShare{}
	for _, id := range f.p.Parties {
		sh, _ := f.parties[id].ShareKeys(ads)
		for _, e := range sh {
			shares[e.To] = append(shares[e.To], e)
		}
	}
	in := shares["gw-00"]
	in[0].Ciphertext[0] ^= 1
	if _, err := f.parties["gw-00"].MaskInput(make([]uint32, 8), in); err == nil {
		t.Fatal("a tampered share was accepted")
	}
}

func TestShamir(t *testing.T) {
	if !prime.ProbablyPrime(32) {
		t.Fatal("field modulus is not prime")
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	sh, err := split(secret, 3, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range [][]int{{0, 1, 2}, {4, 2, 0}, {1, 3, 4, 0}, {0, 1, 2, 3, 4}} {
		var pts []share
		for _, i := range idx {
			pts = append(pts, sh[i])
		}
		got, err := combine(pts, 3, 32)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(secret) {
			t.Fatalf("shares %v give another secret", idx)
		}
	}
	if _, err := combine(sh[:2], 3, 32); err == nil {
		t.Fatal("combined below the threshold")
	}
	bad := slices.Clone(sh)
	bad[4] = share{x: 5, y: new(big.Int).Add(sh[4].y, big.NewInt(1))}
	if _, err := combine(bad, 3, 32); !errors.Is(err, errInconsistentShares) {
		t.Fatalf("a wrong share went unnoticed: %v", err)
	}
}

func TestQuantizer(t *testing.T) {
	q, err := NewQuantizer(1000, 10)
	if err != nil {
		t.Fatal(err)
	}
	if 10*q.Bound*q.Scale >= 1<<31 || 20*q.Bound*q.Scale < 1<<31 {
		t.Fatalf("scale %v is not the finest that fits", q.Scale)
	}
	r := mrand.New(mrand.NewPCG(3, 3))
	sum := make([]uint32, 100)
	want := make([]float64, 100)
	for p := 0; p < 10; p++ {
		x := make([]float64, 100)
		for i := range x {
			x[i] = (r.Float64()*2 - 1) * 1000
			if i == 0 {
				x[i] = -1000 // the extremes do not wrap
			}
			want[i] += x[i]
		}
		w := make([]uint32, 100)
		if c := q.Encode(w, x); c != 0 {
			t.Fatalf("%d values clipped", c)
		}
		for i := range w {
			sum[i] += w[i]
		}
	}
	got := make([]float64, 100)
	q.Decode(got, sum)
	for i := range got {
		if math.Abs(got[i]-want[i]) > q.Error(10) {
			t.Fatalf("value %d: %v, want %v within %v", i, got[i], want[i], q.Error(10))
		}
	}
	w := make([]uint32, 3)
	if c := q.Encode(w, []float64{2000, math.NaN(), -5000}); c != 3 {
		t.Fatalf("clipped %d, want 3", c)
	}
}
