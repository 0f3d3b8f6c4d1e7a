package plan

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/fedgrid/fedgrid/dataset"
)

// Streamed training (TrainSource when the data does not fit in memory).
//
// The rows are cut into blocks of consecutive rows (blockRows: the
// source's chunk when it has one, else up to 1,024 rows, at least 256
// blocks when the rows allow). Blocks, not rows, are the unit of the
// validation split: dataset.SplitIndices over the block numbers with
// train.validation_fraction and train.seed. A first pass over the training
// blocks fits the preprocessing (standardize: mean and population standard
// deviation by Welford's method; min_max: minimum and maximum) and checks
// the labels. Each epoch then:
//  1. shuffles the order of the training blocks (seeded by train.seed);
//  2. reads them in that order, a window of W blocks at a time, into a
//     buffer (W = the buffer's rows over blockRows, at least 1), the rows
//     preprocessed as they arrive;
//  3. shuffles the rows in the buffer (with the rows carried over) and
//     trains on full batches of train.batch_size taken in that order; the
//     fewer than batch_size rows left over stay in the buffer for the next
//     window, and after the last window they are the epoch's last, smaller
//     batch.
//
// This is the shuffle of PyTorch's IterableDataset with a shuffle buffer
// and of Hugging Face datasets' IterableDataset.shuffle (shuffled shard
// order plus a buffer), with the buffer refilled a window at a time. When
// the buffer holds every training row it is a full shuffle. Validation
// reads the validation blocks after each epoch, a block at a time; only
// each row's loss, score and label are kept (for the AUC).
//
// With TrainOptions.ScratchDir, the first epoch (and the first validation)
// also writes each block's rows, preprocessed and checked, into a scratch
// file (spill.go); later epochs read a block from there with one read into
// the buffer, skipping the source's read, checksums, decoding, the one_hot
// lookups and the preprocessing. The values are the same bytes, so the
// model is the same.

// DefaultStreamBuffer bounds the shuffle buffer of a streamed run, in
// bytes of rows, when the memory allows more.
const DefaultStreamBuffer = 64 << 20

// maxBlockRows bounds a streaming block when the source has no chunks.
const maxBlockRows = 1024

// block is rows [from, to) of a source.
type block struct{ from, to int }

// chunked is a source that stores its rows in chunks of a fixed number of
// rows (the last may be shorter): reading a whole chunk costs less than
// parts of two.
type chunked interface{ ChunkRows() int }

// scanBlockRows is the batch of a pass over all n rows (fitRows,
// EvalSums): loadBatchRows at most, as a full read.
func scanBlockRows(n int) int { return max(1, min(n, loadBatchRows)) }

func streamBlockRows(src dataset.Source, n int) int {
	b := min(maxBlockRows, max(1, n/256))
	if c, ok := src.(chunked); ok {
		if k := c.ChunkRows(); k > 0 && n/k >= 64 {
			b = k
		}
	}
	return b
}

// streamBlocks cuts n rows into blocks of b rows and splits the blocks.
func streamBlocks(n, b int, frac float64, seed int64) (train, val []block) {
	nb := (n + b - 1) / b
	tr, ho := dataset.SplitIndices(nb, frac, seed)
	for _, i := range tr {
		train = append(train, block{i * b, min((i+1)*b, n)})
	}
	for _, i := range ho {
		val = append(val, block{i * b, min((i+1)*b, n)})
	}
	return train, val
}

func rowsOf(bs []block) int {
	n := 0
	for _, b := range bs {
		n += b.to - b.from
	}
	return n
}

// streamPlan is the shape of a streamed run: what TrainSource and the
// memory estimate share.
type streamPlan struct {
	blockRows   int
	train, val  []block
	trainRows   int
	valRows     int
	fixed, perR float64 // bytes besides the buffer; bytes per buffered row
}

