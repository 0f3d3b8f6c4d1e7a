package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/sources"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// TestFileSourceAPI registers a file under the gateway's allowed
// directory over HTTP, snapshots it after it changed, and gets clear
// refusals for a file elsewhere and for a table given with a file.
func TestFileSourceAPI(t *testing.T) {
	root := t.TempDir()
	allowed := filepath.Join(root, "exports")
	if err := os.Mkdir(allowed, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(allowed, "visits.csv")
	if err := os.WriteFile(file, []byte("age,label\n31,0\n45,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "other.csv"), []byte("a\n1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) {
		dirs, err := sources.AllowedDirs([]string{allowed})
		if err != nil {
			t.Fatal(err)
		}
		c.Sources = sources.New(sources.Config{Store: c.Store, Logger: c.Logger, FileDirs: dirs})
	})
	owner := e.setup()

	var snap SourceSnapshot
	e.want(e.do("POST", "/api/v1/sources", owner, SourceRequest{Kind: store.SourceFile, URL: "file://" + file, Name: "visits", Visibility: "public"}), 201).decode(t, &snap)
	if snap.Dataset == nil || snap.Dataset.Rows != 2 || snap.Dataset.Version != 1 || snap.Source.Kind != store.SourceFile || snap.Source.URL != "file://"+file {
		t.Fatalf("registered: %+v %+v", snap.Dataset, snap.Source)
	}
	if err := os.WriteFile(file, []byte("age,label\n31,0\n45,1\n60,0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var again SourceSnapshot
	e.want(e.do("POST", "/api/v1/datasets/"+snap.Dataset.ID+"/snapshot", owner, nil), 200).decode(t, &again)
	if again.Dataset.Version != 2 || again.Dataset.Rows != 3 || again.Dataset.ID != snap.Dataset.ID {
		t.Fatalf("snapshot: %+v", again.Dataset)
	}

	for _, c := range []struct {
		req  SourceRequest
		want string
	}{
		{SourceRequest{Kind: store.SourceFile, URL: "file://" + filepath.Join(root, "other.csv"), Name: "x"}, "url: " + filepath.Join(root, "other.csv") + " is not under a directory"},
		{SourceRequest{Kind: store.SourceFile, URL: "file:///etc/passwd", Name: "x"}, "url: /etc/passwd is not under a directory"},
		{SourceRequest{Kind: store.SourceFile, URL: "file://" + file, Table: "t", Name: "x"}, "table: a file source has no table"},
	} {
		r := e.do("POST", "/api/v1/sources", owner, c.req)
		if r.status != 400 || r.errCode(t) != "invalid_field" || !strings.Contains(string(r.body), c.want) {
			t.Errorf("register %+v: %d %s, want 400 saying %q", c.req, r.status, r.body, c.want)
		}
	}
}
