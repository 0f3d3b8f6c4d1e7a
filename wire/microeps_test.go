package wire

import "testing"

// TestMicroEpsCharge: a cost in micro-epsilon is never less than what is spent,
// and float noise in eps*1e6 does not add a micro-epsilon.
func TestMicroEpsCharge(t *testing.T) {
	for eps, want := range map[float64]MicroEps{
		0.0079: 7900, 0.1: 100_000, 0.3: 300_000, 0.523: 523_000, 1: 1_000_000, 2.7: 2_700_000,
		1.4999e-6: 2, 1e-6: 1, 1e-7: 1, 2.0000001e-3: 2001, 1e6: 1e12,
	} {
		if got := MicroEpsCharge(eps); got != want {
			t.Errorf("MicroEpsCharge(%v) = %d, want %d", eps, got, want)
		}
	}
	for i := 1; i <= 10000; i++ { // every epsilon with four decimals: exact
		eps := float64(i) / 1e4
		if got := MicroEpsCharge(eps); got != MicroEps(i)*100 {
			t.Fatalf("MicroEpsCharge(%v) = %d, want %d", eps, got, i*100)
		}
	}
}

// TestMicroEpsNearest: amounts a person gives round to the nearest whole
// micro-epsilon, both ways, and convert back exactly.
func TestMicroEpsNearest(t *testing.T) {
	for eps, want := range map[float64]MicroEps{0.0079: 7900, 1.4999e-6: 1, 1.5e-6: 2, -0.25: -250_000, 0: 0, 1e6: 1e12} {
		if got := MicroEpsNearest(eps); got != want {
			t.Errorf("MicroEpsNearest(%v) = %d, want %d", eps, got, want)
		}
		if got := want.Epsilon(); MicroEpsNearest(got) != want {
			t.Errorf("%d.Epsilon() = %v does not round-trip", want, got)
		}
	}
	for _, bad := range []float64{-1, 1e6 + 1} {
		if CheckEpsilon(bad, false) == nil {
			t.Errorf("CheckEpsilon(%v, false) accepted", bad)
		}
	}
	if CheckEpsilon(-1, true) != nil || CheckEpsilon(1e6, false) != nil {
		t.Error("CheckEpsilon refused an epsilon in range")
	}
}
