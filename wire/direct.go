package wire

import (
	"fmt"
	"time"
)

// ProtoOffer is the direct offer: gateway -> one enrolled node, a job for
// that node alone. The gateway picks a few nodes it knows to have a free slot
// and offers them a job in turn over a stream; it gossips the job (Offer) to
// every node only when none of them took it.
const ProtoOffer = "job/offer"

// OfferJob: gateway -> one of its enrolled nodes: a job for that node alone
// (served by nodes, not by gateways).
func OfferJob() Protocol[DirectOffer, OfferAnswer] {
	return define[DirectOffer, OfferAnswer](small(ProtoOffer, 10*time.Second, CallerGateway))
}

// DirectOffer offers one queued job to the node it is sent to.
type DirectOffer struct {
	Job     string    `json:"job"`
	Expires time.Time `json:"expires"`
	// Memory bounds the bytes the job needs (0: unknown), as in Offer: a
	// node whose jobs may use less declines.
	Memory int64 `json:"memory,omitempty"`
	// StreamMemory as in Offer.
	StreamMemory int64 `json:"stream_memory,omitempty"`
}

// Validate checks a direct offer's fields before a node acts on it.
func (o *DirectOffer) Validate() error {
	if o.Job == "" || len(o.Job) > 128 {
		return fmt.Errorf("offer must name a job ID of 1 to 128 characters")
	}
	if o.Expires.IsZero() {
		return fmt.Errorf("offer lacks its expiry time")
	}
	return nil
}

// OfferAnswer is a node's answer to a DirectOffer. Accepted: the node holds a
// slot for the job and claims it now (job/claim), which grants the lease and
// its fencing token as for any claim. Free is the node's count of free slots
// after its answer.
type OfferAnswer struct {
	Accepted bool `json:"accepted"`
	Free     int  `json:"free"`
}
