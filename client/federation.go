package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/crypto"
	"github.com/fedgrid/fedgrid/crypto/receipt"
	"github.com/fedgrid/fedgrid/crypto/secagg"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// Federated training across gateways: the client coordinates the rounds,
// as Flower's server does. Each round every gateway still in agrees keys for
// secure aggregation with the others, trains its local epochs from the
// round's global weights on its own nodes and returns a masked update; the
// client unmasks only the sum (rows, row-weighted loss and weight changes),
// moves the global weights by the strategy and starts the next round.
// Gateways that fail drop out; a round completes while at least the
// threshold (MinGateways, at least a majority) of its gateways survives.

// FedOptions configure a new federation.
type FedOptions struct {
	// ID names the federation (empty: a random one).
	ID           string
	Plan         json.RawMessage
	Participants []wire.FedParticipant
	Rounds       int
	// MinGateways is the fewest gateways a round needs (0: all of them).
	MinGateways int
	Strategy    wire.FedStrategy
	// MaxRows bounds one gateway's training rows (the fixed-point scale of
	// the updates); Clip bounds one parameter's change in one round (0: 10).
	MaxRows int
	Clip    float64
	// Eval: score a model instead of training one (Client.FedEvaluate).
	Eval bool `json:"eval,omitempty"`
	// PlainUpdates turns secure aggregation off for the training rounds:
	// each gateway's update reaches the coordinator unmasked. Only gateways
	// whose owners allow plain updates take part; their officers' requests
	// say so.
	PlainUpdates bool `json:",omitempty"`
}

// FedRound is one completed round as the coordinator saw it.
type FedRound struct {
	Round        int      `json:"round"`
	Participants []string `json:"participants"` // whose updates are in the sum
	Dropped      []string `json:"dropped,omitempty"`
	Rows         float64  `json:"rows"`
	Loss         float64  `json:"loss"`
	Seconds      float64  `json:"seconds"`
	// Epsilon is the privacy spent so far, summed over the gateways' datasets
	// (each gateway's own budget pays for its own dataset).
	Epsilon float64 `json:"epsilon,omitempty"`
	// StartSHA256 and ResultSHA256 hash the global weights before and after
	// the round (plan.WeightsSHA256); Receipts are the signed receipts of the
	// gateways in the sum. Empty in states saved before receipts existed.
	StartSHA256  string            `json:"start_sha256,omitempty"`
	ResultSHA256 string            `json:"result_sha256,omitempty"`
	Receipts     []receipt.Receipt `json:"receipts,omitempty"`
}

// FedState is the coordinator's state, persisted after every round so that
// a stopped client resumes from the last completed round.
type FedState struct {
	Format  string     `json:"format"`
	Options FedOptions `json:"options"`
	// Jobs holds each gateway's job following the federation (gateway -> job ID).
	Jobs map[string]string `json:"jobs"`
	// Epsilon the federation costs at each gateway (DP-SGD plans).
	Epsilon map[string]float64 `json:"epsilon,omitempty"`
	// Refused: gateways that did not join, and why.
	Refused map[string]string `json:"refused,omitempty"`
	// Approvals: on review-gated data, each gateway's request for its
	// compliance officer (gateway -> request ID) and its state.
	Approvals     map[string]string `json:"approvals,omitempty"`
	ApprovalState map[string]string `json:"approval_state,omitempty"`
	// Active are the gateways still taking part.
	Active []string `json:"active"`
	Round  int      `json:"round"` // last completed round
	// Attempt is the try of the next round (a failed round is retried with fresh keys).
	Attempt  int                    `json:"attempt,omitempty"`
	Weights  map[string]plan.Tensor `json:"weights"`
	Velocity map[string]plan.Tensor `json:"velocity,omitempty"`
	History  []FedRound             `json:"history"`
	// Fit is round 0, when the plan left preprocessing statistics to fit
	// (plan.FitSpec); Fitted is then the plan with them declared, which
	// every gateway trains with from round 1 and the model carries.
	Fit    *FedRound               `json:"fit,omitempty"`
	Fitted json.RawMessage         `json:"fitted,omitempty"`
	State  string                  `json:"state"` // running, succeeded, failed
	Error  string                  `json:"error,omitempty"`
	Final  map[string]wire.JobInfo `json:"final,omitempty"`
}

// ErrRoundFailed: a round could not complete (fewer gateways than needed
// took part to its end). The state stays running: Federate again retries it.
var ErrRoundFailed = errors.New("federation round failed")

// joined lists the gateways that joined and were not refused, sorted.
func (s *FedState) joined() []string {
	var out []string
	for gw := range s.Jobs {
		if _, refused := s.Refused[gw]; !refused {
			out = append(out, gw)
		}
	}
	slices.Sort(out)
	return out
}

