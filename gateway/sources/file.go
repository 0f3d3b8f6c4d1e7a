package sources

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fedgrid/fedgrid/gateway/ingest"
	"github.com/fedgrid/fedgrid/gateway/store"
)

// File sources: a CSV or Parquet file on the gateway's host, named by a
// file:///absolute/path URL, read only when it lies under a directory the
// operator allowed (--source-dir): the path is checked as written and
// again with every symbolic link resolved, so neither ".." nor a link can
// lead out. Everything else is refused before the file system is touched.

// FileFormats a file source may hold.
const (
	FileCSV     = "csv"
	FileParquet = "parquet"
)

// Dirs are the directories file sources may be read from.
type Dirs struct {
	given []string // as the operator wrote them, cleaned
	real  []string // the same with every link resolved
}

// Len is how many directories are allowed.
func (d Dirs) Len() int { return len(d.real) }

// AllowedDirs checks the operator's source directories: each must be an
// absolute path to an existing directory.
func AllowedDirs(dirs []string) (Dirs, error) {
	var out Dirs
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			return Dirs{}, fmt.Errorf("source directory %q: must be an absolute path", d)
		}
		real, err := filepath.EvalSymlinks(filepath.Clean(d))
		if err != nil {
			return Dirs{}, fmt.Errorf("source directory %s: %w", d, err)
		}
		fi, err := os.Stat(real)
		if err != nil {
			return Dirs{}, fmt.Errorf("source directory %s: %w", d, err)
		}
		if !fi.IsDir() {
			return Dirs{}, fmt.Errorf("source directory %s: not a directory", d)
		}
		out.given = append(out.given, filepath.Clean(d))
		out.real = append(out.real, real)
	}
	return out, nil
}

// within reports whether path is dir or below it (both clean and absolute).
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

func withinAny(path string, dirs []string) bool {
	return slices.ContainsFunc(dirs, func(d string) bool { return within(path, d) })
}

// badURL is a refused file URL: an invalid "url" naming the reason.
func badURL(format string, args ...any) error {
	return &store.InvalidError{Field: "url", Reason: fmt.Sprintf(format, args...)}
}

// FilePath checks a file:// URL against the allowed directories and
// returns the file's real path, every link resolved. A refusal is an
// invalid "url" (*store.InvalidError) naming the reason.
func FilePath(raw string, dirs Dirs) (string, error) {
	if dirs.Len() == 0 {
		return "", badURL("this gateway reads no files: its operator allows directories with --source-dir")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "file" {
		return "", badURL("must be file:///ABSOLUTE/PATH")
	}
	if u.User != nil || (u.Host != "" && u.Host != "localhost") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", badURL("must be file:///ABSOLUTE/PATH on the gateway's host: no host, user, query or fragment")
	}
	p := u.Path
	if !filepath.IsAbs(p) {
		return "", badURL("the path must be absolute")
	}
	if slices.Contains(strings.Split(filepath.ToSlash(p), "/"), "..") {
		return "", badURL("the path must not contain ..")
	}
	p = filepath.Clean(p)
	// As written: under an allowed directory (as given or as resolved).
	if !withinAny(p, dirs.given) && !withinAny(p, dirs.real) {
		return "", badURL("%s is not under a directory this gateway allows (--source-dir)", p)
	}
	real, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", badURL("%s does not exist", p)
	}
	if err != nil {
		return "", badURL("%s cannot be read: %v", p, errors.Unwrap(err))
	}
	// Resolved: links must not lead out either.
	if !withinAny(real, dirs.real) {
		return "", badURL("%s leads (through a symbolic link) out of the directories this gateway allows", p)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", badURL("%s cannot be read: %v", p, errors.Unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return "", badURL("%s is not a regular file", p)
	}
	return real, nil
}

// OpenFile opens a file source's file (checked by FilePath) and says its
// format (Parquet when it starts and ends with PAR1, else CSV) and size.
// The file opened must still be the one checked (not swapped for a link
// since). A refusal is FilePath's; a failure to read is an ordinary error.
func OpenFile(raw string, dirs Dirs) (*os.File, string, int64, error) {
	real, err := FilePath(raw, dirs)
	if err != nil {
		return nil, "", 0, err
	}
	before, err := os.Lstat(real)
	if err != nil {
		return nil, "", 0, fmt.Errorf("read %s: %v", real, errors.Unwrap(err))
	}
	f, err := os.Open(real)
	if err != nil {
		return nil, "", 0, fmt.Errorf("read %s: %v", real, errors.Unwrap(err))
	}
	fi, err := f.Stat()
	if err != nil || !os.SameFile(before, fi) || !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, "", 0, fmt.Errorf("%s changed while it was opened; try again", real)
	}
	format, err := fileFormat(f, fi.Size())
	if err != nil {
		_ = f.Close()
		return nil, "", 0, fmt.Errorf("read %s: %v", real, err)
	}
	return f, format, fi.Size(), nil
}

var parquetMagic = []byte("PAR1")

func fileFormat(f io.ReaderAt, size int64) (string, error) {
	if size < 8 {
		return FileCSV, nil
	}
	head, tail := make([]byte, 4), make([]byte, 4)
	if _, err := f.ReadAt(head, 0); err != nil {
		return "", err
	}
	if _, err := f.ReadAt(tail, size-4); err != nil {
		return "", err
	}
	if bytes.Equal(head, parquetMagic) && bytes.Equal(tail, parquetMagic) {
		return FileParquet, nil
	}
	return FileCSV, nil
}

// snapshotFile reads a file source's file, as it is now, into d through
// ingest, streaming from the file. Its size is not bounded by
// Config.Limits' bytes (the file is already on this host), only its rows
// and columns are.
func (m *Manager) snapshotFile(ctx context.Context, src *store.DatasetSource, d *store.Dataset) error {
	f, format, size, err := OpenFile(src.URL, m.cfg.FileDirs)
	if err != nil {
		var ie *store.InvalidError
		if errors.As(err, &ie) {
			return err
		}
		return &SnapshotError{Msg: err.Error()}
	}
	defer f.Close()
	lim := m.cfg.Limits
	lim.MaxBytes = max(size, 1)
	if err := ingest.Dataset(ctx, m.cfg.Store, d, f, lim); err != nil {
		var bad *ingest.BadInputError
		if errors.As(err, &bad) {
			return &SnapshotError{Msg: fmt.Sprintf("the %s file was refused: %s", format, bad.Error())}
		}
		return err
	}
	return nil
}
