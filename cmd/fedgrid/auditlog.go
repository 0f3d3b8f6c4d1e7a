package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// openAuditLog opens the --audit-log target: "-" is stdout (every entry from
// the first); a file is opened for appending and resumes after the sequence
// number of its last complete line.
func openAuditLog(path string, stdout io.Writer) (io.Writer, uint64, func(), error) {
	if path == "-" {
		return stdout, 0, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("--audit-log: %w", err)
	}
	from, err := lastAuditSeq(f)
	if err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("--audit-log %s: %w", path, err)
	}
	return f, from, func() { _ = f.Close() }, nil
}

// lastAuditSeq reads the seq of the last complete JSON line of f (0 if none).
func lastAuditSeq(f *os.File) (uint64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	const tail = 64 << 10
	off := max(st.Size()-tail, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return 0, err
	}
	b = bytes.TrimRight(b, "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	} else if off > 0 {
		return 0, fmt.Errorf("its last line is longer than %d bytes", tail)
	}
	if len(b) == 0 {
		return 0, nil
	}
	var e struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Seq == 0 {
		return 0, fmt.Errorf("its last line is not an audit entry; move the file away or fix it")
	}
	return e.Seq, nil
}
