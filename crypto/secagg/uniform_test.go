package secagg

import (
	"math"
	mrand "math/rand/v2"
	"slices"
	"sort"
	"testing"

	"gonum.org/v1/gonum/stat/distuv"
)

// Both tests below reject uniformity at significance 1e-6, so a correct
// implementation fails them about once in a million runs; the plain
// (unmasked) vector is checked too, to show they have the power to fail.
const alpha = 1e-6

// chiSquareUniform reports whether the words' top bytes pass a chi-square
// test of uniformity over 256 bins, and the statistic.
func chiSquareUniform(w []uint32, shift uint) (bool, float64) {
	var bins [256]float64
	for _, v := range w {
		bins[(v>>shift)&0xff]++
	}
	exp := float64(len(w)) / 256
	var stat float64
	for _, o := range bins {
		stat += (o - exp) * (o - exp) / exp
	}
	crit := distuv.ChiSquared{K: 255}.Quantile(1 - alpha)
	return stat < crit, stat
}

// ksUniform is the Kolmogorov-Smirnov test of the words / 2^32 against U(0,1).
func ksUniform(w []uint32) (bool, float64) {
	u := make([]float64, len(w))
	for i, v := range w {
		u[i] = (float64(v) + 0.5) / (1 << 32)
	}
	sort.Float64s(u)
	n := float64(len(u))
	var d float64
	for i, x := range u {
		d = max(d, math.Abs(float64(i+1)/n-x), math.Abs(x-float64(i)/n))
	}
	// Asymptotic critical value: P(sqrt(n) D > c) ~ 2 exp(-2 c^2).
	crit := math.Sqrt(-math.Log(alpha/2)/2) / math.Sqrt(n)
	return d < crit, d
}

// model is a plausible update: quantised row-weighted small weights, a row
// count and a loss, the way a federation packs them.
func model(r *mrand.Rand, length int, q Quantizer) []uint32 {
	x := make([]float64, length)
	for i := range x {
		x[i] = 300 * 0.05 * r.NormFloat64() // 300 rows times a small weight change
	}
	x[0], x[1] = 300, 300*0.61 // rows, rows*loss
	w := make([]uint32, length)
	q.Encode(w, x)
	return w
}

// Acceptance 4: what the coordinator receives from one gateway looks
// uniformly random without the others' masks, while the unmasked sum is the
// plain sum — to quantisation error, also with a gateway lost after masking.
func TestMaskedInputIsUniformAndSumIsExact(t *testing.T) {
	const n, length = 3, 1 << 16
	q, err := NewQuantizer(1e5, n)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, n, length)
	r := mrand.New(mrand.NewPCG(11, 12))
	x := map[string][]uint32{}
	plain := make([][]float64, 0, n)
	for _, id := range f.p.Parties {
		x[id] = model(r, length, q)
		v := make([]float64, length)
		q.Decode(v, x[id])
		plain = append(plain, v)
	}

	// The plain update is far from uniform: the tests can tell.
	if ok, stat := chiSquareUniform(x["gw-00"], 24); ok {
		t.Fatalf("chi-square does not reject the plain update (stat %v)", stat)
	}
	if ok, d := ksUniform(x["gw-00"]); ok {
		t.Fatalf("KS does not reject the plain update (D %v)", d)
	}

	// Play the round by hand to keep the masked input the server received.
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
	for _, id := range f.p.Parties {
		sh, err := f.parties[id].ShareKeys(ads)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.srv.AddShares(id, sh); err != nil {
			t.Fatal(err)
		}
	}
	received := map[string][]uint32{}
	for _, id := range f.p.Parties {
		in, err := f.srv.SharesFor(id)
		if err != nil {
			t.Fatal(err)
		}
		y, err := f.parties[id].MaskInput(x[id], in)
		if err != nil {
			t.Fatal(err)
		}
		received[id] = y.Words
		if err := f.srv.AddMasked(y); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range f.p.Parties {
		for _, shift := range []uint{0, 8, 16, 24} {
			if ok, stat := chiSquareUniform(received[id], shift); !ok {
				t.Errorf("%s: masked words, byte %d: chi-square %v rejects uniformity", id, shift/8, stat)
			}
		}
		if ok, d := ksUniform(received[id]); !ok {
			t.Errorf("%s: masked words: KS D = %v rejects uniformity", id, d)
		}
	}

	// gw-01 is lost after sending its masked input: it never reveals.
	u3, err := f.srv.Survivors()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"gw-00", "gw-02"} {
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
		t.Fatal(err)
	}
	for _, id := range []string{"gw-00", "gw-02"} {
		rv, err := f.parties[id].Unmask(u3, sigs)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.srv.AddReveal(rv); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := f.srv.Sum()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float64, length)
	q.Decode(got, sum)
	for i := range got {
		want := plain[0][i] + plain[1][i] + plain[2][i]
		if math.Abs(got[i]-want) > q.Error(n) {
			t.Fatalf("word %d: sum %v, plain %v", i, got[i], want)
		}
	}
	if !slices.Equal(u3, f.p.Parties) {
		t.Fatalf("survivors %v", u3)
	}
}

// With a party lost after sharing keys and before masking, the sum is the
// survivors' plain sum of reals, to quantisation error.
func TestDroppedBeforeMaskingRealSum(t *testing.T) {
	const n, length = 5, 4096
	q, err := NewQuantizer(1e4, n)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, n, length)
	r := mrand.New(mrand.NewPCG(5, 6))
	x := map[string][]uint32{}
	want := make([]float64, length)
	for _, id := range f.p.Parties {
		v := make([]float64, length)
		for i := range v {
			v[i] = r.NormFloat64() * 100
		}
		x[id] = make([]uint32, length)
		q.Encode(x[id], v)
		if id != "gw-03" {
			for i := range v {
				want[i] += v[i]
			}
		}
	}
	sum, _, err := f.run(t, x, drops{"gw-03": "mask"})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float64, length)
	q.Decode(got, sum)
	for i := range got {
		if math.Abs(got[i]-want[i]) > q.Error(n) {
			t.Fatalf("word %d: %v, want %v", i, got[i], want[i])
		}
	}
}