// FedStateFormat tags a persisted coordinator state.
const FedStateFormat = "fedgrid.federation/v1"

// Federation states.
const (
	FedRunning   = "running"
	FedSucceeded = "succeeded"
	FedFailed    = "failed"
)

// FedRunOptions control one run of the coordinator.
type FedRunOptions struct {
	// StatePath is where the state is saved after each round ("" = not saved).
	StatePath string
	// Progress is called after each completed round.
	Progress func(FedRound)
	// UpdateTimeout bounds a gateway's local training in one round (default 30 min).
	UpdateTimeout time.Duration
	// Poll is the interval between asks for a gateway's update (default 250 ms).
	Poll time.Duration
	// Waiting, when set, is called before round 1 while gateways' compliance
	// officers have not yet approved the federation (gateway -> request ID).
	Waiting func(pending map[string]string)
	// Retry, when set, is called before a failed round is tried again.
	Retry func(round, attempt int, cause error)
	// Retries is how often a round that could not complete is tried again
	// at once, with fresh keys, before Federate returns ErrRoundFailed
	// (0: 2; negative: never). RetryWait is the pause before each retry
	// (default 5 s): time for a restarted gateway to come back.
	Retries   int
	RetryWait time.Duration
	// Stage, when set, is called as each gateway passes a stage of a round:
	// "keys" (its keys arrived), "training" (it took the weights and its
	// shares and trains), "update" (its masked update arrived).
	Stage func(round int, gateway, stage string)
}

func (r FedRunOptions) stage(round int, gw, stage string) {
	if r.Stage != nil {
		r.Stage(round, gw, stage)
	}
}

// NewFederation checks the options and returns the initial state.
func NewFederation(o FedOptions) (*FedState, error) {
	if o.ID == "" {
		o.ID = crypto.RandomID()
	}
	n := len(o.Participants)
	if n < 2 {
		return nil, errors.New("a federation needs datasets on at least two gateways")
	}
	seen := map[string]bool{}
	for _, p := range o.Participants {
		if seen[p.Gateway] {
			return nil, fmt.Errorf("gateway %s holds two of the datasets: give each gateway one dataset", p.Gateway)
		}
		seen[p.Gateway] = true
	}
	if o.MinGateways == 0 {
		o.MinGateways = n
	}
	if o.MinGateways < secagg.MinThreshold(n) || o.MinGateways > n {
		return nil, fmt.Errorf("--min-gateways is %d: with %d gateways it must be %d to %d (secure aggregation needs a majority)", o.MinGateways, n, secagg.MinThreshold(n), n)
	}
	if o.Rounds < 1 || o.Rounds > wire.MaxFedRounds {
		return nil, fmt.Errorf("rounds must be 1 to %d", wire.MaxFedRounds)
	}
	if o.Clip == 0 {
		o.Clip = 10
	}
	switch o.Strategy.Name {
	case "", wire.StrategyFedAvg:
		o.Strategy.Name = wire.StrategyFedAvg
	case wire.StrategyFedAvgM:
		if o.Strategy.Momentum == 0 {
			o.Strategy.Momentum = 0.9
		}
		if o.Strategy.ServerLR == 0 {
			o.Strategy.ServerLR = 1
		}
		if o.Strategy.Momentum < 0 || o.Strategy.Momentum >= 1 || o.Strategy.ServerLR <= 0 {
			return nil, errors.New("fedavgm needs 0 <= momentum < 1 and a positive server learning rate")
		}
	case wire.StrategyFedProx:
		if o.Strategy.Mu <= 0 {
			return nil, errors.New("fedprox needs a positive mu")
		}
	default:
		return nil, fmt.Errorf("unknown strategy %q: fedavg, fedprox or fedavgm", o.Strategy.Name)
	}
	pl, err := plan.Parse(o.Plan)
	if err != nil {
		return nil, fmt.Errorf("plan: %v", err)
	}
	if _, err := plan.FitNeeds(pl); err != nil {
		return nil, fmt.Errorf("plan: %v", err)
	}
	w, err := plan.InitialParams(pl)
	if err != nil {
		return nil, fmt.Errorf("plan: %v", err)
	}
	if _, err := plan.NewUpdateCodec(o.MaxRows, o.Clip, n); err != nil {
		return nil, err
	}
	return &FedState{Format: FedStateFormat, Options: o, Jobs: map[string]string{}, Weights: w, State: FedRunning}, nil
}

