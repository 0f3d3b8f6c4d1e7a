package sources_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/sources"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// rebinder is a DNS server that names one host: its first answer is
// first, every later one then (a name that rebinds after it was checked).
// It counts the questions.
type rebinder struct {
	mu          sync.Mutex
	name        string
	first, then []netip.Addr
	asked       int
}

func (r *rebinder) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if host != r.name {
		return nil, fmt.Errorf("no such host %s", host)
	}
	r.asked++
	if r.asked == 1 {
		return r.first, nil
	}
	return r.then, nil
}

func (r *rebinder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.asked
}

// lastAudit is the newest audit entry with action.
func lastAudit(t *testing.T, st *store.Store, action string) *store.AuditEntry {
	t.Helper()
	es, err := st.Audit(store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].Action == action {
			return es[i]
		}
	}
	return nil
}

// TestHostAllowList: a PostgreSQL source registered by anyone but the
// Owner may only name a host on the Owner's allow list, checked at
// registration and again at every snapshot; the refusal is a 403
// (store.ErrForbidden) naming the host and how to allow it, and it is in
// the audit log. The Owner's sources may name any host.
func TestHostAllowList(t *testing.T) {
	f := newFixture(t, 50, sources.Config{})
	ctx := context.Background()
	owner, err := f.st.Setup("owner@example.org", "owner-password", "Owner")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := f.st.CreateUser(store.NewUser{Email: "admin@example.org", Password: "password1", Role: store.RoleAdministrator, Actor: owner.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.PutSourceSettings(store.SourceSettings{}, owner.ID); err != nil {
		t.Fatal(err)
	}
	hostPort := fmt.Sprintf("127.0.0.1:%d", f.pg.Port)

	_, _, err = f.m.Register(ctx, f.reg("patients", ""), admin.ID)
	var refused *sources.HostRefusedError
	if !errors.As(err, &refused) || !errors.Is(err, store.ErrForbidden) || refused.Host != hostPort ||
		!strings.Contains(err.Error(), "--allow-host "+hostPort) {
		t.Fatalf("an administrator's source on a host not allowed: %v; want a HostRefusedError naming %s and --allow-host", err, hostPort)
	}
	if ds, _ := f.st.Datasets(); len(ds) != 0 {
		t.Fatalf("a refused source stored %d datasets", len(ds))
	}
	if e := lastAudit(t, f.st, "source.refused"); e == nil || e.Actor != admin.ID || e.Detail["host"] != hostPort {
		t.Fatalf("audit of the refusal: %+v", e)
	}

	// The Owner may register any host.
	od, _, err := f.m.Register(ctx, f.reg("patients", ""), owner.ID)
	if err != nil {
		t.Fatalf("the Owner's source: %v", err)
	}

	// Allowed by address and port, the administrator's source registers.
	if _, err := f.st.PutSourceSettings(store.SourceSettings{AllowedHosts: []string{hostPort}}, owner.ID); err != nil {
		t.Fatal(err)
	}
	ad, _, err := f.m.Register(ctx, f.reg("patients", ""), admin.ID)
	if err != nil {
		t.Fatalf("an administrator's source on an allowed host: %v", err)
	}

	// Another port of the same address is another host.
	if _, err := f.st.PutSourceSettings(store.SourceSettings{AllowedHosts: []string{"127.0.0.1:1"}}, owner.ID); err != nil {
		t.Fatal(err)
	}
	f.pg.Exec(t, "clinic", "INSERT INTO patients VALUES (51, 1, 1, 1)")
	_, src, err := f.m.Snapshot(ctx, ad.ID, owner.ID)
	if !errors.As(err, &refused) || src == nil || !strings.Contains(src.LastError, hostPort) {
		t.Fatalf("snapshot after the host left the list: %v (source %+v); want a refusal recorded on the source", err, src)
	}
	if d, _ := f.st.Dataset(ad.ID); d.Version != 1 {
		t.Fatalf("a refused snapshot made version %d", d.Version)
	}
	if e := lastAudit(t, f.st, "source.refused"); e == nil || e.Actor != owner.ID || e.Target != "dataset/"+ad.ID || e.Detail["created_by"] != admin.ID {
		t.Fatalf("audit of the snapshot's refusal: %+v", e)
	}
	// The Owner's source still snapshots.
	if d, _, err := f.m.Snapshot(ctx, od.ID, ""); err != nil || d.Version != 2 {
		t.Fatalf("the Owner's source: %+v, %v; want version 2", d, err)
	}
	f.noSecret(t)
}

// TestHostNameResolvedOnce: a host name is looked up once a snapshot and
// the connection goes to the address that was checked: the name exists
// only in the test's resolver, so pgx reaching the server proves it did
// not ask DNS again. When the name later resolves elsewhere (rebinding to
// 127.0.0.2, where nothing listens, so nothing leaves loopback), the next
// snapshot is refused before any connection. A name on the list allows
// whatever it resolves to.
func TestHostNameResolvedOnce(t *testing.T) {
	loop := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	dns := &rebinder{name: "pg.test", first: loop, then: []netip.Addr{netip.MustParseAddr("127.0.0.2")}}
	f := newFixture(t, 50, sources.Config{Resolver: dns})
	ctx := context.Background()
	pass := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(pass, []byte(fmt.Sprintf("*:%d:clinic:%s:%s\n", f.pg.Port, reader, f.pass)), 0o600); err != nil {
		t.Fatal(err)
	}
	m := sources.New(sources.Config{Store: f.st, PGPassFile: pass, Resolver: dns})
	t.Cleanup(m.Close)
	reg := f.reg("patients", "")
	reg.URL = fmt.Sprintf("postgres://%s@pg.test:%d/clinic?sslmode=prefer", reader, f.pg.Port) // prefer: pgx tries two configurations

	d, _, err := m.Register(ctx, reg, "someone") // allowed by the fixture's 127.0.0.1
	if err != nil {
		t.Fatalf("a name resolving to an allowed address: %v", err)
	}
	if n := dns.count(); n != 1 {
		t.Fatalf("the name was looked up %d times for one snapshot, want once", n)
	}
	f.pg.Exec(t, "clinic", "INSERT INTO patients VALUES (51, 1, 1, 1)")
	_, _, err = m.Snapshot(ctx, d.ID, "someone")
	var refused *sources.HostRefusedError
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "127.0.0.2") || !strings.Contains(err.Error(), "pg.test:") {
		t.Fatalf("snapshot after the name rebound to 127.0.0.2: %v; want a refusal naming pg.test and 127.0.0.2", err)
	}

	// Allowed by name, any answer goes: here the first one again.
	dns.then = loop
	if _, err := f.st.PutSourceSettings(store.SourceSettings{AllowedHosts: []string{"PG.test"}}, ""); err != nil {
		t.Fatal(err)
	}
	if got, _, err := m.Snapshot(ctx, d.ID, "someone"); err != nil || got.Version != 2 {
		t.Fatalf("snapshot of a name on the list: %+v, %v; want version 2", got, err)
	}
}
