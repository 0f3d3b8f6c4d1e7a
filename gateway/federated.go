package gateway

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/dataset/colstore"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// Data-parallel training (FedAvg). A plan with train.workers = k > 1 becomes
// a coordinated job that the gateway runs as rounds: each round is k shard
// jobs, offered, leased, retried and fenced like any job, each training on
// its shard from the round's starting weights; when all k succeed the
// gateway averages their weights, weighted by rows, and starts the next
// round. A node lost mid-round only loses its shard job's lease: the shard
// is re-queued for another node and the round still completes.
//
// The coordinator keeps no state of its own: everything is in the store
// (shard jobs have deterministic IDs), so a restarted gateway carries on.

// coordLoop advances every running coordinated job.
func (g *Gateway) coordLoop(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		running, err := g.store.RunningJobs()
		if err != nil {
			g.log.Error("list running jobs", "err", err)
		}
		for _, j := range running {
			if !j.Coordinated() || j.Federation != "" {
				continue // a federation's rounds are driven by its coordinator (fedpart.go)
			}
			if err := g.advance(ctx, j); err != nil {
				g.log.Error("coordinate data-parallel job", "job", j.ID, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.coordKick:
		}
	}
}

// fedPlans parses a coordinated job's plan and derives the per-shard plan:
// preprocessing statistics fitted on every row of the dataset version the
// job was created on, declared so that every shard scales alike; workers
// and rounds removed. The fit is one streamed pass over the version
// (plan.Declare: a record batch at a time, never the whole table), made
// when round 1 starts; later rounds and the final model take the statistics
// from round 1's shard plan in the store, so they read no row. rows is the
// version's row count (its metadata).
func (g *Gateway) fedPlans(ctx context.Context, p *store.Job) (user, shard *plan.Plan, states []plan.PreprocessState, rows int, err error) {
	user, err = plan.Parse(p.Plan)
	if err != nil {
		return nil, nil, nil, 0, err
	}
	v, err := g.store.OpenDatasetVersion(p.DatasetID, p.DatasetSHA256)
	if err != nil {
		return nil, nil, nil, 0, err
	}
	defer func() { _ = v.Close() }()
	rows = v.NumRows()
	if first, err := g.store.Job(store.ShardJobID(p.ID, 1, 0)); err == nil {
		if shard, err = plan.Parse(first.Plan); err != nil {
			return nil, nil, nil, 0, fmt.Errorf("round 1's shard plan: %w", err)
		}
		if states, err = plan.DeclaredStates(shard); err != nil {
			return nil, nil, nil, 0, fmt.Errorf("round 1's shard plan: %w", err)
		}
		return user, shard, states, rows, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, 0, err
	}
	shard, states, err = plan.Declare(ctx, user, g.scanned(v))
	if err != nil {
		return nil, nil, nil, 0, err
	}
	shard.Train.Workers, shard.Train.Rounds = 0, 0
	return user, shard, states, rows, nil
}

// advance moves a coordinated job on: start round 1, wait for the current
// round, average a finished round and start the next, or finish.
func (g *Gateway) advance(ctx context.Context, p *store.Job) error {
	round := p.Progress.Epoch
	if round == 0 {
		return g.startRound(ctx, p, 1, nil)
	}
	models, done, failed, err := g.roundModels(p, round)
	if err != nil {
		return err
	}
	if failed != "" {
		return g.store.FinishCoordinated(p.ID, nil, nil, failed)
	}
	if !done {
		return nil // still training
	}
	avg, _, loss, err := localUpdate(models)
	if err != nil {
		return g.store.FinishCoordinated(p.ID, nil, nil, err.Error())
	}
	g.log.Info("data-parallel round done", "job", p.ID, "round", round, "of", p.Rounds, "loss", loss)
	if round < p.Rounds {
		if err := g.store.SetProgress(p.ID, wire.Progress{Epoch: round, Epochs: p.Rounds, Loss: loss}); err != nil {
			return err
		}
		return g.startRound(ctx, p, round+1, avg)
	}
	return g.finishFederated(ctx, p, avg, models, loss)
}

func (g *Gateway) startRound(ctx context.Context, p *store.Job, round int, init map[string]plan.Tensor) error {
	_, shardPlan, _, rows, err := g.fedPlans(ctx, p)
	if ctx.Err() != nil {
		return ctx.Err() // stopping: the job stays as it is
	}
	if err != nil {
		return g.store.FinishCoordinated(p.ID, nil, nil, "cannot prepare the shards: "+err.Error())
	}
	planJSON, err := json.Marshal(shardPlan)
	if err != nil {
		return err
	}
	var initJSON json.RawMessage
	switch {
	case init != nil:
		if initJSON, err = json.Marshal(init); err != nil {
			return err
		}
	case round == 1:
		if initJSON, err = g.store.JobInit(p.ID); err != nil { // a hosted model's weights, or none
			return err
		}
	}
	if p.Shards > rows {
		return g.store.FinishCoordinated(p.ID, nil, nil, fmt.Sprintf("train.workers is %d but the dataset has only %d rows", p.Shards, rows))
	}
	for s := 0; s < p.Shards; s++ {
		c := &store.Job{
			ID: store.ShardJobID(p.ID, round, s), DatasetID: p.DatasetID, UserID: p.UserID, Requester: p.Requester,
			Plan: planJSON, Init: initJSON, ParentID: p.ID, Shard: s, Round: round, MemoryBytes: p.MemoryBytes, StreamMemoryBytes: p.StreamMemoryBytes,
			MaxAttempts: g.cfg.MaxAttempts, AttemptTimeout: g.cfg.AttemptTimeout, Deadline: p.Deadline,
		}
		if err := g.store.CreateJob(c); errors.Is(err, store.ErrConflictState) {
			return nil // the job ended meanwhile (cancelled); its shards were cancelled with it
		} else if err != nil && !errors.Is(err, store.ErrExists) {
			return err
		}
	}
	if err := g.store.SetProgress(p.ID, wire.Progress{Epoch: round, Epochs: p.Rounds, Loss: p.Progress.Loss}); err != nil {
		return err
	}
	g.log.Info("data-parallel round started", "job", p.ID, "round", round, "of", p.Rounds, "shards", p.Shards)
	g.wake(g.kick)
	return nil
}

// finishFederated stores the averaged model, signed, as the job's result.
func (g *Gateway) finishFederated(ctx context.Context, p *store.Job, avg map[string]plan.Tensor, shards []*plan.Model, loss float64) error {
	user, _, states, _, err := g.fedPlans(ctx, p)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return g.store.FinishCoordinated(p.ID, nil, nil, err.Error())
	}
	m := &plan.Model{Format: plan.ModelFormat, Plan: user, Params: avg, Preprocess: states}
	m.Metrics.Epochs = user.Train.Epochs * p.Rounds
	for _, s := range shards {
		m.Metrics.TrainRows += s.Metrics.TrainRows
		m.Metrics.ValidationRows += s.Metrics.ValidationRows
		m.Metrics.Steps += s.Metrics.Steps
	}
	// The per-round training loss of the averaged shards.
	for r := 1; r <= p.Rounds; r++ {
		var sum, w float64
		for s := 0; s < p.Shards; s++ {
			b, err := g.store.Result(store.ShardJobID(p.ID, r, s))
			if err != nil {
				continue
			}
			var sm struct {
				Metrics plan.Metrics `json:"metrics"`
			}
			if json.Unmarshal(b, &sm) == nil && len(sm.Metrics.TrainLoss) > 0 {
				sum += sm.Metrics.TrainLoss[len(sm.Metrics.TrainLoss)-1] * float64(sm.Metrics.TrainRows)
				w += float64(sm.Metrics.TrainRows)
			}
		}
		if w > 0 {
			m.Metrics.TrainLoss = append(m.Metrics.TrainLoss, sum/w)
		}
	}
	if err := m.Validate(); err != nil {
		return g.store.FinishCoordinated(p.ID, nil, nil, "averaged model is invalid: "+err.Error())
	}
	signed, err := g.signModel(m, p)
	if err != nil {
		return err
	}
	metrics, err := json.Marshal(m.Metrics)
	if err != nil {
		return err
	}
	if err := g.store.FinishCoordinated(p.ID, signed, metrics, ""); err != nil {
		return err
	}
	g.metrics.jobEnded(wire.StateSucceeded, p.StartedAt)
	g.log.Info("data-parallel job succeeded", "job", p.ID, "rounds", p.Rounds, "workers", p.Shards, "loss", loss)
	return nil
}

