package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/service"
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
	serve(g, wire.Open(), g.handleOpen)
	serveStream(g, wire.Data(), g.handleData)
	serve(g, wire.Heartbeat(), g.handleHeartbeat)
	serve(g, wire.Result(), g.handleResult)
	serve(g, wire.Ping(), g.handlePing)
	serve(g, wire.Submit(), g.handleSubmit)
	serve(g, wire.Job(), g.handleJob)
	serve(g, wire.Jobs(), g.handleJobs)
	serve(g, wire.Cancel(), g.handleCancel)
	serve(g, wire.Model(), g.handleModel)
	serve(g, wire.Request(), g.handleRequest)
	serve(g, wire.Requests(), g.handleRequests)
	serve(g, wire.Withdraw(), g.handleWithdraw)
	serve(g, wire.Query(), g.handleQuery)
	g.registerFedProtocols()
}

// --- nodes ---------------------------------------------------------------

func (g *Gateway) handleEnroll(_ context.Context, c caller, req *wire.EnrollRequest) (*wire.EnrollResponse, error) {
	from := c.peer
	if req.Slots < 1 || req.Slots > wire.MaxSlots {
		return nil, p2p.Errorf(p2p.CodeBadRequest, "slots must be between 1 and %d, got %d", wire.MaxSlots, req.Slots)
	}
	ok := &wire.EnrollResponse{Gateway: g.ID(), Topic: g.topic.String()}
	enrolled := func() (*wire.EnrollResponse, error) {
		g.capacity.said(from, req.MaxJobMemory)
		return ok, nil
	}
	if _, err := g.store.Node(from.String()); err == nil && req.Token == "" {
		// A known node coming back: its key is its credential.
		if err := g.store.TouchNode(from.String(), time.Now()); err != nil {
			return nil, err
		}
		return enrolled()
	}
	if req.Token == "" {
		return nil, p2p.Errorf(p2p.CodeUnauthorized, "this node is not enrolled; start it with --join-token from the gateway's admin")
	}
	if _, err := g.store.RedeemJoinToken(req.Token, from.String(), req.Slots, req.Version); err != nil {
		if _, known := g.store.Node(from.String()); known == nil {
			// Restart of an enrolled node that still passes its used token.
			_ = g.store.TouchNode(from.String(), time.Now())
			return enrolled()
		}
		return nil, p2p.Errorf(p2p.CodeForbidden, "join token refused: %v", err)
	}
	g.log.Info("node enrolled", "node", from)
	g.wake(g.kick)
	return enrolled()
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

// touchEvery bounds how stale a node's stored last-seen time may be (the
// admin app calls a node healthy if seen within 30 s): with pings at most
// MaxPingInterval apart, a stored last-seen is at most about 15 s old. Every
// touch is a durable write: with a thousand nodes, touches every 5 s were
// 200 writes a second; with their pings spaced by MaxPingRate, about 70.
const touchEvery = MaxPingInterval - time.Second

func (g *Gateway) handleClaim(_ context.Context, c caller, req *wire.ClaimRequest) (*wire.ClaimResponse, error) {
	g.metrics.claims.Inc()
	from := c.peer
	j, err := g.store.GrantFitting(req.Job, from.String(), g.cfg.Lease, req.MaxJobMemory, req.Streams)
	if err != nil {
		if errors.Is(err, store.ErrNoFit) {
			return nil, p2p.Errorf(p2p.CodeConflict, "job %s needs more memory than this node allows one job (%s)", req.Job, plan.FormatBytes(req.MaxJobMemory))
		}
		if errors.Is(err, store.ErrConflictState) {
			return nil, p2p.Errorf(p2p.CodeConflict, "job %s is not waiting for a node", req.Job)
		}
		return nil, service.Wrap(err, "job "+req.Job)
	}
	direct, gossiped := g.claimedDirect(j.ID, from)
	if !direct { // a direct offer held the node's slot when it was made
		g.capacity.took(from)
	}
	g.servedUser(j.UserID)
	g.metrics.grants.Inc()
	g.metrics.dispatch.Observe(j.StartedAt.Sub(j.QueuedAt).Seconds())
	if gossiped {
		// Tell nodes still waiting out their jitter that this one is taken.
		g.gossip(g.peer.Context(), wire.Offer{Gateway: g.ID(), Job: j.ID, Expires: time.Now().Add(g.cfg.OfferTTL), Taken: true})
	}
	g.log.Info("lease granted", "job", j.ID, "attempt", j.Attempt, "node", from)
	return &wire.ClaimResponse{Job: j.ID, Attempt: j.Attempt, LeaseSeconds: int(g.cfg.Lease / time.Second)}, nil
}

// leased returns the job if from holds the current lease of attempt.
func (g *Gateway) leased(from peer.ID, jobID string, attempt int) (*store.Job, error) {
	j, err := g.store.Job(jobID)
	if err != nil {
		return nil, service.Wrap(err, "job "+jobID)
	}
	if err := checkLease(j, from, attempt); err != nil {
		return nil, err
	}
	return j, nil
}

// checkLease refuses a job whose current lease is not from's for attempt.
func checkLease(j *store.Job, from peer.ID, attempt int) error {
	if j.State != wire.StateRunning || j.Attempt != attempt || j.Node != from.String() {
		return p2p.Errorf(p2p.CodeStale, "job %s attempt %d is not leased to you (current attempt %d, state %s)", j.ID, attempt, j.Attempt, j.State)
	}
	return nil
}

func (g *Gateway) handleFetch(ctx context.Context, c caller, req *wire.FetchRequest) (*wire.FetchResponse, error) {
	in, err := g.store.JobInputs(req.Job) // job and weights in one read
	if err != nil {
		return nil, service.Wrap(err, "")
	}
	j := in.Job
	if err := checkLease(j, c.peer, req.Attempt); err != nil {
		return nil, err
	}
	var csv []byte
	if j.ParentID != "" {
		if csv, err = g.shardCSV(ctx, j); err != nil {
			if p2p.IsCode(err, p2p.CodeTooLarge) {
				return nil, err
			}
			return nil, fmt.Errorf("cut shard: %w", err)
		}
	} else if csv, err = g.jobCSV(ctx, j); err != nil {
		if p2p.IsCode(err, p2p.CodeTooLarge) {
			return nil, err
		}
		return nil, service.Wrap(err, "dataset "+j.DatasetID)
	}
	return &wire.FetchResponse{Job: j.ID, Attempt: j.Attempt, Dataset: j.DatasetID, Plan: j.Plan, CSV: csv, Init: in.Init}, nil
}

func (g *Gateway) handleHeartbeat(_ context.Context, c caller, req *wire.HeartbeatRequest) (*wire.HeartbeatResponse, error) {
	from := c.peer
	j, err := g.store.Heartbeat(req.Job, req.Attempt, from.String(), wire.Progress{Epoch: req.Epoch, Epochs: req.Epochs, Loss: req.Loss}, g.cfg.Lease)
	if err != nil {
		if cur, gerr := g.store.Job(req.Job); gerr == nil && cur.State == wire.StateCancelled && cur.Attempt == req.Attempt {
			return &wire.HeartbeatResponse{Cancelled: true}, nil
		}
		return nil, service.Wrap(err, "job "+req.Job)
	}
	return &wire.HeartbeatResponse{Cancelled: j.State == wire.StateCancelled, LeaseSeconds: int(g.cfg.Lease / time.Second)}, nil
}

func (g *Gateway) handleResult(_ context.Context, c caller, req *wire.ResultRequest) (*wire.Ack, error) {
	from := c.peer
	j, err := g.store.Job(req.Job)
	if err != nil {
		return nil, service.Wrap(err, "job "+req.Job)
	}
	// A retry of a result already stored for this very attempt is acknowledged again.
	if wire.Terminal(j.State) && j.Attempt == req.Attempt && j.Node == from.String() {
		return &wire.Ack{OK: true}, nil
	}
	if req.Error != "" {
		if err := g.store.Fail(req.Job, req.Attempt, from.String(), truncate(req.Error, 2000)); err != nil {
			return nil, service.Wrap(err, "job "+req.Job)
		}
		g.metrics.jobEnded(wire.StateFailed, j.StartedAt)
		g.wake(g.coordKick)
		g.capacity.released(from)
		g.wake(g.kick)
		g.log.Warn("job failed on node", "job", req.Job, "attempt", req.Attempt, "reason", req.Error)
		return &wire.Ack{OK: true}, nil
	}
	if _, err := g.leased(from, req.Job, req.Attempt); err != nil {
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
		return nil, service.Wrap(err, "job "+req.Job)
	}
	if j.ParentID != "" {
		if parent, err := g.store.Job(j.ParentID); err == nil && parent.Federation != "" {
			g.fed.keepShard(j.ID, j.ParentID, j.Round, m) // read by the round's update
		}
		g.wake(g.coordKick)
	} else {
		g.metrics.jobEnded(wire.StateSucceeded, j.StartedAt)
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

func (g *Gateway) handleSubmit(_ context.Context, c caller, req *wire.SubmitRequest) (*wire.JobInfo, error) {
	v, err := g.svc.Submit(c.Actor, req.Dataset, req.Plan)
	if err != nil {
		return nil, err
	}
	return v.Info(g.ID()), nil
}

func (g *Gateway) handleJob(_ context.Context, c caller, req *wire.JobRequest) (*wire.JobInfo, error) {
	v, err := g.svc.Job(c.Actor, req.Job)
	if err != nil {
		return nil, err
	}
	return v.Info(g.ID()), nil
}

// handleJobs lists the caller's own jobs, newest first, as handleJob shows
// each (shards left out, what a result withholds withheld), at most
// wire.MaxJobsListed.
func (g *Gateway) handleJobs(_ context.Context, c caller, req *wire.JobsQuery) (*wire.JobList, error) {
	vs, err := g.svc.Jobs(c.Actor, service.JobFilter{State: req.State, UserID: c.Actor.UserID()})
	if err != nil {
		return nil, err
	}
	out := &wire.JobList{Jobs: []wire.JobInfo{}}
	for _, v := range vs {
		if len(out.Jobs) == wire.MaxJobsListed {
			break
		}
		out.Jobs = append(out.Jobs, *v.Info(g.ID()))
	}
	return out, nil
}

func (g *Gateway) handleCancel(_ context.Context, c caller, req *wire.JobRequest) (*wire.JobInfo, error) {
	v, err := g.svc.CancelJob(c.Actor, req.Job)
	if err != nil {
		return nil, err
	}
	return v.Info(g.ID()), nil
}

func (g *Gateway) handleModel(_ context.Context, c caller, req *wire.JobRequest) (*wire.ModelResponse, error) {
	b, err := g.svc.Result(c.Actor, req.Job)
	if err != nil {
		return nil, err
	}
	return &wire.ModelResponse{Model: b}, nil
}

// jobCSV returns the dataset version a job was created on, as CSV, for
// job/fetch: at most wire.MaxShard bytes, what its response carries.
func (g *Gateway) jobCSV(ctx context.Context, j *store.Job) ([]byte, error) {
	v, err := g.store.OpenDatasetVersion(j.DatasetID, j.DatasetSHA256)
	if err != nil {
		return nil, err
	}
	defer func() { _ = v.Close() }()
	b := &fetchBuffer{}
	if err := dataset.WriteSourceCSV(ctx, v, b); err != nil {
		return nil, b.refusal(err)
	}
	return b.Bytes(), nil
}

// fetchBuffer holds the CSV of a job/fetch response, refusing to grow past
// maxFetchCSV: a larger one could not be sent, so the gateway stops
// rendering it (memory bounded whatever the dataset's size).
type fetchBuffer struct{ bytes.Buffer }

var errFetchTooLarge = errors.New("job/fetch: the rows are too large")

// maxFetchCSV is wire.MaxShard (a variable for tests).
var maxFetchCSV = wire.MaxShard

func (b *fetchBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > maxFetchCSV {
		return 0, errFetchTooLarge
	}
	return b.Buffer.Write(p)
}

// refusal words err for the node: the size refusal says what to do.
func (b *fetchBuffer) refusal(err error) error {
	if errors.Is(err, errFetchTooLarge) {
		return p2p.Errorf(p2p.CodeTooLarge, "the job's rows are more than job/fetch carries (%d bytes as CSV): this needs a node that reads them with job/open and job/data (a newer release)", maxFetchCSV)
	}
	return err
}
