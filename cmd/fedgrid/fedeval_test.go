package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fedgrid/fedgrid/client"
	"github.com/fedgrid/fedgrid/plan"
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

// The text output names the gateways and gives accuracy with its counts
// and the AUC with its bin error.
func TestPrintFedEval(t *testing.T) {
	res := &client.EvalResult{Federation: "abc", Gateways: []string{"g1", "g2"}, Refused: map[string]string{"g3": "you may not use dataset \"x\""},
		FedEvaluation: plan.FedEvaluation{Rows: 154, Task: plan.TaskBinary, Loss: 0.5, Correct: 122, Accuracy: 122.0 / 154, AUC: 0.83, AUCError: 0.00045, Bins: 1000}}
	var out bytes.Buffer
	if err := printFedEval(&out, res, map[string]string{"g1": "Hospital A", "g2": "Hospital B", "g3": "Hospital C"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2: Hospital A, Hospital B", "(122 of 154)", "within 0.00045 of the exact AUC: 1000-bin", "refused     Hospital C: you may not use dataset"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
