package gateway_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/gateway"
	"github.com/fedgrid/fedgrid/internal/config"
)

// TestConfigValidate: DefaultConfig plus a data directory is valid; each
// unusable value is an error naming its field (not a CLI flag), and Start
// refuses it instead of replacing it with a default.
func TestConfigValidate(t *testing.T) {
	good := gateway.DefaultConfig()
	good.DataDir = t.TempDir()
	if err := good.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for field, mutate := range map[string]func(*gateway.Config){
		"DataDir":        func(c *gateway.Config) { c.DataDir = "" },
		"Network":        func(c *gateway.Config) { c.Network = "a/b" },
		"Bootstrap":      func(c *gateway.Config) { c.Bootstrap = []string{"/ip4/127.0.0.1/tcp/1"} },
		"HTTPAddr":       func(c *gateway.Config) { c.HTTPAddr = "" },
		"Lease":          func(c *gateway.Config) { c.Lease = 0 },
		"OfferTTL":       func(c *gateway.Config) { c.OfferTTL = -time.Second },
		"MaxAttempts":    func(c *gateway.Config) { c.MaxAttempts = 0 },
		"AttemptTimeout": func(c *gateway.Config) { c.AttemptTimeout = -1 },
		"JobTimeout":     func(c *gateway.Config) { c.JobTimeout = 0 },
	} {
		c := good
		mutate(&c)
		err := c.Validate()
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != field || len(config.Fields(err)) != 1 {
			t.Errorf("%s: %v", field, err)
		}
		if err != nil && strings.Contains(err.Error(), "--") {
			t.Errorf("%s: a library error names a flag: %v", field, err)
		}
	}
	// A negative value is not "unset": Start refuses it.
	bad := gateway.Config{DataDir: t.TempDir(), NoHTTP: true, Lease: -time.Second}
	if g, err := gateway.Start(context.Background(), bad); err == nil {
		_ = g.Close()
		t.Fatal("a negative lease started a gateway")
	} else if fs := config.Fields(err); len(fs) != 1 || fs[0].Field != "Lease" {
		t.Fatalf("negative lease: %v", err)
	}
}
