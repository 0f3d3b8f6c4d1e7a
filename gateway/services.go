package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// registerProtocols installs every stream protocol the gateway serves, each
// with its descriptor's limits, deadline and caller policy.
func (g *Gateway) registerProtocols() {
	serve(g, wire.Catalog(), g.handleCatalog)
	serve(g, wire.Enroll(), g.handleEnroll)
	serve(g, wire.Claim(), g.handleClaim)
	serve(g, wire.Fetch(), g.handleFetch)
	serve(g, wire.Heartbeat(), g.handleHeartbeat)
	serve(g, wire.Result(), g.handleResult)
	serve(g, wire.Ping(), g.handlePing)
	serve(g, wire.Submit(), g.handleSubmit)
	serve(g, wire.Job(), g.handleJob)
	serve(g, wire.Cancel(), g.handleCancel)
	serve(g, wire.Model(), g.handleModel)
	serve(g, wire.Request(), g.handleRequest)
	serve(g, wire.Requests(), g.handleRequests)
	serve(g, wire.Withdraw(), g.handleWithdraw)
	serve(g, wire.Query(), g.handleQuery)
}

// serve registers one protocol; a descriptor that checks its caller first
// gets the one policy as a check before the request is read.
func serve[Req, Resp any](g *Gateway, d wire.Protocol[Req, Resp], fn p2p.HandlerFunc[Req, Resp]) {
	p2p.Serve(g.peer, d, func(from peer.ID) error {
		_, err := g.authorize(from, d.Descriptor)
		return err
	}, fn)
}

// storeErr maps store errors to protocol errors a person understands.
func storeErr(err error, what string) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return p2p.Errorf(p2p.CodeNotFound, "%s not found", what)
	case errors.Is(err, store.ErrStale):
		return p2p.Errorf(p2p.CodeStale, "%s: this attempt is no longer current (the lease was lost or the job moved on)", what)
	case errors.Is(err, store.ErrConflictState):
		return p2p.Errorf(p2p.CodeConflict, "%s is not in a state that allows this", what)
	case errors.Is(err, store.ErrInvalid):
		return p2p.Errorf(p2p.CodeBadRequest, "%s", strings.TrimPrefix(err.Error(), "store: "))
	case errors.Is(err, store.ErrInsufficientBudget):
		return p2p.Errorf(p2p.CodeForbidden, "%s: %s", what, strings.TrimPrefix(err.Error(), "store: "))
	case errors.Is(err, store.ErrForbidden):
		return p2p.Errorf(p2p.CodeForbidden, "%s: %s", what, strings.TrimPrefix(err.Error(), "store: "))
	}
	return err
}

// --- nodes ---------------------------------------------------------------

func (g *Gateway) handleEnroll(_ context.Context, from peer.ID, req *wire.EnrollRequest) (*wire.EnrollResponse, error) {
	if _, err := g.authorize(from, wire.Enroll().Descriptor); err != nil {
		return nil, err
	}
	if req.Slots < 1 || req.Slots > wire.MaxSlots {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "slots must be between 1 and %d, got %d", wire.MaxSlots, req.Slots)
	}
	ok := &wire.EnrollResponse{Gateway: g.ID(), Topic: g.topic.String()}
	if _, err := g.store.Node(from.String()); err == nil && req.Token == "" {
		// A known node coming back: its key is its credential.
		if err := g.store.TouchNode(from.String(), time.Now()); err != nil {
			return nil, err
		}
		return ok, nil
	}
	if req.Token == "" {
		return nil, p2p.Errorf(p2p.CodeUnauthorized, "this node is not enrolled; start it with --join-token from the gateway's admin")
	}
	if _, err := g.store.RedeemJoinToken(req.Token, from.String(), req.Slots, req.Version); err != nil {
		if _, known := g.store.Node(from.String()); known == nil {
			// Restart of an enrolled node that still passes its used token.
			_ = g.store.TouchNode(from.String(), time.Now())
			return ok, nil
		}
		return nil, p2p.Errorf(p2p.CodeForbidden, "join token refused: %v", err)
	}
	g.log.Info("node enrolled", "node", from)
	g.wake(g.kick)
	return ok, nil
}

