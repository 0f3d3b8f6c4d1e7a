package wire

import (
	"fmt"
	"strconv"
	"time"
)

// The audit witness protocols, served by network peers (not gateways, so
// they are not in Protocols).
const (
	ProtoWitnessPut = "witness/put" // gateway -> network peer: its latest signed audit checkpoint
	ProtoWitnessGet = "witness/get" // a gateway (its own key) -> network peer: the checkpoints kept for it
)

// WitnessPut: a gateway -> its network peer: its own signed checkpoint
// (the network peer checks that the signer is the caller).
func WitnessPut() Protocol[Checkpoint, Ack] {
	return define[Checkpoint, Ack](small(ProtoWitnessPut, 10*time.Second, CallerAnyone))
}

// WitnessGet: anyone -> network peer: the checkpoints kept for a gateway.
func WitnessGet() Protocol[CheckpointsRequest, CheckpointsResponse] {
	return define[CheckpointsRequest, CheckpointsResponse](small(ProtoWitnessGet, 30*time.Second, CallerAnyone))
}

// Checkpoint is a gateway's signed statement that its audit chain had Seq
// entries ending in Hash at Time. A network peer keeps the latest ones of
// each gateway, so that a history truncated or rewritten afterwards on the
// gateway's disk no longer matches them.
type Checkpoint struct {
	Gateway   string    `json:"gateway"`
	Seq       uint64    `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	Signature []byte    `json:"signature"` // Ed25519 by the gateway's peer key over SigningBytes
}

// SigningBytes is what the signature covers.
func (c *Checkpoint) SigningBytes() []byte {
	return []byte("fedgrid-audit-checkpoint/v1\n" + c.Gateway + "\n" + strconv.FormatUint(c.Seq, 10) + "\n" + c.Hash + "\n" + c.Time.UTC().Format(time.RFC3339Nano))
}

// Validate checks the fields' shapes (not the signature).
func (c *Checkpoint) Validate() error {
	if c.Gateway == "" || len(c.Gateway) > 128 || c.Seq == 0 || len(c.Hash) != 64 || len(c.Signature) == 0 || len(c.Signature) > 512 || c.Time.IsZero() {
		return fmt.Errorf("checkpoint lacks a gateway, a sequence number, a 64-hex-digit hash, a time or a signature")
	}
	return nil
}

// CheckpointsRequest asks a network peer for a gateway's checkpoints.
type CheckpointsRequest struct {
	Gateway string `json:"gateway"`
}

// CheckpointsResponse lists them, oldest first.
type CheckpointsResponse struct {
	Checkpoints []Checkpoint `json:"checkpoints"`
}
