package obs

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestHTTPMetricsLabels: the route label is the matched pattern with its
// method (never the raw path), "other" when nothing matched; the status is
// the one written.
func TestHTTPMetricsLabels(t *testing.T) {
	reg := NewRegistry("test", "v0")
	hm := NewHTTPMetrics(reg)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	inner := http.NewServeMux()
	inner.HandleFunc("/api/x", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.Handle("/api/", inner)
	srv := httptest.NewServer(hm.Wrap(mux))
	defer srv.Close()
	for _, p := range []string{"/items/1", "/items/2", "/api/x", "/nothing/here"} {
		res, err := srv.Client().Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	n, err := testutil.GatherAndCount(reg, "fedgrid_http_request_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("%d series, want 3 (two paths of one pattern share one)", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "fedgrid_http_request_duration_seconds" {
			continue
		}
		for _, m := range mf.Metric {
			var route, status string
			for _, lp := range m.Label {
				switch lp.GetName() {
				case "route":
					route = lp.GetValue()
				case "status":
					status = lp.GetValue()
				}
			}
			got[route+" "+status] = m.Histogram.GetSampleCount()
		}
	}
	for k, v := range map[string]uint64{"GET /items/{id} 418": 2, "GET /api/x 200": 1, "other 404": 1} {
		if got[k] != v {
			t.Errorf("%s: %d requests, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

func TestServeMetrics(t *testing.T) {
	s, err := Serve("127.0.0.1:0", NewRegistry("node", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := http.Get(s.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b := new(strings.Builder)
	if _, err := io.Copy(b, res.Body); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `fedgrid_build_info{goversion="`) || !strings.Contains(b.String(), `role="node",version="v1"} 1`) {
		t.Fatalf("metrics:\n%.500s", b.String())
	}
}