// authorize is the one policy check of every p2p request (the same store
// policy the HTTP API uses): proto names the protocol, from the remote peer.
// For data-scientist protocols it returns the peer's account.
func (g *Gateway) authorize(from peer.ID, d wire.Descriptor) (*store.User, error) {
	u, err := g.store.AuthorizeCaller(from.String(), d.Caller)
	switch {
	case err == nil:
		return u, nil
	case errors.Is(err, store.ErrUnknownPeer) && d.Caller == wire.CallerNode:
		return nil, p2p.Errorf(p2p.CodeForbidden, "peer %s is not an enrolled node of this gateway", from)
	case errors.Is(err, store.ErrUnknownPeer):
		return nil, p2p.Errorf(p2p.CodeUnauthorized, "peer %s is not registered at this gateway: ask its administrator to add your peer ID to a user account", from)
	case errors.Is(err, store.ErrForbidden):
		return nil, p2p.Errorf(p2p.CodeForbidden, "your account may not do this here (%v)", err)
	}
	return nil, err
}

// enrolledNode refuses peers that no join token enrolled, and notes that the node was seen.
func (g *Gateway) enrolledNode(from peer.ID, proto wire.Descriptor) error {
	if _, err := g.authorize(from, proto); err != nil {
		return err
	}
	g.touchNode(from)
	return nil
}

// touchNode records that a node was seen, persisting it at most every
// touchEvery: a write per message would cost more than the job it carries.
func (g *Gateway) touchNode(p peer.ID) {
	now := time.Now()
	g.touchMu.Lock()
	last, ok := g.touched[p]
	if ok && now.Sub(last) < touchEvery {
		g.touchMu.Unlock()
		return
	}
	if g.touched == nil {
		g.touched = map[peer.ID]time.Time{}
	}
	g.touched[p] = now
	g.touchMu.Unlock()
	_ = g.store.TouchNode(p.String(), now)
}

// touchEvery bounds how stale a node's stored last-seen time may be.
const touchEvery = 5 * time.Second

func (g *Gateway) handleClaim(_ context.Context, from peer.ID, req *wire.ClaimRequest) (*wire.ClaimResponse, error) {
	g.metrics.claims.Inc()
	if err := g.enrolledNode(from, wire.Claim().Descriptor); err != nil {
		return nil, err
	}
	j, err := g.store.Grant(req.Job, from.String(), g.cfg.Lease)
	if err != nil {
		if errors.Is(err, store.ErrConflictState) {
			return nil, p2p.Errorf(p2p.CodeConflict, "job %s is not waiting for a node", req.Job)
		}
		return nil, storeErr(err, "job "+req.Job)
	}
	g.capacity.took(from)
	g.servedUser(j.UserID)
	g.metrics.grants.Inc()
	g.metrics.dispatch.Observe(j.StartedAt.Sub(j.QueuedAt).Seconds())
	// Tell nodes still waiting out their jitter that this one is taken.
	g.gossip(g.peer.Context(), wire.Offer{Gateway: g.ID(), Job: j.ID, Expires: time.Now().Add(g.cfg.OfferTTL), Taken: true})
	g.log.Info("lease granted", "job", j.ID, "attempt", j.Attempt, "node", from)
	return &wire.ClaimResponse{Job: j.ID, Attempt: j.Attempt, LeaseSeconds: int(g.cfg.Lease / time.Second)}, nil
}

// leased returns the job if from holds the current lease of attempt.
func (g *Gateway) leased(from peer.ID, proto wire.Descriptor, jobID string, attempt int) (*store.Job, error) {
	if err := g.enrolledNode(from, proto); err != nil {
		return nil, err
	}
	j, err := g.store.Job(jobID)
	if err != nil {
		return nil, storeErr(err, "job "+jobID)
	}
	if j.State != wire.StateRunning || j.Attempt != attempt || j.Node != from.String() {
		return nil, p2p.Errorf(p2p.CodeStale, "job %s attempt %d is not leased to you (current attempt %d, state %s)", jobID, attempt, j.Attempt, j.State)
	}
	return j, nil
}

