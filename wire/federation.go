package wire

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/fedgrid/fedgrid/crypto/receipt"
)

// Federated training across gateways. The data scientist's client
// coordinates (like Flower's server): it asks every gateway holding one of
// the datasets to join, then runs rounds. In each round the gateways agree
// keys for secure aggregation (package crypto/secagg), each trains its local
// epochs from the round's global weights on its own nodes and answers with
// a masked update; the client learns only the sum of the updates.
const (
	ProtoFedJoin    = "fed/join"    // data scientist -> gateway: take part in a federation
	ProtoFedKeys    = "fed/keys"    // round setup: the gateway's signed per-round keys
	ProtoFedShare   = "fed/share"   // the round's keys -> the gateway's encrypted key shares
	ProtoFedTrain   = "fed/train"   // the round's global weights and the shares for this gateway: train
	ProtoFedUpdate  = "fed/update"  // the masked update, once local training is done
	ProtoFedConfirm = "fed/confirm" // the survivors -> the gateway's signature of that set
	ProtoFedReveal  = "fed/reveal"  // the survivors and their signatures -> shares for unmasking
	ProtoFedFinish  = "fed/finish"  // the final weights (or the reason it stopped): the gateway's part ends
)

// CodeRoundLost is the p2p error code of a gateway that made its keys for
// a round's attempt and no longer holds them (it restarted: round keys are
// never stored). It is alive: the coordinator retries the round with a new
// attempt, in which the gateway makes fresh keys.
const CodeRoundLost = "round_lost"

// Federation limits.
const (
	MaxFedParticipants = 100
	MaxFedRounds       = 1000
	// MaxFedUpdate bounds a message carrying weights or a masked update.
	MaxFedUpdate = MaxModel
)

// Federation strategies.
const (
	StrategyFedAvg  = "fedavg"
	StrategyFedProx = "fedprox"
	StrategyFedAvgM = "fedavgm"
)

// FedStrategy is how the coordinator combines the round's mean update
// (FedAvgM: server momentum and learning rate) and how gateways train
// (FedProx: the proximal term Mu/2 ||w - w_global||^2 in the local loss).
type FedStrategy struct {
	Name     string  `json:"name"`
	Mu       float64 `json:"mu,omitempty"`
	Momentum float64 `json:"momentum,omitempty"`
	ServerLR float64 `json:"server_lr,omitempty"`
}

// FedParticipant is one gateway of a federation and the dataset it holds.
type FedParticipant struct {
	Gateway string `json:"gateway"`
	Name    string `json:"name"`
	Dataset string `json:"dataset"`
}

// FedJoinRequest asks a gateway to take part in a federation with Dataset.
// The gateway checks it as a submission (the caller's permission on the
// dataset, the plan against its schema, the privacy budget for all rounds).
type FedJoinRequest struct {
	Federation   string           `json:"federation"`
	Dataset      string           `json:"dataset"`
	Plan         json.RawMessage  `json:"plan"`
	Rounds       int              `json:"rounds"`
	Strategy     FedStrategy      `json:"strategy"`
	Participants []FedParticipant `json:"participants"`
	MinGateways  int              `json:"min_gateways"`
	// MaxRows is the public bound on one gateway's training rows and Clip
	// on the change of one parameter in one round: they fix the fixed-point
	// scale of the masked updates (a gateway with more rows weighs as MaxRows).
	MaxRows int     `json:"max_rows"`
	Clip    float64 `json:"clip"`
	// Eval: the federation scores a model instead of training one
	// (`fedgrid eval`): one round, whose FedTrainRequest carries the
	// model's weights (Plan is the model's plan with its preprocessing
	// declared); the gateway scores them on its rows and masks
	// plan.EvalSums; FedFinish then only ends its part.
	Eval bool `json:"eval,omitempty"`
	// PlainUpdates asks for a federation without secure aggregation of its
	// training rounds: each gateway's update of each round (rows, loss,
	// weight changes) leaves unmasked and the coordinator reads it on its
	// own. A gateway takes part only if its owner allows plain updates in
	// its federation settings, and its officer's request says so. Round 0
	// (fitting statistics) stays secure; an evaluation cannot be plain.
	PlainUpdates bool `json:"plain_updates,omitempty"`
}

// FedJoinResponse is the gateway's part: a job of the caller's that follows
// the federation (its reference works with `fedgrid job`).
type FedJoinResponse struct {
	Job JobInfo `json:"job"`
	// Approval, on review-gated data: the state of the request for this
	// gateway's compliance officer (pending, approved, denied, withdrawn);
	// no round starts here before it is approved. Empty: no review needed.
	Approval string `json:"approval,omitempty"`
	Request  string `json:"request,omitempty"`
}

// KindFederation is the request kind of a gateway's approval of a
// federation on review-gated data (a compliance officer's decision).
const KindFederation = "federation"

// Federation approval states (FedJoinResponse.Approval).
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
)

