package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/harness"
	"github.com/fedgrid/fedgrid/internal/webtls"
)

// httpsClient trusts only the certificate in certFile and follows no redirects.
func httpsClient(t *testing.T, certFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("test certificate does not parse")
	}
	return &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// TestHTTPS: a gateway and a network peer started with --tls-cert and
// --tls-key serve HTTPS only, with HSTS; the gateway's / leads to /admin/;
// on SIGHUP the gateway serves a renewed certificate without a restart.
func TestHTTPS(t *testing.T) {
	h := newHarness(t)
	ctx := testContext(t, 2*time.Minute)
	certDir := h.Path("tls")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cert, key, err := webtls.WriteSelfSigned(certDir, time.Hour, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	tlsFlags := []string{"--tls-cert", cert, "--tls-key", key}
	netw := networkName(t)
	np, err := h.StartNetwork(ctx, "network", harness.PeerOptions{Network: netw, Extra: append([]string{"--http", harness.LoopbackHTTP}, tlsFlags...)})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := h.StartGateway(ctx, "gateway", "Hospital A", harness.PeerOptions{Network: netw, Bootstrap: np.Addrs, Extra: tlsFlags})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*harness.Proc{np, gw} {
		if !strings.HasPrefix(p.HTTP, "https://") {
			t.Fatalf("%s: ready line says http=%s, want https://", p.Name, p.HTTP)
		}
	}
	cl := httpsClient(t, cert)
	for _, u := range []string{np.HTTP + "/healthz", gw.HTTP + "/healthz"} {
		resp, err := cl.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Strict-Transport-Security"), "max-age=") {
			t.Errorf("GET %s: %s, Strict-Transport-Security %q", u, resp.Status, resp.Header.Get("Strict-Transport-Security"))
		}
	}
	resp, err := cl.Get(gw.HTTP + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/admin/" {
		t.Errorf("GET /: %s Location %q, want a redirect to /admin/", resp.Status, resp.Header.Get("Location"))
	}
	// Plain HTTP on the HTTPS port gets nothing useful.
	if resp, err := http.Get("http://" + strings.TrimPrefix(gw.HTTP, "https://") + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP is served on the HTTPS port")
		}
	}

	// Renew the certificate in place; SIGHUP makes the gateway use it.
	first := servedSerial(t, cl, gw.HTTP)
	if _, _, err := webtls.WriteSelfSigned(certDir, 2*time.Hour, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	cl = httpsClient(t, cert) // trusts the new certificate only
	if err := syscall.Kill(gw.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if s, err := trySerial(cl, gw.HTTP); err == nil && s != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP the gateway still serves the old certificate (serial %s)", first)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if gw.Exited() {
		t.Fatalf("SIGHUP ended the gateway: %s", gw.State())
	}
	if !strings.Contains(string(gw.Stderr()), "TLS certificate reloaded") {
		t.Errorf("the gateway did not log the reload:\n%s", gw.Tail(10))
	}
}

func servedSerial(t *testing.T, cl *http.Client, base string) string {
	t.Helper()
	s, err := trySerial(cl, base)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func trySerial(cl *http.Client, base string) (string, error) {
	resp, err := cl.Get(base + "/healthz")
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return "", errors.New("no TLS")
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.String(), nil
}