func (g *Gateway) handleFetch(_ context.Context, from peer.ID, req *wire.FetchRequest) (*wire.FetchResponse, error) {
	j, err := g.leased(from, wire.Fetch().Descriptor, req.Job, req.Attempt)
	if err != nil {
		return nil, err
	}
	csv, err := g.store.DatasetCSV(j.DatasetID)
	if err != nil {
		return nil, storeErr(err, "dataset "+j.DatasetID)
	}
	if j.ParentID != "" {
		if csv, err = g.shardCSV(j, csv); err != nil {
			return nil, fmt.Errorf("cut shard: %w", err)
		}
	}
	init, err := g.store.JobInit(j.ID)
	if err != nil {
		return nil, storeErr(err, "initial weights of job "+j.ID)
	}
	return &wire.FetchResponse{Job: j.ID, Attempt: j.Attempt, Dataset: j.DatasetID, Plan: j.Plan, CSV: csv, Init: init}, nil
}

func (g *Gateway) handleHeartbeat(_ context.Context, from peer.ID, req *wire.HeartbeatRequest) (*wire.HeartbeatResponse, error) {
	if err := g.enrolledNode(from, wire.Heartbeat().Descriptor); err != nil {
		return nil, err
	}
	j, err := g.store.Heartbeat(req.Job, req.Attempt, from.String(), wire.Progress{Epoch: req.Epoch, Epochs: req.Epochs, Loss: req.Loss}, g.cfg.Lease)
	if err != nil {
		if cur, gerr := g.store.Job(req.Job); gerr == nil && cur.State == wire.StateCancelled && cur.Attempt == req.Attempt {
			return &wire.HeartbeatResponse{Cancelled: true}, nil
		}
		return nil, storeErr(err, "job "+req.Job)
	}
	return &wire.HeartbeatResponse{Cancelled: j.State == wire.StateCancelled, LeaseSeconds: int(g.cfg.Lease / time.Second)}, nil
}

func (g *Gateway) handleResult(_ context.Context, from peer.ID, req *wire.ResultRequest) (*wire.Ack, error) {
	if err := g.enrolledNode(from, wire.Result().Descriptor); err != nil {
		return nil, err
	}
	j, err := g.store.Job(req.Job)
	if err != nil {
		return nil, storeErr(err, "job "+req.Job)
	}
	// A retry of a result already stored for this very attempt is acknowledged again.
	if wire.Terminal(j.State) && j.Attempt == req.Attempt && j.Node == from.String() {
		return &wire.Ack{OK: true}, nil
	}
	if req.Error != "" {
		if err := g.store.Fail(req.Job, req.Attempt, from.String(), truncate(req.Error, 2000)); err != nil {
			return nil, storeErr(err, "job "+req.Job)
		}
		g.metrics.failed.Inc()
		g.wake(g.coordKick)
		g.capacity.released(from)
		g.wake(g.kick)
		g.log.Warn("job failed on node", "job", req.Job, "attempt", req.Attempt, "reason", req.Error)
		return &wire.Ack{OK: true}, nil
	}
	if _, err := g.leased(from, wire.Result().Descriptor, req.Job, req.Attempt); err != nil {
		return nil, err
	}
	m, err := plan.ParseModel(req.Model)
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "model refused: %v", err)
	}
	if j.ParentID == "" {
		// The privacy cost in the signed model is the gateway's, never the node's.
		m.Privacy = nil
		if j.DP {
			m.Privacy = &plan.Privacy{Epsilon: wire.Epsilon(j.EpsilonMicroEps), Delta: j.Delta}
		}
	}
	signed, err := g.signModel(m, j)
	if err != nil {
		return nil, err
	}
	metrics, err := json.Marshal(m.Metrics)
	if err != nil {
		return nil, err
	}
	if err := g.store.Complete(req.Job, req.Attempt, from.String(), signed, metrics); err != nil {
		return nil, storeErr(err, "job "+req.Job)
	}
	if j.ParentID != "" {
		g.wake(g.coordKick)
	} else {
		g.metrics.completed.Inc()
	}
	g.capacity.released(from)
	g.wake(g.kick)
	g.log.Info("job succeeded", "job", req.Job, "attempt", req.Attempt, "node", from)
	return &wire.Ack{OK: true}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// --- data scientists --------------------------------------------------------

