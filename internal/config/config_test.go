package config

import (
	"errors"
	"fmt"
	"testing"
)

func TestCheckCollectsFieldErrors(t *testing.T) {
	var ok Check
	ok.Require(true, "Lease", "must be positive")
	ok.Add("Network", nil)
	if err := ok.Err("gateway config"); err != nil {
		t.Fatalf("nothing wrong: %v", err)
	}
	var c Check
	c.Require(false, "Lease", "must be positive, got %s", "0s")
	c.Add("Network", errors.New("bad name"))
	err := fmt.Errorf("start: %w", c.Err("gateway config"))
	fs := Fields(err)
	if len(fs) != 2 || fs[0].Field != "Lease" || fs[0].Problem != "must be positive, got 0s" || fs[1].Field != "Network" {
		t.Fatalf("fields: %+v", fs)
	}
	if want := "start: gateway config: Lease must be positive, got 0s\nNetwork bad name"; err.Error() != want {
		t.Fatalf("message %q, want %q", err.Error(), want)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "Lease" {
		t.Fatalf("errors.As: %v", fe)
	}
	if Fields(errors.New("plain")) != nil {
		t.Fatal("a plain error has no fields")
	}
}
