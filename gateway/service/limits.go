package service

import (
	"github.com/fedgrid/fedgrid/plan"
)

// SubmitLimits bound what a submitted plan may ask of this gateway's nodes.
type SubmitLimits struct {
	// MaxWorkers and MaxRounds bound train.workers and train.rounds (0: the
	// plan format's own limits only).
	MaxWorkers int
	MaxRounds  int
	// NodeMemory returns the most memory one job may use on any node of the
	// gateway, and whether any node has said; nil: not known.
	NodeMemory func() (int64, bool)
}

// checkLimits refuses a plan beyond the gateway's workers and rounds, or
// whose training needs more memory than any node may give one job; it
// returns the memory training pl on rows rows needs with every row in
// memory (plan.TrainMemory) and streamed, whichever is less
// (plan.NeedMemory).
func (s *Service) checkLimits(pl *plan.Plan, rows int) (need, least int64, err error) {
	l := s.limits
	if l.MaxWorkers > 0 && pl.Train.Workers > l.MaxWorkers {
		return 0, 0, FieldError("train.workers", "plan refused: train.workers is %d, more than this gateway allows (%d)", pl.Train.Workers, l.MaxWorkers)
	}
	if l.MaxRounds > 0 && pl.Train.Rounds > l.MaxRounds {
		return 0, 0, FieldError("train.rounds", "plan refused: train.rounds is %d, more than this gateway allows (%d)", pl.Train.Rounds, l.MaxRounds)
	}
	need, err = plan.TrainMemory(pl, rows)
	if err != nil {
		return 0, 0, Errorf(Invalid, "plan refused: %v", err)
	}
	least, err = plan.NeedMemory(pl, rows)
	if err != nil {
		return 0, 0, Errorf(Invalid, "plan refused: %v", err)
	}
	if l.NodeMemory == nil {
		return need, least, nil
	}
	if top, known := l.NodeMemory(); known && least > top {
		return 0, 0, Errorf(Invalid, "plan refused: training it needs about %s (%d bytes: values and gradients of every op at the batch size, the parameters and the data, or its streaming buffer), more than any node of this gateway may use (%s); lower train.batch_size or the widths",
			plan.FormatBytes(least), least, plan.FormatBytes(top))
	}
	return need, least, nil
}
