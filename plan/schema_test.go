package plan

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestPlanSchemaAcceptsTheExamples(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	more, _ := filepath.Glob(filepath.Join("..", "examples", "plans", "*.json"))
	files = append(files, more...)
	if len(files) < 4 {
		t.Fatalf("only %d example plans found", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(b); err != nil {
			continue // not a valid plan for the parser either
		}
		errs, err := CheckSchema(Format, b)
		if err != nil || len(errs) > 0 {
			t.Errorf("%s: a plan Parse accepts breaks the schema: %v %v", f, err, errs)
		}
	}
}

// TestPlanSchemaReportsEveryMistake (acceptance 5): three mistakes, three
// errors, each with its JSON path.
func TestPlanSchemaReportsEveryMistake(t *testing.T) {
	b := []byte(`{
	  "format": "fedgrid.plan/v1",
	  "features": ["a", "b"], "label": "y",
	  "params": {"w": {"shape": [2, 1], "init": "zero"}},
	  "forward": [{"op": "matmul", "in": ["x", "w"], "out": "y_hat"}, {"op": "swish", "in": ["y_hat"], "out": "y_hat"}],
	  "loss": {"op": "bce", "in": ["y_hat", "y"]},
	  "optimizer": {"name": "adam", "learning_rate": 0.05},
	  "train": {"epochs": 0, "batch_size": 32}
	}`)
	errs, err := CheckSchema(Format, b)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range errs {
		paths = append(paths, e.Path)
	}
	want := []string{"$.forward[1].op", "$.params.w.init", "$.train.epochs"}
	if !slices.Equal(paths, want) {
		t.Fatalf("errors %v, want exactly these paths %v", errs, want)
	}
	if !strings.Contains(errs[0].Message, "relu") || !strings.Contains(errs[2].Message, "1") {
		t.Errorf("messages do not say what is allowed: %v", errs)
	}
	if _, err := CheckSchema(Format, []byte(`{"format": `)); err == nil {
		t.Error("broken JSON: no error")
	}
}

// TestSchemasFollowTheGoTypes: every JSON field of the plan and model types
// is in the schema, and the schema has no property the types lack, so the
// schema and the strict decoder cannot drift apart.
func TestSchemasFollowTheGoTypes(t *testing.T) {
	for format, typ := range map[string]reflect.Type{Format: reflect.TypeOf(Plan{}), ModelFormat: reflect.TypeOf(Model{})} {
		b, err := Schemas.ReadFile("schemas/" + SchemaFiles[format])
		if err != nil {
			t.Fatal(err)
		}
		var s map[string]any
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		compareFields(t, SchemaFiles[format], s, typ)
	}
}

func compareFields(t *testing.T, where string, s map[string]any, typ reflect.Type) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
		if items, ok := s["items"].(map[string]any); ok {
			s = items
		}
	}
	if typ.Kind() == reflect.Map {
		if ap, ok := s["additionalProperties"].(map[string]any); ok {
			compareFields(t, where+".*", ap, typ.Elem())
		}
		return
	}
	if typ.Kind() != reflect.Struct || typ.Implements(reflect.TypeFor[json.Marshaler]()) {
		return // encoded as a value of its own (time.Time: a string)
	}
	props, ok := s["properties"].(map[string]any)
	if !ok {
		if _, ref := s["$ref"]; ref {
			return // the plan inside a model
		}
		t.Errorf("%s: %s has no properties in the schema", where, typ)
		return
	}
	var goNames []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		goNames = append(goNames, name)
		sub, ok := props[name].(map[string]any)
		if !ok {
			t.Errorf("%s: field %s (%s.%s) is not in the schema", where, name, typ.Name(), f.Name)
			continue
		}
		compareFields(t, where+"."+name, sub, f.Type)
	}
	var schemaNames []string
	for k := range props {
		schemaNames = append(schemaNames, k)
	}
	sort.Strings(goNames)
	sort.Strings(schemaNames)
	for _, k := range schemaNames {
		if !slices.Contains(goNames, k) {
			t.Errorf("%s: the schema has %s, which %s lacks", where, k, typ)
		}
	}
}

func TestStripComments(t *testing.T) {
	in := "{\n  // a comment\n  \"url\": \"http://x//y\", // after\n  \"q\": \"a \\\" // b\"\n}\n// end"
	out := string(StripComments([]byte(in)))
	want := "{\n  \n  \"url\": \"http://x//y\", \n  \"q\": \"a \\\" // b\"\n}\n"
	if out != want {
		t.Fatalf("got %q\nwant %q", out, want)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); err != nil || v["url"] != "http://x//y" || v["q"] != `a " // b` {
		t.Fatalf("%v %v", v, err)
	}
	if strings.Count(out, "\n") != strings.Count(in, "\n") {
		t.Error("line numbers moved")
	}
}

// TestSchemaEnumsFollowTheCode: the operation names the schema allows are
// the ones the code knows.
func TestSchemaEnumsFollowTheCode(t *testing.T) {
	b, err := Schemas.ReadFile("schemas/" + SchemaFiles[Format])
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties map[string]struct {
			Properties map[string]struct {
				Enum []string `json:"enum"`
			} `json:"properties"`
			Items struct {
				Properties map[string]struct {
					Enum []string `json:"enum"`
				} `json:"properties"`
			} `json:"items"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	for name, pair := range map[string][2][]string{
		"forward":    {s.Properties["forward"].Items.Properties["op"].Enum, ForwardOps},
		"loss":       {s.Properties["loss"].Properties["op"].Enum, LossOps},
		"optimizer":  {s.Properties["optimizer"].Properties["name"].Enum, Optimizers},
		"preprocess": {s.Properties["preprocess"].Items.Properties["op"].Enum, PreprocessOps},
	} {
		got, want := slices.Clone(pair[0]), slices.Clone(pair[1])
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: the schema allows %v, the code knows %v", name, got, want)
		}
	}
}
