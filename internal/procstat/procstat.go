// Package procstat reads a process's memory figures from /proc (Linux), for
// benchmarks and tests that measure resident memory.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Bytes returns a size field of /proc/PID/status ("VmRSS", "VmHWM",
// "RssAnon", "RssFile", ...) in bytes; pid 0 is this process.
func Bytes(pid int, field string) (int64, error) {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s: %w", path, field, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s has no %s", path, field)
}

// MiB is Bytes in mebibytes.
func MiB(pid int, field string) (float64, error) {
	n, err := Bytes(pid, field)
	return float64(n) / (1 << 20), err
}
