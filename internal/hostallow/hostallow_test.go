package hostallow

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	for in, want := range map[string]string{
		"DB.Example.org":        "db.example.org",
		" db.example.org.:5432": "db.example.org:5432",
		"10.1.2.3":              "10.1.2.3",
		"10.1.2.3:5432":         "10.1.2.3:5432",
		"::1":                   "::1",
		"[::1]":                 "::1",
		"[::1]:5432":            "[::1]:5432",
		"::ffff:10.1.2.3":       "10.1.2.3",
		"10.9.8.7/8":            "10.0.0.0/8",
		"fd00::/8":              "fd00::/8",
		"pg_1-a":                "pg_1-a",
	} {
		r, err := ParseRule(in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("ParseRule(%q) = %s, want %s", in, r, want)
		}
	}
	for in, why := range map[string]string{
		"":                       "empty",
		"db.example.org:0":       "port",
		"db.example.org:x":       "port",
		"db.example.org:99999":   "port",
		"10.0.0.0/33":            "CIDR",
		"10.0.0.0/8:5432":        "CIDR",
		"fe80::1%eth0":           "zone",
		"db..example.org":        "label",
		"db example.org":         "character",
		"http://db":              "write HOST",
		"a:b:c":                  "write HOST",
		strings.Repeat("a", 400): "longer",
	} {
		if _, err := ParseRule(in); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("ParseRule(%q) = %v, want an error about %s", in, err, why)
		}
	}
}

func TestAllows(t *testing.T) {
	l, err := Parse([]string{"db.example.org:5432", "warehouse.example.org", "10.1.0.0/16", "192.168.1.5:6432", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	names := []struct {
		name string
		port int
		ok   bool
	}{
		{"db.example.org", 5432, true}, {"DB.example.org.", 5432, true}, {"db.example.org", 5433, false},
		{"warehouse.example.org", 1, true}, {"evil.example.org", 5432, false}, {"example.org", 5432, false},
		{"10.1.2.3", 5432, false}, // a name rule never matches an address literal as a name
	}
	for _, c := range names {
		if got := l.AllowsName(c.name, c.port); got != c.ok {
			t.Errorf("AllowsName(%s, %d) = %v, want %v", c.name, c.port, got, c.ok)
		}
	}
	addrs := []struct {
		addr string
		port int
		ok   bool
	}{
		{"10.1.2.3", 5432, true}, {"10.2.0.1", 5432, false}, {"::ffff:10.1.0.9", 80, true},
		{"192.168.1.5", 6432, true}, {"192.168.1.5", 5432, false}, {"::1", 5432, true}, {"127.0.0.1", 5432, false},
	}
	for _, c := range addrs {
		if got := l.AllowsAddr(netip.MustParseAddr(c.addr), c.port); got != c.ok {
			t.Errorf("AllowsAddr(%s, %d) = %v, want %v", c.addr, c.port, got, c.ok)
		}
	}
	if len(List(nil)) != 0 || List(nil).AllowsAddr(netip.MustParseAddr("127.0.0.1"), 5432) {
		t.Error("an empty list allows an address")
	}
}

func TestNormalize(t *testing.T) {
	got, err := Normalize([]string{"DB.example.org", "db.example.org", "10.0.0.1/8", "10.0.0.0/8", "[::1]:5432"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"db.example.org", "10.0.0.0/8", "[::1]:5432"}; !slices.Equal(got, want) {
		t.Fatalf("Normalize = %q, want %q", got, want)
	}
	if _, err := Normalize(make([]string, MaxRules+1)); err == nil {
		t.Fatal("an over-long list was accepted")
	}
}