func newStreamPlan(p *Plan, pr *program, src dataset.Source, n int) *streamPlan {
	b := min(maxBlockRows, max(1, n/256))
	if src != nil {
		b = streamBlockRows(src, n)
	}
	sp := &streamPlan{blockRows: b}
	if src != nil {
		sp.train, sp.val = streamBlocks(n, b, p.Train.ValidationFraction, p.Train.Seed)
		sp.trainRows, sp.valRows = rowsOf(sp.train), rowsOf(sp.val)
	} else { // an estimate before the data is seen
		sp.valRows = int(math.Ceil(float64(n) * p.Train.ValidationFraction))
		sp.trainRows = n - sp.valRows
	}
	isParam := make(map[int]bool, len(pr.paramSlot))
	for _, s := range pr.paramSlot {
		isParam[s] = true
	}
	bs := min(p.Train.BatchSize, max(sp.trainRows, 1))
	d := float64(pr.inputs + 1)
	sp.fixed = pr.stepMemory(bs) +
		pr.activations(b, isParam) + // a validation block's forward pass
		4*bytesPerValue*float64(sp.valRows) + // validation loss, score, label, AUC order
		3*bytesPerValue*float64(b)*d + // a block read: the source's batch, raw and preprocessed rows
		2*bytesPerValue*float64(bs)*d // the batch and the rows carried over
	sp.perR = bytesPerValue*d + 8 // a row's inputs and label, and its index
	return sp
}

// memory is the peak of a streamed run with rows rows in its buffer.
func (sp *streamPlan) memory(rows int) float64 { return sp.fixed + sp.perR*float64(rows) }

// defaultBuffer is the buffer rows of a run allowed budget bytes (0: no
// limit): DefaultStreamBuffer at most, the training rows at most, one
// block at least.
func (sp *streamPlan) defaultBuffer(budget int64) int {
	bytes := float64(DefaultStreamBuffer)
	if budget > 0 {
		bytes = min(bytes, float64(budget)-sp.fixed)
	}
	rows := int(bytes / sp.perR)
	return max(sp.blockRows, min(rows, sp.trainRows))
}

// StreamMemory returns an upper bound, in bytes, of the memory a streamed
// run of p over rows rows needs with its default buffer: less than
// TrainMemory for large data, since only the buffer's rows are held.
func StreamMemory(p *Plan, rows int) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	pr, err := compile(p)
	if err != nil {
		return 0, err
	}
	sp := newStreamPlan(p, pr, nil, rows)
	return saturate(sp.memory(sp.defaultBuffer(0))), nil
}

// NeedMemory is the least memory a node needs to train p on rows rows:
// streamed or in memory, whichever needs less (a DP-SGD run is always in
// memory).
func NeedMemory(p *Plan, rows int) (int64, error) {
	in, err := TrainMemory(p, rows)
	if err != nil || p.Privacy != nil {
		return in, err
	}
	st, err := StreamMemory(p, rows)
	if err != nil {
		return 0, err
	}
	return min(in, st), nil
}

// trainStream trains p on src streamed through a bounded buffer (see the
// comment at the top of this file).
func trainStream(ctx context.Context, p *Plan, pr *program, src dataset.Source, rd *inputReader, opt TrainOptions) (*Model, error) {
	n := src.NumRows()
	sp := newStreamPlan(p, pr, src, n)
	if sp.trainRows == 0 {
		return nil, errors.New("train: no training rows left after the validation split")
	}
	bufRows := opt.BufferRows
	if bufRows <= 0 {
		bufRows = sp.defaultBuffer(opt.MaxMemory)
		if need := saturate(sp.memory(sp.blockRows)); opt.MaxMemory > 0 && need > opt.MaxMemory {
			return nil, fmt.Errorf("train: streaming the data needs at least %s (a step at the batch size, the validation rows' losses and one block of %d rows), more than the %s allowed", FormatBytes(need), sp.blockRows, FormatBytes(opt.MaxMemory))
		}
	}
	f := &streamFeeder{blockReader: newBlockReader(p, pr, src, rd, sp.blockRows, true), sp: sp,
		window: max(1, bufRows/sp.blockRows),
		rng:    rand.New(rand.NewPCG(uint64(p.Train.Seed), 0x73687566666c65))} // "shuffle"
	st, err := f.fit(ctx)
	if err != nil {
		return nil, err
	}
	f.states = statesFromStats(p, pr.inputs, st)
	if p.Train.Epochs > 1 {
		f.spill = newSpill(opt.ScratchDir, opt.ScratchMax, n, f.d, sp.blockRows)
		defer f.spill.close()
	}
	m := &Model{Format: ModelFormat, Preprocess: f.states}
	m.Metrics.TrainRows, m.Metrics.ValidationRows = sp.trainRows, sp.valRows
	return train(ctx, p, pr, opt, f, m, nil)
}

