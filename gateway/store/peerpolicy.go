package store

import (
	"errors"
	"fmt"

	"github.com/fedgrid/fedgrid/wire"
)

// Who may make a kind of p2p request.
const (
	PeerAnyone = "anyone" // no identity check (the request carries its own credential, or reveals nothing private)
	PeerNode   = "node"   // an enrolled node
	PeerUser   = "user"   // a peer ID bound to an account whose role has Perm
)

// PeerRule is the policy of one p2p protocol.
type PeerRule struct {
	Who  string
	Perm Permission // for PeerUser
}

// PeerRules is the policy of every p2p protocol of package wire. The gateway's
// stream handlers call AuthorizePeerRequest with their protocol name; a
// protocol missing here is refused.
var PeerRules = map[string]PeerRule{
	wire.ProtoCatalog:   {Who: PeerAnyone}, // dataset descriptions, never rows
	wire.ProtoEnroll:    {Who: PeerAnyone}, // the single-use join token is the credential
	wire.ProtoClaim:     {Who: PeerNode},
	wire.ProtoFetch:     {Who: PeerNode},
	wire.ProtoHeartbeat: {Who: PeerNode},
	wire.ProtoResult:    {Who: PeerNode},
	wire.ProtoSubmit:    {Who: PeerUser, Perm: PermMakeDataRequests},
	wire.ProtoJob:       {Who: PeerUser, Perm: PermMakeDataRequests},
	wire.ProtoModel:     {Who: PeerUser, Perm: PermMakeDataRequests},
	wire.ProtoCancel:    {Who: PeerUser, Perm: PermMakeDataRequests},
	wire.ProtoPing:      {Who: PeerNode},
	wire.ProtoRequest:   {Who: PeerUser, Perm: PermMakeDataRequests},
	wire.ProtoRequests:  {Who: PeerUser, Perm: PermMakeDataRequests},
	wire.ProtoWithdraw:  {Who: PeerUser, Perm: PermMakeDataRequests},
	wire.ProtoQuery:     {Who: PeerUser, Perm: PermMakeDataRequests},
}

// ErrUnknownProtocol is returned by AuthorizePeerRequest for a protocol
// without a rule in PeerRules.
var ErrUnknownProtocol = errors.New("store: no policy for this protocol")

// AuthorizePeerRequest is the one policy check for a p2p request of protocol
// proto (a wire.Proto* name) from peerID. For data-scientist protocols it
// returns the account bound to the peer. Errors: ErrUnknownPeer (no account,
// or not an enrolled node), ErrForbidden (the account's role lacks the
// permission now), ErrUnknownProtocol.
func (s *Store) AuthorizePeerRequest(peerID, proto string) (*User, error) {
	rule, ok := PeerRules[proto]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownProtocol, proto)
	}
	switch rule.Who {
	case PeerAnyone:
		return nil, nil
	case PeerNode:
		if _, err := s.Node(peerID); errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: %s is not an enrolled node", ErrUnknownPeer, peerID)
		} else if err != nil {
			return nil, err
		}
		return nil, nil
	case PeerUser:
		return s.AuthorizePeer(peerID, rule.Perm)
	}
	return nil, fmt.Errorf("%w: %q has rule %q", ErrUnknownProtocol, proto, rule.Who)
}
