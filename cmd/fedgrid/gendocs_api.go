package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// apiMarkdown renders the OpenAPI document as the HTTP API reference.
func apiMarkdown(raw []byte) ([]byte, error) {
	var doc struct {
		Info struct {
			Title, Description string
		} `json:"info"`
		Tags []struct {
			Name, Description string
		} `json:"tags"`
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas   map[string]map[string]any `json:"schemas"`
			Responses map[string]map[string]any `json:"responses"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# %s", doc.Info.Title)
	w("")
	w("Generated from the OpenAPI 3.1 document ([openapi.json](openapi.json)) that every gateway also")
	w("serves at `GET /api/v1/openapi.json` (`make docs` regenerates both). %s", doc.Info.Description)
	w("")
	w("Authentication: `Authorization: Bearer TOKEN`, the token of `POST /api/v1/auth/login`")
	w("(`fedgrid admin login` keeps one). Operations marked *public* need none; *permission* names")
	w("what the caller's role must grant.")
	w("")
	type op struct {
		path, method string
		o            map[string]any
	}
	byTag := map[string][]op{}
	for path, item := range doc.Paths {
		for method, o := range item {
			tag := "other"
			if tags, ok := o["tags"].([]any); ok && len(tags) > 0 {
				tag, _ = tags[0].(string)
			}
			byTag[tag] = append(byTag[tag], op{path, method, o})
		}
	}
	order := map[string]int{"get": 0, "post": 1, "put": 2, "patch": 3, "delete": 4}
	for _, tag := range doc.Tags {
		w("- [%s](#%s): %s", tag.Name, tag.Name, tag.Description)
	}
	w("- [Schemas](#schemas)")
	w("")
	for _, tag := range doc.Tags {
		ops := byTag[tag.Name]
		sort.Slice(ops, func(i, j int) bool {
			if ops[i].path != ops[j].path {
				return ops[i].path < ops[j].path
			}
			return order[ops[i].method] < order[ops[j].method]
		})
		w("## %s", tag.Name)
		w("")
		w("%s.", tag.Description)
		w("")
		for _, o := range ops {
			w("### `%s %s`", strings.ToUpper(o.method), o.path)
			w("")
			w("%s.", strings.TrimSuffix(str(o.o["summary"]), "."))
			w("")
			access := "bearer token"
			if sec, ok := o.o["security"].([]any); ok && len(sec) == 0 {
				access = "public"
			}
			if p := str(o.o["x-fedgrid-permission"]); p != "" {
				access += "; permission `" + p + "`"
			}
			w("Access: %s.", access)
			w("")
			if params, ok := o.o["parameters"].([]any); ok {
				w("| parameter | in | type | meaning |")
				w("|---|---|---|---|")
				for _, p := range params {
					pm, _ := p.(map[string]any)
					desc := str(pm["description"])
					if pm["required"] == true {
						desc = strings.TrimSpace("required. " + desc)
					}
					w("| `%s` | %s | %s | %s |", str(pm["name"]), str(pm["in"]), schemaType(pm["schema"]), cell(desc))
				}
				w("")
			}
			if rb, ok := o.o["requestBody"].(map[string]any); ok {
				content, _ := rb["content"].(map[string]any)
				for ct, c := range content {
					req := "optional"
					if rb["required"] == true {
						req = "required"
					}
					w("Body (%s, %s): %s", ct, req, schemaType(c.(map[string]any)["schema"]))
					w("")
				}
			}
			w("| status | answer |")
			w("|---|---|")
			resps, _ := o.o["responses"].(map[string]any)
			codes := make([]string, 0, len(resps))
			for code := range resps {
				codes = append(codes, code)
			}
			sort.Strings(codes)
			for _, code := range codes {
				r, _ := resps[code].(map[string]any)
				if ref := str(r["$ref"]); ref != "" {
					name := strings.TrimPrefix(ref, "#/components/responses/")
					r = doc.Components.Responses[name]
				}
				answer := str(r["description"])
				if content, ok := r["content"].(map[string]any); ok {
					if c, ok := content["application/json"].(map[string]any); ok {
						answer += ": " + schemaType(c["schema"])
					}
				}
				w("| %s | %s |", code, cell(answer))
			}
			w("")
		}
	}
	w("## Schemas")
	w("")
	names := make([]string, 0, len(doc.Components.Schemas))
	for n := range doc.Components.Schemas {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := doc.Components.Schemas[n]
		w("### %s", n)
		w("")
		required := map[string]bool{}
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				required[str(r)] = true
			}
		}
		props, _ := s["properties"].(map[string]any)
		pn := make([]string, 0, len(props))
		for p := range props {
			pn = append(pn, p)
		}
		sort.Strings(pn)
		w("| field | type | | meaning |")
		w("|---|---|---|---|")
		for _, p := range pn {
			ps, _ := props[p].(map[string]any)
			req := ""
			if required[p] {
				req = "always"
			}
			w("| `%s` | %s | %s | %s |", p, schemaType(ps), req, cell(str(ps["description"])))
		}
		w("")
	}
	return b.Bytes(), nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// schemaType is a short name for a schema: [Name](#name), string, array of ...
func schemaType(v any) string {
	s, ok := v.(map[string]any)
	if !ok {
		return "any"
	}
	if ref := str(s["$ref"]); ref != "" {
		name := ref[strings.LastIndexByte(ref, '/')+1:]
		return "[" + name + "](#" + strings.ToLower(name) + ")"
	}
	if any, ok := s["anyOf"].([]any); ok {
		var parts []string
		for _, a := range any {
			parts = append(parts, schemaType(a))
		}
		return strings.Join(parts, " or ")
	}
	var types []string
	switch t := s["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			types = append(types, str(x))
		}
	}
	for i, t := range types {
		switch t {
		case "array":
			types[i] = "array of " + schemaType(s["items"])
		case "object":
			if ap, ok := s["additionalProperties"].(map[string]any); ok {
				types[i] = "object of " + schemaType(ap)
			}
		case "string":
			if f := str(s["format"]); f != "" {
				types[i] = "string (" + f + ")"
			}
			if e, ok := s["enum"].([]any); ok {
				var vs []string
				for _, x := range e {
					vs = append(vs, "`"+str(x)+"`")
				}
				types[i] = "one of " + strings.Join(vs, ", ")
			}
		}
	}
	if len(types) == 0 {
		return "any"
	}
	return strings.Join(types, " or ")
}
