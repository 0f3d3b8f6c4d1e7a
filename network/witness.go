package network

import (
	"context"
	"errors"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
	"github.com/fedgrid/fedgrid/witness"
)

// serveWitness installs the audit witness protocols: a gateway puts its own
// signed checkpoints (never another's), and reads them back with its own
// key (fedgrid audit verify --data DIR --witness uses the gateway's
// identity). Nobody else reads them: a checkpoint's sequence number is the
// audit chain's length, which grows when a job is granted or ends, so it
// would time the jobs of a requester whose outcome is under review.
func (n *Network) serveWitness() {
	p2p.Serve(n.peer, wire.WitnessPut(), nil, n.handleWitnessPut)
	p2p.Serve(n.peer, wire.WitnessGet(), nil, n.handleWitnessGet)
}

func (n *Network) handleWitnessPut(_ context.Context, from peer.ID, cp *wire.Checkpoint) (*wire.Ack, error) {
	if err := witness.Verify(cp); err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "%v", err)
	}
	if cp.Gateway != from.String() {
		return nil, p2p.Errorf(p2p.CodeForbidden, "a gateway puts only its own checkpoints")
	}
	if err := n.witness.Put(*cp); err != nil {
		switch {
		case errors.Is(err, witness.ErrBackwards):
			n.log.Warn("audit checkpoint contradicts the witnessed history", "gateway", from, "seq", cp.Seq, "err", err)
			return nil, p2p.Errorf(p2p.CodeConflict, "%v", err)
		case errors.Is(err, witness.ErrFull):
			return nil, p2p.Errorf(p2p.CodeConflict, "%v", err)
		}
		return nil, err
	}
	return &wire.Ack{OK: true}, nil
}

func (n *Network) handleWitnessGet(_ context.Context, from peer.ID, req *wire.CheckpointsRequest) (*wire.CheckpointsResponse, error) {
	if _, err := peer.Decode(req.Gateway); err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "gateway must be a peer ID: %v", err)
	}
	if req.Gateway != from.String() {
		return nil, p2p.Errorf(p2p.CodeForbidden, "a gateway's checkpoints are read with its own key: fedgrid audit verify --data DIR --witness ADDR")
	}
	return &wire.CheckpointsResponse{Checkpoints: n.witness.Get(req.Gateway)}, nil
}
