package adminclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNormalizeURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8420/": "http://127.0.0.1:8420",
		"127.0.0.1:8420":         "http://127.0.0.1:8420",
		"https://gw.example/x/":  "https://gw.example/x",
	} {
		got, err := NormalizeURL(in)
		if err != nil || got != want {
			t.Errorf("NormalizeURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "ftp://h", "http://", "http://h/?a=1", "http://u:p@h"} {
		if _, err := NormalizeURL(bad); err == nil {
			t.Errorf("NormalizeURL(%q): no error", bad)
		}
	}
}

func TestDoErrorsAndAuth(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			if r.Header.Get("Authorization") != "Bearer tok" || r.URL.Query()["tag"][1] != "b" {
				w.WriteHeader(400)
				return
			}
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
		case "/denied":
			w.WriteHeader(403)
			_, _ = w.Write([]byte(`{"error":{"code":"forbidden","message":"needs can_edit_settings"}}`))
		case "/html":
			w.WriteHeader(502)
			_, _ = w.Write([]byte(`<html>bad gateway</html>`))
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c.Token = "tok"
	ctx := context.Background()
	var out map[string]int
	if err := c.JSON(ctx, "POST", "/ok", map[string][]string{"tag": {"a", "b"}}, map[string]int{"x": 1}, &out); err != nil || out["x"] != 1 {
		t.Fatalf("JSON round trip: %v %v", out, err)
	}
	err = c.JSON(ctx, "GET", "/denied", nil, nil, nil)
	if StatusOf(err) != 403 || !strings.Contains(err.Error(), "not allowed: needs can_edit_settings") {
		t.Fatalf("403: %v", err)
	}
	err = c.JSON(ctx, "GET", "/html", nil, nil, nil)
	if StatusOf(err) != 502 || !strings.Contains(err.Error(), "no error message") {
		t.Fatalf("502 without a document: %v", err)
	}
}

func TestCredentialsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cfg", "fedgrid", "admin.json")
	c, err := LoadCredentials(path)
	if err != nil || len(c.Gateways) != 0 {
		t.Fatalf("missing file: %v %v", c, err)
	}
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c.Gateways["http://127.0.0.1:1"] = Login{Token: "secret", Email: "a@b", ExpiresAt: exp}
	c.Current = "http://127.0.0.1:1"
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v, want 0700", di.Mode().Perm())
	}
	back, err := LoadCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	if l := back.Gateways[back.Current]; l.Token != "secret" || !l.ExpiresAt.Equal(exp) {
		t.Fatalf("read back %+v", back)
	}
	b, _ := json.Marshal(map[string]any{"version": 99})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCredentials(path); err == nil || !strings.Contains(err.Error(), "version 99") {
		t.Fatalf("newer version: %v", err)
	}
}