func (g *Gateway) handleSubmit(_ context.Context, from peer.ID, req *wire.SubmitRequest) (*wire.JobInfo, error) {
	u, err := g.authorize(from, wire.Submit().Descriptor)
	if err != nil {
		return nil, err
	}
	ds, err := g.store.Dataset(req.Dataset)
	if err != nil {
		return nil, storeErr(err, "dataset "+req.Dataset)
	}
	dec, err := g.store.CanTrain(u.ID, ds.ID)
	if err != nil {
		return nil, storeErr(err, "dataset "+req.Dataset)
	}
	if !dec.Allowed {
		return nil, p2p.Errorf(p2p.CodeForbidden, "you may not train on dataset %q: %s (ask with fedgrid request permission)", ds.Name, dec.Reason)
	}
	pl, err := plan.Parse(req.Plan)
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "plan refused: %v", err)
	}
	planJSON, hostedID := json.RawMessage(req.Plan), pl.Model
	var init json.RawMessage
	if hostedID != "" {
		if pl, planJSON, init, err = g.resolveHosted(pl); err != nil {
			return nil, err
		}
	}
	report, err := plan.Check(pl, ds.Columns)
	if err != nil {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "plan does not fit dataset %q: %v", ds.Name, err)
	}
	j := &store.Job{
		DatasetID: ds.ID, UserID: u.ID, Requester: from.String(), Plan: planJSON, Init: init, HostedModel: hostedID,
		MaxAttempts: g.cfg.MaxAttempts, AttemptTimeout: g.cfg.AttemptTimeout, Deadline: time.Now().Add(g.cfg.JobTimeout),
		PlanTable: report.String(), Review: dec.Review,
	}
	if pl.Train.Workers > 1 {
		j.Shards, j.Rounds = pl.Train.Workers, max(1, pl.Train.Rounds)
		if pl.Train.Workers > ds.Rows {
			return nil, p2p.Errorf(p2p.CodeBadRequest, "train.workers is %d but dataset %q has %d rows", pl.Train.Workers, ds.Name, ds.Rows)
		}
	}
	if err := releaseCost(j, pl, ds); err != nil {
		return nil, err
	}
	// Private data: the release's epsilon is reserved now, so that no job
	// trains whose result could never be paid for.
	if ds.Visibility != store.VisibilityPublic && j.EpsilonMicroEps > 0 {
		err = g.store.CreateJobReserving(j, j.EpsilonMicroEps)
	} else {
		err = g.store.CreateJob(j)
	}
	if err != nil {
		if errors.Is(err, store.ErrInsufficientBudget) {
			return nil, p2p.Errorf(p2p.CodeForbidden, "releasing this job's result would cost epsilon %.6g on dataset %q, more than your budget allows (%s); ask for more with fedgrid request budget",
				wire.Epsilon(j.EpsilonMicroEps), ds.Name, strings.TrimPrefix(err.Error(), "store: "))
		}
		return nil, storeErr(err, "job")
	}
	g.metrics.submitted.Inc()
	g.log.Info("job queued", "job", j.ID, "dataset", ds.ID, "user", u.ID, "workers", j.Shards, "epsilon_micro", j.EpsilonMicroEps, "review", dec.Review, "hosted_model", hostedID)
	g.wake(g.kick)
	g.wake(g.coordKick)
	return g.jobInfo(j), nil
}

