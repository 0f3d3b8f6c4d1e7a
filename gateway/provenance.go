package gateway

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/crypto/receipt"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
)

// signModel stamps a trained model with its provenance and the gateway's
// signature over the whole document (signature field empty while signing).
// A federated model's Provenance.Federation, set by the caller, is kept.
func (g *Gateway) signModel(m *plan.Model, j *store.Job) ([]byte, error) {
	var fed *receipt.Federation
	if m.Provenance != nil {
		fed = m.Provenance.Federation
	}
	m.Provenance = &plan.Provenance{Gateway: g.ID(), Dataset: j.DatasetID, Job: j.ID,
		DatasetVersion: j.DatasetVersion, DatasetSHA256: j.DatasetSHA256, Federation: fed}
	body, err := m.SigningBytes()
	if err != nil {
		return nil, fmt.Errorf("encode model: %w", err)
	}
	sk := g.peer.Host.Peerstore().PrivKey(g.peer.ID())
	if sk == nil {
		return nil, errors.New("gateway has no private key to sign with")
	}
	sig, err := sk.Sign(body)
	if err != nil {
		return nil, fmt.Errorf("sign model: %w", err)
	}
	m.Provenance.Signature = base64.StdEncoding.EncodeToString(sig)
	return json.Marshal(m)
}

// VerifyModel checks a released model's provenance signature against the
// public key inside the gateway's peer ID and, in a federated model, every
// round's receipts and the chain of weights (receipt.Verify: the first round
// starts from the plan's initial weights, the model's weights are the last
// round's result). Its error names every problem found, on one line.
func VerifyModel(m *plan.Model) error {
	if m.Provenance == nil || m.Provenance.Signature == "" {
		return errors.New("model carries no provenance signature")
	}
	sigErr := verifySignature(m)
	fed := m.Provenance.Federation
	if fed == nil {
		return sigErr
	}
	initial := ""
	if init, err := plan.InitialParams(m.Plan); err == nil {
		initial = plan.WeightsSHA256(init)
	}
	fedErr := receipt.Verify(fed, initial, plan.WeightsSHA256(m.Params), p2p.VerifyPeerSignature)
	switch {
	case sigErr != nil && fedErr != nil:
		return fmt.Errorf("%w; %w", sigErr, fedErr)
	case sigErr != nil:
		return sigErr
	}
	return fedErr
}

// verifySignature checks the gateway's signature over the whole model.
func verifySignature(m *plan.Model) error {
	id, err := peer.Decode(m.Provenance.Gateway)
	if err != nil {
		return fmt.Errorf("provenance names no valid gateway peer ID: %v", err)
	}
	pk, err := id.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("gateway peer ID carries no public key: %v", err)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Provenance.Signature)
	if err != nil {
		return fmt.Errorf("signature is not base64: %v", err)
	}
	body, err := m.SigningBytes()
	if err != nil {
		return err
	}
	ok, err := pk.Verify(body, sig)
	if err != nil || !ok {
		return errors.New("signature does not match: the model was changed after the gateway signed it, or another gateway signed it")
	}
	return nil
}
