package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// openAPI builds the OpenAPI 3.1 document from the route table: every path,
// method, parameter, request body and response comes from a route entry and
// the Go types it names, so the document cannot drift from the handlers.
func (a *API) openAPI() ([]byte, error) {
	g := &schemaGen{components: map[string]any{}}
	g.components["Error"] = g.schema(reflect.TypeOf(Error{}))
	paths := map[string]map[string]any{}
	pathParam := regexp.MustCompile(`\{([a-z_]+)\}`)
	for _, rt := range a.routes {
		op := map[string]any{
			"summary":     rt.summary,
			"operationId": operationID(rt),
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.query {
			params = append(params, map[string]any{"name": q.name, "in": "query", "required": false, "description": q.desc, "schema": map[string]any{"type": "string"}})
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.req != nil {
			ct := "application/json"
			if rt.multipart {
				ct = "multipart/form-data"
			}
			op["requestBody"] = map[string]any{
				"required": !rt.optional,
				"content":  map[string]any{ct: map[string]any{"schema": g.schema(reflect.TypeOf(rt.req))}},
			}
		}
		responses := map[string]any{}
		ok := map[string]any{"description": http.StatusText(rt.status)}
		if rt.resp != nil && rt.status != http.StatusNoContent {
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(rt.resp))}}
		}
		responses[strconv.Itoa(rt.status)] = ok
		errRef := map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}
		responses["default"] = errRef
		op["responses"] = responses
		switch rt.access {
		case accessAnyone, accessPublic:
			op["security"] = []any{}
		default:
			op["security"] = []any{map[string]any{"bearer": []any{}}}
		}
		if rt.perm != "" {
			op["x-fedgrid-permission"] = string(rt.perm)
		}
		if paths[rt.path] == nil {
			paths[rt.path] = map[string]any{}
		}
		paths[rt.path][strings.ToLower(rt.method)] = op
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "fedgrid gateway admin API",
			"version":     "v1",
			"description": `Errors are {"error": {"code", "message"}} with a 4xx/5xx status.`,
		},
		"paths": paths,
		"components": map[string]any{
			"schemas":         g.components,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
		},
		"security": []any{map[string]any{"bearer": []any{}}},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("api: encode OpenAPI document: %w", err)
	}
	return b, nil
}

func operationID(rt *route) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(rt.method))
	for _, seg := range strings.Split(rt.path, "/") {
		seg = strings.Trim(seg, "{}")
		if seg == "" || seg == "api" || seg == "v1" {
			continue
		}
		for _, w := range strings.FieldsFunc(seg, func(r rune) bool { return r == '-' || r == '_' || r == '.' }) {
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		}
	}
	return b.String()
}

func (a *API) openAPIHandler(c *call) (any, error) { return json.RawMessage(a.openapi), nil }

type schemaGen struct {
	components map[string]any
}

var (
	timeType = reflect.TypeOf(time.Time{})
	rawType  = reflect.TypeOf(json.RawMessage{})
)

// schema returns the JSON Schema of t; named structs go to components.
func (g *schemaGen) schema(t reflect.Type) map[string]any {
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == rawType:
		return map[string]any{}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return g.schema(t.Elem())
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		name := t.Name()
		if name == "" {
			return g.structSchema(t)
		}
		if _, ok := g.components[name]; !ok {
			g.components[name] = map[string]any{} // placeholder against recursion
			g.components[name] = g.structSchema(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

func (g *schemaGen) structSchema(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	// Request bodies require only fields tagged required:"true"; responses
	// always carry their non-omitempty fields.
	isRequest := strings.HasSuffix(t.Name(), "Request") || strings.HasSuffix(t.Name(), "Form")
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			if name == "" {
				name = f.Name
			}
			s := g.schema(f.Type)
			if d := f.Tag.Get("description"); d != "" {
				s = withKey(s, "description", d)
			}
			if e := f.Tag.Get("enum"); e != "" {
				s = withKey(s, "enum", strings.Split(e, ","))
			}
			if fm := f.Tag.Get("format"); fm != "" {
				s = withKey(s, "format", fm)
			}
			props[name] = s
			if isRequest {
				if f.Tag.Get("required") == "true" {
					required = append(required, name)
				}
			} else if f.Type.Kind() != reflect.Pointer && !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
				required = append(required, name)
			}
		}
	}
	walk(t)
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if required != nil {
		s["required"] = required
	}
	return s
}

func withKey(s map[string]any, k string, v any) map[string]any {
	out := map[string]any{k: v}
	for kk, vv := range s {
		out[kk] = vv
	}
	return out
}
