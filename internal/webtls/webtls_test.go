package webtls

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadAndReload(t *testing.T) {
	dir := t.TempDir()
	cert, key, err := WriteSelfSigned(dir, time.Hour, "127.0.0.1", "gw.example")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	first := c.Leaf().SerialNumber
	if got, _ := c.Config().GetCertificate(nil); got.Leaf.SerialNumber.Cmp(first) != 0 {
		t.Fatal("Config serves another certificate")
	}
	if _, _, err := WriteSelfSigned(dir, time.Hour, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	renewed := c.Leaf().SerialNumber
	if renewed.Cmp(first) == 0 {
		t.Fatal("Reload kept the old certificate")
	}
	if got, _ := c.Config().GetCertificate(nil); got.Leaf.SerialNumber.Cmp(renewed) != 0 {
		t.Fatal("Config does not serve the reloaded certificate")
	}

	// A broken renewal leaves the certificate in use alone.
	if err := os.WriteFile(key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(); err == nil || !strings.Contains(err.Error(), "not a matching PEM") {
		t.Fatalf("reload of a broken key: %v", err)
	}
	if c.Leaf().SerialNumber.Cmp(renewed) != 0 {
		t.Fatal("a failed reload replaced the certificate")
	}
}

func TestLoadRefusals(t *testing.T) {
	dir := t.TempDir()
	cert, key, err := WriteSelfSigned(dir, time.Hour, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(cert, ""); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("cert without key: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.pem"), key); err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Errorf("missing cert file: %v", err)
	}
	other := t.TempDir()
	_, key2, err := WriteSelfSigned(other, time.Hour, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(cert, key2); err == nil {
		t.Error("a key of another certificate was accepted")
	}
	old := t.TempDir()
	cert3, key3, err := WriteSelfSigned(old, -time.Minute+time.Second, "127.0.0.1") // expired before use
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(cert3, key3); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired certificate: %v", err)
	}
}
