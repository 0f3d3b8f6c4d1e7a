package ui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(http.StripPrefix("/admin", Handler()))
	defer srv.Close()
	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	res, index := get("/admin/")
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || res.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("/admin/: %d %v", res.StatusCode, res.Header)
	}
	i := strings.Index(index, "assets/")
	if i < 0 {
		t.Fatalf("index.html names no assets: %s", index)
	}
	asset := index[i : i+strings.IndexAny(index[i:], `"'`)]
	res, _ = get("/admin/" + asset)
	if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("%s: %d %v", asset, res.StatusCode, res.Header)
	}
	if ct := res.Header.Get("Content-Type"); !strings.Contains(ct, "javascript") && !strings.Contains(ct, "css") {
		t.Errorf("%s: Content-Type %q", asset, ct)
	}
	// SPA fallback for app paths; a real 404 for missing files.
	if res, body := get("/admin/users/123"); res.StatusCode != 200 || body != index {
		t.Errorf("deep link: %d", res.StatusCode)
	}
	if res, _ := get("/admin/assets/nope.js"); res.StatusCode != 404 {
		t.Errorf("missing asset: %d, want 404", res.StatusCode)
	}
	if res, _ := get("/admin/../../etc/passwd"); res.StatusCode != 200 && res.StatusCode != 404 {
		t.Errorf("traversal: %d", res.StatusCode)
	}
}
