package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/dataset/colstore"
	"github.com/fedgrid/fedgrid/dataset/frames"
	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/plan"
	"github.com/fedgrid/fedgrid/wire"
)

// A job's data, as job/open describes it and job/data streams it (and as
// job/fetch, for nodes of earlier releases, sends it as CSV).

// maxShardBlock bounds a shard block: at most this many consecutive rows
// go to one shard.
const maxShardBlock = 4096

// newShardSpec defines shard index of k over n rows: blocks of about
// n/(64k) rows (1 to maxShardBlock), so that every shard has at least 64
// blocks from all over the dataset when the rows allow.
func newShardSpec(n, k, index int, seed int64) *wire.ShardSpec {
	return &wire.ShardSpec{DatasetRows: n, Shards: k, Index: index, Seed: seed, BlockRows: min(maxShardBlock, max(1, n/(64*k)))}
}

// shardRanges lists the row ranges [from, to) of a shard, in row order:
// the blocks in a seeded random order, dealt in turn to the shards.
func shardRanges(s *wire.ShardSpec) ([][2]int, error) {
	if s.Shards < 1 || s.Index < 0 || s.Index >= s.Shards || s.BlockRows < 1 || s.DatasetRows < 0 {
		return nil, fmt.Errorf("shard %d of %d (blocks of %d rows) is not a shard", s.Index, s.Shards, s.BlockRows)
	}
	nb := (s.DatasetRows + s.BlockRows - 1) / s.BlockRows
	perm := rand.New(rand.NewPCG(uint64(s.Seed), 0x5eed)).Perm(nb)
	var mine []int
	for i, b := range perm {
		if i%s.Shards == s.Index {
			mine = append(mine, b)
		}
	}
	slices.Sort(mine)
	var out [][2]int
	for _, b := range mine {
		from, to := b*s.BlockRows, min((b+1)*s.BlockRows, s.DatasetRows)
		if len(out) > 0 && out[len(out)-1][1] == from {
			out[len(out)-1][1] = to
			continue
		}
		out = append(out, [2]int{from, to})
	}
	return out, nil
}

// dataKey names rows: a dataset version (by content hash and rows), a
// shard definition and the columns.
func dataKey(sha string, rows int, shard *wire.ShardSpec, cols []dataset.Column) string {
	b, _ := json.Marshal(struct {
		Format  string           `json:"format"`
		SHA256  string           `json:"sha256"`
		Rows    int              `json:"rows"`
		Shard   *wire.ShardSpec  `json:"shard"`
		Columns []dataset.Column `json:"columns"`
	}{"fedgrid.shard/v1", sha, rows, shard, cols})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// jobData describes the rows job j trains on and opens them: every row of
// the dataset version the job was created on, or its shard's for a shard
// job (of the version its parent job was created on). The caller closes
// the source.
func (g *Gateway) jobData(j *store.Job) (*wire.DataSpec, *colstore.Version, [][2]int, error) {
	version, sha := j.DatasetVersion, j.DatasetSHA256
	var parent *store.Job
	if j.ParentID != "" {
		var err error
		if parent, err = g.store.Job(j.ParentID); err != nil {
			return nil, nil, nil, err
		}
		version, sha = parent.DatasetVersion, parent.DatasetSHA256
	}
	v, err := g.store.OpenDatasetVersion(j.DatasetID, sha)
	if err != nil {
		return nil, nil, nil, service.Wrap(err, "dataset "+j.DatasetID)
	}
	n := v.NumRows()
	spec := &wire.DataSpec{Version: version, SHA256: v.Meta().SHA256, Columns: v.Columns()}
	ranges := [][2]int{{0, n}}
	if parent != nil {
		pl, err := plan.Parse(parent.Plan)
		if err != nil {
			_ = v.Close()
			return nil, nil, nil, err
		}
		spec.Shard = newShardSpec(n, parent.Shards, j.Shard, pl.Train.Seed)
		if ranges, err = shardRanges(spec.Shard); err != nil {
			_ = v.Close()
			return nil, nil, nil, err
		}
	}
	for _, r := range ranges {
		spec.Rows += r[1] - r[0]
	}
	spec.Key = dataKey(spec.SHA256, n, spec.Shard, spec.Columns)
	return spec, v, ranges, nil
}

func (g *Gateway) handleOpen(_ context.Context, c caller, req *wire.FetchRequest) (*wire.OpenResponse, error) {
	j, err := g.leased(c.peer, req.Job, req.Attempt)
	if err != nil {
		return nil, err
	}
	spec, v, _, err := g.jobData(j)
	if err != nil {
		return nil, fmt.Errorf("describe the data of job %s: %w", j.ID, err)
	}
	_ = v.Close()
	init, err := g.store.JobInit(j.ID)
	if err != nil {
		return nil, service.Wrap(err, "initial weights of job "+j.ID)
	}
	return &wire.OpenResponse{Job: j.ID, Attempt: j.Attempt, Dataset: j.DatasetID, Plan: j.Plan, Init: init, Data: *spec}, nil
}

// handleData streams the rows job/open described: frames of
// frames.DefaultChunkRows rows read from the dataset's Source, range by
// range; a read that fails mid-stream ends it with an error frame.
func (g *Gateway) handleData(_ context.Context, c caller, req *wire.DataRequest) (func(context.Context, io.Writer) error, error) {
	j, err := g.leased(c.peer, req.Job, req.Attempt)
	if err != nil {
		return nil, err
	}
	spec, src, ranges, err := g.jobData(j)
	if err != nil {
		return nil, fmt.Errorf("describe the data of job %s: %w", j.ID, err)
	}
	if req.Key != spec.Key {
		_ = src.Close()
		return nil, p2p.Errorf(p2p.CodeConflict, "the data key asked for is not job %s's (dataset %s version %d); open the job again", j.ID, j.DatasetID, spec.Version)
	}
	g.metrics.dataStreams.Inc()
	return func(ctx context.Context, w io.Writer) error {
		defer func() { _ = src.Close() }()
		fw, err := frames.NewWriter(w, frames.Header{Columns: spec.Columns, Rows: spec.Rows}, wire.MaxFrame)
		if err != nil {
			return err
		}
		for _, r := range ranges {
			if err := src.Scan(ctx, r[0], r[1], frames.DefaultChunkRows, fw.Write); err != nil {
				g.log.Error("stream job data", "job", j.ID, "err", err)
				_ = fw.Fail("the gateway could not read the dataset")
				return err
			}
		}
		return fw.Close()
	}, nil
}
