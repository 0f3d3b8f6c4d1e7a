package api

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/internal/pgtest"
)

// pgReader is the database role sources connect as (SELECT only).
const pgReader = "reader"

// pgURL starts the env's PostgreSQL server on first use, with a table
// patients(id, x, label) of n rows the reader role may read, writes the
// reader's password to the env's password file, and returns the source
// URL (without the password).
func (e *env) pgURL(t testing.TB) string {
	t.Helper()
	if e.pg == nil {
		e.pg = pgtest.Start(t)
		e.pg.Exec(t, "postgres", "CREATE DATABASE clinic")
		e.pg.Exec(t, "clinic",
			fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", pgReader, pgtest.Password),
			"CREATE TABLE patients (id int PRIMARY KEY, x double precision, label int)",
			"INSERT INTO patients SELECT g, g * 0.25, g % 2 FROM generate_series(1, 200) g",
			"GRANT SELECT ON patients TO "+pgReader)
		line := fmt.Sprintf("127.0.0.1:%d:clinic:%s:%s\n", e.pg.Port, pgReader, pgtest.Password)
		if err := os.WriteFile(e.pgpass, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return e.pg.URL(pgReader, "clinic")
}

// syncBuffer is a log destination the handler goroutines write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestSourcesAPI registers a PostgreSQL table over HTTP, snapshots it
// again after rows were added, changes its schedule, and checks that the
// password appears in no answer, audit entry or log line, even when the
// caller puts it in the URL by mistake.
func TestSourcesAPI(t *testing.T) {
	logs := &syncBuffer{}
	e := newEnv(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	owner := e.setup()
	u := e.pgURL(t)
	var answers []string
	keep := func(r resp) resp { answers = append(answers, string(r.body)); return r }

	var reg SourceSnapshot
	keep(e.want(e.do("POST", "/api/v1/sources", owner, SourceRequest{Kind: "postgres", URL: u, Table: "patients", Name: "patients",
		Tags: []string{"clinic"}, Visibility: "public", IntervalSeconds: 86400}), 201)).decode(t, &reg)
	if reg.Dataset.Rows != 200 || reg.Dataset.Version != 1 || reg.Source.URL != u || reg.Source.IntervalSeconds != 86400 {
		t.Fatalf("registered %+v / %+v", reg.Dataset, reg.Source)
	}
	id := reg.Dataset.ID

	e.pg.Exec(t, "clinic", "INSERT INTO patients VALUES (201, 1.5, 1)")
	var snap SourceSnapshot
	keep(e.want(e.do("POST", "/api/v1/datasets/"+id+"/snapshot", owner, nil), 200)).decode(t, &snap)
	if snap.Dataset.Version != 2 || snap.Dataset.Rows != 201 || snap.Source.LastVersion != 2 {
		t.Fatalf("snapshot after one more row: version %d rows %d", snap.Dataset.Version, snap.Dataset.Rows)
	}
	var list SourceList
	keep(e.want(e.do("GET", "/api/v1/sources", owner, nil), 200)).decode(t, &list)
	if len(list.Sources) != 1 || list.Sources[0].DatasetID != id {
		t.Fatalf("sources %+v", list.Sources)
	}
	zero := int64(0)
	var src store.DatasetSource
	keep(e.want(e.do("PATCH", "/api/v1/datasets/"+id+"/source", owner, PatchSourceRequest{IntervalSeconds: &zero}), 200)).decode(t, &src)
	if src.IntervalSeconds != 0 {
		t.Fatalf("interval after PATCH 0: %d", src.IntervalSeconds)
	}
	ten := int64(10)
	if e.want(keep(e.do("PATCH", "/api/v1/datasets/"+id+"/source", owner, PatchSourceRequest{IntervalSeconds: &ten})), 400).errCode(t) != "invalid_field" {
		t.Fatal("a 10 s schedule was not refused as invalid_field")
	}

	// Mistakes: a password in the URL, a missing table, an uploaded dataset.
	withPass := strings.Replace(u, pgReader+"@", pgReader+":"+pgtest.Password+"@", 1)
	r := keep(e.do("POST", "/api/v1/sources", owner, SourceRequest{Kind: "postgres", URL: withPass, Table: "patients", Name: "p"}))
	if r.status != 400 || !strings.Contains(string(r.body), "must not carry a password") {
		t.Fatalf("URL with a password: %d %s", r.status, r.body)
	}
	r = keep(e.do("POST", "/api/v1/sources", owner, SourceRequest{Kind: "postgres", URL: u, Table: "nosuch", Name: "p"}))
	if r.status != http.StatusBadGateway || r.errCode(t) != "source_failed" || !strings.Contains(string(r.body), "does not exist") {
		t.Fatalf("missing table: %d %s", r.status, r.body)
	}
	up := &store.Dataset{Name: "uploaded"}
	if err := e.st.PutDataset(up, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	e.want(keep(e.do("POST", "/api/v1/datasets/"+up.ID+"/snapshot", owner, nil)), 404)
	e.want(keep(e.do("GET", "/api/v1/datasets/"+up.ID+"/source", owner, nil)), 404)
	// The source failing later: recorded on the source, 502 to the caller.
	e.pg.Exec(t, "clinic", "REVOKE SELECT ON patients FROM "+pgReader)
	r = keep(e.do("POST", "/api/v1/datasets/"+id+"/snapshot", owner, nil))
	if r.status != http.StatusBadGateway || !strings.Contains(string(r.body), "permission denied") {
		t.Fatalf("snapshot without the grant: %d %s", r.status, r.body)
	}
	keep(e.want(e.do("GET", "/api/v1/datasets/"+id+"/source", owner, nil), 200)).decode(t, &src)
	if !strings.Contains(src.LastError, "permission denied") || src.LastVersion != 2 {
		t.Fatalf("source after a failed snapshot: %+v", src)
	}

	keep(e.want(e.do("GET", "/api/v1/audit?limit=1000", owner, nil), 200))
	for _, a := range answers {
		if strings.Contains(a, pgtest.Password) {
			t.Errorf("an answer shows the password: %s", a)
		}
	}
	if strings.Contains(logs.String(), pgtest.Password) {
		t.Errorf("the log shows the password:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "dataset snapshot") {
		t.Errorf("the log does not show the snapshots (was it captured?):\n%s", logs.String())
	}
}

// TestSourceHostsAPI: an administrator (can_upload_data, not the Owner)
// may register a PostgreSQL source only on a host the Owner allowed with
// PUT /api/v1/settings/sources; the refusal is a 403 host_not_allowed
// naming the host and how to allow it, and is audited. Only
// can_manage_infrastructure changes the list; can_upload_data reads it.
func TestSourceHostsAPI(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	u := e.pgURL(t)
	_, admin := e.newUser(owner, "admin@example.org", store.RoleAdministrator, "", 0)
	host := fmt.Sprintf("127.0.0.1:%d", e.pg.Port)
	reg := SourceRequest{Kind: "postgres", URL: u, Table: "patients", Name: "patients"}

	r := e.want(e.do("POST", "/api/v1/sources", admin, reg), http.StatusForbidden)
	if r.errCode(t) != "host_not_allowed" || !strings.Contains(string(r.body), host) || !strings.Contains(string(r.body), "settings sources --allow-host") {
		t.Fatalf("an administrator's source on a host not allowed: %s", r.body)
	}
	var set store.SourceSettings
	e.want(e.do("GET", "/api/v1/settings/sources", admin, nil), 200).decode(t, &set)
	if len(set.AllowedHosts) != 0 || set.Schema != store.SourceSettingsSchema {
		t.Fatalf("settings before any change: %+v", set)
	}
	e.want(e.do("PUT", "/api/v1/settings/sources", admin, store.SourceSettings{AllowedHosts: []string{host}}), http.StatusForbidden)
	if r := e.want(e.do("PUT", "/api/v1/settings/sources", owner, store.SourceSettings{AllowedHosts: []string{"postgres://x"}}), 400); r.errCode(t) != "invalid_field" {
		t.Fatalf("a URL in the list: %s", r.body)
	}
	e.want(e.do("PUT", "/api/v1/settings/sources", owner, store.SourceSettings{AllowedHosts: []string{host}}), 200).decode(t, &set)
	if len(set.AllowedHosts) != 1 || set.AllowedHosts[0] != host {
		t.Fatalf("settings after PUT: %+v", set)
	}
	var snap SourceSnapshot
	e.want(e.do("POST", "/api/v1/sources", admin, reg), 201).decode(t, &snap)

	// Taken off the list, the next snapshot is refused with the same 403.
	e.want(e.do("PUT", "/api/v1/settings/sources", owner, store.SourceSettings{}), 200)
	if r := e.want(e.do("POST", "/api/v1/datasets/"+snap.Dataset.ID+"/snapshot", admin, nil), http.StatusForbidden); r.errCode(t) != "host_not_allowed" {
		t.Fatalf("snapshot after the host left the list: %s", r.body)
	}
	var log AuditList
	e.want(e.do("GET", "/api/v1/audit?limit=1000", owner, nil), 200).decode(t, &log)
	refusals := 0
	for _, a := range log.Entries {
		if a.Action == "source.refused" && a.Detail["host"] == host {
			refusals++
		}
	}
	if refusals != 2 {
		t.Fatalf("%d source.refused entries for %s, want 2 (registration and snapshot)", refusals, host)
	}
}
