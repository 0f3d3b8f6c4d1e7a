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
	g.schema(reflect.TypeOf(Error{})) // registers Error and ErrorBody
	errResp := func(desc string) map[string]any {
		return map[string]any{"description": desc, "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}
	}
	responsesComp := map[string]any{
		"BadRequest":      errResp("the request is malformed or a field is invalid (the message names the field)"),
		"Unauthorized":    errResp("no valid bearer token"),
		"Forbidden":       errResp("the caller's role lacks the permission this operation needs"),
		"NotFound":        errResp("no such resource (or not one the caller may see)"),
		"ClientError":     errResp("another client error, e.g. 409 conflict, 413 too large, 415 wrong content type, 429 too many attempts"),
		"ServerError":     errResp("the gateway failed"),
		"TooManyRequests": errResp("too many failed logins; Retry-After says when to try again"),
	}
	ref := func(name string) map[string]any { return map[string]any{"$ref": "#/components/responses/" + name} }
	paths := map[string]map[string]any{}
	pathParam := regexp.MustCompile(`\{([a-z_]+)\}`)
	for _, rt := range a.routes {
		op := map[string]any{
			"summary":     rt.summary,
			"operationId": operationID(rt),
			"tags":        []string{operationTag(rt.path)},
		}
		var params []any
		pathParams := pathParam.FindAllStringSubmatch(rt.path, -1)
		for _, m := range pathParams {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range rt.query {
			p := map[string]any{"name": q.name, "in": "query", "required": false, "description": q.desc, "schema": querySchema(q.name)}
			if repeatedParams[q.name] {
				p["style"], p["explode"] = "form", true
			}
			params = append(params, p)
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.chunk {
			op["requestBody"] = map[string]any{
				"required": true,
				"content":  map[string]any{"application/offset+octet-stream": map[string]any{"schema": map[string]any{"type": "string", "format": "binary"}}},
			}
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
		if rt.req != nil || rt.chunk || len(rt.query) > 0 || len(pathParams) > 0 {
			responses["400"] = ref("BadRequest")
		}
		switch rt.access {
		case accessAnyone, accessPublic:
			op["security"] = []any{}
		default:
			op["security"] = []any{map[string]any{"bearer": []any{}}}
			responses["401"] = ref("Unauthorized")
			if rt.access == accessPerm {
				responses["403"] = ref("Forbidden")
			}
		}
		if len(pathParams) > 0 {
			responses["404"] = ref("NotFound")
		}
		if rt.path == "/api/v1/auth/login" {
			responses["429"] = ref("TooManyRequests")
		}
		responses["4XX"] = ref("ClientError")
		responses["5XX"] = ref("ServerError")
		op["responses"] = responses
		if rt.perm != "" {
			op["x-fedgrid-permission"] = string(rt.perm)
		}
		if paths[rt.path] == nil {
			paths[rt.path] = map[string]any{}
		}
		paths[rt.path][strings.ToLower(rt.method)] = op
	}
	var tags []any
	seen := map[string]bool{}
	for _, rt := range a.routes {
		if t := operationTag(rt.path); !seen[t] {
			seen[t] = true
			tags = append(tags, map[string]any{"name": t, "description": tagDescriptions[t]})
		}
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":       "fedgrid gateway admin API",
			"version":     "v1",
			"description": `The HTTP API of a fedgrid gateway: users, datasets, models, jobs, nodes, the review queue, approval rules, the audit log and settings. Errors are {"error": {"code", "message"}} with a 4xx/5xx status. Epsilon amounts are given in epsilon and, exactly, in micro-epsilon (*_micro_eps); durations are in seconds.`,
			"license":     map[string]any{"name": "see the repository", "identifier": "LicenseRef-fedgrid"},
		},
		"servers": []any{map[string]any{"url": "/", "description": "the gateway that serves this document (its --http address)"}},
		"tags":    tags,
		"paths":   paths,
		"components": map[string]any{
			"schemas":         g.components,
			"responses":       responsesComp,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "the token of POST /api/v1/auth/login"}},
		},
		"security": []any{map[string]any{"bearer": []any{}}},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("api: encode OpenAPI document: %w", err)
	}
	return b, nil
}

