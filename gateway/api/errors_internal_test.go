package api

import (
	"errors"
	"net/http"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/service"
)

// TestEveryErrorKindMapped: every service error kind but Internal has an
// HTTP status and code of its own (below 500, or 503 for setup required and
// unavailable); anything unclassified is a 500 that says nothing of its cause.
func TestEveryErrorKindMapped(t *testing.T) {
	for k := service.Invalid; k <= service.Unavailable; k++ {
		he := toHTTP(service.Errorf(k, "x"))
		if he.status >= 500 && he.status != http.StatusServiceUnavailable || he.code == "" || he.code == "internal" {
			t.Errorf("kind %d: %d %s", k, he.status, he.code)
		}
	}
	if he := toHTTP(errors.New("open /var/lib/db: permission denied")); he.status != http.StatusInternalServerError || he.message != "internal error" {
		t.Errorf("an internal error answered %+v", he)
	}
	if he := toHTTP(service.Errorf(service.InsufficientBudget, "x")); he.status != http.StatusConflict || he.code != "insufficient_budget" {
		t.Errorf("insufficient budget: %+v", he)
	}
}