// LoadFederation reads a saved coordinator state.
func LoadFederation(path string) (*FedState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s FedState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if s.Format != FedStateFormat {
		return nil, fmt.Errorf("%s is not a saved federation (format %q)", path, s.Format)
	}
	return &s, nil
}

// Save writes the state atomically.
func (s *FedState) Save(path string) error {
	b, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Model builds the federated model from the state's weights (unsigned: each
// gateway's job holds the same model signed by that gateway).
func (s *FedState) Model() (*plan.Model, error) {
	pl, err := plan.Parse(s.plan())
	if err != nil {
		return nil, err
	}
	states, err := plan.DeclaredStates(pl)
	if err != nil {
		return nil, err
	}
	m := &plan.Model{Format: plan.ModelFormat, Plan: pl, Params: s.Weights, Preprocess: states}
	m.Metrics.Epochs = pl.Train.Epochs * s.Round
	for _, r := range s.History {
		m.Metrics.TrainLoss = append(m.Metrics.TrainLoss, r.Loss)
		m.Metrics.TrainRows = int(r.Rows)
	}
	return m, m.Validate()
}

// eachGateway runs fn for every gateway at once and returns the errors by gateway.
func eachGateway(gws []string, fn func(gw string) error) map[string]error {
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	for _, gw := range gws {
		wg.Go(func() {
			if err := fn(gw); err != nil {
				mu.Lock()
				errs[gw] = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs
}

func gwID(s string) (peer.ID, error) { return peer.Decode(s) }

// Federate runs (or resumes) the federation in s until it ends or ctx is
// done. It saves s after each round and returns it with its final state.
func (c *Client) Federate(ctx context.Context, s *FedState, run FedRunOptions) (*FedState, error) {
	if run.UpdateTimeout <= 0 {
		run.UpdateTimeout = 30 * time.Minute
	}
	if run.Poll <= 0 {
		run.Poll = 250 * time.Millisecond
	}
	switch {
	case run.Retries == 0:
		run.Retries = 2
	case run.Retries < 0:
		run.Retries = 0
	}
	if run.RetryWait <= 0 {
		run.RetryWait = 5 * time.Second
	}
	save := func() error {
		if run.StatePath == "" {
			return nil
		}
		return s.Save(run.StatePath)
	}
	if s.State != FedRunning {
		return s, nil
	}
	if s.Round > 0 || len(s.Active) > 0 {
		// Resumed: the gateways may hold keys of an attempt of the next
		// round whose other half (the keys and shares collected here) died
		// with the previous run. A fresh attempt starts that round over.
		s.Attempt++
	}
	if s.Round == 0 && len(s.Active) == 0 {
		if err := c.fedJoin(ctx, s); err != nil {
			return s, c.fedStop(ctx, s, err, save)
		}
		if err := save(); err != nil {
			return s, err
		}
	}
	if s.Round > 0 {
		s.Active = s.joined() // a resumed federation asks every gateway that joined again
	}
	if s.Round == 0 {
		if err := c.fedAwaitApprovals(ctx, s, run); err != nil {
			if ctx.Err() != nil {
				return s, ctx.Err()
			}
			return s, c.fedStop(ctx, s, err, save)
		}
		if err := save(); err != nil {
			return s, err
		}
	}
	if s.Round == 0 && s.Fitted == nil {
		if err := c.fedFitRound(ctx, s, run); err != nil {
			if ctx.Err() != nil {
				return s, ctx.Err()
			}
			err = fmt.Errorf("%w: round 0 (fitting the preprocessing statistics) could not complete: %w", ErrRoundFailed, err)
			s.Attempt++
			if serr := save(); serr != nil {
				return s, errors.Join(err, serr)
			}
			return s, err
		}
		s.Attempt = 0
		if err := save(); err != nil {
			return s, err
		}
	}
	retries := 0
	for s.Round < s.Options.Rounds {
		if err := ctx.Err(); err != nil {
			return s, err // stopped: resume later from s.Round
		}
		r, err := c.fedRound(ctx, s, s.Round+1, run)
		if err != nil {
			if ctx.Err() != nil {
				return s, ctx.Err()
			}
			// The gateways keep their part open: the round is tried again
			// with fresh keys (a new attempt): at once up to run.Retries
			// times, then by Federate again or fedgrid train --resume, with
			// every gateway that joined, as those lost may be back.
			err = fmt.Errorf("%w: round %d could not complete: %w", ErrRoundFailed, s.Round+1, err)
			s.Attempt++
			if serr := save(); serr != nil {
				return s, errors.Join(err, serr)
			}
			if retries >= run.Retries {
				return s, err
			}
			retries++
			if run.Retry != nil {
				run.Retry(s.Round+1, s.Attempt, err)
			}
			select {
			case <-ctx.Done():
				return s, ctx.Err()
			case <-time.After(run.RetryWait):
			}
			continue
		}
		retries = 0
		s.History = append(s.History, *r)
		s.Round, s.Attempt = r.Round, 0
		if err := save(); err != nil {
			return s, err
		}
		if run.Progress != nil {
			run.Progress(*r)
		}
	}
	weights := wire.PackFloats(plan.Flatten(s.Weights))
	s.Final = map[string]wire.JobInfo{}
	var mu sync.Mutex
	prov := s.Provenance()
	errs := eachGateway(s.Active, func(gw string) error {
		info, err := c.fedFinish(ctx, gw, &wire.FedFinishRequest{Federation: s.Options.ID, Rounds: s.Round, Vector: weights, Plan: s.Fitted, Provenance: prov})
		if err == nil {
			mu.Lock()
			s.Final[gw] = *info
			mu.Unlock()
		}
		return err
	})
	s.State = FedSucceeded
	if len(errs) > 0 {
		s.Error = fmt.Sprintf("%d gateways did not take the final model: %v", len(errs), firstErr(errs))
	}
	return s, save()
}

// Provenance is the record the released model carries: the gateways whose
// updates were summed in some round, by name, and every round's hashes and
// receipts. Nil when a round has no receipts (run before they existed).
func (s *FedState) Provenance() *receipt.Federation {
	if len(s.History) == 0 {
		return nil
	}
	f := &receipt.Federation{ID: s.Options.ID}
	in := map[string]bool{}
	for _, r := range s.History {
		if r.StartSHA256 == "" || len(r.Receipts) != len(r.Participants) {
			return nil
		}
		for _, p := range r.Participants {
			in[p] = true
		}
		f.Rounds = append(f.Rounds, receipt.Round{Round: r.Round, StartSHA256: r.StartSHA256, ResultSHA256: r.ResultSHA256,
			Participants: slices.Clone(r.Participants), Receipts: slices.Clone(r.Receipts)})
	}
	for _, p := range s.Options.Participants {
		if in[p.Gateway] {
			f.Gateways = append(f.Gateways, receipt.Gateway{PeerID: p.Gateway, Name: p.Name, Dataset: p.Dataset})
		}
	}
	return f
}

// updateSHA256 hashes an update as it was sent: a plain update's bytes, a
// masked update's words (packed, or in JSON from an earlier gateway).
func updateSHA256(up *wire.FedUpdateResponse) string {
	switch {
	case len(up.Plain) > 0:
		return receipt.BytesSHA256(up.Plain)
	case len(up.Packed) > 0:
		return receipt.BytesSHA256(up.Packed)
	}
	return receipt.UpdateSHA256(up.Words)
}

// checkReceipt checks a gateway's receipt of the round against what the
// coordinator sent it (the start weights' hash) and received (the update).
func checkReceipt(up *wire.FedUpdateResponse, gw string, rr wire.FedRoundRequest, start string) error {
	rc := up.Receipt
	switch {
	case rc == nil:
		return errors.New("its update came without a signed receipt")
	case rc.Gateway != gw || rc.Federation != rr.Federation || rc.Round != rr.Round || rc.Attempt != rr.Attempt:
		return fmt.Errorf("its receipt names gateway %s, federation %s, round %d, attempt %d", rc.Gateway, rc.Federation, rc.Round, rc.Attempt)
	case rc.StartSHA256 != start:
		return errors.New("its receipt names other start weights than those sent to it")
	case rc.UpdateSHA256 != updateSHA256(up):
		return errors.New("its receipt names another update than the one it sent")
	}
	return rc.VerifySignature(p2p.VerifyPeerSignature)
}

func firstErr(errs map[string]error) error {
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", keys[0], errs[keys[0]])
}

// fedStop ends a federation that cannot go on and tells the gateways.
func (c *Client) fedStop(ctx context.Context, s *FedState, cause error, save func() error) error {
	s.State, s.Error = FedFailed, cause.Error()
	eachGateway(s.Active, func(gw string) error {
		_, err := c.fedFinish(ctx, gw, &wire.FedFinishRequest{Federation: s.Options.ID, Rounds: s.Round, Error: cause.Error()})
		return err
	})
	if err := save(); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

func (c *Client) fedFinish(ctx context.Context, gw string, req *wire.FedFinishRequest) (*wire.JobInfo, error) {
	id, err := gwID(gw)
	if err != nil {
		return nil, err
	}
	return call(ctx, c, id, wire.FedFinish(), req)
}

// joinRequest is the request to join the federation with dataset ds.
func (o FedOptions) joinRequest(ds string) *wire.FedJoinRequest {
	return &wire.FedJoinRequest{Federation: o.ID, Dataset: ds, Plan: o.Plan, Rounds: o.Rounds, Strategy: o.Strategy,
		Participants: o.Participants, MinGateways: o.MinGateways, MaxRows: o.MaxRows, Clip: o.Clip, Eval: o.Eval, PlainUpdates: o.PlainUpdates}
}

// fedJoin asks every participant to join; those that refuse drop out.
func (c *Client) fedJoin(ctx context.Context, s *FedState) error {
	o := s.Options
	var mu sync.Mutex
	s.Epsilon, s.Refused = map[string]float64{}, map[string]string{}
	gws := make([]string, len(o.Participants))
	for i, p := range o.Participants {
		gws[i] = p.Gateway
	}
	errs := eachGateway(gws, func(gw string) error {
		resp, err := c.fedJoinOne(ctx, o, gw)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		s.Jobs[gw] = resp.Job.ID
		s.Active = append(s.Active, gw)
		if resp.Request != "" {
			if s.Approvals == nil {
				s.Approvals, s.ApprovalState = map[string]string{}, map[string]string{}
			}
			s.Approvals[gw], s.ApprovalState[gw] = resp.Request, resp.Approval
		}
		if resp.Job.Epsilon > 0 {
			s.Epsilon[gw] = resp.Job.Epsilon
		}
		return nil
	})
	for gw, err := range errs {
		s.Refused[gw] = err.Error()
	}
	slices.Sort(s.Active)
	if len(s.Active) < o.MinGateways {
		return fmt.Errorf("only %d of %d gateways joined, fewer than --min-gateways %d: %v", len(s.Active), len(o.Participants), o.MinGateways, firstErr(errs))
	}
	return nil
}

// fedJoinOne asks gateway gw to join with its participant's dataset (asked
// again, it answers with its part's state, e.g. its officer's decision).
func (c *Client) fedJoinOne(ctx context.Context, o FedOptions, gw string) (*wire.FedJoinResponse, error) {
	id, err := gwID(gw)
	if err != nil {
		return nil, err
	}
	var ds string
	for _, p := range o.Participants {
		if p.Gateway == gw {
			ds = p.Dataset
		}
	}
	return call(ctx, c, id, wire.FedJoin(), o.joinRequest(ds))
}

// fedAwaitApprovals waits until every joined gateway's compliance officer
// decided (on review-gated data): approved gateways stay, the others drop
// out; the federation stops if fewer than MinGateways remain.
func (c *Client) fedAwaitApprovals(ctx context.Context, s *FedState, run FedRunOptions) error {
	o := s.Options
	every := 4 * run.Poll
	for {
		pending := map[string]string{}
		for _, gw := range s.Active {
			if st := s.ApprovalState[gw]; st != "" && st != wire.ApprovalApproved {
				pending[gw] = s.Approvals[gw]
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if run.Waiting != nil {
			run.Waiting(pending)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
		var mu sync.Mutex
		errs := eachGateway(slices.Sorted(maps.Keys(pending)), func(gw string) error {
			resp, err := c.fedJoinOne(ctx, o, gw)
			if err != nil {
				return err
			}
			mu.Lock()
			s.ApprovalState[gw] = resp.Approval
			mu.Unlock()
			if resp.Approval != wire.ApprovalPending && resp.Approval != wire.ApprovalApproved {
				return &p2p.Error{Code: p2p.CodeForbidden, Message: fmt.Sprintf("request %s for its compliance officer is %s: %s", resp.Request, resp.Approval, resp.Job.Error)}
			}
			return nil
		})
		for gw, err := range errs {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var remote *p2p.Error
			if !errors.As(err, &remote) {
				continue // unreachable for now: ask again
			}
			s.Refused[gw] = err.Error()
			s.Active = slices.DeleteFunc(s.Active, func(x string) bool { return x == gw })
		}
		if len(s.Active) < o.MinGateways {
			return fmt.Errorf("only %d gateways approved or still deciding, fewer than --min-gateways %d: %v", len(s.Active), o.MinGateways, firstErr(errs))
		}
	}
}

// fedRound runs one round of secure aggregation and moves the global weights.
func (c *Client) fedRound(ctx context.Context, s *FedState, round int, run FedRunOptions) (*FedRound, error) {
	start := time.Now()
	o := s.Options
	parties := slices.Clone(s.Active)
	codec, err := plan.NewUpdateCodec(o.MaxRows, o.Clip, max(1, len(parties)))
	if err != nil {
		return nil, err
	}
	weights := wire.PackFloats(plan.Flatten(s.Weights))
	train := func(string) *wire.FedTrainRequest { return &wire.FedTrainRequest{Vector: weights, Plan: s.Fitted} }
	var rows, loss float64
	var delta map[string]plan.Tensor
	var u3 []string
	var dropped map[string]error
	// Each gateway's update comes with its signed receipt of the weights it
	// started from and of the update it sent: checked before it is summed.
	rr := wire.FedRoundRequest{Federation: o.ID, Round: round, Attempt: s.Attempt}
	startSHA := plan.WeightsSHA256(s.Weights)
	var rmu sync.Mutex
	receipts := map[string]receipt.Receipt{}
	accept := func(gw string, up *wire.FedUpdateResponse) error {
		if err := checkReceipt(up, gw, rr, startSHA); err != nil {
			return err
		}
		rmu.Lock()
		receipts[gw] = *up.Receipt
		rmu.Unlock()
		return nil
	}
	if o.PlainUpdates {
		rows, loss, delta, u3, dropped, err = c.plainSum(ctx, s, round, parties, codec, train, accept, run)
	} else {
		var sum []uint32
		if sum, u3, _, dropped, err = c.secureSum(ctx, s, round, parties, codec.Length(s.Weights), train, accept, run); err == nil {
			rows, loss, delta, err = codec.Decode(sum, s.Weights)
		}
	}
	if err != nil {
		return nil, err
	}
	s.applyStrategy(delta)
	gone := s.dropOut(dropped)
	var eps float64
	for _, e := range s.Epsilon {
		eps += e * float64(round) / float64(o.Rounds)
	}
	rcs := make([]receipt.Receipt, 0, len(u3))
	for _, gw := range u3 {
		rcs = append(rcs, receipts[gw])
	}
	return &FedRound{Round: round, Participants: u3, Dropped: gone, Rows: rows, Loss: loss, Seconds: time.Since(start).Seconds(), Epsilon: eps,
		StartSHA256: startSHA, ResultSHA256: plan.WeightsSHA256(s.Weights), Receipts: rcs}, nil
}

// plainSum runs one training round with plain updates: every gateway
// trains and answers with its update unmasked (plan.UpdateCodec.Values);
// the coordinator checks and sums them and decodes the sum.
func (c *Client) plainSum(ctx context.Context, s *FedState, round int, parties []string, codec *plan.UpdateCodec, train func(gw string) *wire.FedTrainRequest,
	accept func(gw string, up *wire.FedUpdateResponse) error, run FedRunOptions) (
	rows, loss float64, delta map[string]plan.Tensor, survivors []string, dropped map[string]error, err error) {
	o := s.Options
	if len(parties) < o.MinGateways {
		return 0, 0, nil, nil, nil, fmt.Errorf("%w: %d gateways left, --min-gateways is %d", secagg.ErrBelowThreshold, len(parties), o.MinGateways)
	}
	length := codec.Length(s.Weights)
	rr := wire.FedRoundRequest{Federation: o.ID, Round: round, Attempt: s.Attempt}
	var mu sync.Mutex
	sum := make([]float64, length)
	dropped = eachGateway(parties, func(gw string) error {
		req := train(gw)
		req.FedRoundRequest = rr
		up, err := c.fedTrain(ctx, gw, req, round, accept, run)
		if err != nil {
			return err
		}
		vals, err := wire.UnpackFloats(up.Plain, length)
		if err != nil {
			return fmt.Errorf("plain update: %w", err)
		}
		if err := codec.CheckValues(vals, s.Weights); err != nil {
			return fmt.Errorf("plain update: %w", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for i, v := range vals {
			sum[i] += v
		}
		survivors = append(survivors, gw)
		run.stage(round, gw, "update")
		return nil
	})
	if ctx.Err() != nil {
		return 0, 0, nil, nil, dropped, ctx.Err()
	}
	if len(survivors) < o.MinGateways {
		return 0, 0, nil, nil, dropped, fmt.Errorf("%w: %d gateways sent updates, --min-gateways is %d (%v)", secagg.ErrBelowThreshold, len(survivors), o.MinGateways, firstErr(dropped))
	}
	slices.Sort(survivors)
	rows, loss, delta, err = codec.DecodeValues(sum, s.Weights)
	return rows, loss, delta, survivors, dropped, err
}

// fedTrain sends a gateway its part of the round and asks for its answer
// until it is ready; accept, when set, checks the ready answer.
func (c *Client) fedTrain(ctx context.Context, gw string, req *wire.FedTrainRequest, round int, accept func(gw string, up *wire.FedUpdateResponse) error, run FedRunOptions) (*wire.FedUpdateResponse, error) {
	id, err := gwID(gw)
	if err != nil {
		return nil, err
	}
	if _, err := call(ctx, c, id, wire.FedTrain(), req); err != nil {
		return nil, err
	}
	run.stage(round, gw, "training")
	deadline := time.Now().Add(run.UpdateTimeout)
	for {
		up, err := call(ctx, c, id, wire.FedUpdate(), &req.FedRoundRequest)
		if err != nil {
			return nil, err
		}
		if up.Ready {
			if up.Party != gw {
				return nil, fmt.Errorf("gateway %s answered in the name of %s", gw, up.Party)
			}
			if accept != nil {
				if err := accept(gw, up); err != nil {
					return nil, err
				}
			}
			return up, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no update within %s", run.UpdateTimeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(run.Poll):
		}
	}
}

// dropOut takes the gateways that failed a round out of the federation and
// returns them, sorted. One that restarted and lost its round keys
// (wire.CodeRoundLost) stays in: it is back, and takes part in the next
// round with fresh keys.
func (s *FedState) dropOut(dropped map[string]error) []string {
	s.Active = slices.DeleteFunc(s.Active, func(gw string) bool {
		err, gone := dropped[gw]
		return gone && !p2p.IsCode(err, wire.CodeRoundLost)
	})
	var gone []string
	for gw := range dropped {
		gone = append(gone, gw)
	}
	slices.Sort(gone)
	return gone
}

// secureSum runs one round of secure aggregation over parties: keys, key
// shares, each gateway's part (train starts it; its masked vector of length
// words is then asked for until ready), consistency and unmasking. It
// returns the sum, the survivors (whose vectors are in it), their last
// answers, and the gateways that failed, with why. accept, when set, checks
// a gateway's ready answer before its vector is taken: one it refuses drops
// that gateway out.
func (c *Client) secureSum(ctx context.Context, s *FedState, round int, parties []string, length int, train func(gw string) *wire.FedTrainRequest,
	accept func(gw string, up *wire.FedUpdateResponse) error, run FedRunOptions) (
	sum []uint32, survivors []string, updates map[string]*wire.FedUpdateResponse, dropped map[string]error, err error) {
	o := s.Options
	n := len(parties)
	if n < o.MinGateways {
		return nil, nil, nil, nil, fmt.Errorf("%w: %d gateways left, --min-gateways is %d", secagg.ErrBelowThreshold, n, o.MinGateways)
	}
	threshold := max(o.MinGateways, secagg.MinThreshold(n))
	threshold = min(threshold, n)
	// SecAgg+ once the round is large enough for a log-degree graph to save work.
	params := secagg.Params{Context: wire.FedRoundContext(o.ID, round, s.Attempt), Parties: parties, Threshold: threshold, Length: length, Degree: secagg.DegreeFor(n)}
	srv, err := secagg.NewServer(params, p2p.VerifyPeerSignature)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var mu sync.Mutex // guards srv and updates
	rr := wire.FedRoundRequest{Federation: o.ID, Round: round, Attempt: s.Attempt}
	dropped = map[string]error{}
	updates = map[string]*wire.FedUpdateResponse{}
	note := func(errs map[string]error) {
		for gw, err := range errs {
			if _, ok := dropped[gw]; !ok {
				dropped[gw] = err
			}
		}
	}
	alive := func(set []string) []string {
		return slices.DeleteFunc(slices.Clone(set), func(gw string) bool { _, gone := dropped[gw]; return gone })
	}
	failed := func(err error) ([]uint32, []string, map[string]*wire.FedUpdateResponse, map[string]error, error) {
		return nil, nil, nil, dropped, fmt.Errorf("%w (%v)", err, firstErr(dropped))
	}

	// Keys.
	note(eachGateway(parties, func(gw string) error {
		id, err := gwID(gw)
		if err != nil {
			return err
		}
		ad, err := call(ctx, c, id, wire.FedKeys(), &wire.FedKeysRequest{FedRoundRequest: rr, Parties: parties, Threshold: threshold, Length: params.Length, Degree: params.Degree})
		if err != nil {
			return err
		}
		if ad.Party != gw {
			return fmt.Errorf("gateway %s answered keys in the name of %s", gw, ad.Party)
		}
		mu.Lock()
		err = srv.AddAdvertisement(secagg.Advertisement(*ad))
		mu.Unlock()
		if err == nil {
			run.stage(round, gw, "keys")
		}
		return err
	}))
	ads, err := srv.Advertisements()
	if err != nil {
		return failed(err)
	}
	wads := make([]wire.FedAdvertisement, len(ads))
	for i, a := range ads {
		wads[i] = wire.FedAdvertisement(a)
	}

	// Key shares.
	note(eachGateway(alive(parties), func(gw string) error {
		id, _ := gwID(gw)
		resp, err := call(ctx, c, id, wire.FedShareKeys(), &wire.FedShareRequest{FedRoundRequest: rr, Ads: wads})
		if err != nil {
			return err
		}
		sh := make([]secagg.EncryptedShare, len(resp.Shares))
		for i, e := range resp.Shares {
			sh[i] = secagg.EncryptedShare(e)
		}
		mu.Lock()
		defer mu.Unlock()
		return srv.AddShares(gw, sh)
	}))

	// Each gateway's part, then the masked vectors.
	u2 := alive(parties)
	inbox := map[string][]wire.FedShare{}
	for _, gw := range u2 {
		mu.Lock()
		sh, err := srv.SharesFor(gw)
		mu.Unlock()
		if err != nil {
			return failed(err)
		}
		for _, e := range sh {
			inbox[gw] = append(inbox[gw], wire.FedShare(e))
		}
	}
	note(eachGateway(u2, func(gw string) error {
		req := train(gw)
		req.FedRoundRequest, req.Shares = rr, inbox[gw]
		up, err := c.fedTrain(ctx, gw, req, round, accept, run)
		if err != nil {
			return err
		}
		words := up.Words
		if len(up.Packed) > 0 || len(words) == 0 {
			if words, err = wire.UnpackWords(up.Packed, length); err != nil {
				return fmt.Errorf("masked vector: %w", err)
			}
		}
		mu.Lock()
		err = srv.AddMasked(secagg.MaskedInput{Party: gw, Words: words})
		if err == nil {
			updates[gw] = up
		}
		mu.Unlock()
		if err == nil {
			run.stage(round, gw, "update")
		}
		return err
	}))
	if ctx.Err() != nil {
		return nil, nil, nil, dropped, ctx.Err()
	}

	// Unmask.
	u3, err := srv.Survivors()
	if err != nil {
		return failed(err)
	}
	surv := wire.FedSurvivors{FedRoundRequest: rr, Survivors: u3}
	note(eachGateway(u3, func(gw string) error {
		id, _ := gwID(gw)
		cs, err := call(ctx, c, id, wire.FedConfirm(), &surv)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		return srv.AddConsistency(secagg.Consistency(*cs))
	}))
	sigs, err := srv.Consistencies()
	if err != nil {
		return failed(err)
	}
	wsigs := make([]wire.FedConsistency, len(sigs))
	for i, x := range sigs {
		wsigs[i] = wire.FedConsistency(x)
	}
	note(eachGateway(alive(u3), func(gw string) error {
		id, _ := gwID(gw)
		rv, err := call(ctx, c, id, wire.FedUnmask(), &wire.FedRevealRequest{FedRoundRequest: rr, Survivors: u3, Sigs: wsigs})
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		return srv.AddReveal(secagg.Reveal(*rv))
	}))
	sum, err = srv.Sum()
	if err != nil {
		return failed(err)
	}
	for gw := range updates {
		if !slices.Contains(u3, gw) {
			delete(updates, gw)
		}
	}
	return sum, u3, updates, dropped, nil
}

// applyStrategy moves the global weights by the round's mean change.
func (s *FedState) applyStrategy(delta map[string]plan.Tensor) {
	st := s.Options.Strategy
	if st.Name == wire.StrategyFedAvgM {
		if s.Velocity == nil {
			s.Velocity = map[string]plan.Tensor{}
		}
		for name, d := range delta {
			v, ok := s.Velocity[name]
			if !ok {
				v = plan.Tensor{Shape: slices.Clone(d.Shape), Data: make([]float64, len(d.Data))}
			}
			for i := range v.Data {
				v.Data[i] = st.Momentum*v.Data[i] + d.Data[i]
			}
			s.Velocity[name] = v
			w := s.Weights[name]
			for i := range w.Data {
				w.Data[i] += st.ServerLR * v.Data[i]
			}
		}
		return
	}
	for name, d := range delta {
		w := s.Weights[name]
		for i := range w.Data {
			w.Data[i] += d.Data[i]
		}
	}
}

// Dataset returns one dataset's catalog entry at a gateway, and the gateway's name.
func (c *Client) Dataset(ctx context.Context, gw peer.ID, id string) (*wire.CatalogEntry, string, error) {
	resp, err := call(ctx, c, gw, wire.Catalog(), &wire.CatalogRequest{PreviewRows: -1})
	if err != nil {
		return nil, "", err
	}
	for _, e := range resp.Datasets {
		if e.ID == id {
			return &e, resp.Name, nil
		}
	}
	return nil, "", fmt.Errorf("gateway %s has no dataset %s (or you may not see it)", gw, id)
}
