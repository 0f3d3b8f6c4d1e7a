package sources

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/hostallow"
)

// Resolver looks a host name's addresses up (net.DefaultResolver's
// LookupNetIP).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// HostRefusedError is a PostgreSQL source whose host is not on the Owner's
// allow list. It is a store.ErrForbidden (403); its message names the host
// and how to allow it, never a password.
type HostRefusedError struct {
	// Host is HOST:PORT as the source URL names it.
	Host string
	// Resolved, when the name resolved, lists its addresses (none allowed).
	Resolved []netip.Addr
}

func (e *HostRefusedError) Error() string {
	also := ""
	if len(e.Resolved) > 0 {
		also = fmt.Sprintf(" (it resolves to %v, none allowed)", e.Resolved)
	}
	return fmt.Sprintf("source host %s is not on this gateway's list of allowed source hosts%s: "+
		"the Owner can allow it with `fedgrid admin settings sources --allow-host %s` (PUT /api/v1/settings/sources), "+
		"or register the source themselves", e.Host, also, e.Host)
}

func (e *HostRefusedError) Unwrap() error { return store.ErrForbidden }

// lookupTimeout bounds a host name's look-up, as pgConfig's default
// connect_timeout bounds the connection.
const lookupTimeout = 30 * time.Second

// destination is where a snapshot's connection may go: the source's port
// on the addresses its host resolved to, once, and that were checked.
type destination struct {
	host  string
	port  int
	addrs []netip.Addr
}

// destination resolves a source's host once and keeps the addresses its
// creator may reach: any, for a source the Owner registered; else those the
// Owner's allow list (read now: it may have changed since the source was
// registered) allows by the host's name or by the address. None is a
// *HostRefusedError, written to the audit log with actor.
func (m *Manager) destination(ctx context.Context, t *pgTarget, src *store.DatasetSource, actor string) (*destination, error) {
	owner, err := m.isOwner(src.CreatedBy)
	if err != nil {
		return nil, err
	}
	var list hostallow.List
	if !owner {
		set, err := m.cfg.Store.SourceSettings()
		if err != nil {
			return nil, err
		}
		if list, err = hostallow.Parse(set.AllowedHosts); err != nil {
			return nil, fmt.Errorf("source settings: %w", err)
		}
	}
	hostPort := net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	var addrs []netip.Addr
	literal, err := netip.ParseAddr(t.Host)
	if err == nil {
		addrs = []netip.Addr{literal}
	} else if owner || list.AllowsName(t.Host, t.Port) || slices.ContainsFunc(list, func(r hostallow.Rule) bool { return r.Name == "" }) {
		// Resolved only when an answer could be allowed: a refused name
		// is not looked up.
		rctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		addrs, err = m.cfg.Resolver.LookupNetIP(rctx, "ip", t.Host)
		cancel()
		if err != nil {
			return nil, &SnapshotError{Msg: fmt.Sprintf("cannot resolve the source host %s: %v", t.Host, err)}
		}
	}
	d := &destination{host: t.Host, port: t.Port}
	byName := owner || list.AllowsName(t.Host, t.Port)
	for _, a := range addrs {
		a = a.Unmap()
		if byName || list.AllowsAddr(a, t.Port) {
			d.addrs = append(d.addrs, a)
		}
	}
	if len(d.addrs) == 0 {
		refused := &HostRefusedError{Host: hostPort}
		if !literal.IsValid() { // a name: say what it resolved to
			refused.Resolved = addrs
		}
		target := "source"
		if src.DatasetID != "" {
			target = "dataset/" + src.DatasetID
		}
		if err := m.cfg.Store.AppendAudit(store.AuditEvent{Actor: actor, Action: "source.refused", Target: target,
			Detail: map[string]any{"kind": src.Kind, "url": src.URL, "host": hostPort, "created_by": src.CreatedBy,
				"reason": "host not on the allowed source hosts"}}); err != nil {
			return nil, errors.Join(refused, err)
		}
		m.log.Warn("dataset source refused: host not allowed", "host", hostPort, "dataset", src.DatasetID, "actor", actor, "created_by", src.CreatedBy)
		return nil, refused
	}
	return d, nil
}

// isOwner reports whether user ID id is the gateway's Owner.
func (m *Manager) isOwner(id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	u, err := m.cfg.Store.User(id)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return u.Role == store.RoleOwner, nil
}

// pin makes cfg connect only to d's addresses: pgx's look-up answers them
// without asking DNS again (a second answer could differ: DNS rebinding),
// and its dialer refuses any other address.
func (d *destination) pin(cfg *pgx.ConnConfig) {
	answer := make([]string, len(d.addrs))
	for i, a := range d.addrs {
		answer[i] = a.String()
	}
	cfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) {
		if host != d.host {
			return nil, fmt.Errorf("connection to %s refused: the source names %s", host, d.host)
		}
		return slices.Clone(answer), nil
	}
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || (network != "tcp" && network != "tcp4" && network != "tcp6") ||
			int(ap.Port()) != d.port || !slices.Contains(d.addrs, ap.Addr().Unmap()) {
			return nil, fmt.Errorf("connection to %s %s refused: not the checked address of %s", network, addr, d.host)
		}
		return dial(ctx, network, addr)
	}
}