// FedRoundRequest names one round of a federation the caller coordinates.
type FedRoundRequest struct {
	Federation string `json:"federation"`
	Round      int    `json:"round"`
	// Attempt counts the coordinator's tries of this round: a retried round
	// gets fresh keys (a later attempt replaces the gateway's round state).
	Attempt int `json:"attempt,omitempty"`
}

// FedKeysRequest opens a round: its parties (gateway peer IDs, sorted),
// the secure-aggregation threshold and the length of the masked vector.
type FedKeysRequest struct {
	FedRoundRequest
	Parties   []string `json:"parties"`
	Threshold int      `json:"threshold"`
	Length    int      `json:"length"`
	// Degree, when not 0, runs SecAgg+: masks and shares only between the
	// neighbours of a random Degree-regular graph drawn from the round's
	// context (secagg.Params.Degree; the client uses secagg.DegreeFor).
	Degree int `json:"degree,omitempty"`
}

// FedAdvertisement is a gateway's two public keys for one round, signed
// with its peer key (secagg.Advertisement).
type FedAdvertisement struct {
	Party   string `json:"party"`
	EncKey  []byte `json:"enc_key"`
	MaskKey []byte `json:"mask_key"`
	Sig     []byte `json:"sig"`
}

// FedShareRequest carries the round's advertisements to every party.
type FedShareRequest struct {
	FedRoundRequest
	Ads []FedAdvertisement `json:"ads"`
}

// FedShare is one gateway's key shares for another, encrypted to it (secagg.EncryptedShare).
type FedShare struct {
	From       string `json:"from"`
	To         string `json:"to"`
	Ciphertext []byte `json:"ciphertext"`
}

// FedShareResponse is a gateway's encrypted shares, one for each other party.
type FedShareResponse struct {
	Shares []FedShare `json:"shares"`
}

// FedTrainRequest starts a gateway's local training of the round from the
// global weights, with the shares addressed to it (none with plain
// updates). The weights are either Vector (PackFloats of every parameter,
// flattened row-major in plan.ParamOrder, shaped as the plan's params) or
// Weights (fedgrid.model/v1 "params" JSON, as earlier coordinators and
// evaluations send them).
// In round 0 (FitRound) there are no weights: the gateway computes its part
// of the preprocessing statistics. From round 1 on, a federation whose plan
// left statistics to fit carries in Plan the plan with the fitted statistics
// declared; the gateway takes those statistics (and nothing else) into its
// copy of the plan.
type FedTrainRequest struct {
	FedRoundRequest
	Weights json.RawMessage `json:"weights,omitempty"`
	Vector  []byte          `json:"vector,omitempty"`
	Shares  []FedShare      `json:"shares"`
	Plan    json.RawMessage `json:"plan,omitempty"`
}

// FitRound is the round that fits a federation's undeclared standardize and
// min_max statistics before training (plan.FitSpec): the masked vector is
// the gateway's row count and the sums and sums of squares of the columns
// to standardize (secagg.Wide fixed point); the minima and maxima of the
// columns to min_max travel in the clear in FedUpdateResponse.Extremes.
const FitRound = 0

// FedExtremes are one gateway's minima and maxima of the columns a
// federation's undeclared min_max op covers (plan.FitSpec.Extremes order):
// released to the coordinator under the gateway's rules (its officer's
// approval of the federation on review-gated data).
type FedExtremes struct {
	Min []float64 `json:"min"`
	Max []float64 `json:"max"`
}

// FedUpdateResponse: Ready false while the gateway's nodes still train
// (Progress says how far); then the masked update (secagg.MaskedInput) as
// Packed (PackWords; earlier gateways send Words), or, in a federation with
// plain updates, Plain: the update unmasked (PackFloats of plan.UpdateCodec.Values).
type FedUpdateResponse struct {
	Ready    bool     `json:"ready"`
	Progress Progress `json:"progress"`
	Party    string   `json:"party,omitempty"`
	Words    []uint32 `json:"words,omitempty"`
	Packed   []byte   `json:"packed,omitempty"`
	Plain    []byte   `json:"plain,omitempty"`
	// Extremes, in round 0 only: the gateway's minima and maxima to min_max.
	Extremes *FedExtremes `json:"extremes,omitempty"`
	// Receipt is the gateway's signed receipt of the round: the hashes of
	// the weights it started from and of Words (package crypto/receipt).
	Receipt *receipt.Receipt `json:"receipt,omitempty"`
}

// FedSurvivors names the parties whose masked updates reached the coordinator.
type FedSurvivors struct {
	FedRoundRequest
	Survivors []string `json:"survivors"`
}

// FedConsistency is a survivor's signature of the survivor set (secagg.Consistency).
type FedConsistency struct {
	Party string `json:"party"`
	Sig   []byte `json:"sig"`
}

// FedRevealRequest asks a survivor for its unmasking shares.
type FedRevealRequest struct {
	FedRoundRequest
	Survivors []string         `json:"survivors"`
	Sigs      []FedConsistency `json:"sigs"`
}

