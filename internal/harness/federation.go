package harness

import (
	"context"
	"errors"
)

// Federation is what `fedgrid train --json` prints for federated training
// across gateways (--dataset given more than once).
type Federation struct {
	Ref             string             `json:"federation"` // fed:ID
	State           string             `json:"state"`
	Error           string             `json:"error"`
	Rounds          int                `json:"rounds"`
	CompletedRounds int                `json:"completed_rounds"`
	Active          []string           `json:"active"`
	Refused         map[string]string  `json:"refused"`
	Jobs            map[string]string  `json:"jobs"` // gateway peer ID -> job ID there
	Epsilon         map[string]float64 `json:"epsilon"`
	History         []FedRound         `json:"history"`
}

// FedRound is one completed round of a federation.
type FedRound struct {
	Round        int      `json:"round"`
	Participants []string `json:"participants"`
	Dropped      []string `json:"dropped"`
	Rows         float64  `json:"rows"`
	Loss         float64  `json:"loss"`
	Epsilon      float64  `json:"epsilon"`
	Seconds      float64  `json:"seconds"`
}

// TrainFederated runs `fedgrid train --json --wait` with several datasets,
// keeping federation states in federationsDir; extra flags are appended.
// The federation is returned whenever the command printed it.
func (s *Scientist) TrainFederated(ctx context.Context, federationsDir string, refs []string, planFile string, extra ...string) (*Federation, error) {
	rest := []string{"--plan", planFile, "--wait", "--json", "--federations", federationsDir}
	for _, r := range refs {
		rest = append(rest, "--dataset", r)
	}
	var f Federation
	err := s.h.RunJSON(ctx, &f, s.args([]string{"train"}, true, append(rest, extra...)...)...)
	if f.Ref == "" {
		if err == nil {
			err = errors.New("fedgrid train --json printed no federation")
		}
		return nil, err
	}
	return &f, err
}

// StartFederated starts `fedgrid train` over refs in the background
// (without --json: its progress goes to stderr), to be killed mid-way.
func (s *Scientist) StartFederated(federationsDir string, refs []string, planFile string, extra ...string) (*Proc, error) {
	rest := []string{"--plan", planFile, "--wait", "--federations", federationsDir}
	for _, r := range refs {
		rest = append(rest, "--dataset", r)
	}
	return s.h.StartCommand("train-federated", s.args([]string{"train"}, true, append(rest, extra...)...)...)
}

// ResumeFederated runs `fedgrid train --resume ref --json` to completion.
func (s *Scientist) ResumeFederated(ctx context.Context, federationsDir, ref string) (*Federation, error) {
	var f Federation
	err := s.h.RunJSON(ctx, &f, s.args([]string{"train"}, true, "--resume", ref, "--wait", "--json", "--federations", federationsDir)...)
	if f.Ref == "" && err == nil {
		err = errors.New("fedgrid train --resume --json printed no federation")
	}
	return &f, err
}

// FederationResult runs `fedgrid result fed:ID --out modelFile`.
func (s *Scientist) FederationResult(ctx context.Context, federationsDir, ref, modelFile string) error {
	_, err := s.h.Run(ctx, s.args([]string{"result"}, true, "--out", modelFile, "--federations", federationsDir, ref)...)
	return err
}

// FedEvaluation is what `fedgrid eval --json` prints: a model's figures
// over several gateways' rows, from their secure sums.
type FedEvaluation struct {
	Federation string            `json:"federation"`
	Rows       int               `json:"rows"`
	Task       string            `json:"task"`
	Loss       float64           `json:"loss"`
	Correct    int               `json:"correct"`
	Accuracy   float64           `json:"accuracy"`
	AUC        float64           `json:"auc"`
	AUCError   float64           `json:"auc_error"`
	Bins       int               `json:"bins"`
	Gateways   []string          `json:"gateways"`
	Refused    map[string]string `json:"refused"`
}

// EvalFederated runs `fedgrid eval --json` on the datasets refs; extra flags are appended.
func (s *Scientist) EvalFederated(ctx context.Context, modelFile string, refs []string, extra ...string) (*FedEvaluation, error) {
	rest := []string{"--model", modelFile, "--json"}
	for _, r := range refs {
		rest = append(rest, "--dataset", r)
	}
	var ev FedEvaluation
	if err := s.h.RunJSON(ctx, &ev, s.args([]string{"eval"}, true, append(rest, extra...)...)...); err != nil {
		return nil, err
	}
	if ev.Rows == 0 {
		return nil, errors.New("fedgrid eval --json: no rows evaluated")
	}
	return &ev, nil
}
