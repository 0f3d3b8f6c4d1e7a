package api

import "github.com/fedgrid/fedgrid/gateway/store"

// White-label settings for the admin web app (name, logo, colour). Reading
// them needs no token, so the login page can show the branding; changing
// them needs can_edit_settings. Routes: GET and PUT /api/v1/settings.

func (a *API) getSettings(*call) (any, error) { return a.st.Settings() }

func (a *API) putSettings(c *call) (any, error) {
	var req store.Settings
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	return a.st.PutSettings(req, c.actor())
}

// The federation rules (GET and PUT /api/v1/settings/federation): whether a
// federation may run at this gateway without secure aggregation. Reading
// and changing them needs can_edit_settings.

func (a *API) getFedSettings(*call) (any, error) { return a.st.FederationSettings() }

func (a *API) putFedSettings(c *call) (any, error) {
	var req store.FederationSettings
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	return a.st.PutFederationSettings(req, c.actor())
}

// The allowed source hosts (GET and PUT /api/v1/settings/sources): where
// the gateway may connect for a PostgreSQL source registered by anyone but
// the Owner. Reading them needs can_upload_data (who registers sources
// needs to know); changing them can_manage_infrastructure (the Owner).

func (a *API) getSourceSettings(*call) (any, error) { return a.st.SourceSettings() }

func (a *API) putSourceSettings(c *call) (any, error) {
	var req store.SourceSettings
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	return a.st.PutSourceSettings(req, c.actor())
}
