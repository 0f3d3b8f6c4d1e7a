// Package ui embeds fedgrid Admin, the web app under ui/src, built to ui/dist
// by `make ui` (npm ci && npm run build). The built files are committed so
// that a plain `go build` embeds them; `make ui-check` (run by CI) rebuilds
// them from the sources and fails when they differ.
package ui

import (
	"bytes"
	"embed"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed all:dist
var dist embed.FS

// FS is the built app: index.html and assets/.
func FS() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // the embed pattern guarantees dist exists
	}
	return sub
}

// Handler serves the app from the root of its own path space (mount it with
// http.StripPrefix). A path that names no file gets index.html (the app
// routes by URL hash, but deep links and reloads still land on the app);
// a missing file under assets/ is a real 404. Hashed assets are cached for a
// year; index.html is revalidated on every load so a new binary's app shows.
func Handler() http.Handler {
	files := FS()
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		panic("ui: dist/index.html missing; run make ui")
	}
	serveIndex := func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		// The app's own files only; images may also be https or data: URLs
		// (the white-label logo); fetch may go to any API URL the user sets.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' https: data:; connect-src *; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(index)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if p == "" || p == "index.html" {
			serveIndex(w, r)
			return
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			if strings.HasPrefix(p, "assets/") || path.Ext(p) != "" {
				http.NotFound(w, r)
				return
			}
			serveIndex(w, r) // SPA fallback
			return
		}
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = http.DetectContentType(b)
		}
		h := w.Header()
		h.Set("Content-Type", ct)
		h.Set("X-Content-Type-Options", "nosniff")
		if strings.HasPrefix(p, "assets/") {
			h.Set("Cache-Control", "public, max-age=31536000, immutable") // content-hashed names
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(b))
	})
}
