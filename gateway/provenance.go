package gateway

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/plan"
)

// signModel stamps a trained model with its provenance and the gateway's
// signature over the whole document (signature field empty while signing).
func (g *Gateway) signModel(m *plan.Model, j *store.Job) ([]byte, error) {
	m.Provenance = &plan.Provenance{Gateway: g.ID(), Dataset: j.DatasetID, Job: j.ID,
		DatasetVersion: j.DatasetVersion, DatasetSHA256: j.DatasetSHA256}
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
// public key inside the gateway's peer ID.
func VerifyModel(m *plan.Model) error {
	if m.Provenance == nil || m.Provenance.Signature == "" {
		return errors.New("model carries no provenance signature")
	}
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