// repeatedParams are query parameters that may be given several times
// (?tag=a&tag=b); their schema is an array.
var repeatedParams = map[string]bool{"tag": true}

// integerParams are query parameters that take a whole number.
var integerParams = map[string]bool{"after": true, "limit": true, "rows": true, "offset": true}

func querySchema(name string) map[string]any {
	switch {
	case repeatedParams[name]:
		return map[string]any{"type": "array", "items": map[string]any{"type": "string"}}
	case integerParams[name]:
		return map[string]any{"type": "integer", "minimum": 0}
	}
	return map[string]any{"type": "string"}
}

// operationTag groups operations by their first path segment after /api/v1.
func operationTag(path string) string {
	rest, ok := strings.CutPrefix(path, "/api/v1/")
	if !ok {
		return "health"
	}
	first, _, _ := strings.Cut(rest, "/")
	switch first {
	case "status", "openapi.json", "setup":
		return "gateway"
	}
	return first
}

var tagDescriptions = map[string]string{
	"health":   "Liveness",
	"gateway":  "The gateway itself: status, setup, this document",
	"auth":     "Logging in and out",
	"users":    "Accounts, privacy budgets and per-dataset caps",
	"roles":    "Roles and their permissions",
	"datasets": "CSV datasets, their tags, visibility and per-user overrides; snapshots of their sources",
	"sources":  "Datasets the gateway reads itself (PostgreSQL tables and queries), without credentials",
	"uploads":  "Resumable uploads of CSV or Parquet files of any size, chunk by chunk",
	"models":   "Hosted models that data scientists train further",
	"jobs":     "Training jobs",
	"requests": "The review queue: release, budget and permission requests",
	"rules":    "Approval rules",
	"nodes":    "Enrolled nodes and join tokens",
	"audit":    "The audit log and its hash chain",
	"settings": "White-label settings of the admin app",
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
		return nullable(g.schema(t.Elem()))
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		// encoding/json writes a nil slice as null.
		return map[string]any{"type": []any{"array", "null"}, "items": g.schema(t.Elem())}
	case reflect.Array:
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": []any{"object", "null"}, "additionalProperties": g.schema(t.Elem())}
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
	// Embedded structs (and pointers to them) are flattened, as
	// encoding/json does: a field of the outer struct hides one of the same
	// name inside an embedded one.
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		var embedded []reflect.Type
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				et := f.Type
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if et.Kind() == reflect.Struct {
					embedded = append(embedded, et)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := props[name]; dup {
				continue
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
		for _, et := range embedded {
			walk(et)
		}
	}
	walk(t)
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if required != nil {
		s["required"] = required
	}
	return s
}

// nullable lets s also be null (a nil pointer).
func nullable(s map[string]any) map[string]any {
	with := func(types []any) map[string]any {
		out := map[string]any{}
		for k, v := range s {
			out[k] = v
		}
		out["type"] = types
		return out
	}
	switch ty := s["type"].(type) {
	case string:
		return with([]any{ty, "null"})
	case []any:
		for _, x := range ty {
			if x == "null" {
				return s
			}
		}
		return with(append(append([]any{}, ty...), "null"))
	}
	if len(s) == 0 {
		return s // anything, null included
	}
	return map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
}

func withKey(s map[string]any, k string, v any) map[string]any {
	out := map[string]any{k: v}
	for kk, vv := range s {
		out[kk] = vv
	}
	return out
}

// OpenAPIDocument is the document GET /api/v1/openapi.json serves, built
// without a store: for the reference manual and its linting.
func OpenAPIDocument() ([]byte, error) {
	a := &API{}
	a.routes = a.routeTable()
	return a.openAPI()
}
