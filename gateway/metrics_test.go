package gateway_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/gateway"
)

// TestMetricsOnOperatorAddress: with --metrics-http the job series (which
// time every job, and split how they end) are served on that address alone:
// the admin HTTP address, which an Administrator who requests jobs reaches,
// no longer serves them.
func TestMetricsOnOperatorAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bad := gateway.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:8420", MetricsAddr: "127.0.0.1:8420"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "MetricsAddr") {
		t.Fatalf("metrics on the admin address: %v", err)
	}
	gw, err := gateway.Start(ctx, gateway.Config{DataDir: t.TempDir(), Network: "metricstest", Listen: []string{loopback},
		HTTPAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	get := func(url string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = res.Body.Close() }()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		return res.StatusCode, string(b)
	}
	if gw.MetricsURL() == "" || gw.MetricsURL() == gw.HTTPURL() {
		t.Fatalf("metrics URL %q, admin URL %q", gw.MetricsURL(), gw.HTTPURL())
	}
	if code, body := get(gw.HTTPURL() + "/metrics"); code != http.StatusNotFound || strings.Contains(body, "fedgrid_jobs_") {
		t.Fatalf("the admin address serves the job series: %d %.200s", code, body)
	}
	if code, body := get(gw.MetricsURL() + "/metrics"); code != http.StatusOK || !strings.Contains(body, "fedgrid_jobs_submitted_total") {
		t.Fatalf("the metrics address: %d %.200s", code, body)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, gw.MetricsURL()+"/metrics", nil)
	req.Host = "rebound.example.org"
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("the metrics address answers to a foreign host name: %v %v", res, err)
	} else {
		_ = res.Body.Close()
	}
	if code, _ := get(gw.MetricsURL() + "/api/v1/status"); code != http.StatusNotFound {
		t.Fatalf("the metrics address serves the API: %d", code)
	}
	if code, _ := get(gw.HTTPURL() + "/api/v1/status"); code != http.StatusOK {
		t.Fatalf("the admin API: %d", code)
	}
}
