package api

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestOpenAPIDocumentCoversRouteTable(t *testing.T) {
	e := newEnv(t, nil)
	r := e.want(e.do("GET", "/api/v1/openapi.json", "", nil), 200)
	var doc struct {
		OpenAPI    string                               `json:"openapi"`
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]map[string]any `json:"schemas"`
		} `json:"components"`
	}
	r.decode(t, &doc)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	n := 0
	for _, rt := range e.api.routes {
		op, ok := doc.Paths[rt.path][strings.ToLower(rt.method)]
		if !ok {
			t.Errorf("%s %s missing from the document", rt.method, rt.path)
			continue
		}
		n++
		if rt.req != nil && op["requestBody"] == nil {
			t.Errorf("%s %s: no requestBody", rt.method, rt.path)
		}
		rs := op["responses"].(map[string]any)
		n4xx := 0
		for code := range rs {
			if strings.HasPrefix(code, "4") {
				n4xx++
			}
		}
		if n4xx == 0 || rs["5XX"] == nil {
			t.Errorf("%s %s: no 4xx or 5XX error response: %v", rt.method, rt.path, rs)
		}
	}
	count := 0
	for _, ops := range doc.Paths {
		count += len(ops)
	}
	if count != n || n != len(e.api.routes) {
		t.Fatalf("document has %d operations, route table %d", count, len(e.api.routes))
	}
	// The schemas follow the Go types: e.g. CreateUserRequest's fields.
	cu := doc.Components.Schemas["CreateUserRequest"]
	props, _ := cu["properties"].(map[string]any)
	for _, f := range []string{"email", "password", "name", "role", "peer_id", "budget_epsilon"} {
		if _, ok := props[f]; !ok {
			t.Errorf("CreateUserRequest schema lacks %s: %v", f, cu)
		}
	}
	if req, _ := json.Marshal(cu["required"]); string(req) != `["email","password"]` {
		t.Errorf("CreateUserRequest required %s", req)
	}
	errSchema, _ := json.Marshal(doc.Components.Schemas["ErrorBody"])
	if !strings.Contains(string(errSchema), `"code"`) || !strings.Contains(string(errSchema), `"message"`) {
		t.Errorf("error schema %s", errSchema)
	}
}
