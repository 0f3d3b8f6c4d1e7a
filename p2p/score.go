package p2p

import (
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Gossipsub peer scoring. A peer that delivers messages our validators
// reject (a forged offer, say) loses score; below GraylistThreshold its
// messages are ignored altogether, below PublishThreshold we stop sending to it.
var scoreThresholds = &pubsub.PeerScoreThresholds{
	GossipThreshold:             -10,
	PublishThreshold:            -50,
	GraylistThreshold:           -80,
	AcceptPXThreshold:           10,
	OpportunisticGraftThreshold: 5,
}

func scoreParams() *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		SkipAtomicValidation: true,
		Topics:               map[string]*pubsub.TopicScoreParams{},
		AppSpecificScore:     func(peer.ID) float64 { return 0 },
		AppSpecificWeight:    1,
		// Every test peer shares 127.0.0.1, and an organisation's nodes may share
		// a NAT address: no colocation penalty.
		IPColocationFactorWeight:  0,
		BehaviourPenaltyWeight:    -1,
		BehaviourPenaltyDecay:     0.9,
		BehaviourPenaltyThreshold: 5,
		DecayInterval:             time.Second,
		DecayToZero:               0.01,
		RetainScore:               10 * time.Minute,
	}
}

// OfferTopicScore is the score of one job-offer topic: each rejected
// (invalid) message costs its sender heavily and is forgotten slowly.
func OfferTopicScore() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		SkipAtomicValidation: true,
		TopicWeight:          1,
		// Time in mesh does not count (weight 0), but gossipsub divides
		// by its quantum whenever it scores a peer in the topic's mesh:
		// left zero, a peer that joined the mesh and pruned crashed us
		// (integer divide by zero in peerScore.score).
		TimeInMeshQuantum:              time.Second,
		InvalidMessageDeliveriesWeight: -10,
		InvalidMessageDeliveriesDecay:  0.99,
	}
}

// scoreInspectEvery is how often the scores that Score reports are copied
// out of gossipsub.
const scoreInspectEvery = 5 * time.Second

// Score returns the gossipsub score of p as of at most scoreInspectEvery
// ago (0 if none yet).
func (p *Peer) Score(id peer.ID) float64 {
	p.scoreMu.Lock()
	defer p.scoreMu.Unlock()
	return p.scores[id]
}

func (p *Peer) inspectScores(m map[peer.ID]float64) {
	p.scoreMu.Lock()
	p.scores = m
	p.scoreMu.Unlock()
}
