// Package hostallow is an allow list of network destinations, as a data
// platform keeps one for the databases its users may make it connect to:
// host names, IP addresses and CIDR prefixes, each with or without a port.
//
// A rule is one of
//
//	db.example.org          the name, any port
//	db.example.org:5432     the name, that port
//	10.1.2.3  or  ::1       the address, any port
//	10.1.2.3:5432  [::1]:5432
//	10.0.0.0/8  fd00::/8    any address in the prefix, any port
//
// Names match case-insensitively and without a trailing dot; addresses match
// after unmapping IPv4-mapped IPv6 addresses. A name rule trusts the name's
// DNS answers (the Owner chose the name); an address rule matches the address
// a name resolved to, so the caller must connect to the very address it
// checked.
package hostallow

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Limits on a list.
const (
	MaxRules   = 256
	MaxRuleLen = 300
)

// Rule is one allowed destination.
type Rule struct {
	// Name is a lower-case host name; "" for an address rule.
	Name string
	// Prefix is the addresses of an address rule (a single address is a
	// full-length prefix).
	Prefix netip.Prefix
	// Port is the one allowed port; 0: any.
	Port int
}

// String is the rule in its canonical written form.
func (r Rule) String() string {
	host := r.Name
	if host == "" {
		if r.Prefix.IsSingleIP() {
			host = r.Prefix.Addr().String()
		} else {
			return r.Prefix.String()
		}
	}
	if r.Port == 0 {
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(r.Port))
}

// ParseRule reads one rule (see the package comment).
func ParseRule(s string) (Rule, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return Rule{}, fmt.Errorf("empty host")
	}
	if len(s) > MaxRuleLen {
		return Rule{}, fmt.Errorf("%.40q...: longer than %d characters", s, MaxRuleLen)
	}
	if strings.Contains(s, "://") {
		return Rule{}, fmt.Errorf("%q: write HOST or HOST:PORT, not a URL", s)
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			return Rule{}, fmt.Errorf("%q: not a CIDR prefix (write e.g. 10.0.0.0/8 or fd00::/8)", s)
		}
		return Rule{Prefix: p.Masked()}, nil
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil { // an address without a port
		return addrRule(s, a, 0)
	}
	host, port := s, 0
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Rule{}, fmt.Errorf("%q: the port must be 1 to 65535", s)
		}
		host, port = h, n
	} else if strings.ContainsAny(s, "[]") || strings.Count(s, ":") > 0 {
		return Rule{}, fmt.Errorf("%q: write HOST, HOST:PORT, an IP address, [IPv6]:PORT or a CIDR prefix", s)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return addrRule(s, a, port)
	}
	name := strings.TrimSuffix(host, ".")
	if err := checkName(name); err != nil {
		return Rule{}, fmt.Errorf("%q: %v", s, err)
	}
	return Rule{Name: name, Port: port}, nil
}

func addrRule(s string, a netip.Addr, port int) (Rule, error) {
	if a.Zone() != "" {
		return Rule{}, fmt.Errorf("%q: an address with a zone (%%...) cannot be allowed", s)
	}
	a = a.Unmap()
	return Rule{Prefix: netip.PrefixFrom(a, a.BitLen()), Port: port}, nil
}

// checkName accepts a DNS host name: labels of letters, digits, '-' and
// '_', 1 to 63 characters, 253 in all.
func checkName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("not a host name")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("not a host name (empty or over-long label)")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("not a host name (character %q)", c)
			}
		}
	}
	return nil
}

// List is a parsed allow list.
type List []Rule

// Parse reads a list of rules, refusing the first bad one.
func Parse(entries []string) (List, error) {
	if len(entries) > MaxRules {
		return nil, fmt.Errorf("more than %d hosts", MaxRules)
	}
	out := make(List, 0, len(entries))
	for _, e := range entries {
		r, err := ParseRule(e)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Normalize parses entries and returns them in canonical form, without
// duplicates, in their first order.
func Normalize(entries []string) ([]string, error) {
	l, err := Parse(entries)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(l))
	seen := map[string]bool{}
	for _, r := range l {
		if s := r.String(); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}

// AllowsName reports whether a name rule allows host name on port.
func (l List) AllowsName(name string, port int) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for _, r := range l {
		if r.Name != "" && r.Name == name && (r.Port == 0 || r.Port == port) {
			return true
		}
	}
	return false
}

// AllowsAddr reports whether an address rule allows a on port.
func (l List) AllowsAddr(a netip.Addr, port int) bool {
	a = a.Unmap().WithZone("")
	for _, r := range l {
		if r.Name == "" && r.Prefix.Contains(a) && (r.Port == 0 || r.Port == port) {
			return true
		}
	}
	return false
}
