package store

import (
	"errors"
	"fmt"

	"github.com/fedgrid/fedgrid/wire"
)

// ErrUnknownProtocol is returned by AuthorizeCaller for a caller kind it
// does not know: a protocol without a policy is refused.
var ErrUnknownProtocol = errors.New("store: no policy for this protocol")

// CallerPermission is the permission a CallerScientist protocol needs.
const CallerPermission = PermMakeDataRequests

// AuthorizeCaller is the one policy check for a p2p request from peerID to
// a protocol whose descriptor (wire.Protocols) admits who. For
// CallerScientist it returns the account bound to the peer. Errors:
// ErrUnknownPeer (no account, or not an enrolled node), ErrForbidden (the
// account's role lacks CallerPermission now), ErrUnknownProtocol.
func (s *Store) AuthorizeCaller(peerID string, who wire.Caller) (*User, error) {
	switch who {
	case wire.CallerAnyone:
		return nil, nil
	case wire.CallerNode:
		if !s.Enrolled(peerID) { // from memory: no read waits for a commit
			return nil, fmt.Errorf("%w: %s is not an enrolled node", ErrUnknownPeer, peerID)
		}
		return nil, nil
	case wire.CallerScientist:
		return s.AuthorizePeer(peerID, CallerPermission)
	}
	return nil, fmt.Errorf("%w: caller kind %d", ErrUnknownProtocol, who)
}
