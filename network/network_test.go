package network_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/leaktest"
	"github.com/fedgrid/fedgrid/network"
)

func TestMain(m *testing.M) { leaktest.VerifyMain(m) }

func TestParseQuery(t *testing.T) {
	q, limit, err := network.ParseQuery(url.Values{"tag": {"a,b", " c "}, "match": {"any"}, "text": {"heart rate"}, "column": {"x", "y,z"}, "preview": {"-1"}, "limit": {"3"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(q.Tags, []string{"a", "b", "c"}) || !q.Any || q.Text != "heart rate" || !slices.Equal(q.Columns, []string{"x", "y", "z"}) || q.PreviewRows != -1 || limit != 3 {
		t.Fatalf("parsed %+v limit %d", q, limit)
	}
	for _, bad := range []url.Values{
		{"match": {"most"}},
		{"tags": {"a"}},
		{"preview": {"21"}},
		{"limit": {"-1"}},
		{"limit": {"x"}},
	} {
		if _, _, err := network.ParseQuery(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestHTTPWithoutGateways: an empty network answers empty lists, and bad
// requests get the error document.
func TestHTTPWithoutGateways(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := network.Start(ctx, network.Config{DataDir: t.TempDir(), Network: "nettest", Listen: []string{"/ip4/127.0.0.1/tcp/0"}, HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string, want int, v any) {
		t.Helper()
		resp, err := hc.Get(n.HTTPURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: status %d, want %d", path, resp.StatusCode, want)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	var gws struct {
		Network  string            `json:"network"`
		Gateways []json.RawMessage `json:"gateways"`
	}
	get("/api/v1/gateways", http.StatusOK, &gws)
	if gws.Network != "nettest" || gws.Gateways == nil || len(gws.Gateways) != 0 {
		t.Fatalf("gateways: %+v", gws)
	}
	var res struct {
		Results []json.RawMessage `json:"results"`
	}
	get("/api/v1/search?tag=x", http.StatusOK, &res)
	if res.Results == nil || len(res.Results) != 0 {
		t.Fatalf("search: %+v", res)
	}
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	get("/api/v1/search?match=most", http.StatusBadRequest, &e)
	if e.Error.Code != "bad_request" || e.Error.Message == "" {
		t.Fatalf("error document: %+v", e)
	}
	get("/api/v1/nope", http.StatusNotFound, &e)
	if e.Error.Code != "not_found" {
		t.Fatalf("error document: %+v", e)
	}
}
