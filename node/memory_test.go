package node

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseBytesAndLimits(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "512Mi": 512 << 20, "2G": 2e9, "1.5GB": 1.5e9, "4096": 4096, "10k": 10000} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1G", "lots", "1e30G", "NaN"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) accepted", bad)
		}
	}
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if m, err := physicalMemory(write("meminfo", "MemFree: 10 kB\nMemTotal:       24000000 kB\n")); err != nil || m != 24000000<<10 {
		t.Errorf("MemTotal: %d %v", m, err)
	}
	write("v2/memory.max", "max\n")
	if _, err := cgroupLimit(filepath.Join(dir, "v2")); err == nil {
		t.Error("memory.max of max is a limit")
	}
	write("v2b/memory.max", "1073741824\n")
	if m, err := cgroupLimit(filepath.Join(dir, "v2b")); err != nil || m != 1<<30 {
		t.Errorf("cgroup v2: %d %v", m, err)
	}
	write("v1/memory/memory.limit_in_bytes", "9223372036854771712\n")
	if _, err := cgroupLimit(filepath.Join(dir, "v1")); err == nil {
		t.Error("cgroup v1 unlimited is a limit")
	}
	if m, err := DefaultMaxMemory(); err != nil || m <= 0 {
		t.Errorf("this machine: %d %v", m, err)
	}
}
