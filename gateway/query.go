package gateway

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/google/differential-privacy/go/v3/noise"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/dataset/colstore"
	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

// DP statistics queries (the seed's budgeted get()). Every query, on public
// data too, is answered with calibrated noise and charged its epsilon, in
// the transaction that records the answer; asking the same question twice
// costs twice. Neighbouring datasets differ in one row replaced by another:
// the row count is public (the catalog lists it), so the mean is the noisy
// clamped sum divided by the row count.

// Query limits.
const (
	maxQueryEpsilon = 100
	maxQueryBound   = 1e12
	maxQueryDelta   = 1e-3
)

// mechanism is one noise distribution with its calibration.
type mechanism struct {
	name  string
	n     noise.Noise
	delta float64
}

// add noises x for a statistic of sensitivities l0 and lInf at epsilon, and
// returns the noisy value, the noise's standard deviation and 95% interval.
func (m mechanism) add(x float64, l0 int64, lInf, eps float64) (v, sd float64, ci [2]float64, err error) {
	if v, err = m.n.AddNoiseFloat64(x, l0, lInf, eps, m.delta); err != nil {
		return 0, 0, ci, err
	}
	iv, err := m.n.ComputeConfidenceIntervalFloat64(v, l0, lInf, eps, m.delta, 0.05)
	if err != nil {
		return 0, 0, ci, err
	}
	if m.name == wire.MechanismGaussian {
		sd = noise.SigmaForGaussian(l0, lInf, eps, m.delta)
	} else {
		sd = math.Sqrt2 * float64(l0) * lInf / eps
	}
	return v, sd, [2]float64{iv.LowerBound, iv.UpperBound}, nil
}

