package main

import (
	"bytes"
	"strings"
	"testing"
)

// Bad `fedgrid eval` usage is exit 2 with one line saying what is wrong,
// before anything is read or contacted.
func TestEvalUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"eval", "--dataset", "a/b", "--dataset", "c/d"}, "--model MODEL.json is required"},
		{[]string{"eval", "--model", "m.json", "--dataset", "a/b"}, "is needed at least twice"},
		{[]string{"eval", "--model", "m.json"}, "fedgrid model eval"},
	} {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}
