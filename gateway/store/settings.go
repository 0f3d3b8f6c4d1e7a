package store

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/fedgrid/fedgrid/internal/hostallow"
)

// Settings are the gateway's white-label settings, shown by the admin web
// app: a display name, a logo (an https URL or a small data: image) and a
// colour.
type Settings struct {
	Name    string `json:"name"`
	LogoURL string `json:"logo_url"`
	Color   string `json:"color"`
}

const keySettings = "settings"

// Limits on settings.
const (
	MaxSettingsName = 100
	MaxLogoURL      = 48 << 10
)

var colorRE = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)

func validateSettings(s *Settings) error {
	s.Name = strings.TrimSpace(s.Name)
	s.LogoURL = strings.TrimSpace(s.LogoURL)
	s.Color = strings.TrimSpace(s.Color)
	if len(s.Name) > MaxSettingsName {
		return invalid("name", "longer than %d bytes", MaxSettingsName)
	}
	if len(s.LogoURL) > MaxLogoURL {
		return invalid("logo_url", "longer than %d bytes", MaxLogoURL)
	}
	if s.LogoURL != "" && !strings.HasPrefix(s.LogoURL, "https://") && !strings.HasPrefix(s.LogoURL, "data:image/") {
		return invalid("logo_url", "must be an https:// URL or a data:image/ URL")
	}
	if s.Color != "" && !colorRE.MatchString(s.Color) {
		return invalid("color", "must be #rrggbb")
	}
	return nil
}

// Settings returns the white-label settings (zero values when never set).
func (s *Store) Settings() (Settings, error) {
	var out Settings
	err := s.view(func(txn *badger.Txn) error { return getJSON(txn, keySettings, &out) })
	if errors.Is(err, ErrNotFound) {
		err = nil
	}
	return out, err
}

// PutSettings replaces the white-label settings, audited as settings.update.
func (s *Store) PutSettings(set Settings, actor string) (Settings, error) {
	if err := validateSettings(&set); err != nil {
		return Settings{}, err
	}
	err := s.update(func(txn *badger.Txn) error {
		if err := putJSON(txn, keySettings, set); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "settings.update", Target: "settings",
			Detail: map[string]any{"name": set.Name, "color": set.Color, "logo_bytes": len(set.LogoURL)}})
	})
	return set, err
}

// FederationSettings are the owner's rules for this gateway's part in
// federations across gateways.
type FederationSettings struct {
	// Schema is the record's format (FederationSettingsSchema).
	Schema int `json:"schema"`
	// AllowPlainUpdates lets a federation that asks for it run here without
	// secure aggregation: this gateway's update of each round (row count,
	// loss, weight changes) then leaves unmasked, readable by the
	// coordinator on its own. Off unless the owner turns it on.
	AllowPlainUpdates bool `json:"allow_plain_updates"`
}

// FederationSettingsSchema is the format of the FederationSettings record.
const FederationSettingsSchema = 1

const keyFedSettings = "fedsettings"

// FederationSettings returns the federation settings (plain updates not
// allowed when never set).
func (s *Store) FederationSettings() (FederationSettings, error) {
	out := FederationSettings{Schema: FederationSettingsSchema}
	err := s.view(func(txn *badger.Txn) error { return getJSON(txn, keyFedSettings, &out) })
	if errors.Is(err, ErrNotFound) {
		err = nil
	}
	return out, err
}

// PutFederationSettings replaces the federation settings, audited as
// settings.federation.
func (s *Store) PutFederationSettings(set FederationSettings, actor string) (FederationSettings, error) {
	set.Schema = FederationSettingsSchema
	err := s.update(func(txn *badger.Txn) error {
		if err := putJSON(txn, keyFedSettings, set); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "settings.federation", Target: "settings",
			Detail: map[string]any{"allow_plain_updates": set.AllowPlainUpdates}})
	})
	return set, err
}

// SourceSettings are the Owner's rules for the dataset sources users may
// register: the hosts the gateway may connect to on their behalf (a
// server-side request from inside the Owner's network, so only hosts the
// Owner allowed). The Owner's own sources may name any host.
type SourceSettings struct {
	// Schema is the record's format (SourceSettingsSchema).
	Schema int `json:"schema"`
	// AllowedHosts are the PostgreSQL hosts a source registered by anyone
	// but the Owner may name: HOST, HOST:PORT, an IP address (with or
	// without a port) or a CIDR prefix (see internal/hostallow). Empty:
	// only the Owner may register PostgreSQL sources.
	AllowedHosts []string `json:"allowed_hosts"`
}

// SourceSettingsSchema is the format of the SourceSettings record (1: the
// first; data directories written before it have none, which reads as an
// empty allow list).
const SourceSettingsSchema = 1

const keySourceSettings = "sourcesettings"

// SourceSettings returns the source settings (no host allowed when never
// set).
func (s *Store) SourceSettings() (SourceSettings, error) {
	out := SourceSettings{Schema: SourceSettingsSchema}
	err := s.view(func(txn *badger.Txn) error { return getJSON(txn, keySourceSettings, &out) })
	switch {
	case errors.Is(err, ErrNotFound):
		err = nil
	case err == nil && out.Schema > SourceSettingsSchema:
		return SourceSettings{}, fmt.Errorf("store: source settings have format %d; this gateway reads up to %d (a newer fedgrid wrote them)", out.Schema, SourceSettingsSchema)
	}
	if out.AllowedHosts == nil {
		out.AllowedHosts = []string{}
	}
	return out, err
}

// PutSourceSettings replaces the source settings, audited as
// settings.sources. Hosts are checked and written in canonical form.
func (s *Store) PutSourceSettings(set SourceSettings, actor string) (SourceSettings, error) {
	hosts, err := hostallow.Normalize(set.AllowedHosts)
	if err != nil {
		return SourceSettings{}, invalid("allowed_hosts", "%v", err)
	}
	set.Schema, set.AllowedHosts = SourceSettingsSchema, hosts
	err = s.update(func(txn *badger.Txn) error {
		if err := putJSON(txn, keySourceSettings, set); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "settings.sources", Target: "settings",
			Detail: map[string]any{"allowed_hosts": hosts}})
	})
	return set, err
}