// resolveHosted turns a plan that names a hosted model ("model": "<id>",
// with only training settings) into the full plan the node trains: the
// hosted model's plan with the request's settings (plan.Resolve), and the
// hosted weights as the job's starting weights. The job keeps both, so it
// trains as submitted even if the model is deleted or replaced meanwhile,
// and its released model carries the resolved plan.
func (g *Gateway) resolveHosted(pl *plan.Plan) (*plan.Plan, json.RawMessage, json.RawMessage, error) {
	raw, err := g.store.HostedModelJSON(pl.Model)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, p2p.Errorf(p2p.CodeBadRequest, "plan refused: model %q is not hosted on this gateway (its catalog lists the hosted models)", pl.Model)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	hosted, err := plan.ParseModel(raw)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("hosted model %q: %w", pl.Model, err)
	}
	resolved, err := plan.Resolve(pl, hosted)
	if err != nil {
		return nil, nil, nil, p2p.Errorf(p2p.CodeBadRequest, "plan refused: %v", err)
	}
	planJSON, err := json.Marshal(resolved)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(planJSON) > plan.MaxPlanBytes {
		return nil, nil, nil, p2p.Errorf(p2p.CodeBadRequest, "plan refused: hosted model %q's plan is %d bytes, more than the limit of %d", pl.Model, len(planJSON), plan.MaxPlanBytes)
	}
	init, err := json.Marshal(hosted.Params)
	if err != nil {
		return nil, nil, nil, err
	}
	return resolved, planJSON, init, nil
}

// releaseCost sets the job's privacy cost: the epsilon of its DP-SGD plan on
// the dataset's training rows (the same count the node's accountant uses),
// rounded up to whole micro-epsilon. A plan without DP-SGD costs nothing and
// has no formal guarantee (DP false).
func releaseCost(j *store.Job, pl *plan.Plan, ds *store.Dataset) error {
	if pl.Privacy == nil || pl.Privacy.DPSGD == nil {
		return nil
	}
	train, _ := dataset.SplitIndices(ds.Rows, pl.Train.ValidationFraction, pl.Train.Seed)
	eps, err := pl.Epsilon(len(train))
	if err != nil {
		return p2p.Errorf(p2p.CodeBadRequest, "cannot account the plan's privacy on dataset %q: %v", ds.Name, err)
	}
	if math.IsNaN(eps) || math.IsInf(eps, 0) || eps > wire.MaxEpsilon {
		return p2p.Errorf(p2p.CodeBadRequest, "the plan's DP-SGD spends epsilon %v on dataset %q: too much to account; add noise or train fewer steps", eps, ds.Name)
	}
	j.EpsilonMicroEps = int64(wire.MicroEpsCharge(eps))
	j.Delta = pl.Privacy.Delta
	j.DP = true
	return nil
}

// ownJob returns the caller's job; other people's jobs do not exist for
// them, and neither do the shard jobs of their data-parallel jobs: a
// shard's plan carries statistics fitted on all the rows, and its metrics
// and loss are computed on the data before any review.
func (g *Gateway) ownJob(from peer.ID, proto wire.Descriptor, id string) (*store.Job, error) {
	u, err := g.authorize(from, proto)
	if err != nil {
		return nil, err
	}
	j, err := g.store.Job(id)
	if err != nil || j.UserID != u.ID || j.ParentID != "" {
		return nil, p2p.Errorf(p2p.CodeNotFound, "job %s not found", id)
	}
	return j, nil
}

func (g *Gateway) handleJob(_ context.Context, from peer.ID, req *wire.JobRequest) (*wire.JobInfo, error) {
	j, err := g.ownJob(from, wire.Job().Descriptor, req.Job)
	if err != nil {
		return nil, err
	}
	return g.jobInfo(j), nil
}

func (g *Gateway) handleCancel(_ context.Context, from peer.ID, req *wire.JobRequest) (*wire.JobInfo, error) {
	j, err := g.ownJob(from, wire.Cancel().Descriptor, req.Job)
	if err != nil {
		return nil, err
	}
	j, err = g.store.CancelBy(j.ID, j.UserID)
	if err != nil {
		return nil, storeErr(err, "job "+req.Job)
	}
	g.metrics.cancelled.Inc() // the store cancelled its shards with it
	g.log.Info("job cancelled by requester", "job", j.ID)
	return g.jobInfo(j), nil
}

