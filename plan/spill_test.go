package plan

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/fedgrid/fedgrid/dataset"
)

// countingSource counts the rows scanned from a source.
type countingSource struct {
	dataset.Source
	rows int
}

func (s *countingSource) Scan(ctx context.Context, from, to, batchRows int, fn func(*dataset.Batch) error) error {
	return s.Source.Scan(ctx, from, to, batchRows, func(b *dataset.Batch) error {
		s.rows += b.Len
		return fn(b)
	})
}

// A streamed run with a scratch directory trains the same model, bit for
// bit, as without one, while it reads the source only for the statistics
// pass and the first epoch; the scratch file is gone when the run ends.
func TestStreamScratchSameModelFewerReads(t *testing.T) {
	hot := loadPlan(t, "logreg_pima.json")
	hot.Preprocess = append([]PreprocessOp{{Op: "one_hot", Column: "pregnant", Categories: []string{"0", "1", "2", "3"}}}, hot.Preprocess...)
	hot.Params["w"] = ParamDef{Shape: []int{len(hot.Features) + 3, 1}, Init: "zeros"}
	early := loadPlan(t, "mlp_pima.json")
	early.Train.EarlyStopping = &EarlyStopping{Patience: 2}
	tab := loadTable(t, "pima_diabetes.csv")
	for _, c := range []struct {
		name   string
		p      *Plan
		engine Engine
	}{
		{"logreg", loadPlan(t, "logreg_pima.json"), EngineNative},
		{"one_hot", hot, EngineNative64},
		{"mlp_early_stopping", early, EngineNative},
	} {
		t.Run(c.name, func(t *testing.T) {
			plain := &countingSource{Source: tab}
			want, err := TrainSource(context.Background(), c.p, plain, TrainOptions{BufferRows: 64, Engine: c.engine})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			spilled := &countingSource{Source: tab}
			got, err := TrainSource(context.Background(), c.p, spilled, TrainOptions{BufferRows: 64, Engine: c.engine, ScratchDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Params, want.Params) || !reflect.DeepEqual(got.Metrics, want.Metrics) {
				t.Fatalf("with a scratch file: %+v\nwithout: %+v", got.Metrics, want.Metrics)
			}
			n, tr := tab.NumRows(), want.Metrics.TrainRows
			if spilled.rows != tr+n {
				t.Errorf("with a scratch file the source gave %d rows, want %d (the statistics pass and the first epoch)", spilled.rows, tr+n)
			}
			if plain.rows <= spilled.rows {
				t.Errorf("without a scratch file the source gave %d rows, with one %d", plain.rows, spilled.rows)
			}
			if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
				t.Errorf("scratch directory after the run: %v %v", ents, err)
			}
		})
	}
}

// Where the scratch file may not be made (too large for ScratchMax, no
// such directory) or one epoch's reads from it fail, the run reads the
// source instead and trains the same model.
func TestStreamScratchFallsBackToTheSource(t *testing.T) {
	p := loadPlan(t, "logreg_pima.json")
	tab := loadTable(t, "pima_diabetes.csv")
	want, err := TrainSource(context.Background(), p, tab, TrainOptions{BufferRows: 64})
	if err != nil {
		t.Fatal(err)
	}
	size := int64(tab.NumRows()) * int64(len(p.Features)+1) * 8
	for _, c := range []struct {
		name  string
		dir   string
		max   int64
		reads int // rows the source gives, at least
	}{
		{"too large", t.TempDir(), size - 1, tab.NumRows() * p.Train.Epochs},
		{"just fits", t.TempDir(), size, 0},
		{"no directory", filepath.Join(t.TempDir(), "missing"), 0, tab.NumRows() * p.Train.Epochs},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := &countingSource{Source: tab}
			got, err := TrainSource(context.Background(), p, src, TrainOptions{BufferRows: 64, ScratchDir: c.dir, ScratchMax: c.max})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Params, want.Params) || !reflect.DeepEqual(got.Metrics, want.Metrics) {
				t.Fatal("another model")
			}
			if src.rows < c.reads {
				t.Errorf("the source gave %d rows, want at least %d", src.rows, c.reads)
			}
			if c.reads == 0 && src.rows >= tab.NumRows()*p.Train.Epochs {
				t.Errorf("the source gave %d rows: the scratch file was not used", src.rows)
			}
		})
	}

	// A read that fails (the file closed under the spill) ends the spill;
	// the epoch feeds the same rows from the source.
	epochs := func(sp *spill, breakAfter int) [][]float64 {
		f := newTestFeeder(t, p, tab, 2)
		f.spill = sp
		st, err := f.fit(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		f.states = statesFromStats(p, f.d, st)
		var out [][]float64
		for e := range 3 {
			if e == breakAfter {
				_ = sp.f.Close() // reads from the file now fail
			}
			var seen []float64
			if _, err := f.batches(context.Background(), 32, func(xb, yb []float64, rows int) error {
				seen = append(seen, xb[:rows*f.d]...)
				seen = append(seen, yb[:rows]...)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			out = append(out, seen)
		}
		return out
	}
	plain := epochs(nil, -1)
	probe := newTestFeeder(t, p, tab, 2)
	sp := newSpill(t.TempDir(), 0, tab.NumRows(), probe.d, probe.sp.blockRows)
	if sp == nil {
		t.Fatal("no spill")
	}
	broken := epochs(sp, 2)
	for e := range plain {
		if !slices.Equal(plain[e], broken[e]) {
			t.Fatalf("epoch %d fed other rows", e+1)
		}
	}
	if sp.f != nil {
		t.Error("a failed read did not end the spill")
	}
}
