// Command schemagen writes kubeconform's JSON schemas for the Kubernetes
// kinds the fedgrid Helm chart renders, offline: from the OpenAPI documents
// of the Kubernetes API that the Go module k8s.io/kubectl ships as test data
// (testdata/openapi: OpenAPI v3 for core/v1, apps/v1 and autoscaling/v2,
// v2 "swagger.json" for the rest). kubeconform's own schemas are downloaded
// from GitHub, which our build machines cannot reach.
//
// Each schema file is named as kubeconform's -schema-location template
// {{.ResourceKind}}{{.KindSuffix}}.json expects (deployment-apps-v1.json,
// service-v1.json, ...), holds every definition of its document with
// references rewritten to #/definitions/..., and — like kubeconform's
// "strict" schemas — refuses properties an object does not define.
//
// Usage: go run ./deploy/helm/schemagen -kubectl $(go mod download -json k8s.io/kubectl@v0.37.0 | jq -r .Dir) -out DIR
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// doc is one OpenAPI document and the kinds taken from it.
type doc struct {
	path  string // inside the kubectl module
	v3    bool
	kinds []string // group/version/Kind; group "" is core
}

var docs = []doc{
	{"testdata/openapi/v3/api/v1.json", true, []string{"/v1/Service", "/v1/ConfigMap", "/v1/Secret", "/v1/ServiceAccount", "/v1/PersistentVolumeClaim"}},
	{"testdata/openapi/v3/apis/apps/v1.json", true, []string{"apps/v1/Deployment", "apps/v1/StatefulSet"}},
	{"testdata/openapi/v3/apis/autoscaling/v2.json", true, []string{"autoscaling/v2/HorizontalPodAutoscaler"}},
	{"testdata/openapi/swagger.json", false, []string{"networking.k8s.io/v1/Ingress"}},
}

func main() {
	kubectl := flag.String("kubectl", "", "directory of the k8s.io/kubectl module (go mod download -json k8s.io/kubectl@v0.37.0)")
	out := flag.String("out", "", "directory to write the schemas to")
	flag.Parse()
	if *kubectl == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "schemagen: -kubectl DIR and -out DIR are required")
		os.Exit(2)
	}
	if err := run(*kubectl, *out); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}

func run(kubectl, out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, d := range docs {
		raw, err := os.ReadFile(filepath.Join(kubectl, d.path))
		if err != nil {
			return err
		}
		var top map[string]any
		if err := json.Unmarshal(raw, &top); err != nil {
			return fmt.Errorf("%s: %v", d.path, err)
		}
		var defs map[string]any
		prefix := "#/definitions/"
		if d.v3 {
			comps, _ := top["components"].(map[string]any)
			defs, _ = comps["schemas"].(map[string]any)
			prefix = "#/components/schemas/"
		} else {
			defs, _ = top["definitions"].(map[string]any)
		}
		if len(defs) == 0 {
			return fmt.Errorf("%s holds no schemas", d.path)
		}
		for name, s := range defs {
			defs[name] = convert(s, prefix)
		}
		for _, gvk := range d.kinds {
			name, err := find(defs, gvk)
			if err != nil {
				return fmt.Errorf("%s: %v", d.path, err)
			}
			schema := map[string]any{
				"$schema":     "http://json-schema.org/draft-07/schema#",
				"description": "Kubernetes " + gvk + ", from k8s.io/kubectl " + d.path,
				"allOf":       []any{map[string]any{"$ref": "#/definitions/" + name}},
				"definitions": defs,
			}
			b, err := json.Marshal(schema)
			if err != nil {
				return err
			}
			file := filepath.Join(out, fileName(gvk))
			if err := os.WriteFile(file, b, 0o644); err != nil {
				return err
			}
			fmt.Printf("schemagen: %s -> %s\n", gvk, file)
		}
	}
	return nil
}

// find returns the definition whose x-kubernetes-group-version-kind is gvk.
func find(defs map[string]any, gvk string) (string, error) {
	parts := strings.Split(gvk, "/")
	group, version, kind := parts[0], parts[1], parts[2]
	for name, s := range defs {
		m, _ := s.(map[string]any)
		list, _ := m["x-kubernetes-group-version-kind"].([]any)
		for _, x := range list {
			g, _ := x.(map[string]any)
			if g["group"] == group && g["version"] == version && g["kind"] == kind {
				return name, nil
			}
		}
	}
	return "", fmt.Errorf("no schema for %s", gvk)
}

// fileName follows kubeconform: lower-case kind, then -<first label of the
// group> unless core, then -<version>.
func fileName(gvk string) string {
	parts := strings.Split(gvk, "/")
	group, version, kind := parts[0], parts[1], parts[2]
	name := strings.ToLower(kind)
	if group != "" {
		name += "-" + strings.Split(group, ".")[0]
	}
	return name + "-" + version + ".json"
}

func dedupe(list []any) []any {
	seen := map[string]bool{}
	out := list[:0]
	for _, v := range list {
		b, _ := json.Marshal(v)
		if !seen[string(b)] {
			seen[string(b)] = true
			out = append(out, v)
		}
	}
	return out
}

// convert rewrites references to #/definitions/, makes int-or-string
// accept both, drops repeated enum values (the metaschema forbids them) and
// closes objects with properties to others (strict).
func convert(v any, prefix string) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = convert(e, prefix)
		}
		if ref, ok := x["$ref"].(string); ok && strings.HasPrefix(ref, prefix) {
			x["$ref"] = "#/definitions/" + strings.TrimPrefix(ref, prefix)
		}
		if enum, ok := x["enum"].([]any); ok { // some documents repeat a value
			x["enum"] = dedupe(enum)
		}
		if x["format"] == "int-or-string" {
			delete(x, "type")
			x["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
		}
		if _, has := x["properties"]; has {
			if _, set := x["additionalProperties"]; !set {
				x["additionalProperties"] = false
			}
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = convert(e, prefix)
		}
		return x
	}
	return v
}
