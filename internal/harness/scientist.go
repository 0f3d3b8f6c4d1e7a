package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Scientist runs the data scientist's commands (fedgrid keygen, search,
// train, job, result) against a network, as processes.
type Scientist struct {
	h         *Harness
	Network   string
	Bootstrap []string
	// Key is the key file made by Keygen; PeerID is its peer ID.
	Key    string
	PeerID string
}

// NewScientist makes a key with `fedgrid keygen --out keyFile` and returns a
// Scientist that uses it on the network reached through bootstrap.
func (h *Harness) NewScientist(ctx context.Context, keyFile, network string, bootstrap []string) (*Scientist, error) {
	res, err := h.Run(ctx, "keygen", "--out", keyFile)
	if err != nil {
		return nil, err
	}
	id := strings.TrimSpace(string(res.Stdout))
	if id == "" || strings.ContainsAny(id, " \n") {
		return nil, fmt.Errorf("fedgrid keygen printed %q, want one peer ID", res.Stdout)
	}
	return &Scientist{h: h, Network: network, Bootstrap: bootstrap, Key: keyFile, PeerID: id}, nil
}

// args builds `cmd --network N --bootstrap B... --key K` + rest.
func (s *Scientist) args(cmd []string, withKey bool, rest ...string) []string {
	args := append([]string(nil), cmd...)
	if s.Network != "" {
		args = append(args, "--network", s.Network)
	}
	for _, b := range s.Bootstrap {
		args = append(args, "--bootstrap", b)
	}
	if withKey {
		args = append(args, "--key", s.Key)
	}
	return append(args, rest...)
}

// CatalogEntry is one dataset as a search shows it (never its rows).
type CatalogEntry struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
	Visibility  string   `json:"visibility"`
	Rows        int      `json:"rows"`
	Columns     []Column `json:"columns"`
}

// SearchResult is one dataset found by `fedgrid search --json`.
type SearchResult struct {
	Gateway     string       `json:"gateway"`
	GatewayName string       `json:"gateway_name"`
	Addrs       []string     `json:"addrs"`
	Dataset     CatalogEntry `json:"dataset"`
	Ref         string       `json:"ref"` // GATEWAY_PEER_ID/DATASET_ID
}

// Search runs `fedgrid search --json TAG...`.
func (s *Scientist) Search(ctx context.Context, tags ...string) ([]SearchResult, error) {
	var r struct {
		Results *[]SearchResult `json:"results"`
	}
	if err := s.h.RunJSON(ctx, &r, s.args([]string{"search", "--json"}, true, tags...)...); err != nil {
		return nil, err
	}
	if r.Results == nil {
		return nil, errors.New(`fedgrid search --json: no "results" in the document`)
	}
	return *r.Results, nil
}

// SearchTable runs `fedgrid search TAG...` and returns the table it prints.
func (s *Scientist) SearchTable(ctx context.Context, tags ...string) (string, error) {
	res, err := s.h.Run(ctx, s.args([]string{"search"}, true, tags...)...)
	if err != nil {
		return "", err
	}
	return string(res.Stdout), nil
}

// WaitSearch repeats Search until it returns at least want results or
// ctx ends: gateways announce their tags in the background, so a dataset
// appears in searches a little after its upload. It returns the last results.
func (s *Scientist) WaitSearch(ctx context.Context, want int, every time.Duration, tags ...string) ([]SearchResult, error) {
	for {
		res, err := s.Search(ctx, tags...)
		if err == nil && len(res) >= want {
			return res, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("found %d datasets", len(res))
			}
			return res, fmt.Errorf("search %s: fewer than %d datasets before the deadline: %w", strings.Join(tags, " "), want, err)
		case <-time.After(every):
		}
	}
}

// Progress of a running job.
type Progress struct {
	Epoch  int     `json:"epoch"`
	Epochs int     `json:"epochs"`
	Loss   float64 `json:"loss"`
}

// Job is what `fedgrid train --json` and `fedgrid job --json` print.
type Job struct {
	ID         string          `json:"id"`
	Ref        string          `json:"ref"`
	Gateway    string          `json:"gateway"`
	Dataset    string          `json:"dataset"`
	State      string          `json:"state"`
	Attempt    int             `json:"attempt"`
	Progress   Progress        `json:"progress"`
	Metrics    json.RawMessage `json:"metrics"`
	Error      string          `json:"error"`
	CreatedAt  time.Time       `json:"created_at"`
	StartedAt  *time.Time      `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at"`
}

// Succeeded reports whether the job ended well.
func (j *Job) Succeeded() bool { return j.State == "succeeded" }

// Metric returns a scalar metric of the job (e.g. validation_accuracy).
func (j *Job) Metric(name string) (float64, bool) {
	var m map[string]any
	if json.Unmarshal(j.Metrics, &m) != nil {
		return 0, false
	}
	v, ok := m[name].(float64)
	return v, ok
}

// Train runs `fedgrid train --wait --json` on datasetRef
// (GATEWAY_PEER_ID/DATASET_ID) with the plan file. The job is returned
// whenever the command printed it, also with the error of a failed job.
func (s *Scientist) Train(ctx context.Context, datasetRef, planFile string) (*Job, error) {
	var j Job
	err := s.h.RunJSON(ctx, &j, s.args([]string{"train"}, true, "--dataset", datasetRef, "--plan", planFile, "--wait", "--json")...)
	if j.ID == "" {
		if err == nil {
			err = errors.New("fedgrid train --json printed a job without an id")
		}
		return nil, err
	}
	return &j, err
}

// Submit runs `fedgrid train --json` without --wait.
func (s *Scientist) Submit(ctx context.Context, datasetRef, planFile string) (*Job, error) {
	var j Job
	if err := s.h.RunJSON(ctx, &j, s.args([]string{"train"}, true, "--dataset", datasetRef, "--plan", planFile, "--json")...); err != nil {
		return nil, err
	}
	return &j, nil
}

// Job runs `fedgrid job --json JOB_REF`.
func (s *Scientist) Job(ctx context.Context, jobRef string) (*Job, error) {
	var j Job
	if err := s.h.RunJSON(ctx, &j, s.args([]string{"job", "--json"}, true, jobRef)...); err != nil {
		return nil, err
	}
	return &j, nil
}

// Result runs `fedgrid result JOB_REF --out modelFile`.
func (s *Scientist) Result(ctx context.Context, jobRef, modelFile string) error {
	_, err := s.h.Run(ctx, s.args([]string{"result"}, true, "--out", modelFile, jobRef)...)
	return err
}

// Evaluation is what `fedgrid model eval --json` prints.
type Evaluation struct {
	Rows     int     `json:"rows"`
	Task     string  `json:"task"`
	Accuracy float64 `json:"accuracy"`
	Loss     float64 `json:"loss"`
	AUC      float64 `json:"auc"`
}

// ModelEval runs `fedgrid model eval --json` (offline) on a labelled CSV.
func (h *Harness) ModelEval(ctx context.Context, modelFile, csvFile string) (*Evaluation, error) {
	var ev Evaluation
	if err := h.RunJSON(ctx, &ev, "model", "eval", "--model", modelFile, "--data", csvFile, "--json"); err != nil {
		return nil, err
	}
	if ev.Rows == 0 {
		return nil, fmt.Errorf("fedgrid model eval --json: no rows evaluated")
	}
	return &ev, nil
}
