package sources_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/sources"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/pgtest"
	"github.com/fedgrid/fedgrid/internal/wait"
)

// reader is the database role the gateway connects as: it may only read.
const reader = "reader"

type fixture struct {
	pg   *pgtest.Server
	st   *store.Store
	m    *sources.Manager
	logs *bytes.Buffer
	pass string
}

// newFixture starts PostgreSQL with a table of n rows (id, x, y, label)
// that the reader role may SELECT, and a Manager reading it with the
// password from a password file.
func newFixture(t *testing.T, n int, cfg sources.Config) *fixture {
	t.Helper()
	pg := pgtest.Start(t)
	pg.Exec(t, "postgres",
		"CREATE DATABASE clinic")
	pg.Exec(t, "clinic",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", reader, pgtest.Password),
		"CREATE TABLE patients (id int PRIMARY KEY, x double precision, y double precision, label int)",
		fmt.Sprintf("INSERT INTO patients SELECT g, g * 0.5, (g %% 7) - 3, g %% 2 FROM generate_series(1, %d) g", n),
		"GRANT SELECT ON patients TO "+reader)
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	// The sources these tests register are not the Owner's: the server's
	// address must be on the allow list (hosts_test.go tests the list).
	if _, err := st.PutSourceSettings(store.SourceSettings{AllowedHosts: []string{"127.0.0.1"}}, ""); err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	cfg.Store = st
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.PGPassFile == "" {
		cfg.PGPassFile = pg.PassFile(t, reader)
	}
	return &fixture{pg: pg, st: st, m: sources.New(cfg), logs: logs, pass: pgtest.Password}
}

func (f *fixture) reg(table, query string) sources.Registration {
	return sources.Registration{Kind: store.SourcePostgres, URL: f.pg.URL(reader, "clinic"), Table: table, Query: query,
		Name: "patients", Tags: []string{"clinic"}, Visibility: store.VisibilityPublic}
}

// noSecret fails the test when the password shows in what the gateway
// keeps or says: the source records, the audit log, the log output.
func (f *fixture) noSecret(t *testing.T, more ...any) {
	t.Helper()
	srcs, err := f.st.DatasetSources()
	if err != nil {
		t.Fatal(err)
	}
	audit, err := f.st.Audit(store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for what, v := range map[string]any{"sources": srcs, "audit": audit, "more": more} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), f.pass) {
			t.Errorf("the password appears in the %s: %s", what, b)
		}
	}
	if strings.Contains(f.logs.String(), f.pass) {
		t.Errorf("the password appears in the log:\n%s", f.logs.String())
	}
}

