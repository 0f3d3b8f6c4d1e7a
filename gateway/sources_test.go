package gateway_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/gateway/sources"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/pgtest"
	"github.com/fedgrid/fedgrid/internal/testcluster"
	"github.com/fedgrid/fedgrid/internal/wait"
)

// TestScheduledSnapshot: the gateway's own loop takes a source's snapshot
// when its interval has passed on the gateway's clock, and stops with the
// gateway (TestMain checks for leaked goroutines).
func TestScheduledSnapshot(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(t, "postgres", "CREATE DATABASE clinic")
	pg.Exec(t, "clinic",
		fmt.Sprintf("CREATE ROLE reader LOGIN PASSWORD '%s'", pgtest.Password),
		"CREATE TABLE visits (id int, hours double precision)",
		"INSERT INTO visits SELECT g, g / 10.0 FROM generate_series(1, 500) g",
		"GRANT SELECT ON visits TO reader")
	var ahead atomic.Int64 // how far the gateway's clock runs ahead
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tc := testcluster.Start(t, ctx, testcluster.Options{Network: "gwtest", Gateway: func(c *gateway.Config) {
		c.PGPassFile = pg.PassFile(t, "reader")
		c.SourcePoll = 20 * time.Millisecond
		c.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	}})
	// Registered by no user (not the Owner): the server's address must be allowed.
	if _, err := tc.GW.Store().PutSourceSettings(store.SourceSettings{AllowedHosts: []string{"127.0.0.1"}}, ""); err != nil {
		t.Fatal(err)
	}
	d, _, err := tc.GW.Sources().Register(ctx, sources.Registration{Kind: store.SourcePostgres, URL: pg.URL("reader", "clinic"),
		Table: "visits", IntervalSeconds: 3600, Name: "visits"}, "")
	if err != nil {
		t.Fatal(err)
	}
	pg.Exec(t, "clinic", "INSERT INTO visits VALUES (501, 1.5)")
	// Due an hour after the registration (RunDue's own test shows that
	// it is not due before): move the gateway's clock past it.
	ahead.Store(int64(61 * time.Minute))
	wait.For(t, time.Minute, "the scheduled snapshot", func() error {
		src, err := tc.GW.Store().DatasetSource(d.ID)
		if err != nil {
			return err
		}
		if src.LastVersion != 2 {
			return fmt.Errorf("last version %d, error %q", src.LastVersion, src.LastError)
		}
		return nil
	})
	if got, err := tc.GW.Store().Dataset(d.ID); err != nil || got.Version != 2 || got.Rows != 501 {
		t.Fatalf("dataset after the scheduled snapshot: %+v, %v; want version 2 with 501 rows", got, err)
	}
	audit, err := tc.GW.Store().Audit(store.AuditFilter{Action: "dataset.snapshot"})
	if err != nil || len(audit) != 1 || audit[0].Actor != "" {
		t.Fatalf("audit of the scheduled snapshot: %+v, %v; want one entry without an actor", audit, err)
	}
}
