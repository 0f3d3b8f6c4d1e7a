// Package webtls serves fedgrid's HTTP endpoints over HTTPS: a certificate
// and key from files, reloaded on demand (the peers reload on SIGHUP) so
// that a renewed certificate needs no restart, and HSTS.
package webtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

// maxPEM bounds a certificate or key file.
const maxPEM = 1 << 20

// Certs holds the current certificate of a server.
type Certs struct {
	certFile, keyFile string

	mu   sync.RWMutex
	cert *tls.Certificate
}

// Load reads a PEM certificate chain and its private key. Both files are
// required together.
func Load(certFile, keyFile string) (*Certs, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	c := &Certs{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again. On an error the certificate in use stays.
func (c *Certs) Reload() error {
	certPEM, err := readLimited(c.certFile)
	if err != nil {
		return fmt.Errorf("--tls-cert: %w", err)
	}
	keyPEM, err := readLimited(c.keyFile)
	if err != nil {
		return fmt.Errorf("--tls-key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("--tls-cert %s and --tls-key %s are not a matching PEM certificate and key: %v", c.certFile, c.keyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("--tls-cert %s: %v", c.certFile, err)
	}
	if time.Now().After(leaf.NotAfter) {
		return fmt.Errorf("--tls-cert %s expired on %s", c.certFile, leaf.NotAfter.Format(time.RFC3339))
	}
	cert.Leaf = leaf
	c.mu.Lock()
	c.cert = &cert
	c.mu.Unlock()
	return nil
}

// Leaf is the certificate in use.
func (c *Certs) Leaf() *x509.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert.Leaf
}

// Config is the server's TLS configuration; it always serves the latest
// certificate loaded.
func (c *Certs) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c.mu.RLock()
			defer c.mu.RUnlock()
			return c.cert, nil
		},
	}
}

// HSTS tells browsers to use HTTPS only for this host, for a year.
func HSTS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		next.ServeHTTP(w, r)
	})
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEM+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPEM {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPEM)
	}
	return b, nil
}