func checkQuery(req *wire.QueryRequest) (mechanism, error) {
	bad := func(format string, a ...any) (mechanism, error) {
		return mechanism{}, p2p.Errorf(p2p.CodeBadRequest, format, a...)
	}
	finite := func(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
	switch req.Stat {
	case wire.StatCount, wire.StatSum, wire.StatMean, wire.StatHistogram:
	default:
		return bad("stat must be count, sum, mean or histogram, got %q", req.Stat)
	}
	if req.Column == "" {
		return bad("column is required")
	}
	if !finite(req.Epsilon) || req.Epsilon <= 0 || req.Epsilon > maxQueryEpsilon {
		return bad("epsilon must be positive and at most %d, got %v", maxQueryEpsilon, req.Epsilon)
	}
	if req.Epsilon < 1.0/wire.MicroPerEpsilon {
		return bad("epsilon %v is less than one micro-epsilon", req.Epsilon)
	}
	if !finite(req.Lower) || !finite(req.Upper) || math.Abs(req.Lower) > maxQueryBound || math.Abs(req.Upper) > maxQueryBound {
		return bad("lower and upper must be finite numbers of at most %g in size", float64(maxQueryBound))
	}
	if !(req.Lower < req.Upper) {
		return bad("clamping bounds: lower (%v) must be less than upper (%v)", req.Lower, req.Upper)
	}
	if req.Stat == wire.StatHistogram && (req.Bins < 1 || req.Bins > wire.MaxQueryBins) {
		return bad("bins must be between 1 and %d for a histogram, got %d", wire.MaxQueryBins, req.Bins)
	}
	switch req.Mechanism {
	case "", wire.MechanismLaplace:
		if req.Delta != 0 {
			return bad("the laplace mechanism takes no delta")
		}
		return mechanism{name: wire.MechanismLaplace, n: noise.Laplace()}, nil
	case wire.MechanismGaussian:
		if !finite(req.Delta) || req.Delta <= 0 || req.Delta >= maxQueryDelta {
			return bad("the gaussian mechanism needs 0 < delta < %g, got %v", maxQueryDelta, req.Delta)
		}
		return mechanism{name: wire.MechanismGaussian, n: noise.Gaussian(), delta: req.Delta}, nil
	}
	return bad("mechanism must be laplace or gaussian, got %q", req.Mechanism)
}

func (g *Gateway) handleQuery(ctx context.Context, c caller, req *wire.QueryRequest) (*wire.QueryResponse, error) {
	u := c.User
	mech, err := checkQuery(req)
	if err != nil {
		return nil, err
	}
	// Permission, column and budget are checked before the dataset is read:
	// a refused query costs no parse. Refusals are audited.
	ds, err := g.svc.DatasetForQuery(c.Actor, req.Dataset)
	if err == nil {
		err = g.queryAllowed(u, ds, req)
	}
	if err != nil {
		if aerr := g.store.AuditRefused(u.ID, "query.refused", "dataset/"+req.Dataset, service.As(err).Error()); aerr != nil {
			return nil, aerr
		}
		return nil, err
	}
	acc, err := g.scanQuery(ctx, ds.ID, req)
	if err != nil {
		return nil, err
	}
	resp, err := acc.answer(mech)
	if err != nil {
		return nil, fmt.Errorf("noise: %w", err)
	}
	q := &store.DPQuery{UserID: u.ID, DatasetID: ds.ID, Stat: req.Stat, Column: req.Column, Lower: req.Lower, Upper: req.Upper,
		Bins: req.Bins, Mechanism: mech.name, Delta: mech.delta, EpsilonMic: int64(wire.MicroEpsCharge(req.Epsilon))}
	if resp.Stat == wire.StatHistogram {
		q.Answer = resp.Counts
	} else {
		q.Answer = []float64{resp.Value}
	}
	// Charged and recorded in one transaction; only then is the answer given.
	if err := g.store.RecordQuery(q); err != nil {
		if errors.Is(err, store.ErrInsufficientBudget) {
			return nil, service.Errorf(service.InsufficientBudget, "query refused: epsilon %v is more than your budget allows (%s); ask for more with fedgrid request budget", req.Epsilon, strings.TrimPrefix(err.Error(), "store: "))
		}
		return nil, service.Wrap(err, "query")
	}
	resp.Query, resp.Epsilon = q.ID, wire.Epsilon(q.EpsilonMic)
	if cur, err := g.store.User(u.ID); err == nil {
		resp.Remaining = wire.Epsilon(cur.BudgetMicroEps)
	}
	g.log.Info("dp query answered", "query", q.ID, "user", u.ID, "dataset", ds.ID, "stat", req.Stat, "epsilon_micro", q.EpsilonMic)
	return resp, nil
}

// scanQuery computes a query's exact statistic with one scan of the
// column in the dataset's stored version: no table is loaded.
func (g *Gateway) scanQuery(ctx context.Context, id string, req *wire.QueryRequest) (*queryAcc, error) {
	_, v, err := g.store.OpenDataset(id)
	if err != nil {
		return nil, service.Wrap(err, "dataset "+id)
	}
	defer func() { _ = v.Close() }()
	col := slices.IndexFunc(v.Columns(), func(c dataset.Column) bool { return c.Name == req.Column })
	if col < 0 || v.Columns()[col].Type != dataset.TypeNumber {
		// No value or row: the message may reach someone who may not see the data.
		return nil, p2p.Errorf(p2p.CodeBadRequest, "column %q: column %q is not numeric (it holds text)", req.Column, req.Column)
	}
	acc := newQueryAcc(req)
	err = v.Scan(ctx, 0, v.NumRows(), 1<<16, func(b *dataset.Batch) error {
		acc.add(b.Num[col][:b.Len])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read dataset %s: %w", id, err)
	}
	g.datasetScans.Add(1)
	return acc, nil
}

// queryAllowed checks, from the dataset's description and the ledger alone,
// that u may query the column of ds at the request's epsilon (the dataset
// policy is service.DatasetForQuery's).
func (g *Gateway) queryAllowed(u *store.User, ds *store.Dataset, req *wire.QueryRequest) error {
	i := slices.IndexFunc(ds.Columns, func(c dataset.Column) bool { return c.Name == req.Column })
	if i < 0 {
		return service.FieldError("column", "dataset %q has no column %q", ds.Name, req.Column)
	}
	if ds.Columns[i].Type != dataset.TypeNumber {
		return service.FieldError("column", "column %q is %s; queries take numeric columns", req.Column, ds.Columns[i].Type)
	}
	if err := g.store.CheckSpend(u.ID, ds.ID, int64(wire.MicroEpsCharge(req.Epsilon))); err != nil {
		if errors.Is(err, store.ErrInsufficientBudget) {
			return service.Errorf(service.InsufficientBudget, "query refused: epsilon %v is more than your budget allows (%s); ask for more with fedgrid request budget", req.Epsilon, strings.TrimPrefix(err.Error(), "store: "))
		}
		return service.Wrap(err, "query")
	}
	return nil
}

// answer computes the noisy statistic of vals (n = len(vals) is public).
func answer(m mechanism, req *wire.QueryRequest, vals []float64) (*wire.QueryResponse, error) {
	a := newQueryAcc(req)
	a.add(vals)
	return a.answer(m)
}

// queryAcc accumulates a query's exact statistic over a column's values,
// given in row order a run at a time, so a query reads the dataset as a
// scan. The sums are taken in row order, as over the whole column at once.
type queryAcc struct {
	req    *wire.QueryRequest
	n, c   int
	s      float64
	counts []float64
	width  float64
}

func newQueryAcc(req *wire.QueryRequest) *queryAcc {
	a := &queryAcc{req: req}
	if req.Stat == wire.StatHistogram {
		a.counts = make([]float64, req.Bins)
		a.width = (req.Upper - req.Lower) / float64(req.Bins)
	}
	return a
}

func (a *queryAcc) add(vals []float64) {
	lo, hi := a.req.Lower, a.req.Upper
	clamp := func(v float64) float64 { return min(max(v, lo), hi) }
	a.n += len(vals)
	switch a.req.Stat {
	case wire.StatCount:
		// Rows whose value lies within [lower, upper].
		for _, v := range vals {
			if v >= lo && v <= hi {
				a.c++
			}
		}
	case wire.StatSum, wire.StatMean:
		for _, v := range vals {
			a.s += clamp(v)
		}
	case wire.StatHistogram:
		b := len(a.counts)
		for _, v := range vals {
			i := int((clamp(v) - lo) / a.width)
			a.counts[min(max(i, 0), b-1)]++
		}
	}
}

// answer noises the statistic (n, the row count, is public).
func (a *queryAcc) answer(m mechanism) (*wire.QueryResponse, error) {
	req := a.req
	lo, hi, eps := req.Lower, req.Upper, req.Epsilon
	n := a.n
	resp := &wire.QueryResponse{Stat: req.Stat, Column: req.Column, Mechanism: m.name, Delta: m.delta, Rows: n}
	var err error
	switch req.Stat {
	case wire.StatCount:
		// One row replaced moves the count by 1.
		resp.Value, resp.Scale, resp.CI95, err = m.add(float64(a.c), 1, 1, eps)
	case wire.StatSum:
		resp.Value, resp.Scale, resp.CI95, err = m.add(a.s, 1, hi-lo, eps)
	case wire.StatMean:
		if n == 0 {
			return nil, errors.New("the dataset has no rows")
		}
		resp.Value, resp.Scale, resp.CI95, err = m.add(a.s/float64(n), 1, (hi-lo)/float64(n), eps)
	case wire.StatHistogram:
		b := req.Bins
		resp.Edges = make([]float64, b+1)
		for i := range resp.Edges {
			resp.Edges[i] = lo + float64(i)*a.width
		}
		resp.Edges[b] = hi
		// One row replaced moves two bins by one each.
		resp.Counts = make([]float64, b)
		for i, c := range a.counts {
			var ci [2]float64
			if resp.Counts[i], resp.Scale, ci, err = m.add(c, 2, 1, eps); err != nil {
				return nil, err
			}
			resp.CI95 = [2]float64{ci[0] - resp.Counts[i], ci[1] - resp.Counts[i]} // half-widths around each count
		}
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// DatasetScans returns how many passes over a whole dataset version this
// gateway has made, each a streamed scan of its stored columns: DP
// queries, the preprocessing fits of data-parallel jobs, federations'
// round 0 and federated evaluations (a fit that needs no row, as of a plan
// that declares its statistics, makes none). No path loads a whole table
// into memory.
func (g *Gateway) DatasetScans() int64 { return g.datasetScans.Load() }

// countedVersion is a dataset version whose scans count in DatasetScans
// (the plan's passes over every row call Scan once); its other methods,
// such as the stored extremes, are the version's.
type countedVersion struct {
	*colstore.Version
	scans *atomic.Int64
}

func (c countedVersion) Scan(ctx context.Context, from, to, batchRows int, fn func(*dataset.Batch) error) error {
	c.scans.Add(1)
	return c.Version.Scan(ctx, from, to, batchRows, fn)
}

// scanned is v with its scans counted.
func (g *Gateway) scanned(v *colstore.Version) countedVersion {
	return countedVersion{Version: v, scans: &g.datasetScans}
}