// handleModel serves a job's result to its requester alone, and only once it
// is released: at once on public data, on private data after an officer's
// approval or a matching approval rule (or a per-user override). Shard jobs'
// partial models are never served.
func (g *Gateway) handleModel(_ context.Context, from peer.ID, req *wire.JobRequest) (*wire.ModelResponse, error) {
	j, err := g.ownJob(from, wire.Model().Descriptor, req.Job)
	if err != nil {
		return nil, err
	}
	if j.ParentID != "" {
		return nil, p2p.Errorf(p2p.CodeNotFound, "job %s not found", req.Job)
	}
	if j.State != wire.StateSucceeded {
		return nil, p2p.Errorf(p2p.CodeConflict, "job %s has no result: it is %s", j.ID, j.State)
	}
	if !j.Releasable() && !g.legacyPublic(j) {
		switch j.Release {
		case wire.ReleaseDenied:
			return nil, p2p.Errorf(p2p.CodeForbidden, "job %s: the release of its result was denied: %s", j.ID, j.ReleaseReason)
		case wire.ReleasePending:
			return nil, p2p.Errorf(p2p.CodeForbidden, "job %s trained on private data: its result waits for a compliance officer's review (request %s)", j.ID, j.RequestID)
		case wire.ReleaseWithdrawn:
			return nil, p2p.Errorf(p2p.CodeForbidden, "job %s: you withdrew the release request %s; its result stays with the gateway", j.ID, j.RequestID)
		}
		return nil, p2p.Errorf(p2p.CodeForbidden, "job %s: its result has not been released", j.ID)
	}
	b, err := g.store.Result(j.ID)
	if err != nil {
		return nil, storeErr(err, "result of job "+j.ID)
	}
	if err := g.store.AppendAudit(store.AuditEvent{Actor: j.UserID, Action: "release.fetch", Target: "job/" + j.ID,
		Detail: map[string]any{"peer": from.String(), "release": j.Release, "request_id": j.RequestID}}); err != nil {
		return nil, err
	}
	return &wire.ModelResponse{Model: b}, nil
}

// legacyPublic: a result stored before release states existed (Release
// empty on a succeeded job) was served when its dataset is public; it still is.
func (g *Gateway) legacyPublic(j *store.Job) bool {
	if j.Release != "" || j.State != wire.StateSucceeded || j.ParentID != "" {
		return false
	}
	ds, err := g.store.Dataset(j.DatasetID)
	return err == nil && ds.Visibility == store.VisibilityPublic
}

func (g *Gateway) jobInfo(j *store.Job) *wire.JobInfo {
	info := &wire.JobInfo{
		ID: j.ID, Ref: g.ID() + "/" + j.ID, Gateway: g.ID(), Dataset: j.DatasetID, State: j.State,
		Attempt: j.Attempt, Progress: wire.Progress{Epoch: j.Progress.Epoch, Epochs: j.Progress.Epochs, Loss: j.Progress.Loss},
		Metrics: j.Metrics, Error: j.Error, CreatedAt: j.CreatedAt,
	}
	if !j.StartedAt.IsZero() {
		t := j.StartedAt
		info.StartedAt = &t
	}
	if !j.FinishedAt.IsZero() {
		t := j.FinishedAt
		info.FinishedAt = &t
	}
	info.Epsilon, info.DP = wire.Epsilon(j.EpsilonMicroEps), j.DP
	info.Release, info.ReleaseReason, info.Request = j.Release, j.ReleaseReason, j.RequestID
	withhold(info, j)
	return info
}

// withhold removes from a requester's view of a job what is computed on
// the data and so may leave only with a released result: the metrics of a
// result pending, denied or withdrawn, and the training loss of any job whose result
// is due for review, while it runs and until it is released.
func withhold(info *wire.JobInfo, j *store.Job) {
	info.Review = j.Review || j.RequestID != ""
	if j.LossWithheld() {
		info.Progress.Loss, info.Progress.LossWithheld = 0, true
	}
	if j.State == wire.StateSucceeded && (j.Release == wire.ReleasePending || j.Release == wire.ReleaseDenied || j.Release == wire.ReleaseWithdrawn) {
		info.Metrics = nil
		info.Review = true
	}
}
