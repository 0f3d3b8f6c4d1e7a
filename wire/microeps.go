package wire

import (
	"fmt"
	"math"
)

// MicroEps is an amount of privacy budget in whole micro-epsilon (a
// millionth of an epsilon). Budgets, reservations, charges and caps are
// kept, compared and summed in this unit; float epsilon exists only at the
// edges (what a person types, what a view shows). Stored records keep the
// plain int64 of the same unit.
//
// Build one with the constructor that names its rounding:
// MicroEpsCharge for what spending epsilon costs (rounded up),
// MicroEpsNearest for an amount a person gives (a grant, a cap, an ask).
type MicroEps int64

// MicroPerEpsilon is the number of micro-epsilon in one epsilon.
const MicroPerEpsilon = 1_000_000

// MaxEpsilon bounds any epsilon a person or a peer gives.
const MaxEpsilon = 1e6

// MicroEpsCharge is what spending eps costs in whole micro-epsilon: rounded
// up, never less than what the mechanism spends, and at least one. eps*1e6
// carries float noise (0.0079*1e6 = 7900.000000000001): within a billionth
// of a whole number it counts as that number, so 0.0079 costs 7,900.
// eps must be finite and positive (see CheckEpsilon).
func MicroEpsCharge(eps float64) MicroEps {
	v := eps * MicroPerEpsilon
	r := math.Round(v)
	if v-r > 1e-9*max(1, v) {
		r = math.Ceil(v)
	}
	return MicroEps(max(1, int64(r)))
}

// MicroEpsNearest is eps in micro-epsilon rounded to the nearest whole one:
// for amounts a person gives (a budget grant, a cap, a rule's maximum, a
// budget request), never for a charge. eps must be finite (see CheckEpsilon).
func MicroEpsNearest(eps float64) MicroEps {
	return MicroEps(math.Round(eps * MicroPerEpsilon))
}

// Epsilon is m in epsilon, for views.
func (m MicroEps) Epsilon() float64 { return float64(m) / MicroPerEpsilon }

// Epsilon is a stored micro-epsilon amount in epsilon, for views.
func Epsilon(micro int64) float64 { return MicroEps(micro).Epsilon() }

// CheckEpsilon refuses an epsilon that is not a finite number of at most
// MaxEpsilon in magnitude, or negative when negative is false.
func CheckEpsilon(eps float64, negative bool) error {
	if math.IsNaN(eps) || math.IsInf(eps, 0) || math.Abs(eps) > MaxEpsilon {
		return fmt.Errorf("must be a finite number of at most %g", float64(MaxEpsilon))
	}
	if eps < 0 && !negative {
		return fmt.Errorf("must not be negative")
	}
	return nil
}
