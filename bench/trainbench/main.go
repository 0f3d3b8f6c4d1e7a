// Command trainbench generates the benchmark CSV and times fedgrid training
// on it, for bench/run.sh.
//
//	trainbench gen -out FILE [-rows 100000] [-cols 20] [-seed 0]
//	trainbench train -data FILE -model logreg|mlp64|mlp256 [-epochs 2,6] [-engine native|gorgonia]
//
// gen follows ../shared/bench/torch_reference.py: x ~ N(0,1) of rows x cols,
// w ~ N(0,1), y = 1 when x.w + 0.5 N(0,1) > 0, label column "y".
// train prints one line per epoch count: "model epochs seconds", the
// seconds of plan.Train alone (the CSV is read, and one epoch run and
// discarded, before the clock starts).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/plan"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "trainbench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: trainbench gen|train ARGS")
	}
	switch args[0] {
	case "gen":
		fs := flag.NewFlagSet("gen", flag.ContinueOnError)
		out := fs.String("out", "", "output CSV")
		rows := fs.Int("rows", 100000, "rows")
		cols := fs.Int("cols", 20, "feature columns")
		seed := fs.Uint64("seed", 0, "seed")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return gen(*out, *rows, *cols, *seed)
	case "train":
		fs := flag.NewFlagSet("train", flag.ContinueOnError)
		data := fs.String("data", "", "CSV from gen")
		model := fs.String("model", "logreg", "logreg, mlp64 or mlp256")
		epochs := fs.String("epochs", "2,6", "comma-separated epoch counts to time")
		engine := fs.String("engine", "native", "native, native64 or gorgonia")
		prof := fs.String("cpuprofile", "", "write a CPU profile here")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *prof != "" {
			f, err := os.Create(*prof)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		return train(*data, *model, *epochs, plan.Engine(*engine))
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func gen(out string, rows, cols int, seed uint64) error {
	if out == "" {
		return errors.New("gen: -out is required")
	}
	rng := rand.New(rand.NewPCG(seed, 20))
	w := make([]float64, cols)
	for j := range w {
		w[j] = rng.NormFloat64()
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	for j := 0; j < cols; j++ {
		fmt.Fprintf(bw, "f%d,", j)
	}
	bw.WriteString("y\n")
	x := make([]float64, cols)
	for i := 0; i < rows; i++ {
		s := 0.0
		for j := range x {
			x[j] = float64(float32(rng.NormFloat64()))
			s += x[j] * w[j]
			bw.WriteString(strconv.FormatFloat(x[j], 'g', 8, 64))
			bw.WriteByte(',')
		}
		if s+0.5*rng.NormFloat64() > 0 {
			bw.WriteString("1\n")
		} else {
			bw.WriteString("0\n")
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// benchPlan mirrors torch_reference.py: SGD without momentum, BCE on
// logits, batch 256, no validation split, no preprocessing.
func benchPlan(model string, cols, epochs int) (*plan.Plan, error) {
	feats := make([]string, cols)
	for j := range feats {
		feats[j] = fmt.Sprintf("f%d", j)
	}
	type m = map[string]any
	params := m{}
	var fwd []m
	lr := 0.5
	layer := func(in string, i, from, to int, relu bool) string {
		w, b, h := fmt.Sprintf("w%d", i), fmt.Sprintf("b%d", i), fmt.Sprintf("h%d", i)
		params[w] = m{"shape": []int{from, to}, "init": "glorot"}
		params[b] = m{"shape": []int{to}, "init": "zeros"}
		fwd = append(fwd, m{"op": "matmul", "in": []string{in, w}, "out": h}, m{"op": "add", "in": []string{h, b}, "out": h})
		if relu {
			fwd = append(fwd, m{"op": "relu", "in": []string{h}, "out": h})
		}
		return h
	}
	var out string
	switch model {
	case "logreg":
		out = layer("x", 1, cols, 1, false)
	case "mlp64":
		out = layer(layer("x", 1, cols, 64, true), 2, 64, 1, false)
		lr = 0.1
	case "mlp256":
		out = layer(layer(layer("x", 1, cols, 256, true), 2, 256, 256, true), 3, 256, 1, false)
		lr = 0.05
	default:
		return nil, fmt.Errorf("unknown model %q", model)
	}
	p := m{
		"format": plan.Format, "name": "bench-" + model, "features": feats, "label": "y",
		"params": params, "forward": fwd, "loss": m{"op": "bce_logits", "in": []string{out, "y"}},
		"optimizer": m{"name": "sgd", "learning_rate": lr},
		"train":     m{"epochs": epochs, "batch_size": 256, "seed": 1},
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return plan.Parse(b)
}

func train(data, model, epochs string, engine plan.Engine) error {
	f, err := os.Open(data)
	if err != nil {
		return err
	}
	t, err := dataset.ReadCSV(bufio.NewReaderSize(f, 1<<20), dataset.Limits{})
	f.Close()
	if err != nil {
		return err
	}
	// One discarded epoch first, as bench/torch_bench.py does: page faults
	// and the first use of every buffer are not the training's cost.
	warm, err := benchPlan(model, len(t.Columns())-1, 1)
	if err != nil {
		return err
	}
	if _, err := plan.Train(context.Background(), warm, t, plan.TrainOptions{Engine: engine}); err != nil {
		return err
	}
	for _, es := range strings.Split(epochs, ",") {
		e, err := strconv.Atoi(es)
		if err != nil {
			return fmt.Errorf("-epochs: %w", err)
		}
		p, err := benchPlan(model, len(t.Columns())-1, e)
		if err != nil {
			return err
		}
		start := time.Now()
		m, err := plan.Train(context.Background(), p, t, plan.TrainOptions{Engine: engine})
		if err != nil {
			return err
		}
		el := time.Since(start).Seconds()
		tl := m.Metrics.TrainLoss
		fmt.Printf("%s %d %.4f loss=%.4f\n", model, e, el, tl[len(tl)-1])
	}
	return nil
}
