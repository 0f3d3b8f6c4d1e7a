// Package strictjson is the one JSON decoder for everything fedgrid reads
// from a person or a peer: HTTP request bodies, p2p stream messages, plans
// and model files. encoding/json alone is lenient in ways that let the text
// a person reads differ from what runs: it matches keys case-insensitively,
// keeps the last of two equal keys, and ignores data after the first value.
// Decode refuses all of these, at every depth:
//
//   - a key given twice in one object;
//   - a key that is not exactly (case included) the json name of a field of
//     the struct it decodes into (unknown and case-folded keys);
//   - anything but white space after the one JSON value;
//   - a value of the wrong type; a struct target given anything but an object.
//
// Objects decoded into maps, interfaces or json.RawMessage keep their keys
// as given, but a key twice is still refused.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// Kind classifies a refusal.
type Kind int

const (
	Syntax       Kind = iota // not JSON, truncated or empty
	NotObject                // a struct target given something else
	UnknownField             // a key that is no field (or differs in case)
	Duplicate                // a key given twice
	WrongType                // a value of the wrong type
	Trailing                 // data after the JSON value
)

// Error is a refusal. Path locates the value at fault ("" for the whole
// document, "train.epochs", "forward[3].op"); Field is the key at fault for
// UnknownField and Duplicate (the last element of Path).
type Error struct {
	Kind   Kind
	Path   string
	Field  string
	Reason string
}

func (e *Error) Error() string {
	switch e.Kind {
	case UnknownField:
		if p := parent(e.Path); p != "" {
			return fmt.Sprintf("unknown field %q in %s", e.Field, p)
		}
		return fmt.Sprintf("unknown field %q", e.Field)
	case Duplicate:
		return fmt.Sprintf("field %q is given twice", e.Path)
	case WrongType:
		if e.Path != "" {
			return fmt.Sprintf("field %q: %s", e.Path, e.Reason)
		}
	}
	return e.Reason
}

func parent(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// Decode decodes exactly one JSON value from b into v (a non-nil pointer),
// refusing what the package comment lists. The error is an *Error.
func Decode(b []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return &Error{Kind: Syntax, Reason: "strictjson: Decode needs a non-nil pointer"}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := (&walker{dec: dec, b: b}).walk(rv.Type().Elem(), "", true); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &Error{Kind: Trailing, Reason: "unexpected data after the JSON value"}
	}
	full := json.NewDecoder(bytes.NewReader(b))
	full.DisallowUnknownFields()
	if err := full.Decode(v); err != nil {
		return decodeError(err)
	}
	return nil
}

var rawMessage = reflect.TypeFor[json.RawMessage]()

// walker reads the values of b through dec, token by token.
type walker struct {
	dec *json.Decoder
	b   []byte
}

// next returns the first byte of the next value (past white space and the
// separators the decoder has not consumed yet), or 0 at the end.
func (w *walker) next() byte {
	for _, c := range w.b[min(int(w.dec.InputOffset()), len(w.b)):] {
		switch c {
		case ' ', '\t', '\n', '\r', ',', ':':
			continue
		}
		return c
	}
	return 0
}

// walk reads one value from dec, checking it against type t (nil: any).
// An array with no object inside (no '{' byte: numbers, strings, nested
// arrays of them) holds nothing to check: it is read as one value, not
// token by token, which makes large weight arrays cheap.
func (w *walker) walk(t reflect.Type, path string, top bool) error {
	dec := w.dec
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessage || (t != nil && t.Kind() == reflect.Interface) {
		t = nil
	}
	if !top && w.next() == '[' {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return syntaxError(truncated(err))
		}
		if bytes.IndexByte(raw, '{') < 0 {
			return nil
		}
		sub := json.NewDecoder(bytes.NewReader(raw))
		sub.UseNumber()
		return (&walker{dec: sub, b: raw}).value(t, path, false)
	}
	return w.value(t, path, top)
}

// value reads one value token by token (t as walk leaves it).
func (w *walker) value(t reflect.Type, path string, top bool) error {
	dec := w.dec
	tok, err := dec.Token()
	if err != nil {
		if !top {
			err = truncated(err)
		}
		return syntaxError(err)
	}
	d, isDelim := tok.(json.Delim)
	if top && t != nil && t.Kind() == reflect.Struct && (!isDelim || d != '{') {
		return &Error{Kind: NotObject, Reason: "must be a JSON object"}
	}
	if !isDelim {
		return nil
	}
	switch d {
	case '{':
		var fields map[string]reflect.Type
		var elem reflect.Type
		if t != nil {
			switch t.Kind() {
			case reflect.Struct:
				fields = fieldTypes(t)
			case reflect.Map:
				elem = t.Elem()
			}
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return syntaxError(truncated(err))
			}
			key, _ := tok.(string)
			at := key
			if path != "" {
				at = path + "." + key
			}
			if seen[key] {
				return &Error{Kind: Duplicate, Path: at, Field: key}
			}
			seen[key] = true
			vt := elem
			if fields != nil {
				ft, ok := fields[key]
				if !ok {
					return &Error{Kind: UnknownField, Path: at, Field: key}
				}
				vt = ft
			}
			if err := w.walk(vt, at, false); err != nil {
				return err
			}
		}
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := w.walk(elem, path+"["+strconv.Itoa(i)+"]", false); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return syntaxError(truncated(err))
	}
	return nil
}

// fieldTypes maps the json names of a struct's fields (embedded structs'
// fields promoted, as encoding/json does) to their types.
func fieldTypes(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			name, _, _ := strings.Cut(tag, ",")
			if name == "-" && !strings.HasPrefix(tag, "-,") {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
				add(ft)
				continue
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := out[name]; !dup {
				out[name] = f.Type
			}
		}
	}
	add(t)
	return out
}

// truncated: the end of input inside a value.
func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func syntaxError(err error) *Error {
	switch {
	case errors.Is(err, io.EOF):
		return &Error{Kind: Syntax, Reason: "empty input: a JSON value is required"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Kind: Syntax, Reason: "truncated JSON"}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &Error{Kind: Syntax, Reason: fmt.Sprintf("malformed JSON at byte %d: %s", se.Offset, se.Error())}
	}
	return &Error{Kind: Syntax, Reason: "malformed JSON: " + strings.TrimPrefix(err.Error(), "json: ")}
}

func decodeError(err error) *Error {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return &Error{Kind: WrongType, Path: ute.Field, Reason: fmt.Sprintf("must be %s, not %s", kindName(ute.Type), ute.Value)}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok { // cannot happen after walk; kept exact
		f = strings.Trim(f, `"`)
		return &Error{Kind: UnknownField, Path: f, Field: f}
	}
	return syntaxError(err)
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a number"
	}
	return t.String()
}
