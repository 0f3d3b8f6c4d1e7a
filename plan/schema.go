package plan

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Schemas holds the JSON Schemas (draft 2020-12) of the plan and model
// formats: schemas/plan.v1.schema.json and schemas/model.v1.schema.json.
//
//go:embed schemas/*.schema.json
var Schemas embed.FS

// SchemaFiles are the schema files in Schemas, by format.
var SchemaFiles = map[string]string{Format: "plan.v1.schema.json", ModelFormat: "model.v1.schema.json"}

// SchemaError is one place where a document breaks its format's schema.
type SchemaError struct {
	// Path is a JSON path to the value, e.g. $.train.epochs or $.forward[2].op.
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (e SchemaError) Error() string { return e.Path + ": " + e.Message }

var printer = message.NewPrinter(language.English)

var (
	schemaOnce sync.Once
	schemas    map[string]*jsonschema.Schema
	schemaErr  error
)

func compiledSchemas() (map[string]*jsonschema.Schema, error) {
	schemaOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		for _, file := range SchemaFiles {
			b, err := Schemas.ReadFile("schemas/" + file)
			if err != nil {
				schemaErr = err
				return
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				schemaErr = fmt.Errorf("plan: schema %s: %w", file, err)
				return
			}
			if err := c.AddResource("mem:///"+file, doc); err != nil {
				schemaErr = err
				return
			}
		}
		schemas = map[string]*jsonschema.Schema{}
		for format, file := range SchemaFiles {
			s, err := c.Compile("mem:///" + file)
			if err != nil {
				schemaErr = fmt.Errorf("plan: schema %s: %w", file, err)
				return
			}
			schemas[format] = s
		}
	})
	return schemas, schemaErr
}

// CheckSchema checks a plan (format Format) or model (ModelFormat)
// document against its JSON Schema and returns every place it breaks it,
// sorted by path; nil when it conforms. An error is returned only when b
// is not one JSON value.
func CheckSchema(format string, b []byte) ([]SchemaError, error) {
	ss, err := compiledSchemas()
	if err != nil {
		return nil, err
	}
	s, ok := ss[format]
	if !ok {
		return nil, fmt.Errorf("plan: no schema for format %q", format)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, errors.New("not valid JSON: more than one value")
	}
	err = s.Validate(v)
	if err == nil {
		return nil, nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return nil, err
	}
	var out []SchemaError
	seen := map[string]bool{}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		se := SchemaError{Path: jsonPath(e.InstanceLocation), Message: e.ErrorKind.LocalizedString(printer)}
		if k := se.Path + "\x00" + se.Message; !seen[k] {
			seen[k] = true
			out = append(out, se)
		}
	}
	walk(ve)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// jsonPath writes an instance location as $.a.b[2].c.
func jsonPath(loc []string) string {
	var b strings.Builder
	b.WriteString("$")
	for _, seg := range loc {
		if _, err := strconv.Atoi(seg); err == nil {
			b.WriteString("[" + seg + "]")
			continue
		}
		if identRE().MatchString(seg) {
			b.WriteString("." + seg)
			continue
		}
		b.WriteString("[" + strconv.Quote(seg) + "]")
	}
	return b.String()
}

// StripComments removes // comments (to the end of the line, outside
// strings) from a JSON document, keeping line numbers, so that plan files
// can explain themselves. The result is what is sent and parsed.
func StripComments(b []byte) []byte {
	out := make([]byte, 0, len(b))
	inString, escaped := false, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			out = append(out, c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			out = append(out, c)
			continue
		}
		if c == '/' && i+1 < len(b) && b[i+1] == '/' {
			for i < len(b) && b[i] != '\n' {
				i++
			}
			if i < len(b) {
				out = append(out, '\n')
			}
			continue
		}
		out = append(out, c)
	}
	return out
}
