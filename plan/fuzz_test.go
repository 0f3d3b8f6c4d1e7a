package plan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
)

// FuzzParseCheck: no input makes Parse, Validate or Check panic, and every
// rejection says why (a non-empty message that is not a bare Go error).
func FuzzParseCheck(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err == nil {
			f.Add(b)
		}
	}
	for _, src := range enginePlans {
		f.Add([]byte(src))
	}
	f.Add([]byte(`{"format":"fedgrid.plan/v1","model":"m1","train":{"epochs":1,"batch_size":1}}`))
	f.Add([]byte(`{"format":"fedgrid.plan/v1","features":["a"],"label":"y","params":{"w":{"shape":[1,1]}},"forward":[{"op":"exec_shell","in":["x","w"],"out":"z"}],"loss":{"op":"mse","in":["z","y"]},"optimizer":{"name":"sgd","learning_rate":0.1},"train":{"epochs":1,"batch_size":1}}`))
	cols := []dataset.Column{{Name: "pregnant", Type: "number"}, {Name: "glucose", Type: "number"}, {Name: "a", Type: "number"},
		{Name: "color", Type: "category"}, {Name: "diabetes", Type: "number"}, {Name: "bin", Type: "number"}}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			checkReason(t, err)
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v", err)
		}
		for _, c := range [][]dataset.Column{nil, cols} {
			r, err := Check(p, c)
			if err != nil {
				checkReason(t, err)
				continue
			}
			if r.ParamCount < 1 || r.ParamCount > MaxParams || r.Inputs < 1 {
				t.Fatalf("report %+v", r)
			}
			_ = r.String()
		}
		if err := p.CheckWork(1000); err != nil {
			checkReason(t, err)
		}
	})
}

func checkReason(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if len(msg) < 8 || strings.HasPrefix(msg, "json: ") || strings.Contains(msg, "runtime error") {
		t.Fatalf("rejection without a reason: %q", msg)
	}
}
