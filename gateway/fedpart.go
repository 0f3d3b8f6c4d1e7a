package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/crypto/receipt"
	"github.com/fedgrid/fedgrid/crypto/secagg"
	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// The gateway's part in a federation across gateways (wire.ProtoFed*). The
// requester's client coordinates; this gateway governs its own part: the
// requester's account, permission and budget here apply, the local epochs
// run on this gateway's nodes as the shard jobs of a coordinated job (one
// per round, from the round's global weights), and what leaves is only the
// masked update of package crypto/secagg, whose sum alone the coordinator
// can read. The per-round secure-aggregation keys live in memory only and
// are made once per round attempt (store.OpenFederationRound records that,
// not the keys): a restarted gateway refuses to go on with the attempt it
// was in (wire.CodeRoundLost), and takes part in the coordinator's next
// attempt with fresh keys. docs/INTERNALS.md says why they are not stored.

// fedConfig is what the gateway keeps of an accepted join (store.Job.FedConfig).
type fedConfig struct {
	Participants []wire.FedParticipant `json:"participants"`
	Strategy     wire.FedStrategy      `json:"strategy"`
	MinGateways  int                   `json:"min_gateways"`
	MaxRows      int                   `json:"max_rows"`
	Clip         float64               `json:"clip"`
	Eval         bool                  `json:"eval,omitempty"`
	// Plain: the federation asked for plain updates (no secure aggregation
	// of its training rounds) and this gateway's owner allowed them.
	Plain bool `json:"plain,omitempty"`
}

// fedRound is this gateway's state in one round. With plain updates there
// is no party (nor keys): the round opens with its weights.
type fedRound struct {
	attempt int
	params  secagg.Params
	party   *secagg.Party
	ad      secagg.Advertisement
	shares  []secagg.EncryptedShare
	global  map[string]plan.Tensor
	start   string // plan.WeightsSHA256(global)
	masked  []uint32
	plain   []byte // the plain update, once sent (a federation with plain updates)
	// receipt is this gateway's signed receipt of a training round, made
	// with its update (masked or plain) and sent with it.
	receipt *receipt.Receipt
	// Sums computed at the gateway itself (round 0, an evaluation: fedKeepSums)
	// and, in round 0, the extremes released beside them.
	fit      []uint32
	extremes *wire.FedExtremes
}

// fedParts holds the rounds in progress, by job ID and round, and the
// shard models of those rounds as handleResult parsed them (by shard job
// ID), so that the round's update does not parse them again from the store.
type fedParts struct {
	mu     sync.Mutex
	rounds map[string]*fedRound
	shards map[string]shardModel
}

// shardModel is a federation shard job's stored result, parsed.
type shardModel struct {
	parent string
	round  int
	model  *plan.Model
}

// keepShard remembers the parsed result of shard job id of a federation job.
func (f *fedParts) keepShard(id, parent string, round int, m *plan.Model) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shards == nil {
		f.shards = map[string]shardModel{}
	}
	f.shards[id] = shardModel{parent: parent, round: round, model: m}
}

// shard returns the parsed result of shard job id, or nil.
func (f *fedParts) shard(id string) *plan.Model {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.shards[id].model
}

// forgetShards drops the shard models of job's rounds before round (all: round < 0).
func (f *fedParts) forgetShards(job string, round int) {
	for id, s := range f.shards {
		if s.parent == job && (round < 0 || s.round < round) {
			delete(f.shards, id)
		}
	}
}

func fedKey(job string, round int) string { return job + "/" + strconv.Itoa(round) }

// get returns the state of a round, or nil.
func (f *fedParts) get(job string, round int) *fedRound {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rounds[fedKey(job, round)]
}

// put stores a round's state and forgets the job's rounds before the previous one.
func (f *fedParts) put(job string, round int, r *fedRound) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rounds == nil {
		f.rounds = map[string]*fedRound{}
	}
	for k := range f.rounds {
		j, n, _ := strings.Cut(k, "/")
		if i, err := strconv.Atoi(n); j == job && err == nil && i < round-1 {
			delete(f.rounds, k)
		}
	}
	f.forgetShards(job, round-1)
	f.rounds[fedKey(job, round)] = r
}

// drop forgets every round of a job.
func (f *fedParts) drop(job string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.rounds {
		if strings.HasPrefix(k, job+"/") {
			delete(f.rounds, k)
		}
	}
	f.forgetShards(job, -1)
}

// registerFedProtocols installs the federation protocols (wire.FedProtocols).
func (g *Gateway) registerFedProtocols() {
	serve(g, wire.FedJoin(), g.handleFedJoin)
	serve(g, wire.FedKeys(), g.handleFedKeys)
	serve(g, wire.FedShareKeys(), g.handleFedShare)
	serve(g, wire.FedTrain(), g.handleFedTrain)
	serve(g, wire.FedUpdate(), g.handleFedUpdate)
	serve(g, wire.FedConfirm(), g.handleFedConfirm)
	serve(g, wire.FedUnmask(), g.handleFedReveal)
	serve(g, wire.FedFinish(), g.handleFedFinish)
}

