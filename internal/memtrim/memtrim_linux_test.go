//go:build linux

package memtrim

import (
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/internal/procstat"
)

const smapsSample = `00400000-01d44000 r-xp 00000000 fe:01 1234 /usr/bin/fedgrid
Size:              25872 kB
Rss:               17168 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
01d44000-03b74000 r--p 01944000 fe:01 1234 /usr/bin/fedgrid
Rss:               18240 kB
Anonymous:             0 kB
03b74000-03b78000 r--p 03774000 fe:01 1234 /usr/bin/fedgrid
Rss:                  16 kB
Anonymous:             4 kB
03b78000-03d08000 rw-p 03778000 fe:01 1234 /usr/bin/fedgrid
Rss:                1040 kB
Anonymous:           216 kB
03d08000-05d75000 rw-p 00000000 00:00 0 
Rss:                 296 kB
Anonymous:           296 kB
7f92a2751000-7f92a2777000 r--p 00000000 fe:01 99 /lib/x86_64-linux-gnu/libc.so.6
Rss:                 152 kB
Anonymous:             0 kB
7f92a2800000-7f92a2900000 r--p 00000000 fe:02 1234 /mnt/other
Rss:                 100 kB
Anonymous:             0 kB
7f92a2900000-7f92a2a00000 r--s 00000000 fe:01 1234 /usr/bin/fedgrid
Rss:                 100 kB
Anonymous:             0 kB
`

func TestSelectMappings(t *testing.T) {
	maps, err := parseSmaps(strings.NewReader(smapsSample))
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 8 || maps[0].rss != 17168<<10 || maps[3].anonymous != 216<<10 || maps[4].inode != 0 {
		t.Fatalf("parsed %+v", maps)
	}
	release, skipped, err := selectMappings(maps, 0x497b00)
	if err != nil {
		t.Fatal(err)
	}
	// The text and rodata only: not the read-only page holding a private
	// copy (Anonymous 4 kB), the writable data, the anonymous memory, the
	// libc, a file with the same inode on another device, a shared mapping.
	if len(release) != 2 || release[0].start != 0x400000 || release[1].end != 0x3b74000 || skipped != 1 {
		t.Fatalf("release %+v, skipped %d", release, skipped)
	}
	if _, _, err := selectMappings(maps, 0x3d08000); err == nil {
		t.Fatal("code in anonymous memory: no error")
	}
	if _, _, err := selectMappings(maps, 0x10); err == nil {
		t.Fatal("code in no mapping: no error")
	}
	for _, bad := range []string{"zz-01 r-xp 0 fe:01 1 /x\n", "00400000-01d44000 r-xp 0 fe:01 inode /x\n", "00400000-01d44000 r-xp 0\n", "00400000-01d44000 r-xp 0 fe:01 1 /x\nRss: many kB\n"} {
		if _, err := parseSmaps(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestReleaseExecutable releases this test binary's read-only pages: its
// resident file pages fall, and its code keeps running (it is mapped
// again as it runs).
func TestReleaseExecutable(t *testing.T) {
	before, err := procstat.Bytes(0, "RssFile")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ReleaseExecutable()
	if err != nil {
		t.Fatal(err)
	}
	after, err := procstat.Bytes(0, "RssFile")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("released %+v; RssFile %d -> %d KiB", r, before>>10, after>>10)
	if r.Mappings < 1 || r.Resident <= 0 {
		t.Fatalf("released %+v", r)
	}
	if after >= before {
		t.Fatalf("RssFile %d -> %d bytes: nothing given back", before, after)
	}
	// Code and read-only data used before the release work after it.
	if s := strings.Repeat("ab", 3); s != "ababab" {
		t.Fatal(s)
	}
	if _, err := ReleaseExecutable(); err != nil {
		t.Fatalf("a second release: %v", err)
	}
}
