package sources_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/sources"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// TestFileSource registers a CSV file under an allowed directory as a
// dataset, snapshots it after it changed (a new version) and unchanged
// (the same version), and refuses files outside the allowed directories,
// through a link that leads out, and when no directory is allowed, with
// nothing stored.
func TestFileSource(t *testing.T) {
	root := t.TempDir()
	allowed := filepath.Join(root, "exports")
	outside := filepath.Join(root, "private")
	for _, d := range []string{allowed, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(allowed, "visits.csv")
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(file, "age,label\n31,0\n45,1\n")
	write(filepath.Join(outside, "secret.csv"), "age,label\n1,1\n")
	if err := os.Symlink(filepath.Join(outside, "secret.csv"), filepath.Join(allowed, "link.csv")); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	dirs, err := sources.AllowedDirs([]string{allowed})
	if err != nil {
		t.Fatal(err)
	}
	var added []string
	m := sources.New(sources.Config{Store: st, FileDirs: dirs, Added: func(d *store.Dataset) { added = append(added, d.ID) }})
	ctx := context.Background()
	reg := func(url string) sources.Registration {
		return sources.Registration{Kind: store.SourceFile, URL: url, Name: "visits", Tags: []string{"medical"}}
	}

	for _, c := range []struct{ url, why string }{
		{"file://" + filepath.Join(outside, "secret.csv"), "not under a directory"},
		{"file://" + filepath.Join(allowed, "link.csv"), "symbolic link"},
		{"file://" + allowed + "/../private/secret.csv", "must not contain .."},
		{"file://" + filepath.Join(allowed, "nope.csv"), "does not exist"},
	} {
		_, _, err := m.Register(ctx, reg(c.url), "owner")
		var ie *store.InvalidError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("register %s: %v, want a refusal saying %q", c.url, err, c.why)
		}
	}
	none := sources.New(sources.Config{Store: st})
	if _, _, err := none.Register(ctx, reg("file://"+file), "owner"); err == nil || !strings.Contains(err.Error(), "--source-dir") {
		t.Errorf("register with no allowed directory: %v", err)
	}
	if ds, _ := st.Datasets(); len(ds) != 0 {
		t.Fatalf("refused registrations stored %d datasets", len(ds))
	}

	d, src, err := m.Register(ctx, reg("file://"+file), "owner")
	if err != nil {
		t.Fatal(err)
	}
	if d.Rows != 2 || d.Version != 1 || src.Kind != store.SourceFile || src.LastVersion != 1 || len(added) != 1 {
		t.Fatalf("registered %+v, source %+v", d, src)
	}
	write(file, "age,label\n31,0\n45,1\n52,1\n")
	d2, src, err := m.Snapshot(ctx, d.ID, "owner")
	if err != nil {
		t.Fatal(err)
	}
	if d2.ID != d.ID || d2.Version != 2 || d2.Rows != 3 || d2.Name != "visits" || d2.SHA256 == d.SHA256 || src.LastVersion != 2 {
		t.Fatalf("snapshot after a change: %+v, source %+v", d2, src)
	}
	d3, _, err := m.Snapshot(ctx, d.ID, "owner")
	if err != nil || d3.Version != 2 || d3.SHA256 != d2.SHA256 {
		t.Fatalf("snapshot of the same file: %+v, %v", d3, err)
	}
	// The file is replaced by a link out of the directory: refused, the
	// dataset keeps its version and the source records why.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.csv"), file); err != nil {
		t.Fatal(err)
	}
	if _, src, err := m.Snapshot(ctx, d.ID, "owner"); err == nil || src == nil || !strings.Contains(src.LastError, "symbolic link") {
		t.Fatalf("snapshot through a link out: %v, source %+v", err, src)
	}
	// A malformed file is a failed snapshot, not a new version.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	write(file, "age,label\n31,0,9\n")
	var se *sources.SnapshotError
	if _, _, err := m.Snapshot(ctx, d.ID, "owner"); !errors.As(err, &se) || !strings.Contains(se.Msg, "csv file was refused") {
		t.Fatalf("snapshot of a malformed file: %v", err)
	}
	if cur, err := st.Dataset(d.ID); err != nil || cur.Version != 2 || cur.Rows != 3 {
		t.Fatalf("dataset after failed snapshots: %+v, %v", cur, err)
	}
}
