package sources

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/store"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFileSourceRefusesWhatIsNotAllowed(t *testing.T) {
	root := t.TempDir()
	allowed := filepath.Join(root, "data")
	outside := filepath.Join(root, "secret")
	write(t, filepath.Join(allowed, "ok.csv"), "a,b\n1,2\n")
	write(t, filepath.Join(allowed, "sub", "deep.csv"), "a\n1\n")
	write(t, filepath.Join(allowed, "t.parquet"), "PAR1 pretend footer PAR1")
	write(t, filepath.Join(outside, "passwd.csv"), "user,hash\nroot,x\n")
	write(t, filepath.Join(root, "data2", "f.csv"), "a\n1\n")
	if err := os.Symlink(filepath.Join(outside, "passwd.csv"), filepath.Join(allowed, "escape.csv")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(allowed, "escapedir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(allowed, "sub", "deep.csv"), filepath.Join(allowed, "inside.csv")); err != nil {
		t.Fatal(err)
	}
	// The operator names the directory through a link: both forms work.
	alias := filepath.Join(root, "alias")
	if err := os.Symlink(allowed, alias); err != nil {
		t.Fatal(err)
	}

	if _, err := AllowedDirs([]string{"relative/dir"}); err == nil {
		t.Error("a relative source directory was accepted")
	}
	if _, err := AllowedDirs([]string{filepath.Join(root, "missing")}); err == nil {
		t.Error("a missing source directory was accepted")
	}
	if _, err := AllowedDirs([]string{filepath.Join(allowed, "ok.csv")}); err == nil {
		t.Error("a file as source directory was accepted")
	}
	dirs, err := AllowedDirs([]string{alias})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FilePath("file://"+filepath.Join(allowed, "ok.csv"), Dirs{}); err == nil || !strings.Contains(err.Error(), "--source-dir") {
		t.Errorf("no allowed directory: %v", err)
	}

	for _, c := range []struct{ url, why string }{
		{"http://example.org/data.csv", "file:///"},
		{"file://otherhost" + filepath.Join(allowed, "ok.csv"), "no host"},
		{"file://user@localhost" + filepath.Join(allowed, "ok.csv"), "no host"},
		{"file://" + filepath.Join(allowed, "ok.csv") + "?x=1", "no host"},
		{"file:data/ok.csv", "no host"},
		{"file://" + allowed + "/../secret/passwd.csv", "must not contain .."},
		{"file://" + allowed + "/sub/../../secret/passwd.csv", "must not contain .."},
		{"file://" + filepath.Join(outside, "passwd.csv"), "not under a directory"},
		{"file:///etc/passwd", "not under a directory"},
		{"file://" + filepath.Join(root, "data2", "f.csv"), "not under a directory"}, // a sibling sharing the prefix
		{"file://" + filepath.Join(allowed, "escape.csv"), "symbolic link"},
		{"file://" + filepath.Join(allowed, "escapedir", "passwd.csv"), "symbolic link"},
		{"file://" + filepath.Join(allowed, "missing.csv"), "does not exist"},
		{"file://" + filepath.Join(allowed, "sub"), "not a regular file"},
		{"file://" + allowed, "not a regular file"},
	} {
		_, err := FilePath(c.url, dirs)
		var ie *store.InvalidError
		if !errors.As(err, &ie) || ie.Field != "url" || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: %v, want an invalid url saying %q", c.url, err, c.why)
		}
		if err != nil && strings.Contains(err.Error(), "root,x") {
			t.Errorf("%s: the refusal shows the file's content", c.url)
		}
	}

	for _, c := range []struct{ url, real, format string }{
		{"file://" + filepath.Join(allowed, "ok.csv"), filepath.Join(allowed, "ok.csv"), FileCSV},
		{"file://" + filepath.Join(alias, "ok.csv"), filepath.Join(allowed, "ok.csv"), FileCSV},
		{"file://localhost" + filepath.Join(allowed, "sub", "deep.csv"), filepath.Join(allowed, "sub", "deep.csv"), FileCSV},
		{"file://" + filepath.Join(allowed, "inside.csv"), filepath.Join(allowed, "sub", "deep.csv"), FileCSV},
		{"file://" + filepath.Join(allowed, "t.parquet"), filepath.Join(allowed, "t.parquet"), FileParquet},
	} {
		f, format, size, err := OpenFile(c.url, dirs)
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		want, _ := filepath.EvalSymlinks(c.real)
		fi, _ := os.Stat(want)
		if f.Name() != want || format != c.format || size != fi.Size() {
			t.Errorf("%s: opened %s (%s, %d bytes), want %s (%s, %d)", c.url, f.Name(), format, size, want, c.format, fi.Size())
		}
		_ = f.Close()
	}
}