// FedReveal is a survivor's shares for unmasking (secagg.Reveal).
type FedReveal struct {
	Party    string            `json:"party"`
	Seeds    map[string][]byte `json:"seeds"`
	MaskKeys map[string][]byte `json:"mask_keys"`
}

// FedFinishRequest ends the gateway's part: with the final global weights
// (the gateway stores the model, signed, as its job's result, released
// under its rules), or with the reason the federation stopped.
type FedFinishRequest struct {
	Federation string          `json:"federation"`
	Rounds     int             `json:"rounds"`
	Weights    json.RawMessage `json:"weights,omitempty"`
	Vector     []byte          `json:"vector,omitempty"` // the weights as in FedTrainRequest
	Error      string          `json:"error,omitempty"`
	// Plan: the plan with round 0's fitted statistics, as in FedTrainRequest
	// (for a gateway that took part in no round since).
	Plan json.RawMessage `json:"plan,omitempty"`
	// Provenance, with the final weights: the gateways and every round's
	// receipts. The gateway checks it and signs it into the model it
	// stores (plan.Provenance.Federation).
	Provenance *receipt.Federation `json:"provenance,omitempty"`
}

// FedRoundContext names one round of one federation for secure aggregation:
// every key, signature and ciphertext of the round is bound to it.
func FedRoundContext(federation string, round, attempt int) []byte {
	return []byte("fedgrid/federation/v1 " + federation + " round " + strconv.Itoa(round) + " attempt " + strconv.Itoa(attempt))
}

// Federation protocols: data scientist (the coordinator) -> gateway.
// Those carrying weights or a masked update are checked before they are read.

// FedJoin: take part in a federation with one of the gateway's datasets.
func FedJoin() Protocol[FedJoinRequest, FedJoinResponse] {
	return define[FedJoinRequest, FedJoinResponse](Descriptor{Name: ProtoFedJoin, MaxRequest: MaxPlan + MaxSmall, MaxResponse: MaxSmall, Timeout: 30 * time.Second, Caller: CallerScientist, CheckFirst: true})
}

// FedKeys: open a round; the gateway's signed keys.
func FedKeys() Protocol[FedKeysRequest, FedAdvertisement] {
	return define[FedKeysRequest, FedAdvertisement](small(ProtoFedKeys, 30*time.Second, CallerScientist))
}

// FedShareKeys: the round's keys; the gateway's encrypted key shares.
func FedShareKeys() Protocol[FedShareRequest, FedShareResponse] {
	return define[FedShareRequest, FedShareResponse](Descriptor{Name: ProtoFedShare, MaxRequest: MaxCatalog, MaxResponse: MaxCatalog, Timeout: 30 * time.Second, Caller: CallerScientist, CheckFirst: true})
}

// FedTrain: the round's global weights and the shares for the gateway.
func FedTrain() Protocol[FedTrainRequest, Ack] {
	return define[FedTrainRequest, Ack](Descriptor{Name: ProtoFedTrain, MaxRequest: MaxFedUpdate, MaxResponse: MaxSmall, Timeout: 2 * time.Minute, Caller: CallerScientist, CheckFirst: true})
}

// FedUpdate: the gateway's masked update, once its local training is done.
func FedUpdate() Protocol[FedRoundRequest, FedUpdateResponse] {
	return define[FedRoundRequest, FedUpdateResponse](Descriptor{Name: ProtoFedUpdate, MaxRequest: MaxSmall, MaxResponse: MaxFedUpdate, Timeout: 2 * time.Minute, Caller: CallerScientist})
}

// FedConfirm: the survivors; the gateway's signature of that set.
func FedConfirm() Protocol[FedSurvivors, FedConsistency] {
	return define[FedSurvivors, FedConsistency](Descriptor{Name: ProtoFedConfirm, MaxRequest: MaxCatalog, MaxResponse: MaxSmall, Timeout: 30 * time.Second, Caller: CallerScientist, CheckFirst: true})
}

// FedUnmask: the survivors and their signatures; the gateway's unmasking shares.
func FedUnmask() Protocol[FedRevealRequest, FedReveal] {
	return define[FedRevealRequest, FedReveal](Descriptor{Name: ProtoFedReveal, MaxRequest: MaxCatalog, MaxResponse: MaxCatalog, Timeout: 30 * time.Second, Caller: CallerScientist, CheckFirst: true})
}

// FedFinish: the final weights, or why the federation stopped.
func FedFinish() Protocol[FedFinishRequest, JobInfo] {
	return define[FedFinishRequest, JobInfo](Descriptor{Name: ProtoFedFinish, MaxRequest: MaxFedUpdate, MaxResponse: MaxSmall, Timeout: 2 * time.Minute, Caller: CallerScientist, CheckFirst: true})
}

// FedProtocols lists the federation protocols' descriptors.
func FedProtocols() []Descriptor {
	return []Descriptor{FedJoin().Descriptor, FedKeys().Descriptor, FedShareKeys().Descriptor, FedTrain().Descriptor,
		FedUpdate().Descriptor, FedConfirm().Descriptor, FedUnmask().Descriptor, FedFinish().Descriptor}
}
