//go:build linux

package memtrim

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReleaseExecutable releases this process's resident pages of its own
// executable's read-only mappings (see the package comment). A mapping
// holding any anonymous (copy-on-write) page is skipped: dropping it would
// lose that page's content. Writable mappings are never touched.
func ReleaseExecutable() (Released, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return Released{}, fmt.Errorf("memtrim: %w", err)
	}
	maps, err := parseSmaps(f)
	_ = f.Close() // read-only: its error tells nothing more
	if err != nil {
		return Released{}, fmt.Errorf("memtrim: /proc/self/smaps: %w", err)
	}
	// The executable is the file mapped where this function's code is
	// (whatever its path: overlayfs, a deleted or renamed binary).
	release, skipped, err := selectMappings(maps, reflect.ValueOf(ReleaseExecutable).Pointer())
	if err != nil {
		return Released{}, err
	}
	r := Released{Skipped: skipped}
	for _, m := range release {
		// MADV_DONTNEED on a private file mapping drops this process's
		// page table entries; a later access maps the file's page again.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
			return r, fmt.Errorf("memtrim: madvise %#x-%#x: %w", m.start, m.end, errno)
		}
		r.Mappings++
		r.Resident += m.rss
	}
	return r, nil
}

// selectMappings returns the mappings to release: the private, read-only
// mappings of the file whose mapping holds pc, but not those holding an
// anonymous (copy-on-write) page, which it counts as skipped.
func selectMappings(maps []mapping, pc uintptr) (release []mapping, skipped int, err error) {
	var exe *mapping
	for i := range maps {
		if maps[i].start <= pc && pc < maps[i].end {
			exe = &maps[i]
		}
	}
	if exe == nil || exe.inode == 0 {
		return nil, 0, fmt.Errorf("memtrim: the code at %#x is in no mapping of a file", pc)
	}
	for _, m := range maps {
		switch {
		case m.inode != exe.inode || m.dev != exe.dev || !m.private || m.writable:
		case m.anonymous > 0:
			skipped++
		default:
			release = append(release, m)
		}
	}
	return release, skipped, nil
}

// mapping is one entry of /proc/PID/smaps.
type mapping struct {
	start, end        uintptr
	writable, private bool
	dev               string // major:minor as smaps shows it
	inode             uint64
	rss, anonymous    int64 // bytes
}

// parseSmaps reads the entries of /proc/PID/smaps: a header line
// "start-end perms offset major:minor inode [path]" followed by
// "Field: N kB" lines.
func parseSmaps(r io.Reader) ([]mapping, error) {
	var maps []mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if !strings.HasSuffix(f[0], ":") { // a mapping's header
			m, err := parseHeader(f)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", line, err)
			}
			maps = append(maps, m)
			continue
		}
		if len(maps) == 0 || len(f) < 2 || (f[0] != "Rss:" && f[0] != "Anonymous:") {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", line, err)
		}
		m := &maps[len(maps)-1]
		if f[0] == "Rss:" {
			m.rss = kb << 10
		} else {
			m.anonymous = kb << 10
		}
	}
	return maps, sc.Err()
}

func parseHeader(f []string) (mapping, error) {
	var m mapping
	if len(f) < 5 || len(f[1]) != 4 {
		return m, fmt.Errorf("not a mapping header")
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	if !ok || err1 != nil || err2 != nil || end <= start {
		return m, fmt.Errorf("bad address range %q", f[0])
	}
	inode, err := strconv.ParseUint(f[4], 10, 64)
	if err != nil {
		return m, fmt.Errorf("bad inode %q", f[4])
	}
	m.start, m.end = uintptr(start), uintptr(end)
	m.writable, m.private = f[1][1] == 'w', f[1][3] == 'p'
	m.dev, m.inode = f[3], inode
	return m, nil
}