func TestSnapshotVersions(t *testing.T) {
	f := newFixture(t, 1000, sources.Config{})
	ctx := context.Background()
	d, src, err := f.m.Register(ctx, f.reg("patients", ""), "owner")
	if err != nil {
		t.Fatal(err)
	}
	if d.Rows != 1000 || d.Version != 1 || len(d.Columns) != 4 || d.Visibility != store.VisibilityPublic {
		t.Fatalf("first snapshot: rows %d version %d columns %d visibility %s; want 1000, 1, 4, public", d.Rows, d.Version, len(d.Columns), d.Visibility)
	}
	if src.DatasetID != d.ID || src.LastVersion != 1 || src.LastError != "" || strings.Contains(src.URL, ":"+f.pass) {
		t.Fatalf("source record %+v", src)
	}
	csv, err := f.st.DatasetCSV(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(csv, []byte("id,x,y,label\n1,0.5,-2,1\n")) {
		t.Fatalf("stored CSV starts %q", csv[:min(60, len(csv))])
	}

	// Nothing changed: the same bytes keep the version.
	d2, src, err := f.m.Snapshot(ctx, d.ID, "owner")
	if err != nil {
		t.Fatal(err)
	}
	if d2.Version != 1 || d2.SHA256 != d.SHA256 || src.LastVersion != 1 {
		t.Fatalf("unchanged table: version %d (sha %s), want 1 (%s)", d2.Version, d2.SHA256, d.SHA256)
	}

	f.pg.Exec(t, "clinic", "INSERT INTO patients SELECT g, g * 0.5, 1, 0 FROM generate_series(1001, 1100) g")
	d3, src, err := f.m.Snapshot(ctx, d.ID, "owner")
	if err != nil {
		t.Fatal(err)
	}
	if d3.Version != 2 || d3.Rows != 1100 || d3.SHA256 == d.SHA256 || src.LastVersion != 2 {
		t.Fatalf("after 100 more rows: version %d rows %d; want 2 and 1100", d3.Version, d3.Rows)
	}
	if d3.Name != "patients" || d3.CreatedBy != "owner" || !d3.CreatedAt.Equal(d.CreatedAt) {
		t.Fatalf("a snapshot changed the dataset's description: %+v", d3)
	}
	snaps, err := f.st.Audit(store.AuditFilter{Action: "dataset.snapshot"})
	if err != nil || len(snaps) != 2 {
		t.Fatalf("audit dataset.snapshot entries: %d, %v; want 2", len(snaps), err)
	}
	f.noSecret(t, d3)

	// A query source.
	q, _, err := f.m.Register(ctx, f.reg("", "SELECT x, label FROM patients WHERE id <= 10 ORDER BY id -- the first ten;\n;"), "owner")
	if err != nil {
		t.Fatal(err)
	}
	if q.Rows != 10 || len(q.Columns) != 2 {
		t.Fatalf("query source: rows %d columns %d; want 10 and 2", q.Rows, len(q.Columns))
	}
}

// TestRefusals: a source that cannot or must not be read is refused with
// a message naming the mistake, stores nothing, changes nothing in the
// database and never shows the password.
func TestRefusals(t *testing.T) {
	f := newFixture(t, 50, sources.Config{})
	ctx := context.Background()
	// Only the timeout case runs with a short statement timeout: on a busy
	// machine the other cases' statements may take longer than it.
	short := sources.New(sources.Config{Store: f.st, PGPassFile: f.pg.PassFile(t, reader), StatementTimeout: 300 * time.Millisecond})
	withURL := func(u string) sources.Registration { r := f.reg("patients", ""); r.URL = u; return r }
	withQuery := func(q string) sources.Registration { return f.reg("", q) }
	cases := []struct {
		name string
		reg  sources.Registration
		want string // in the error
	}{
		{"password in URL", withURL(fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/clinic", reader, f.pass, f.pg.Port)), "must not carry a password"},
		{"password setting", withURL(f.pg.URL(reader, "clinic") + "&password=" + f.pass), "not allowed"},
		{"passfile setting", withURL(f.pg.URL(reader, "clinic") + "&passfile=/etc/shadow"), "not allowed"},
		{"no user", withURL(fmt.Sprintf("postgres://127.0.0.1:%d/clinic", f.pg.Port)), "names no user"},
		{"no database", withURL(fmt.Sprintf("postgres://%s@127.0.0.1:%d/", reader, f.pg.Port)), "one database"},
		{"other scheme", withURL("mysql://reader@127.0.0.1/clinic"), "postgres://"},
		{"table and query", sources.Registration{Kind: store.SourcePostgres, URL: f.pg.URL(reader, "clinic"), Table: "patients", Query: "SELECT 1", Name: "x"}, "not both"},
		{"no such table", f.reg("nosuch", ""), "does not exist"},
		{"not granted", f.reg("pg_authid", ""), "permission denied"},
		{"two statements", withQuery("SELECT 1; DROP TABLE patients"), "multiple commands"},
		{"escape the COPY", withQuery("SELECT 1) TO STDOUT; DROP TABLE patients; --"), "syntax error"},
		{"a write", withQuery("DELETE FROM patients RETURNING id"), "read-only transaction"},
		{"no columns", withQuery("SELECT"), "returns no columns"},
		{"statement timeout", withQuery("SELECT pg_sleep(30)"), "statement timeout"},
		{"wrong user", withURL(f.pg.URL("nobody", "clinic")), "failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := f.m
			if c.name == "statement timeout" {
				m = short
			}
			_, _, err := m.Register(ctx, c.reg, "owner")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v; want one containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), f.pass) {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
	ds, err := f.st.Datasets()
	if err != nil || len(ds) != 0 {
		t.Fatalf("refused sources stored %d datasets (%v)", len(ds), err)
	}
	f.noSecret(t)
	// The table is still there, whole.
	if _, _, err := f.m.Register(ctx, f.reg("patients", ""), "owner"); err != nil {
		t.Fatalf("after the refusals: %v", err)
	}
}

// TestPasswordFile: the password comes from the gateway's password file
// only; a file others can read is refused like libpq does; the CSV limit holds.
func TestPasswordFile(t *testing.T) {
	f := newFixture(t, 200, sources.Config{})
	ctx := context.Background()
	t.Setenv("PGPASSWORD", f.pass) // never used: only the password file counts

	none := sources.New(sources.Config{Store: f.st, PGPassFile: filepath.Join(t.TempDir(), "absent")})
	if _, _, err := none.Register(ctx, f.reg("patients", ""), "owner"); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("without a password file line: %v; want password authentication failed", err)
	}

	open := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(open, []byte(fmt.Sprintf("*:*:*:%s:%s\n", reader, f.pass)), 0o644); err != nil {
		t.Fatal(err)
	}
	wide := sources.New(sources.Config{Store: f.st, PGPassFile: open})
	if _, _, err := wide.Register(ctx, f.reg("patients", ""), "owner"); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("with a world-readable password file: %v; want a refusal naming 0600", err)
	}

	small := sources.New(sources.Config{Store: f.st, PGPassFile: f.pg.PassFile(t, reader), Limits: dataset.Limits{MaxBytes: 1000}})
	_, _, err := small.Register(ctx, f.reg("patients", ""), "owner")
	var se *sources.SnapshotError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("over the size limit: %v; want a SnapshotError saying the CSV was refused", err)
	}
	if ds, _ := f.st.Datasets(); len(ds) != 0 {
		t.Fatalf("%d datasets stored by refused snapshots", len(ds))
	}
	f.noSecret(t)
}

// TestSchedule: RunDue snapshots the sources whose interval has passed
// since their last snapshot, and only those; a failure is recorded on the
// source.
func TestSchedule(t *testing.T) {
	f := newFixture(t, 100, sources.Config{})
	ctx := context.Background()
	r := f.reg("patients", "")
	r.IntervalSeconds = 3600
	d, src, err := f.m.Register(ctx, r, "owner")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.m.Register(ctx, f.reg("patients", ""), "owner"); err != nil { // on demand only
		t.Fatal(err)
	}
	f.pg.Exec(t, "clinic", "INSERT INTO patients VALUES (101, 1, 1, 1)")
	at := src.LastSnapshotAt
	if n := f.m.RunDue(ctx, at.Add(30*time.Minute)); n != 0 {
		t.Fatalf("%d snapshots half an hour after the last; want 0", n)
	}
	if n := f.m.RunDue(ctx, at.Add(61*time.Minute)); n != 1 {
		t.Fatalf("%d snapshots an hour after the last; want 1", n)
	}
	got, err := f.st.Dataset(d.ID)
	if err != nil || got.Version != 2 || got.Rows != 101 {
		t.Fatalf("after the scheduled snapshot: %+v, %v; want version 2 with 101 rows", got, err)
	}
	f.pg.Exec(t, "clinic", "REVOKE SELECT ON patients FROM "+reader)
	src, err = f.st.DatasetSource(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := f.m.RunDue(ctx, src.LastSnapshotAt.Add(61*time.Minute)); n != 1 {
		t.Fatalf("%d snapshots; want 1", n)
	}
	src, err = f.st.DatasetSource(d.ID)
	if err != nil || !strings.Contains(src.LastError, "permission denied") || src.LastVersion != 2 {
		t.Fatalf("after a failed snapshot the source is %+v (%v); want its error and version 2", src, err)
	}
	if got, _ := f.st.Dataset(d.ID); got.Version != 2 {
		t.Fatalf("a failed snapshot changed the version to %d", got.Version)
	}

	// Run stops when its context ends.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.m.Run(runCtx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after its context ended")
	}
}

// lockPatients takes an exclusive lock on the patients table, so that a
// snapshot started now waits on it, and waits until one does. release
// ends the lock.
func (f *fixture) lockPatients(t *testing.T, start func()) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.pg.SocketDSN("clinic"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(ctx) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE patients IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	// Watched from another connection: inside the locking transaction
	// pg_stat_activity would show the same snapshot at every read.
	watch, err := pgx.Connect(ctx, f.pg.SocketDSN("clinic"))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(ctx)
	start()
	wait.For(t, time.Minute, "the snapshot waiting on the lock", func() error {
		var n int
		if err := watch.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'fedgrid'").Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("no fedgrid session waits on a lock")
		}
		return nil
	})
	return func() {
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

type outcome struct {
	d   *store.Dataset
	err error
}

// TestDeleteDuringSnapshot: a dataset deleted while its snapshot runs
// stays deleted (the snapshot's store would otherwise bring it back).
func TestDeleteDuringSnapshot(t *testing.T) {
	f := newFixture(t, 100, sources.Config{})
	ctx := context.Background()
	d, _, err := f.m.Register(ctx, f.reg("patients", ""), "owner")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	release := f.lockPatients(t, func() {
		go func() { _, _, err := f.m.Snapshot(ctx, d.ID, "owner"); done <- err }()
	})
	if err := f.st.DeleteDataset(d.ID); err != nil {
		t.Fatal(err)
	}
	release()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "deleted during its snapshot") {
		t.Fatalf("snapshot of a dataset deleted meanwhile: %v", err)
	}
	if _, err := f.st.Dataset(d.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the deleted dataset is back: %v", err)
	}
}

// TestSnapshotOutlivesItsCaller: a snapshot goes on when the context of
// the call that started it ends (an HTTP client gone, a server timeout),
// and ends when the Manager closes.
func TestSnapshotOutlivesItsCaller(t *testing.T) {
	f := newFixture(t, 100, sources.Config{})
	d, _, err := f.m.Register(context.Background(), f.reg("patients", ""), "owner")
	if err != nil {
		t.Fatal(err)
	}
	f.pg.Exec(t, "clinic", "INSERT INTO patients VALUES (101, 1, 1, 1)")

	callCtx, hangUp := context.WithCancel(context.Background())
	done := make(chan outcome, 1)
	release := f.lockPatients(t, func() {
		go func() { d, _, err := f.m.Snapshot(callCtx, d.ID, "owner"); done <- outcome{d, err} }()
	})
	hangUp()
	release()
	if o := <-done; o.err != nil || o.d.Version != 2 {
		t.Fatalf("snapshot whose caller left: %+v; want version 2", o)
	}

	f.pg.Exec(t, "clinic", "INSERT INTO patients VALUES (102, 1, 1, 1)")
	release = f.lockPatients(t, func() {
		go func() { d, _, err := f.m.Snapshot(context.Background(), d.ID, "owner"); done <- outcome{d, err} }()
	})
	defer release()
	f.m.Close() // ends the running snapshot and waits for it
	select {
	case o := <-done:
		if o.err == nil {
			t.Fatalf("a snapshot ended by Close stored version %d", o.d.Version)
		}
	case <-time.After(time.Minute):
		t.Fatal("the snapshot still waits on the lock after Close")
	}
	if got, err := f.st.Dataset(d.ID); err != nil || got.Version != 2 {
		t.Fatalf("after Close: %+v, %v; want version 2", got, err)
	}
	if _, _, err := f.m.Snapshot(context.Background(), d.ID, "owner"); !errors.Is(err, sources.ErrClosed) {
		t.Fatalf("snapshot after Close: %v; want ErrClosed", err)
	}
}

// TestEditDuringSnapshot: a metadata edit (PATCH /api/v1/datasets/{id})
// made while a snapshot runs survives it. The snapshot read the dataset's
// record before the table, and waits on a lock while the edit is made;
// its new version changes only the contents fields.
func TestEditDuringSnapshot(t *testing.T) {
	f := newFixture(t, 100, sources.Config{})
	ctx := context.Background()
	d, _, err := f.m.Register(ctx, f.reg("patients", ""), "owner")
	if err != nil {
		t.Fatal(err)
	}
	f.pg.Exec(t, "clinic", "INSERT INTO patients VALUES (101, 1, 1, 1)")
	done := make(chan outcome, 1)
	release := f.lockPatients(t, func() {
		go func() { d, _, err := f.m.Snapshot(ctx, d.ID, "owner"); done <- outcome{d, err} }()
	})
	name, desc, vis, tags := "patients (edited)", "edited while the snapshot ran", store.VisibilityPrivate, []string{"edited"}
	if _, err := f.st.UpdateDataset(d.ID, store.DatasetUpdate{Name: &name, Description: &desc, Visibility: &vis, Tags: &tags, Actor: "editor"}); err != nil {
		t.Fatal(err)
	}
	release()
	o := <-done
	if o.err != nil || o.d.Version != 2 || o.d.Rows != 101 {
		t.Fatalf("snapshot: %+v, %v; want version 2 with 101 rows", o.d, o.err)
	}
	got, err := f.st.Dataset(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != name || got.Description != desc || got.Visibility != vis || len(got.Tags) != 1 || got.Tags[0] != "edited" {
		t.Fatalf("after the snapshot the dataset is %q %q %s %v; the edit to %q %q %s %v was lost",
			got.Name, got.Description, got.Visibility, got.Tags, name, desc, vis, tags)
	}
	if got.Version != 2 || got.Rows != 101 || got.CreatedBy != "owner" || !got.CreatedAt.Equal(d.CreatedAt) {
		t.Fatalf("after the snapshot: %+v; want version 2, 101 rows, created by owner at %v", got, d.CreatedAt)
	}
	if o.d.Name != name {
		t.Fatalf("the snapshot answered the stale name %q", o.d.Name)
	}
}