// colStats are the running statistics of every raw input column over the
// training rows (Welford's mean and sum of squared deviations).
type colStats struct {
	n        float64
	mean, m2 []float64
	lo, hi   []float64
}

func newColStats(width int) *colStats {
	s := &colStats{mean: make([]float64, width), m2: make([]float64, width), lo: make([]float64, width), hi: make([]float64, width)}
	for j := range width {
		s.lo[j], s.hi[j] = math.Inf(1), math.Inf(-1)
	}
	return s
}

// addRows adds the rows of x (row-major, len(s.mean) values a row).
func (s *colStats) addRows(x []float64) {
	w := len(s.mean)
	for r := 0; r+w <= len(x); r += w {
		s.n++
		for j, v := range x[r : r+w] {
			d := v - s.mean[j]
			s.mean[j] += d / s.n
			s.m2[j] += d * (v - s.mean[j])
			s.lo[j], s.hi[j] = min(s.lo[j], v), max(s.hi[j], v)
		}
	}
}

// statesFromStats is fitPreprocess from statistics of the raw columns: each
// op in order sees the columns as the ops before it left them, which for
// these affine maps is the raw statistics mapped the same way.
func statesFromStats(p *Plan, width int, s *colStats) []PreprocessState {
	a, b := make([]float64, width), make([]float64, width) // current column = a*raw + b
	for j := range a {
		a[j] = 1
	}
	var states []PreprocessState
	for _, pp := range p.Preprocess {
		switch pp.Op {
		case "one_hot":
			states = append(states, PreprocessState{Op: "one_hot", Column: pp.Column, Categories: slices.Clone(pp.Categories)})
		case "standardize":
			cover := scaledColumns(p, pp, width)
			st := PreprocessState{Op: "standardize", Mean: make([]float64, width), Std: make([]float64, width)}
			k := 0
			for j := range width {
				st.Std[j] = 1
				switch {
				case cover[j] && pp.Mean != nil:
					st.Mean[j], st.Std[j] = pp.Mean[k], pp.Std[k]
					k++
				case cover[j] && s.n > 0:
					sd := math.Abs(a[j]) * math.Sqrt(s.m2[j]/s.n)
					if sd == 0 || !finite(sd) {
						sd = 1
					}
					st.Mean[j], st.Std[j] = a[j]*s.mean[j]+b[j], sd
				}
				a[j], b[j] = a[j]/st.Std[j], (b[j]-st.Mean[j])/st.Std[j]
			}
			states = append(states, st)
		case "min_max":
			cover := scaledColumns(p, pp, width)
			st := PreprocessState{Op: "min_max", Min: make([]float64, width), Max: make([]float64, width)}
			k := 0
			for j := range width {
				st.Max[j] = 1
				switch {
				case cover[j] && pp.Min != nil:
					st.Min[j], st.Max[j] = pp.Min[k], pp.Max[k]
					k++
				case cover[j] && s.n > 0:
					lo, hi := a[j]*s.lo[j]+b[j], a[j]*s.hi[j]+b[j]
					if lo > hi {
						lo, hi = hi, lo
					}
					if hi == lo {
						hi = lo + 1
					}
					st.Min[j], st.Max[j] = lo, hi
				}
				r := st.Max[j] - st.Min[j]
				a[j], b[j] = a[j]/r, (b[j]-st.Min[j])/r
			}
			states = append(states, st)
		}
	}
	return states
}

// blockReader reads rows of a source as the model's raw inputs (one_hot
// expanded, before scaling) and labels, a block at a time, into buffers of
// its own: what a streamed run, and the streamed passes over every row
// (Declare, LocalFit, EvalSums), share.
type blockReader struct {
	src    dataset.Source
	rd     *inputReader
	pr     *program
	p      *Plan
	d      int
	labels bool // refuse a label the loss cannot take (labelError)
	// badLabel is the error of a refused label, returned as it is.
	badLabel error

	blockX, blockY []float64 // one block as read
}

