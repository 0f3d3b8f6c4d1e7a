package service

import (
	"errors"
	"slices"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/wire"
)

// ActorKind is who is asking.
type ActorKind int

const (
	// Stranger: a peer bound to nothing (or a caller whose identity a
	// protocol open to anyone does not need).
	Stranger ActorKind = iota + 1
	// Node: a node this gateway enrolled.
	Node
	// User: an account, over HTTP (a token) or p2p (its bound peer ID),
	// with its role's permissions as they were when the request came.
	User
)

// Actor is the subject of every service call: what it may do and see
// follows from it alone, whatever the transport.
type Actor struct {
	Kind  ActorKind
	Peer  string      // the remote peer ID (p2p), "" over HTTP
	User  *store.User // Kind User
	perms []store.Permission
}

// Can reports whether the actor's role grants p.
func (a Actor) Can(p store.Permission) bool { return a.Kind == User && slices.Contains(a.perms, p) }

// UserID is the account's ID, "" for anyone else.
func (a Actor) UserID() string {
	if a.Kind == User && a.User != nil {
		return a.User.ID
	}
	return ""
}

// owns reports whether the account is userID.
func (a Actor) owns(userID string) bool {
	return a.Kind == User && a.User != nil && a.User.ID == userID
}

// UserActor is the actor of an authenticated account.
func (s *Service) UserActor(u *store.User) (Actor, error) {
	perms, err := s.st.Permissions(u.ID)
	if err != nil {
		return Actor{}, err
	}
	return Actor{Kind: User, User: u, perms: perms}, nil
}

// PeerActor resolves and authorises a remote peer for protocol d: the one
// policy (store.AuthorizeCaller with the descriptor's caller kind).
func (s *Service) PeerActor(peerID string, d wire.Descriptor) (Actor, error) {
	u, err := s.st.AuthorizeCaller(peerID, d.Caller)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrUnknownPeer) && d.Caller == wire.CallerNode:
		return Actor{}, Errorf(Forbidden, "peer %s is not an enrolled node of this gateway", peerID)
	case errors.Is(err, store.ErrUnknownPeer):
		return Actor{}, Errorf(Unauthorized, "peer %s is not registered at this gateway: ask its administrator to add your peer ID to a user account", peerID)
	case errors.Is(err, store.ErrForbidden):
		return Actor{}, Errorf(Forbidden, "your account may not do this here (%s needed)", store.CallerPermission)
	default:
		return Actor{}, err
	}
	switch d.Caller {
	case wire.CallerNode:
		return Actor{Kind: Node, Peer: peerID}, nil
	case wire.CallerScientist:
		a, err := s.UserActor(u)
		a.Peer = peerID
		return a, err
	}
	return Actor{Kind: Stranger, Peer: peerID}, nil
}
