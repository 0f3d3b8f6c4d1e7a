package harness

import (
	"context"
	"errors"
)

// PeerOptions are the settings shared by the peer commands.
type PeerOptions struct {
	// Network is the network name (--network); empty = fedgrid's default.
	Network string
	// Bootstrap addresses (--bootstrap), each with /p2p/.
	Bootstrap []string
	// Extra flags appended to the command line.
	Extra []string
}

func (o PeerOptions) args(h *Harness, cmd, name string) []string {
	args := []string{cmd, "--data", h.Path("peers", sanitize(name)), "--listen", LoopbackListen}
	if o.Network != "" {
		args = append(args, "--network", o.Network)
	}
	for _, b := range o.Bootstrap {
		args = append(args, "--bootstrap", b)
	}
	return args
}

// StartNetwork starts a network peer (bootstrap and DHT server) on loopback.
func (h *Harness) StartNetwork(ctx context.Context, name string, o PeerOptions) (*Proc, error) {
	args := append(o.args(h, "network", name), o.Extra...)
	return h.Start(ctx, name, args...)
}

// StartGateway starts a gateway on loopback with its HTTP admin API on an
// ephemeral port; displayName is its --name. The returned peer's HTTP field
// is the API's base URL.
func (h *Harness) StartGateway(ctx context.Context, name, displayName string, o PeerOptions) (*Proc, error) {
	args := append(o.args(h, "gateway", name), "--http", LoopbackHTTP)
	if displayName != "" {
		args = append(args, "--name", displayName)
	}
	p, err := h.Start(ctx, name, append(args, o.Extra...)...)
	if err != nil {
		return nil, err
	}
	if p.HTTP == "" {
		p.Kill()
		return nil, errors.New(name + ": the gateway's ready line has no http=")
	}
	return p, nil
}

// StartNode starts a node enrolled by the gateway at gatewayAddr with a join token.
func (h *Harness) StartNode(ctx context.Context, name, gatewayAddr, joinToken string, o PeerOptions) (*Proc, error) {
	args := append(o.args(h, "node", name), "--gateway", gatewayAddr, "--join-token", joinToken)
	return h.Start(ctx, name, append(args, o.Extra...)...)
}
