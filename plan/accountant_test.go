package plan

import (
	"math"
	"testing"
)

// Reference values from the RDP accountant of Google's dp_accounting (the
// successor of TF Privacy's rdp_accountant), file
// python/dp_accounting/dp_accounting/rdp/rdp_privacy_accountant_test.py of
// github.com/google/differential-privacy:
//   - test_compute_rdp_poisson_sampled_gaussian: q=0.01, sigma=2.5, 50 steps,
//     orders 1.5, 2.5, 5, 50, 100 (integer and fractional orders);
//   - test_compute_epsilon_delta_pure_dp: constant RDP 1.1 at orders 2..32,
//     delta 1e-5 -> epsilon 1.32783806176 at order 32;
//   - test_compute_epsilon_delta_gaussian: q=1, sigma=4.530877117 is exactly
//     (1, 1e-6)-DP over orders 1.000..99.999.
func TestRDPReference(t *testing.T) {
	for _, c := range []struct {
		order, want float64
	}{
		{1.5, 6.70579741e-04},
		{2.5, 1.08548710e-03},
		{5, 2.18075656e-03},
		{50, 2.38460375e-02},
		{100, 1.67416308e02},
	} {
		got, err := RDP(0.01, 2.5, 50, c.order)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-c.want) > 0.01*c.want {
			t.Errorf("RDP(q=0.01, sigma=2.5, 50 steps, order %v) = %.8g, reference %.8g", c.order, got, c.want)
		} else {
			t.Logf("order %v: %.8g (reference %.8g, rel. diff %.2g)", c.order, got, c.want, math.Abs(got-c.want)/c.want)
		}
	}
	if r, _ := RDP(0.01, 2.5, 50, math.Inf(1)); !math.IsInf(r, 1) {
		t.Errorf("RDP at order inf = %v", r)
	}
}

func TestEpsilonConversionReference(t *testing.T) {
	var orders, rdp []float64
	for a := 2; a <= 32; a++ {
		orders = append(orders, float64(a))
		rdp = append(rdp, 1.1)
	}
	eps, order, err := EpsilonFromRDP(orders, rdp, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(eps-1.32783806176) > 1e-9 || order != 32 {
		t.Errorf("epsilon %.11f at order %v, reference 1.32783806176 at 32", eps, order)
	}

	orders, rdp = nil, nil
	for i := 1000; i < 100000; i++ {
		a := 0.001 * float64(i)
		r, err := RDP(1, 4.530877117, 1, max(a, 1.0000001))
		if err != nil {
			t.Fatal(err)
		}
		orders = append(orders, a)
		rdp = append(rdp, r)
	}
	eps, _, err = EpsilonFromRDP(orders, rdp, 1e-6)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(eps-1) > 1e-6 {
		t.Errorf("full-batch Gaussian sigma 4.530877117: epsilon %.9f, reference 1 at delta 1e-6", eps)
	}
}

// TestEpsilonProperties checks monotonicity and the edge cases.
func TestEpsilonProperties(t *testing.T) {
	base, err := Epsilon(0.01, 1.1, 1000, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	more, _ := Epsilon(0.01, 1.1, 2000, 1e-5)
	noisier, _ := Epsilon(0.01, 2, 1000, 1e-5)
	bigger, _ := Epsilon(0.02, 1.1, 1000, 1e-5)
	if !(more > base && noisier < base && bigger > base) {
		t.Errorf("epsilon not monotone: base %v, more steps %v, more noise %v, larger sample %v", base, more, noisier, bigger)
	}
	t.Logf("q=0.01 sigma=1.1 1000 steps delta 1e-5: epsilon %.4f", base)
	if e, _ := Epsilon(0, 1, 100, 1e-5); e != 0 {
		t.Errorf("q=0: epsilon %v", e)
	}
	for _, c := range []struct {
		q, s  float64
		steps int
		delta float64
	}{{-0.1, 1, 1, 1e-5}, {1.1, 1, 1, 1e-5}, {0.1, 0, 1, 1e-5}, {0.1, 1, -1, 1e-5}, {0.1, 1, 1, 0}, {0.1, 1, 1, 1}, {math.NaN(), 1, 1, 1e-5}} {
		if _, err := Epsilon(c.q, c.s, c.steps, c.delta); err == nil {
			t.Errorf("Epsilon%+v accepted", c)
		}
	}
}