// Compiled on first use, not at start: a bounded repetition compiles to
// hundreds of allocations that every fedgrid process (a node too) would
// pay in its initialisers (issue 18).
var fedIDPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`) })

// FedJobID is the ID of a gateway's job for federation id.
func FedJobID(id string) string { return "fed-" + id }

func (g *Gateway) handleFedJoin(_ context.Context, c caller, req *wire.FedJoinRequest) (*wire.FedJoinResponse, error) {
	u := c.User
	if !fedIDPattern().MatchString(req.Federation) {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "federation ID must be 1 to 64 lowercase letters, digits or dashes")
	}
	if existing, err := g.store.Job(FedJobID(req.Federation)); err == nil {
		if existing.UserID != u.ID || existing.Federation != req.Federation {
			return nil, p2p.Errorf(p2p.CodeConflict, "federation ID %s is taken at this gateway", req.Federation)
		}
		if !existing.Terminal() {
			g.fedHeard(existing)
		}
		return g.fedJoinResponse(c, existing) // a retried join, or a look at the approval
	}
	cfg, err := g.checkFedJoin(req)
	if err != nil {
		return nil, err
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	detail := func(pl *plan.Plan, j *store.Job) string { return fedDetail(req, pl, j) }
	if req.Eval {
		detail = func(pl *plan.Plan, _ *store.Job) string { return fedEvalDetail(req, pl) }
	}
	j, err := g.svc.JoinFederation(c.Actor, service.FedJoin{ID: FedJobID(req.Federation), Federation: req.Federation, Dataset: req.Dataset,
		Plan: req.Plan, Rounds: req.Rounds, Mu: fedProxMu(cfg.Strategy), Config: cfgJSON, Eval: req.Eval, Detail: detail})
	if err != nil {
		return nil, err
	}
	g.log.Info("federation joined", "federation", req.Federation, "job", j.ID, "dataset", j.DatasetID, "user", u.ID, "rounds", req.Rounds, "participants", len(req.Participants), "review", j.Review)
	return g.fedJoinResponse(c, j)
}

func (g *Gateway) fedJoinResponse(c caller, j *store.Job) (*wire.FedJoinResponse, error) {
	approval, err := g.store.FederationApproval(j)
	if err != nil {
		return nil, service.Wrap(err, "approval of job "+j.ID)
	}
	return &wire.FedJoinResponse{Job: *g.svc.View(c.Actor, j).Info(g.ID()), Approval: approval, Request: j.FedRequestID}, nil
}

// fedProxMu is the proximal term of every round's local training (FedProx), 0 otherwise.
func fedProxMu(st wire.FedStrategy) float64 {
	if st.Name == wire.StrategyFedProx {
		return st.Mu
	}
	return 0
}

// fedDetail is what the officer reads of a federation: the rounds, the
// strategy, the other gateways by name and the privacy cost.
func fedDetail(req *wire.FedJoinRequest, pl *plan.Plan, j *store.Job) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Federation %s: %d rounds of %d local epochs, strategy %s", req.Federation, req.Rounds, pl.Train.Epochs, req.Strategy.Name)
	if req.Strategy.Name == wire.StrategyFedProx {
		fmt.Fprintf(&b, " (mu %g)", req.Strategy.Mu)
	}
	if req.PlainUpdates {
		b.WriteString(". SECURE AGGREGATION IS OFF (plain updates): each training round, this gateway's own update (row count, loss and weight changes) leaves unmasked, and the coordinator reads it on its own. Participants:")
	} else {
		b.WriteString(". Each round, only the securely aggregated sum of the gateways' updates leaves (row count, loss and weight changes). Participants:")
	}
	for _, p := range req.Participants {
		fmt.Fprintf(&b, " %q (gateway %s, dataset %s);", p.Name, p.Gateway, p.Dataset)
	}
	b.WriteString(fedFitDetail(pl))
	if j.DP {
		eps := wire.Epsilon(j.EpsilonMicroEps)
		fmt.Fprintf(&b, " Privacy: DP-SGD, epsilon %.6g for the whole federation (all rounds composed by the accountant; %.6g per round on average), delta %g.", eps, eps/float64(req.Rounds), j.Delta)
	} else {
		b.WriteString(" Privacy: NO FORMAL GUARANTEE (the plan does not use DP-SGD).")
	}
	return b.String()
}

// checkFedJoin validates a join's settings.
func (g *Gateway) checkFedJoin(req *wire.FedJoinRequest) (*fedConfig, error) {
	bad := func(format string, a ...any) error { return p2p.Errorf(p2p.CodeBadRequest, format, a...) }
	n := len(req.Participants)
	switch {
	case req.Rounds < 1 || req.Rounds > wire.MaxFedRounds:
		return nil, bad("rounds must be 1 to %d", wire.MaxFedRounds)
	case n < 2 || n > wire.MaxFedParticipants:
		return nil, bad("a federation needs 2 to %d participants", wire.MaxFedParticipants)
	case req.MinGateways < secagg.MinThreshold(n) || req.MinGateways > n:
		return nil, bad("min gateways is %d: with %d participants it must be %d to %d (secure aggregation needs a majority)", req.MinGateways, n, secagg.MinThreshold(n), n)
	case req.MaxRows < 1 || req.MaxRows > 1<<30:
		return nil, bad("max rows must be 1 to %d", 1<<30)
	case !(req.Clip > 0) || req.Clip > 1e6:
		return nil, bad("clip must be positive and at most 1e6")
	case req.Eval && req.Rounds != 1:
		return nil, bad("an evaluation has one round")
	}
	switch req.Strategy.Name {
	case wire.StrategyFedAvg, wire.StrategyFedAvgM:
	case wire.StrategyFedProx:
		if !(req.Strategy.Mu > 0) || req.Strategy.Mu > plan.MaxProximalMu {
			return nil, bad("fedprox needs mu between 0 and %g", float64(plan.MaxProximalMu))
		}
	default:
		return nil, bad("unknown strategy %q (fedavg, fedprox or fedavgm)", req.Strategy.Name)
	}
	seen := map[string]bool{}
	self := false
	for _, p := range req.Participants {
		if _, err := peer.Decode(p.Gateway); err != nil || seen[p.Gateway] {
			return nil, bad("participant %q is not a distinct gateway peer ID", p.Gateway)
		}
		seen[p.Gateway] = true
		if p.Gateway == g.ID() {
			self = true
			if p.Dataset != req.Dataset {
				return nil, bad("the participants list this gateway with dataset %q, the request names %q", p.Dataset, req.Dataset)
			}
		}
	}
	if !self {
		return nil, bad("this gateway is not among the federation's participants")
	}
	if _, err := plan.NewUpdateCodec(req.MaxRows, req.Clip, n); err != nil {
		return nil, bad("%v", err)
	}
	if req.PlainUpdates {
		if req.Eval {
			return nil, bad("an evaluation always uses secure aggregation")
		}
		if err := g.plainAllowed(); err != nil {
			return nil, err
		}
	}
	return &fedConfig{Participants: req.Participants, Strategy: req.Strategy, MinGateways: req.MinGateways, MaxRows: req.MaxRows, Clip: req.Clip, Eval: req.Eval, Plain: req.PlainUpdates}, nil
}

// plainAllowed refuses plain (unmasked) updates unless this gateway's owner
// allows them in its federation settings.
func (g *Gateway) plainAllowed() error {
	set, err := g.store.FederationSettings()
	if err != nil {
		return err
	}
	if !set.AllowPlainUpdates {
		return p2p.Errorf(p2p.CodeForbidden, "this gateway takes part in federations with secure aggregation only: its owner does not allow plain (unmasked) updates (federation settings, allow_plain_updates)")
	}
	return nil
}

// fedJob returns the caller's running federation job.
func (g *Gateway) fedJob(c caller, federation string) (*store.Job, *fedConfig, *plan.Plan, error) {
	j, err := g.store.Job(FedJobID(federation))
	if err != nil || j.UserID != c.User.ID || j.Federation != federation {
		return nil, nil, nil, p2p.Errorf(p2p.CodeNotFound, "federation %s not found at this gateway", federation)
	}
	if j.State == wire.StateCancelled && j.Error != "" {
		return nil, nil, nil, p2p.Errorf(p2p.CodeConflict, "this gateway's part in federation %s is cancelled: %s", federation, truncate(j.Error, 300))
	}
	if j.State != wire.StateRunning {
		return nil, nil, nil, p2p.Errorf(p2p.CodeConflict, "this gateway's part in federation %s is %s", federation, j.State)
	}
	g.fedHeard(j)
	var cfg fedConfig
	if err := json.Unmarshal(j.FedConfig, &cfg); err != nil {
		return nil, nil, nil, fmt.Errorf("federation %s: stored settings: %w", federation, err)
	}
	pl, err := plan.Parse(j.Plan)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("federation %s: stored plan: %w", federation, err)
	}
	return j, &cfg, pl, nil
}

// fedRoundOf returns the state of a round this gateway opened.
func (g *Gateway) fedRoundOf(c caller, req wire.FedRoundRequest) (*store.Job, *fedConfig, *plan.Plan, *fedRound, error) {
	j, cfg, pl, err := g.fedJob(c, req.Federation)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	r, err := g.fedRoundIn(j, req)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return j, cfg, pl, r, nil
}

// fedRoundIn returns the state of a round of job j this gateway opened.
func (g *Gateway) fedRoundIn(j *store.Job, req wire.FedRoundRequest) (*fedRound, error) {
	r := g.fed.get(j.ID, req.Round)
	if r != nil && r.attempt != req.Attempt {
		return nil, p2p.Errorf(p2p.CodeConflict, "round %d of federation %s is at attempt %d here, not %d", req.Round, req.Federation, r.attempt, req.Attempt)
	}
	if r == nil {
		if k := j.FedKeys; k != nil && (k.Round > req.Round || k.Round == req.Round && k.Attempt >= req.Attempt) {
			return nil, roundLost(&req)
		}
		return nil, p2p.Errorf(p2p.CodeConflict, "round %d (attempt %d) of federation %s was never opened at this gateway", req.Round, req.Attempt, req.Federation)
	}
	return r, nil
}

// fedMayOpen checks that a round may open here: in range, approved by the
// officer (on review-gated data), not over.
func (g *Gateway) fedMayOpen(j *store.Job, req wire.FedRoundRequest) error {
	if req.Round < wire.FitRound || req.Round > j.Rounds {
		return p2p.Errorf(p2p.CodeBadRequest, "round %d: federation %s has rounds 1 to %d (and 0 to fit its statistics)", req.Round, req.Federation, j.Rounds)
	}
	switch approval, err := g.store.FederationApproval(j); {
	case err != nil:
		return service.Wrap(err, "approval of job "+j.ID)
	case approval != "" && approval != wire.RequestApproved:
		return p2p.Errorf(p2p.CodeForbidden, "no round of federation %s runs here before this gateway's compliance officer approves it (request %s is %s)", req.Federation, j.FedRequestID, approval)
	}
	if req.Round < j.Progress.Epoch {
		return p2p.Errorf(p2p.CodeConflict, "round %d is over: this gateway is at round %d", req.Round, j.Progress.Epoch)
	}
	return nil
}

func (g *Gateway) handleFedKeys(_ context.Context, c caller, req *wire.FedKeysRequest) (*wire.FedAdvertisement, error) {
	j, cfg, pl, err := g.fedJob(c, req.Federation)
	if err != nil {
		return nil, err
	}
	if cfg.Plain && req.Round != wire.FitRound {
		return nil, p2p.Errorf(p2p.CodeConflict, "federation %s runs with plain updates: its training rounds have no keys", req.Federation)
	}
	if err := g.fedMayOpen(j, req.FedRoundRequest); err != nil {
		return nil, err
	}
	if r := g.fed.get(j.ID, req.Round); r != nil && r.attempt >= req.Attempt {
		if r.attempt == req.Attempt && slices.Equal(r.params.Parties, req.Parties) && r.params.Threshold == req.Threshold && r.params.Length == req.Length && r.params.Degree == req.Degree {
			return (*wire.FedAdvertisement)(&r.ad), nil // a retried request
		}
		return nil, p2p.Errorf(p2p.CodeConflict, "round %d of federation %s is already open (attempt %d) with other parties", req.Round, req.Federation, r.attempt)
	}
	// A later attempt of a round starts over with fresh keys.
	for _, p := range req.Parties {
		if !slices.ContainsFunc(cfg.Participants, func(q wire.FedParticipant) bool { return q.Gateway == p }) {
			return nil, p2p.Errorf(p2p.CodeBadRequest, "party %s is not a participant of federation %s", p, req.Federation)
		}
	}
	if req.Threshold < cfg.MinGateways {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "threshold %d is below the federation's minimum of %d gateways", req.Threshold, cfg.MinGateways)
	}
	init, err := plan.InitialParams(pl)
	if err != nil {
		return nil, err
	}
	codec, err := plan.NewUpdateCodec(cfg.MaxRows, cfg.Clip, len(req.Parties))
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "%v", err)
	}
	want := codec.Length(init)
	if cfg.Eval {
		if want, err = fedEvalLength(pl, len(req.Parties)); err != nil {
			return nil, err
		}
	}
	if req.Round == wire.FitRound {
		spec, err := fedFitSpec(pl)
		if err != nil {
			return nil, err
		}
		if spec.Empty() {
			return nil, p2p.Errorf(p2p.CodeBadRequest, "the federation's plan declares all its statistics: there is no round 0")
		}
		if want, err = fedFitLength(spec, len(req.Parties)); err != nil {
			return nil, err
		}
	}
	if req.Length != want {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "the masked vector of this plan has %d words, not %d", want, req.Length)
	}
	params := secagg.Params{Context: wire.FedRoundContext(req.Federation, req.Round, req.Attempt), Parties: req.Parties, Threshold: req.Threshold, Length: req.Length, Degree: req.Degree}
	// Durable before any key leaves: keys are made once per attempt, so a
	// restart cannot make a second set for an attempt the others already
	// hold this gateway's first set for.
	if err := g.store.OpenFederationRound(j.ID, req.Round, req.Attempt); errors.Is(err, store.ErrRoundKeysLost) {
		return nil, roundLost(&req.FedRoundRequest)
	} else if err != nil {
		return nil, service.Wrap(err, "job "+j.ID)
	}
	sk := g.peer.Host.Peerstore().PrivKey(g.peer.ID())
	if sk == nil {
		return nil, errors.New("gateway has no private key to sign with")
	}
	party, err := secagg.NewParty(params, g.ID(), sk, p2p.VerifyPeerSignature)
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "%v", err)
	}
	ad, err := party.Advertise()
	if err != nil {
		return nil, err
	}
	g.fed.put(j.ID, req.Round, &fedRound{attempt: req.Attempt, params: params, party: party, ad: ad})
	g.log.Info("federation round opened", "federation", req.Federation, "round", req.Round, "parties", len(req.Parties), "threshold", req.Threshold)
	return (*wire.FedAdvertisement)(&ad), nil
}

// roundLost is the answer of a gateway that made its keys for this round's
// attempt before it restarted: they are gone, and none are made again for
// the same attempt.
func roundLost(req *wire.FedRoundRequest) error {
	return p2p.Errorf(wire.CodeRoundLost, "this gateway restarted during round %d (attempt %d) of federation %s and its keys for it, which are never stored, are gone: retry the round (a new attempt makes fresh keys)", req.Round, req.Attempt, req.Federation)
}

func (g *Gateway) handleFedShare(_ context.Context, c caller, req *wire.FedShareRequest) (*wire.FedShareResponse, error) {
	_, _, _, r, err := g.fedRoundOf(c, req.FedRoundRequest)
	if err != nil {
		return nil, err
	}
	if r.party == nil {
		return nil, p2p.Errorf(p2p.CodeConflict, "federation %s runs with plain updates: its training rounds have no keys", req.Federation)
	}
	ads := make([]secagg.Advertisement, len(req.Ads))
	for i, a := range req.Ads {
		ads[i] = secagg.Advertisement(a)
	}
	g.fed.mu.Lock()
	defer g.fed.mu.Unlock()
	shares, err := r.party.ShareKeys(ads)
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "%v", err)
	}
	out := &wire.FedShareResponse{Shares: make([]wire.FedShare, len(shares))}
	for i, s := range shares {
		out.Shares[i] = wire.FedShare(s)
	}
	return out, nil
}

func (g *Gateway) handleFedTrain(ctx context.Context, c caller, req *wire.FedTrainRequest) (*wire.Ack, error) {
	j, cfg, pl, err := g.fedJob(c, req.Federation)
	if err != nil {
		return nil, err
	}
	var r *fedRound
	if cfg.Plain && req.Round != wire.FitRound {
		r, err = g.openPlainRound(j, req.FedRoundRequest)
	} else {
		r, err = g.fedRoundIn(j, req.FedRoundRequest)
	}
	if err != nil {
		return nil, err
	}
	if cfg.Eval {
		if err := g.fedEvalStart(ctx, j, pl, r, req); err != nil {
			return nil, err
		}
		return &wire.Ack{OK: true}, nil
	}
	if req.Round == wire.FitRound {
		if err := g.fedFitStart(ctx, j, pl, r, req.Shares); err != nil {
			return nil, err
		}
		return &wire.Ack{OK: true}, nil
	}
	if j, err = g.fedTakeFitted(j, pl, req.Plan); err != nil {
		return nil, err
	}
	global, err := fedWeights(pl, req.Vector, req.Weights)
	if err != nil {
		return nil, err
	}
	g.fed.mu.Lock()
	if r.global == nil {
		r.global, r.start = global, plan.WeightsSHA256(global)
		r.shares = make([]secagg.EncryptedShare, len(req.Shares))
		for i, s := range req.Shares {
			r.shares[i] = secagg.EncryptedShare(s)
		}
	}
	g.fed.mu.Unlock()
	if err := g.startRound(ctx, j, req.Round, global); err != nil {
		return nil, err
	}
	return &wire.Ack{OK: true}, nil
}

// openPlainRound opens (or finds again) a round of a federation with plain
// updates: there are no keys, the weights open it. The owner's permission
// is checked again, so that withdrawing it stops the next round.
func (g *Gateway) openPlainRound(j *store.Job, req wire.FedRoundRequest) (*fedRound, error) {
	if err := g.plainAllowed(); err != nil {
		return nil, err
	}
	g.fed.mu.Lock()
	r := g.fed.rounds[fedKey(j.ID, req.Round)]
	g.fed.mu.Unlock()
	switch {
	case r != nil && r.attempt == req.Attempt:
		return r, nil // a retried request
	case r != nil && r.attempt > req.Attempt:
		return nil, p2p.Errorf(p2p.CodeConflict, "round %d of federation %s is at attempt %d here, not %d", req.Round, req.Federation, r.attempt, req.Attempt)
	}
	if err := g.fedMayOpen(j, req); err != nil {
		return nil, err
	}
	r = &fedRound{attempt: req.Attempt}
	g.fed.put(j.ID, req.Round, r)
	g.log.Info("federation round opened", "federation", req.Federation, "round", req.Round, "plain", true)
	return r, nil
}

// fedWeights reads the global weights of a request: a packed vector, or
// (from earlier coordinators) the params JSON; shaped as the plan's, finite.
func fedWeights(pl *plan.Plan, vector []byte, weights json.RawMessage) (map[string]plan.Tensor, error) {
	init, err := plan.InitialParams(pl)
	if err != nil {
		return nil, err
	}
	var global map[string]plan.Tensor
	switch {
	case len(vector) > 0 && len(weights) > 0:
		return nil, p2p.Errorf(p2p.CodeBadRequest, "weights: give either a vector or the params JSON, not both")
	case len(vector) > 0:
		v, err := wire.UnpackFloats(vector, plan.ParamCount(init))
		if err != nil {
			return nil, p2p.Errorf(p2p.CodeBadRequest, "weights: %v", err)
		}
		if global, err = plan.Unflatten(v, init); err != nil {
			return nil, p2p.Errorf(p2p.CodeBadRequest, "weights: %v", err)
		}
	default:
		if err := json.Unmarshal(weights, &global); err != nil {
			return nil, p2p.Errorf(p2p.CodeBadRequest, "weights: %v", err)
		}
	}
	if err := sameShapes(global, init); err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "weights: %v", err)
	}
	return global, nil
}

// sameShapes checks that got has exactly the parameters of want, shaped alike, with finite values.
func sameShapes(got, want map[string]plan.Tensor) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d parameters, the plan has %d", len(got), len(want))
	}
	for name, w := range want {
		t, ok := got[name]
		if !ok || !slices.Equal(t.Shape, w.Shape) || len(t.Data) != len(w.Data) {
			return fmt.Errorf("parameter %q missing or not of shape %v", name, w.Shape)
		}
		for _, v := range t.Data {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("parameter %q has a value that is not finite", name)
			}
		}
	}
	return nil
}

// roundModels collects the shard results of one round of a coordinated
// job: done false while a shard still trains; failed names a shard that
// failed or was cancelled.
func (g *Gateway) roundModels(p *store.Job, round int) (models []*plan.Model, done bool, failed string, err error) {
	for s := 0; s < p.Shards; s++ {
		c, err := g.store.Job(store.ShardJobID(p.ID, round, s))
		if errors.Is(err, store.ErrNotFound) {
			return nil, false, fmt.Sprintf("shard %d of round %d is missing", s+1, round), nil
		}
		if err != nil {
			return nil, false, "", err
		}
		switch c.State {
		case wire.StateSucceeded:
		case wire.StateFailed, wire.StateCancelled:
			return nil, false, fmt.Sprintf("shard %d of round %d %s: %s", s+1, round, c.State, c.Error), nil
		default:
			return nil, false, "", nil
		}
		if m := g.fed.shard(c.ID); m != nil {
			models = append(models, m)
			continue
		}
		b, err := g.store.Result(c.ID)
		if err != nil {
			return nil, false, "", err
		}
		m, err := plan.ParseModel(b)
		if err != nil {
			return nil, false, "", fmt.Errorf("shard %d result: %w", s, err)
		}
		models = append(models, m)
	}
	return models, true, "", nil
}

// localUpdate averages a round's shard models (by rows) into this gateway's
// local model, its training rows and its row-weighted final training loss.
func localUpdate(models []*plan.Model) (map[string]plan.Tensor, int, float64, error) {
	params := make([]map[string]plan.Tensor, len(models))
	weights := make([]float64, len(models))
	rows, lossSum := 0, 0.0
	for i, m := range models {
		params[i] = m.Params
		weights[i] = float64(max(1, m.Metrics.TrainRows))
		rows += m.Metrics.TrainRows
		if n := len(m.Metrics.TrainLoss); n > 0 {
			lossSum += m.Metrics.TrainLoss[n-1] * weights[i]
		}
	}
	avg, err := plan.Average(params, weights)
	if err != nil {
		return nil, 0, 0, err
	}
	var total float64
	for _, w := range weights {
		total += w
	}
	return avg, rows, lossSum / total, nil
}

func (g *Gateway) handleFedUpdate(_ context.Context, c caller, req *wire.FedRoundRequest) (*wire.FedUpdateResponse, error) {
	j, cfg, _, r, err := g.fedRoundOf(c, *req)
	if err != nil {
		return nil, err
	}
	g.fed.mu.Lock()
	masked, plainSent, global, shares := r.masked, r.plain, r.global, r.shares
	g.fed.mu.Unlock()
	if masked != nil {
		return fedUpdateResponse(g.ID(), masked, nil, r.extremes, r.receipt), nil // a retry
	}
	if plainSent != nil {
		return fedUpdateResponse(g.ID(), nil, plainSent, nil, r.receipt), nil // a retry
	}
	if req.Round == wire.FitRound || cfg.Eval {
		return g.fedFitUpdate(r, req) // computed at the gateway itself: only to mask
	}
	if global == nil {
		return nil, p2p.Errorf(p2p.CodeConflict, "round %d has not started training at this gateway", req.Round)
	}
	models, done, failed, err := g.roundModels(j, req.Round)
	if err != nil {
		return nil, err
	}
	if failed != "" {
		if j.Review {
			// On review-gated data a failure's reason is the officer's to release.
			return nil, p2p.Errorf(p2p.CodeConflict, "local training failed at this gateway; on review-gated data the reason is shown to its compliance officer only")
		}
		return nil, p2p.Errorf(p2p.CodeConflict, "local training failed: %s", failed)
	}
	if !done {
		prog := wire.Progress{Epoch: req.Round, Epochs: j.Rounds}
		return &wire.FedUpdateResponse{Progress: prog}, nil
	}
	local, rows, loss, err := localUpdate(models)
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeConflict, "local training: %v", err)
	}
	if cfg.Plain {
		return g.sendPlainUpdate(j, cfg, req, r, rows, loss, local, global)
	}
	codec, err := plan.NewUpdateCodec(cfg.MaxRows, cfg.Clip, len(r.params.Parties))
	if err != nil {
		return nil, err
	}
	x, clipped, err := codec.Encode(rows, loss, local, global)
	if err != nil {
		return nil, err
	}
	g.fed.mu.Lock()
	defer g.fed.mu.Unlock()
	if r.masked == nil {
		in, err := r.party.MaskInput(x, shares)
		if err != nil {
			return nil, p2p.Errorf(p2p.CodeConflict, "%v", err)
		}
		rc, err := g.fedReceipt(req, r.start, receipt.UpdateSHA256(in.Words))
		if err != nil {
			return nil, err
		}
		// Durable before the update leaves: a federation that stops from now
		// on charges this gateway's reservation (FailFederation).
		if err := g.store.MarkFederationSent(j.ID, req.Round); err != nil {
			return nil, service.Wrap(err, "job "+j.ID)
		}
		r.masked, r.receipt = in.Words, rc
		g.log.Info("federation round update sent", "federation", req.Federation, "round", req.Round, "clipped", clipped)
	}
	return fedUpdateResponse(g.ID(), r.masked, nil, nil, r.receipt), nil
}

// sendPlainUpdate answers with this gateway's update unmasked (a
// federation with plain updates, allowed by the owner).
func (g *Gateway) sendPlainUpdate(j *store.Job, cfg *fedConfig, req *wire.FedRoundRequest, r *fedRound, rows int, loss float64, local, global map[string]plan.Tensor) (*wire.FedUpdateResponse, error) {
	if err := g.plainAllowed(); err != nil {
		return nil, err
	}
	codec, err := plan.NewUpdateCodec(cfg.MaxRows, cfg.Clip, len(cfg.Participants))
	if err != nil {
		return nil, err
	}
	vals, err := codec.Values(rows, loss, local, global)
	if err != nil {
		return nil, err
	}
	g.fed.mu.Lock()
	defer g.fed.mu.Unlock()
	if r.plain == nil {
		plain := wire.PackFloats(vals)
		rc, err := g.fedReceipt(req, r.start, receipt.BytesSHA256(plain))
		if err != nil {
			return nil, err
		}
		if err := g.store.MarkFederationSent(j.ID, req.Round); err != nil {
			return nil, service.Wrap(err, "job "+j.ID)
		}
		r.plain, r.receipt = plain, rc
		g.log.Info("federation round plain update sent", "federation", req.Federation, "round", req.Round)
	}
	return fedUpdateResponse(g.ID(), nil, r.plain, nil, r.receipt), nil
}

// fedUpdateResponse answers a ready update: masked words, packed (with
// round 0's extremes), or a plain update.
func fedUpdateResponse(self string, masked []uint32, plain []byte, extremes *wire.FedExtremes, rc *receipt.Receipt) *wire.FedUpdateResponse {
	if plain != nil {
		return &wire.FedUpdateResponse{Ready: true, Party: self, Plain: plain, Receipt: rc}
	}
	return &wire.FedUpdateResponse{Ready: true, Party: self, Packed: wire.PackWords(masked), Extremes: extremes, Receipt: rc}
}

// fedReceipt signs this gateway's receipt of a training round: the weights
// it started from (start, their SHA-256) and the update it sends (update,
// the SHA-256 of its bytes as sent).
func (g *Gateway) fedReceipt(req *wire.FedRoundRequest, start, update string) (*receipt.Receipt, error) {
	sk := g.peer.Host.Peerstore().PrivKey(g.peer.ID())
	if sk == nil {
		return nil, errors.New("gateway has no private key to sign with")
	}
	rc := &receipt.Receipt{Federation: req.Federation, Round: req.Round, Attempt: req.Attempt, Gateway: g.ID(),
		StartSHA256: start, UpdateSHA256: update, Time: g.cfg.Now().UTC()}
	if err := rc.Sign(sk); err != nil {
		return nil, err
	}
	return rc, nil
}

func (g *Gateway) handleFedConfirm(_ context.Context, c caller, req *wire.FedSurvivors) (*wire.FedConsistency, error) {
	_, _, _, r, err := g.fedRoundOf(c, req.FedRoundRequest)
	if err != nil {
		return nil, err
	}
	if r.party == nil {
		return nil, p2p.Errorf(p2p.CodeConflict, "federation %s runs with plain updates: nothing to confirm", req.Federation)
	}
	g.fed.mu.Lock()
	defer g.fed.mu.Unlock()
	cs, err := r.party.SignSurvivors(req.Survivors)
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeConflict, "%v", err)
	}
	g.log.Info("federation round survivors confirmed", "federation", req.Federation, "round", req.Round, "survivors", len(req.Survivors))
	return (*wire.FedConsistency)(&cs), nil
}

func (g *Gateway) handleFedReveal(_ context.Context, c caller, req *wire.FedRevealRequest) (*wire.FedReveal, error) {
	j, _, _, r, err := g.fedRoundOf(c, req.FedRoundRequest)
	if err != nil {
		return nil, err
	}
	if r.party == nil {
		return nil, p2p.Errorf(p2p.CodeConflict, "federation %s runs with plain updates: nothing to reveal", req.Federation)
	}
	sigs := make([]secagg.Consistency, len(req.Sigs))
	for i, s := range req.Sigs {
		sigs[i] = secagg.Consistency(s)
	}
	g.fed.mu.Lock()
	rv, err := r.party.Unmask(req.Survivors, sigs)
	g.fed.mu.Unlock()
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeConflict, "%v", err)
	}
	if err := g.store.SetProgress(j.ID, wire.Progress{Epoch: req.Round, Epochs: j.Rounds}); err != nil && !errors.Is(err, store.ErrConflictState) {
		return nil, err
	}
	return &wire.FedReveal{Party: rv.Party, Seeds: maps.Clone(rv.Seeds), MaskKeys: maps.Clone(rv.MaskKeys)}, nil
}

func (g *Gateway) handleFedFinish(_ context.Context, c caller, req *wire.FedFinishRequest) (*wire.JobInfo, error) {
	j, cfg, pl, err := g.fedJob(c, req.Federation)
	if err != nil {
		var pe *p2p.Error
		if errors.As(err, &pe) && pe.Code == p2p.CodeConflict {
			if done, gerr := g.store.Job(FedJobID(req.Federation)); gerr == nil {
				return g.svc.View(c.Actor, done).Info(g.ID()), nil // a retried finish
			}
		}
		return nil, err
	}
	defer g.fed.drop(j.ID)
	defer g.fedSeen.forget(j.ID)
	if cfg.Eval && req.Error == "" {
		if err := g.store.FinishEvaluation(j.ID); err != nil {
			return nil, service.Wrap(err, "job "+j.ID)
		}
	} else if req.Error != "" || len(req.Weights) == 0 && len(req.Vector) == 0 {
		msg := "the federation stopped: " + truncate(req.Error, 500)
		if err := g.store.FailFederation(j.ID, msg); err != nil {
			return nil, service.Wrap(err, "job "+j.ID)
		}
	} else {
		if j, err = g.fedTakeFitted(j, pl, req.Plan); err != nil {
			return nil, err
		}
		if pl, err = plan.Parse(j.Plan); err != nil {
			return nil, fmt.Errorf("federation %s: stored plan: %w", req.Federation, err)
		}
		w, err := fedWeights(pl, req.Vector, req.Weights)
		if err != nil {
			return nil, err
		}
		if req.Provenance != nil {
			if err := checkFedProvenance(req, pl, w); err != nil {
				return nil, err
			}
		}
		states, err := plan.DeclaredStates(pl)
		if err != nil {
			return nil, err
		}
		m := &plan.Model{Format: plan.ModelFormat, Plan: pl, Params: w, Preprocess: states,
			Provenance: &plan.Provenance{Federation: req.Provenance}}
		m.Metrics.Epochs = pl.Train.Epochs * max(1, min(req.Rounds, j.Rounds))
		if j.DP {
			m.Privacy = &plan.Privacy{Epsilon: wire.Epsilon(j.EpsilonMicroEps), Delta: j.Delta}
		}
		if err := m.Validate(); err != nil {
			return nil, p2p.Errorf(p2p.CodeBadRequest, "final model: %v", err)
		}
		signed, err := g.signModel(m, j)
		if err != nil {
			return nil, err
		}
		metrics, err := json.Marshal(m.Metrics)
		if err != nil {
			return nil, err
		}
		if err := g.store.FinishCoordinated(j.ID, signed, metrics, ""); err != nil {
			return nil, service.Wrap(err, "job "+j.ID)
		}
	}
	done, err := g.store.Job(j.ID)
	if err != nil {
		return nil, err
	}
	g.log.Info("federation finished", "federation", req.Federation, "state", done.State)
	return g.svc.View(c.Actor, done).Info(g.ID()), nil
}

// checkFedProvenance checks the record a final model is to carry: every
// receipt and the chain of weights from the plan's initial weights to w.
func checkFedProvenance(req *wire.FedFinishRequest, pl *plan.Plan, w map[string]plan.Tensor) error {
	if req.Provenance.ID != req.Federation {
		return p2p.Errorf(p2p.CodeBadRequest, "provenance is of federation %q, not %q", req.Provenance.ID, req.Federation)
	}
	init, err := plan.InitialParams(pl)
	if err != nil {
		return err
	}
	if err := receipt.Verify(req.Provenance, plan.WeightsSHA256(init), plan.WeightsSHA256(w), p2p.VerifyPeerSignature); err != nil {
		return p2p.Errorf(p2p.CodeBadRequest, "%v", err)
	}
	return nil
}
