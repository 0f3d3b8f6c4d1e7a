package pgtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fedgrid/fedgrid/internal/pgtest"
)

// TestServer starts a server, reaches it over TCP with the password from a
// password file and over the socket, and removes its directory when done.
func TestServer(t *testing.T) {
	var dir string
	t.Run("run", func(t *testing.T) {
		s := pgtest.Start(t)
		dir = s.Dir
		s.Exec(t, "postgres", "CREATE TABLE t (a int)", "INSERT INTO t SELECT g FROM generate_series(1, 10) g")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cfg, err := pgx.ParseConfig(s.URL(pgtest.Superuser, "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Password = "wrong"
		if c, err := pgx.ConnectConfig(ctx, cfg); err == nil {
			_ = c.Close(ctx)
			t.Fatal("a wrong password was accepted over TCP")
		}
		cfg.Password = pgtest.Password
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connect over TCP: %v", err)
		}
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 10 {
			t.Fatalf("count = %d, %v; want 10", n, err)
		}
	})
	if dir == "" {
		return // skipped
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("server directory %s left behind (%v)", dir, err)
	}
}
