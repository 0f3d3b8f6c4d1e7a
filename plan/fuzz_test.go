package plan

import (
	"context"
	"encoding/json"
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

// FuzzParseModel: a model file (fedgrid model eval, a hosted model upload)
// never makes ParseModel, SigningBytes or Evaluate panic, and a refusal
// says why.
func FuzzParseModel(f *testing.F) {
	tab := synthTable(f, 40, 1)
	for _, src := range enginePlans { // a trained model of every op and loss
		p, err := Parse([]byte(src))
		if err != nil {
			f.Fatal(err)
		}
		p.Train.Epochs = 1
		m, err := Train(context.Background(), p, tab, TrainOptions{})
		if err != nil {
			f.Fatal(err)
		}
		b, err := json.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"format":"fedgrid.model/v1"}`))
	f.Add([]byte(`{"format":"fedgrid.model/v1","plan":{"format":"fedgrid.plan/v1"},"params":{"w":{"shape":[1,1],"data":[1e308]}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseModel(b)
		if err != nil {
			checkReason(t, err)
			return
		}
		if _, err := m.SigningBytes(); err != nil {
			checkReason(t, err)
		}
		if _, err := Evaluate(m, tab); err != nil {
			checkReason(t, err)
		}
	})
}