// newBlockReader reads blocks of at most rows rows.
func newBlockReader(p *Plan, pr *program, src dataset.Source, rd *inputReader, rows int, labels bool) *blockReader {
	return &blockReader{src: src, rd: rd, pr: pr, p: p, d: pr.inputs, labels: labels,
		blockX: make([]float64, rows*pr.inputs), blockY: make([]float64, rows)}
}

// take reads b into the block's rows from at on, checking its labels.
func (f *blockReader) take(b *dataset.Batch, at int) error {
	if err := f.rd.read(b, f.blockX[at*f.d:], f.blockY[at:]); err != nil {
		return err
	}
	if f.labels {
		for _, v := range f.blockY[at : at+b.Len] {
			if !labelOK(f.pr, v) {
				f.badLabel = labelError(f.p, f.pr)
				return f.badLabel
			}
		}
	}
	return nil
}

// readErr words a failed read: the context's end and a label the loss
// cannot take as they are, anything else as the data's.
func (f *blockReader) readErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err == f.badLabel {
		return err
	}
	return fmt.Errorf("read data: %w", err)
}

// readBlock reads blk's rows (raw inputs) into f.blockX, f.blockY and
// returns how many.
func (f *blockReader) readBlock(ctx context.Context, blk block) (int, error) {
	got := 0
	err := f.src.Scan(ctx, blk.from, blk.to, blk.to-blk.from, func(b *dataset.Batch) error {
		if b.Start != blk.from+got || got+b.Len > blk.to-blk.from {
			return fmt.Errorf("source gave rows [%d, %d), expected them from %d", b.Start, b.Start+b.Len, blk.from+got)
		}
		if err := f.take(b, got); err != nil {
			return err
		}
		got += b.Len
		return nil
	})
	if err == nil && got != blk.to-blk.from {
		err = fmt.Errorf("source gave %d rows of [%d, %d)", got, blk.from, blk.to)
	}
	if err != nil {
		return 0, f.readErr(ctx, err)
	}
	return got, nil
}

// scan reads every row of the source in order, a batch of at most the
// block's rows at a time, and calls fn with each batch's raw inputs x
// (rows x f.d) and labels y: one pass, in bounded memory, that reads a
// chunked source's chunks once each.
func (f *blockReader) scan(ctx context.Context, fn func(x, y []float64, rows int) error) error {
	n := f.src.NumRows()
	got := 0
	err := f.src.Scan(ctx, 0, n, len(f.blockY), func(b *dataset.Batch) error {
		if b.Start != got || got+b.Len > n {
			return fmt.Errorf("source gave rows [%d, %d), expected them from %d", b.Start, b.Start+b.Len, got)
		}
		if err := f.take(b, 0); err != nil {
			return err
		}
		got += b.Len
		return fn(f.blockX[:b.Len*f.d], f.blockY[:b.Len], b.Len)
	})
	if err == nil && got != n {
		err = fmt.Errorf("source gave %d rows, it says it has %d", got, n)
	}
	if err != nil {
		return f.readErr(ctx, err)
	}
	return nil
}

// streamFeeder feeds a streamed run (see the top of this file).
type streamFeeder struct {
	*blockReader
	sp     *streamPlan
	window int
	rng    *rand.Rand
	states []PreprocessState
	spill  *spill // the prepared rows of the blocks read so far; nil for none

	buf, bufY     []float64 // the window's rows
	idx           []int
	xb, yb        []float64
	vloss, vscore []float64
	vy            []float64
}

// prepare preprocesses the rows of x in place, as applyState does (the
// same arithmetic, row by row), and checks they are finite.
func (f *streamFeeder) prepare(x []float64) error {
	d := f.d
	for _, st := range f.states {
		var sub, div []float64
		switch st.Op {
		case "standardize":
			sub, div = st.Mean, st.Std
		case "min_max":
			sub, div = st.Min, make([]float64, d)
			for j := range div {
				div[j] = st.Max[j] - st.Min[j]
			}
		default:
			continue
		}
		sub, div = sub[:d], div[:d]
		for r := 0; r+d <= len(x); r += d {
			row := x[r : r+d]
			for j := range row {
				row[j] = (row[j] - sub[j]) / div[j]
			}
		}
	}
	for i, v := range x {
		if !finite(v) {
			return notFiniteError(f.pr, i%d)
		}
	}
	return nil
}

