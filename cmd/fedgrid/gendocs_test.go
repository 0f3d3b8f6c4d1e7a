package main

import (
	"bytes"
	"testing"
)

// TestGeneratedDocsUpToDate: the committed reference manual (docs/) is what
// the code generates; make docs rewrites it.
func TestGeneratedDocsUpToDate(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"gen-docs", "--check", "--dir", "../../docs"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
}
