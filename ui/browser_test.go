package ui

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/webtls"
)

// TestAdminBrowserFlow runs e2e/flow.mjs: the admin app in headless Debian
// Chromium (playwright-core) over HTTPS (a test certificate made here)
// against real fedgrid processes, from setup to
// an approved release fetched with the CLI. Screenshots go to
// ui/test-output/. It needs chromium, node and npm: off CI it skips when
// they are missing; on CI (CI set, as .ci/run does) it fails instead.
func TestAdminBrowserFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("browser flow: not in -short")
	}
	onCI := os.Getenv("CI") != ""
	need := func(what string, err error) {
		t.Helper()
		if err == nil {
			return
		}
		if onCI {
			t.Fatalf("%s: %v (CI must provide it; .ci/run installs chromium)", what, err)
		}
		t.Skipf("%s: %v (skipped off CI)", what, err)
	}
	browser := os.Getenv("CHROMIUM")
	if browser == "" {
		var err error
		browser, err = exec.LookPath("chromium")
		need("chromium", err)
	}
	node, err := exec.LookPath("node")
	need("node", err)

	uiDir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Dir(uiDir)
	if _, err := os.Stat(filepath.Join(uiDir, "node_modules", "playwright-core")); err != nil {
		npm, lerr := exec.LookPath("npm")
		need("npm", lerr)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = uiDir
		if out, err := cmd.CombinedOutput(); err != nil {
			need("npm ci in ui/", err)
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}

	bin := os.Getenv("FEDGRID_BIN")
	if bin == "" || !fileExists(bin) {
		bin = filepath.Join(t.TempDir(), "fedgrid")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/fedgrid/fedgrid/cmd/fedgrid")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	outDir := filepath.Join(uiDir, "test-output")
	if err := os.RemoveAll(outDir); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	// The gateway serves HTTPS with a certificate made here. Chromium trusts
	// exactly that key (--ignore-certificate-errors-spki-list), Node's fetch
	// that certificate (NODE_EXTRA_CA_CERTS); nothing else is exempted.
	certFile, keyFile, err := webtls.WriteSelfSigned(work, time.Hour, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	spki, err := spkiHash(certFile)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(uiDir, "e2e", "flow.mjs"))
	cmd.Dir = uiDir
	cmd.Env = append(os.Environ(), "FEDGRID_BIN="+bin, "CHROMIUM="+browser, "OUT_DIR="+outDir, "WORK_DIR="+work, "REPO="+repo,
		"TLS_CERT="+certFile, "TLS_KEY="+keyFile, "TLS_SPKI="+spki, "NODE_EXTRA_CA_CERTS="+certFile)
	// On timeout, SIGTERM lets flow.mjs stop the fedgrid processes it started.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("flow.mjs (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		for _, name := range []string{"gateway.log", "node.log", "network.log"} {
			if b, rerr := os.ReadFile(filepath.Join(work, name)); rerr == nil {
				if len(b) > 8000 {
					b = b[len(b)-8000:]
				}
				t.Logf("%s (tail):\n%s", name, b)
			}
		}
		t.Fatalf("browser flow failed: %v (screenshots in %s)", err, outDir)
	}
}

// spkiHash is the base64 SHA-256 of a PEM certificate's public key, as
// Chromium's --ignore-certificate-errors-spki-list takes it.
func spkiHash(certFile string) (string, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return "", err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", errors.New(certFile + " holds no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