// prepared fills x and y with blk's rows, preprocessed: from the spill
// when it holds them, else read from the source, preprocessed and checked
// (and then kept in the spill). x and y may be f.blockX and f.blockY.
func (f *streamFeeder) prepared(ctx context.Context, blk block, x, y []float64) error {
	b := blk.from / f.sp.blockRows
	if f.spill.has(b) && f.spill.read(b, blk, x, y) == nil {
		return nil
	} // else (a failed read ended the spill) the source again
	k, err := f.readBlock(ctx, blk)
	if err != nil {
		return err
	}
	if k > 0 && &x[0] != &f.blockX[0] {
		copy(x, f.blockX[:k*f.d])
		copy(y, f.blockY[:k])
	}
	if err := f.prepare(x); err != nil {
		return err
	}
	f.spill.write(b, blk, x, y)
	return nil
}

// fit is the first pass: statistics of the training rows' raw inputs.
func (f *streamFeeder) fit(ctx context.Context) (*colStats, error) {
	st := newColStats(f.d)
	for _, blk := range f.sp.train {
		k, err := f.readBlock(ctx, blk)
		if err != nil {
			return nil, err
		}
		st.addRows(f.blockX[:k*f.d])
	}
	return st, nil
}

func (f *streamFeeder) batches(ctx context.Context, bs int, step func(xb, yb []float64, rows int) error) (int, error) {
	d := f.d
	capRows := f.window*f.sp.blockRows + bs
	if len(f.bufY) < capRows {
		f.buf, f.bufY = make([]float64, capRows*d), make([]float64, capRows)
		f.idx = make([]int, 0, capRows)
	}
	order := slices.Clone(f.sp.train)
	f.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	have, fed := 0, 0
	for w := 0; w < len(order); w += f.window {
		for _, blk := range order[w:min(w+f.window, len(order))] {
			k := blk.to - blk.from
			if err := f.prepared(ctx, blk, f.buf[have*d:(have+k)*d], f.bufY[have:have+k]); err != nil {
				return 0, err
			}
			have += k
		}
		f.idx = f.idx[:have]
		for i := range f.idx {
			f.idx[i] = i
		}
		f.rng.Shuffle(have, func(i, j int) { f.idx[i], f.idx[j] = f.idx[j], f.idx[i] })
		full := have / bs * bs
		if w+f.window >= len(order) {
			full = have // the last window: the rows left over are the last batch
		}
		for s := 0; s < full; s += bs {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			rows := f.idx[s:min(s+bs, full)]
			f.xb, f.yb = gather(f.buf, f.bufY, rows, d, f.xb, f.yb)
			if err := step(f.xb, f.yb, len(rows)); err != nil {
				return 0, err
			}
			fed += len(rows)
		}
		// Carry the rows left over to the front of the buffer.
		rest := f.idx[full:have]
		f.xb, f.yb = gather(f.buf, f.bufY, rest, d, f.xb, f.yb)
		copy(f.buf, f.xb[:len(rest)*d])
		copy(f.bufY, f.yb[:len(rest)])
		have = len(rest)
	}
	return fed, nil
}

func (f *streamFeeder) validate(ctx context.Context, pr *program, params [][]float64) (loss, score, y []float64, err error) {
	f.vloss, f.vscore, f.vy = f.vloss[:0], f.vscore[:0], f.vy[:0]
	for _, blk := range f.sp.val {
		k := blk.to - blk.from
		x := f.blockX[:k*f.d]
		if err := f.prepared(ctx, blk, x, f.blockY[:k]); err != nil {
			return nil, nil, nil, err
		}
		vals := pr.forward(params, x, k)
		l, s := pr.rowLosses(vals, f.blockY[:k], k)
		f.vloss, f.vscore = append(f.vloss, l...), append(f.vscore, s...)
		f.vy = append(f.vy, f.blockY[:k]...)
	}
	return f.vloss, f.vscore, f.vy, nil
}