// shardCSV returns the rows of a shard job's shard as CSV, read from the
// dataset version its parent job was created on: the shard's rows are
// gathered from the stored columns (each record batch read once), no table
// is loaded; at most wire.MaxShard bytes (fetchBuffer).
func (g *Gateway) shardCSV(ctx context.Context, j *store.Job) ([]byte, error) {
	parent, err := g.store.Job(j.ParentID)
	if err != nil {
		return nil, err
	}
	pl, err := plan.Parse(parent.Plan)
	if err != nil {
		return nil, err
	}
	v, err := g.store.OpenDatasetVersion(j.DatasetID, parent.DatasetSHA256)
	if err != nil {
		return nil, err
	}
	defer func() { _ = v.Close() }()
	ranges, err := shardRanges(newShardSpec(v.NumRows(), parent.Shards, j.Shard, pl.Train.Seed))
	if err != nil {
		return nil, err
	}
	var rows []int
	for _, r := range ranges {
		for i := r[0]; i < r[1]; i++ {
			rows = append(rows, i)
		}
	}
	b := &fetchBuffer{}
	if err := writeRowsCSV(ctx, v, rows, b); err != nil {
		return nil, b.refusal(err)
	}
	return b.Bytes(), nil
}

// writeRowsCSV writes the header and the given rows of v, in that order.
func writeRowsCSV(ctx context.Context, v *colstore.Version, rows []int, w io.Writer) error {
	cols := v.Columns()
	cw := csv.NewWriter(w)
	rec := make([]string, len(cols))
	for c, col := range cols {
		rec[c] = col.Name
	}
	if err := cw.Write(rec); err != nil {
		return err
	}
	err := v.ScanRows(ctx, rows, 1<<16, func(b *dataset.Batch) error {
		for i := range b.Len {
			for c := range cols {
				rec[c] = b.Cell(c, i)
			}
			if err := cw.Write(rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	cw.Flush()
	return cw.Error()
}
