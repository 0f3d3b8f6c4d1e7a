package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// DefaultMaxMemory is the memory this process may use: the smaller of its
// cgroup's limit (v2 memory.max, or v1 memory.limit_in_bytes) and the
// machine's physical memory (MemTotal). It is an error if neither is known.
func DefaultMaxMemory() (int64, error) {
	phys, perr := physicalMemory("/proc/meminfo")
	cg, cerr := cgroupLimit("/sys/fs/cgroup")
	switch {
	case perr != nil && cerr != nil:
		return 0, errors.New("cannot tell this machine's memory (no /proc/meminfo, no cgroup limit); give it with --max-memory")
	case perr != nil:
		return cg, nil
	case cerr != nil:
		return phys, nil
	}
	return min(phys, cg), nil
}

// RuntimeMemoryLimit is the Go runtime's memory limit for a node given
// maxMemory: 90% of it, the rest left for what the runtime does not count
// (the binary's code and data, mapped file pages).
func RuntimeMemoryLimit(maxMemory int64) int64 { return maxMemory / 10 * 9 }

// physicalMemory reads MemTotal from a meminfo file.
func physicalMemory(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil || kb <= 0 {
				return 0, fmt.Errorf("%s: malformed MemTotal", path)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s: no MemTotal", path)
}

// cgroupLimit reads the memory limit of the cgroup mounted at root; "max"
// or the v1 "no limit" value are no limit (an error).
func cgroupLimit(root string) (int64, error) {
	for _, f := range []string{root + "/memory.max", root + "/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, errors.New("no cgroup memory limit")
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 {
			return 0, fmt.Errorf("%s: malformed limit %q", f, s)
		}
		if v >= math.MaxInt64/2 { // cgroup v1's "unlimited"
			return 0, errors.New("no cgroup memory limit")
		}
		return v, nil
	}
	return 0, errors.New("no cgroup memory limit")
}

// ParseBytes reads a memory size: a number of bytes, or a number with a unit
// k, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024), with an
// optional B: 512MiB, 2G, 1.5GB.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "B")
	mult := 1.0
	for _, u := range []struct {
		suffix string
		m      float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}} {
		if v, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = v, u.m
			break
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || math.IsNaN(v) || v <= 0 || v*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is not a memory size (say 512MiB or 2G)", s)
	}
	return int64(v * mult), nil
}
