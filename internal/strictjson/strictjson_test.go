package strictjson

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

type inner struct {
	Op string    `json:"op"`
	In []string  `json:"in,omitempty"`
	X  []float64 `json:"x,omitempty"`
}

type Embedded struct {
	Note string `json:"note,omitempty"`
}

type doc struct {
	Embedded
	Job     string             `json:"job"`
	Attempt int                `json:"attempt,omitempty"`
	Layers  []inner            `json:"layers,omitempty"`
	Tags    map[string]string  `json:"tags,omitempty"`
	Raw     json.RawMessage    `json:"raw,omitempty"`
	Ptr     *inner             `json:"ptr,omitempty"`
	Any     any                `json:"any,omitempty"`
	Skip    string             `json:"-"`
	ByName  map[string]float64 `json:"by_name,omitempty"`
}

func TestDecodeRefuses(t *testing.T) {
	for _, c := range []struct {
		name, in string
		kind     Kind
		path     string
		msg      string
	}{
		{"trailing brace", `{"job":"x"}}`, Trailing, "", "unexpected data"},
		{"second value", `{"job":"x"} {}`, Trailing, "", "unexpected data"},
		{"duplicate key", `{"job":"x","job":"y"}`, Duplicate, "job", `"job" is given twice`},
		{"nested duplicate", `{"job":"x","layers":[{"op":"relu"},{"op":"tanh","op":"relu"}]}`, Duplicate, "layers[1].op", "given twice"},
		{"duplicate in a map", `{"tags":{"a":"1","a":"2"}}`, Duplicate, "tags.a", "given twice"},
		{"duplicate in raw", `{"raw":{"k":1,"k":2}}`, Duplicate, "raw.k", "given twice"},
		{"duplicate in any", `{"any":[{"k":1,"k":2}]}`, Duplicate, "any[0].k", "given twice"},
		{"case-folded key", `{"JOB":"x"}`, UnknownField, "JOB", `unknown field "JOB"`},
		{"case-folded nested", `{"ptr":{"Op":"relu"}}`, UnknownField, "ptr.Op", `unknown field "Op" in ptr`},
		{"unknown field", `{"job":"x","admin":true}`, UnknownField, "admin", `unknown field "admin"`},
		{"skipped field", `{"Skip":"x"}`, UnknownField, "Skip", "unknown field"},
		{"dash field", `{"-":"x"}`, UnknownField, "-", "unknown field"},
		{"wrong type", `{"attempt":"1"}`, WrongType, "attempt", "must be a number, not string"},
		{"nested wrong type", `{"layers":[{"op":5}]}`, WrongType, "layers.op", "must be a string"},
		{"not an object", `[1,2]`, NotObject, "", "must be a JSON object"},
		{"null", `null`, NotObject, "", "must be a JSON object"},
		{"empty", ``, Syntax, "", "empty input"},
		{"truncated", `{"job":`, Syntax, "", "truncated"},
		{"malformed", `{"job" "x"}`, Syntax, "", "malformed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var d doc
			err := Decode([]byte(c.in), &d)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode(%s) = %v, want an *Error", c.in, err)
			}
			if e.Kind != c.kind || e.Path != c.path || !strings.Contains(e.Error(), c.msg) {
				t.Fatalf("Decode(%s) = kind %d path %q %q; want kind %d path %q containing %q", c.in, e.Kind, e.Path, e.Error(), c.kind, c.path, c.msg)
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	in := `{"note":"n","job":"j","attempt":2,"layers":[{"op":"relu","in":["a"]}],"tags":{"A":"1","a":"2"},
		"raw":{"free":[1,{"x":2}]},"ptr":{"op":"mul"},"any":{"k":1},"by_name":{"w":1.5}}` + "\n\t "
	var d doc
	if err := Decode([]byte(in), &d); err != nil {
		t.Fatal(err)
	}
	if d.Note != "n" || d.Job != "j" || d.Attempt != 2 || d.Layers[0].In[0] != "a" || d.Tags["A"] != "1" || d.Tags["a"] != "2" ||
		string(d.Raw) != `{"free":[1,{"x":2}]}` || d.Ptr.Op != "mul" || d.ByName["w"] != 1.5 {
		t.Fatalf("decoded %+v", d)
	}
	var m map[string]any
	if err := Decode([]byte(`{"a":{"b":1}}`), &m); err != nil {
		t.Fatal(err)
	}
	var n float64
	if err := Decode([]byte(` 1.5 `), &n); err != nil || n != 1.5 {
		t.Fatalf("scalar: %v %v", n, err)
	}
}

// Arrays read whole (no object inside) and arrays of objects walked token
// by token are refused and accepted alike.
func TestDecodeArrays(t *testing.T) {
	var d doc
	in := `{"layers":[{"op":"a","x":[1,2.5,-3e2],"in":["{","b"]},{"op":"b","x":[]}],"any":[[1,[2]],[{"k":1}]],"raw":[1,2,3]}`
	if err := Decode([]byte(in), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Layers) != 2 || d.Layers[0].X[2] != -300 || d.Layers[0].In[0] != "{" {
		t.Fatalf("decoded %+v", d)
	}
	for _, c := range []struct {
		in   string
		kind Kind
		path string
	}{
		{`{"any":[[1,[2]],[{"k":1,"k":2}]]}`, Duplicate, "any[1][0].k"},
		{`{"layers":[{"op":"a","x":[1,"two"]}]}`, WrongType, "layers.x"},
		{`{"layers":[{"op":"a","x":[1,2}]}`, Syntax, ""},
		{`{"layers":[{"op":"a","x":[1,2`, Syntax, ""},
		{`{"ptr":[1,2]}`, WrongType, "ptr"},
	} {
		var d doc
		err := Decode([]byte(c.in), &d)
		var e *Error
		if !errors.As(err, &e) || e.Kind != c.kind || e.Path != c.path {
			t.Errorf("Decode(%s) = %v (%+v), want kind %d at %q", c.in, err, e, c.kind, c.path)
		}
	}
}
