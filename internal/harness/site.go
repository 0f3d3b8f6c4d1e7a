package harness

import (
	"context"
	"fmt"
)

// Site is one data owner: a gateway whose Owner has been set up and is
// logged in through the admin API, and the nodes it enrolled.
type Site struct {
	Name    string
	Gateway *Proc
	Admin   *Admin // logged in as the Owner
	Nodes   []*Proc

	h    *Harness
	opts PeerOptions
}

// StartSite starts a gateway (see StartGateway), creates its Owner with
// POST /api/v1/setup and logs in as the Owner.
func (h *Harness) StartSite(ctx context.Context, name, displayName, ownerEmail, ownerPassword string, o PeerOptions) (*Site, error) {
	gw, err := h.StartGateway(ctx, name, displayName, o)
	if err != nil {
		return nil, err
	}
	s := &Site{Name: name, Gateway: gw, Admin: NewAdmin(gw.HTTP), h: h, opts: o}
	if _, err := s.Admin.Setup(ctx, gw.SetupToken(), ownerEmail, ownerPassword, "Owner of "+displayName); err != nil {
		return nil, fmt.Errorf("%s: setup: %w", name, err)
	}
	if err := s.Admin.Login(ctx, ownerEmail, ownerPassword); err != nil {
		return nil, fmt.Errorf("%s: login: %w", name, err)
	}
	return s, nil
}

// StartNode makes a join token through the admin API and starts a node
// enrolled by the site's gateway.
func (s *Site) StartNode(ctx context.Context, name string) (*Proc, error) {
	tok, err := s.Admin.JoinToken(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: join token: %w", s.Name, err)
	}
	n, err := s.h.StartNode(ctx, name, s.Gateway.Addr(), tok, s.opts)
	if err != nil {
		return nil, err
	}
	s.Nodes = append(s.Nodes, n)
	return n, nil
}

// RegisterScientist creates a Data Scientist user bound to peerID, the key
// the scientist's commands sign with.
func (s *Site) RegisterScientist(ctx context.Context, email, password, name, peerID string) (*User, error) {
	u, err := s.Admin.CreateUser(ctx, NewUser{Email: email, Password: password, Name: name, Role: RoleDataScientist, PeerID: peerID})
	if err != nil {
		return nil, fmt.Errorf("%s: create user: %w", s.Name, err)
	}
	return u, nil
}
