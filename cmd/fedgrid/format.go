package main

import (
	"math"
	"os"
	"strconv"
	"strings"

	"golang.org/x/term"

	"github.com/fedgrid/fedgrid/plan"
)

// fmtNumber prints a number as a person writes it: whole numbers without
// decimals (epochs=100), others with at most four decimals and no trailing
// zeros (accuracy=0.7812, lr=0.05), very small ones with three significant
// digits (1.23e-05).
func fmtNumber(x float64) string {
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		return strconv.FormatFloat(x, 'g', -1, 64)
	case x == math.Trunc(x) && math.Abs(x) < 1e15:
		return strconv.FormatInt(int64(x), 10)
	case math.Abs(x) < 0.001:
		return strconv.FormatFloat(x, 'g', 3, 64)
	}
	s := strconv.FormatFloat(x, 'f', 4, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		s = "0"
	}
	return s
}

// evalText is model eval's text line: the same facts as its --json.
func evalText(ev *plan.Evaluation) string {
	parts := []string{"rows " + strconv.Itoa(ev.Rows)}
	if ev.Task != "" {
		parts = append(parts, "task "+ev.Task)
	}
	if ev.Task != plan.TaskRegression {
		parts = append(parts, "accuracy "+fmtNumber(ev.Accuracy))
	}
	parts = append(parts, "loss "+fmtNumber(ev.Loss))
	if ev.AUC != 0 {
		parts = append(parts, "auc "+fmtNumber(ev.AUC))
	}
	return strings.Join(parts, "  ")
}

// stderrIsTerminal: progress bars that redraw themselves with \r are for a
// terminal only, never for a log file or a pipe.
func (g *globals) stderrIsTerminal() bool {
	f, ok := g.stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
