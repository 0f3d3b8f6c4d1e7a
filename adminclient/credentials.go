package adminclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Login is what `fedgrid admin login` keeps of one gateway: its bearer token.
type Login struct {
	Token     string    `json:"token"`
	Email     string    `json:"email"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Credentials is the file of logins, one per gateway URL. Current is the
// gateway of the last login, used when no gateway is named.
type Credentials struct {
	Version  int              `json:"version"`
	Current  string           `json:"current,omitempty"`
	Gateways map[string]Login `json:"gateways"`
}

// credentialsVersion is the schema version of the credentials file.
const credentialsVersion = 1

// maxCredentials bounds the credentials file.
const maxCredentials = 1 << 20

// DefaultCredentialsPath is fedgrid/admin.json in the user's configuration
// directory (os.UserConfigDir: $XDG_CONFIG_HOME or ~/.config on Linux).
func DefaultCredentialsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no configuration directory for the login token: %w", err)
	}
	return filepath.Join(dir, "fedgrid", "admin.json"), nil
}

// LoadCredentials reads the credentials file; a missing file is empty.
func LoadCredentials(path string) (*Credentials, error) {
	c := &Credentials{Version: credentialsVersion, Gateways: map[string]Login{}}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCredentials+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCredentials {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxCredentials)
	}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("%s is not a fedgrid credentials file: %v (delete it and log in again)", path, err)
	}
	if c.Version != credentialsVersion {
		return nil, fmt.Errorf("%s has version %d; this fedgrid reads version %d (delete it and log in again)", path, c.Version, credentialsVersion)
	}
	if c.Gateways == nil {
		c.Gateways = map[string]Login{}
	}
	return c, nil
}

// Save writes the file readable by its owner only (0600, in a 0700
// directory), replacing it in one rename.
func (c *Credentials) Save(path string) error {
	c.Version = credentialsVersion
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".admin-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
