package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/fedgrid/fedgrid/crypto/receipt"
	"github.com/fedgrid/fedgrid/dataset"
)

// Tensor is a parameter's value, row-major.
type Tensor struct {
	Shape []int     `json:"shape"`
	Data  []float64 `json:"data"`
}

// Metrics are what training measured. Validation figures are of the
// returned parameters (the best epoch's under early stopping); the *_history
// lists have one entry per epoch run.
type Metrics struct {
	TrainLoss                 []float64 `json:"train_loss"`
	ValidationLoss            float64   `json:"validation_loss,omitempty"`
	ValidationAccuracy        float64   `json:"validation_accuracy,omitempty"`
	ValidationAUC             float64   `json:"validation_auc,omitempty"`
	ValidationLossHistory     []float64 `json:"validation_loss_history,omitempty"`
	ValidationAccuracyHistory []float64 `json:"validation_accuracy_history,omitempty"`
	ValidationAUCHistory      []float64 `json:"validation_auc_history,omitempty"`
	Epochs                    int       `json:"epochs"`
	BestEpoch                 int       `json:"best_epoch,omitempty"` // 1-based, under early stopping
	TrainRows                 int       `json:"train_rows"`
	ValidationRows            int       `json:"validation_rows"`
	Steps                     int       `json:"steps"`
}

// Privacy is the privacy cost of a model, computed by the gateway.
type Privacy struct {
	Epsilon float64 `json:"epsilon"`
	Delta   float64 `json:"delta"`
}

// Provenance says where a model was trained; Signature is the gateway's
// signature over SigningBytes.
type Provenance struct {
	Gateway string `json:"gateway"`
	Dataset string `json:"dataset"`
	Job     string `json:"job"`
	// DatasetVersion and DatasetSHA256 name the dataset contents the model
	// was trained on (absent in models signed before they were recorded;
	// signed like every other field).
	DatasetVersion int    `json:"dataset_version,omitempty"`
	DatasetSHA256  string `json:"dataset_sha256,omitempty"`
	// Federation, in a model trained across gateways: the participating
	// gateways and every round's signed receipts (package crypto/receipt).
	// Absent in other models and in federated models released before
	// receipts; signed like every other field.
	Federation *receipt.Federation `json:"federation,omitempty"`
	Signature  string              `json:"signature"`
}

// Model is a trained model, format "fedgrid.model/v1".
type Model struct {
	Format     string            `json:"format"`
	Plan       *Plan             `json:"plan"`
	Params     map[string]Tensor `json:"params"`
	Preprocess []PreprocessState `json:"preprocess"`
	Metrics    Metrics           `json:"metrics"`
	Privacy    *Privacy          `json:"privacy,omitempty"`
	Provenance *Provenance       `json:"provenance,omitempty"`
}

// ParseModel decodes a model strictly (unknown fields refused, at most
// MaxModelBytes), validates its plan, and checks every parameter and
// preprocessing state against the plan's shapes.
func ParseModel(b []byte) (*Model, error) {
	if len(b) > MaxModelBytes {
		return nil, fmt.Errorf("model is %d bytes, more than the limit of %d", len(b), MaxModelBytes)
	}
	var m Model
	if err := decodeStrict(b, &m, "model"); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the model's format, plan, parameters and preprocessing.
func (m *Model) Validate() error {
	_, err := m.compile()
	return err
}

func (m *Model) compile() (*program, error) {
	if m.Format != ModelFormat {
		return nil, fmt.Errorf("model format is %q, want %q", m.Format, ModelFormat)
	}
	if m.Plan == nil {
		return nil, errors.New("model has no plan")
	}
	if err := m.Plan.Validate(); err != nil {
		return nil, fmt.Errorf("model plan: %w", err)
	}
	if m.Plan.Model != "" {
		return nil, errors.New("model plan names a hosted model instead of carrying its operations")
	}
	pr, err := compile(m.Plan)
	if err != nil {
		return nil, fmt.Errorf("model plan: %w", err)
	}
	for _, n := range pr.paramNames {
		t, ok := m.Params[n]
		if !ok {
			return nil, fmt.Errorf("model params: %q is missing", n)
		}
		want := m.Plan.Params[n].Shape
		if !slices.Equal(t.Shape, want) {
			return nil, fmt.Errorf("model params: %q has shape %v, the plan says %v", n, t.Shape, want)
		}
		if len(t.Data) != size(want) {
			return nil, fmt.Errorf("model params: %q has %d numbers, shape %v needs %d", n, len(t.Data), want, size(want))
		}
		for i, v := range t.Data {
			if !finite(v) {
				return nil, fmt.Errorf("model params: %q[%d] is not a finite number", n, i)
			}
		}
	}
	for _, st := range pr.steps {
		if st.op != "batch_norm" {
			continue
		}
		n := pr.paramNames[st.stat[1]]
		for i, v := range m.Params[n].Data {
			if v < 0 {
				return nil, fmt.Errorf("model params: %q[%d] is %v, but a running variance cannot be negative", n, i, v)
			}
		}
	}
	for n := range m.Params {
		if _, ok := m.Plan.Params[n]; !ok {
			return nil, fmt.Errorf("model params: %q is not a parameter of the plan", n)
		}
	}
	if err := checkStates(m.Plan, m.Preprocess, pr.inputs); err != nil {
		return nil, fmt.Errorf("model %w", err)
	}
	return pr, nil
}

// SigningBytes is the model's JSON with the provenance signature emptied:
// what a gateway signs and a verifier checks.
func (m *Model) SigningBytes() ([]byte, error) {
	c := *m
	if m.Provenance != nil {
		pv := *m.Provenance
		pv.Signature = ""
		c.Provenance = &pv
	}
	return json.Marshal(&c)
}

func (m *Model) paramList(pr *program) [][]float64 {
	out := make([][]float64, len(pr.paramNames))
	for i, n := range pr.paramNames {
		out[i] = m.Params[n].Data
	}
	return out
}

// inputs builds the preprocessed x of a table.
func (m *Model) inputs(pr *program, t *dataset.Table) ([]float64, error) {
	cols := t.Columns()
	// The label need not be present for prediction.
	byName := map[string]bool{}
	for _, c := range cols {
		byName[c.Name] = true
	}
	if !byName[m.Plan.Label] {
		cols = append(cols, dataset.Column{Name: m.Plan.Label, Type: dataset.TypeNumber})
	}
	if err := checkColumns(m.Plan, cols); err != nil {
		return nil, err
	}
	x, err := rawInputs(m.Plan, t, pr.inputs)
	if err != nil {
		return nil, err
	}
	for _, st := range m.Preprocess {
		applyState(st, x, pr.inputs)
	}
	return x, nil
}

// Predict applies the stored preprocessing and then the forward ops, in
// order, in float64, and returns the loss input (the prediction: e.g. the
// sigmoid's probabilities) one row per table row.
func (m *Model) Predict(t *dataset.Table) ([][]float64, error) {
	pr, err := m.compile()
	if err != nil {
		return nil, err
	}
	x, err := m.inputs(pr, t)
	if err != nil {
		return nil, err
	}
	n := t.NumRows()
	vals := pr.forward(m.paramList(pr), x, n)
	pred := vals[pr.pred]
	k := pr.outputs
	out := make([][]float64, n)
	for r := range out {
		out[r] = slices.Clone(pred[r*k : (r+1)*k])
	}
	return out, nil
}

// Evaluation is a model's quality on a labelled table.
type Evaluation struct {
	Rows     int     `json:"rows"`
	Task     string  `json:"task"`
	Accuracy float64 `json:"accuracy"`      // classification
	Loss     float64 `json:"loss"`          // the plan's loss, mean over rows
	AUC      float64 `json:"auc,omitempty"` // binary, when both classes occur
}

// Evaluate computes the model's mean loss, accuracy and (binary) AUC on t,
// which must carry the label column.
func Evaluate(m *Model, t *dataset.Table) (*Evaluation, error) {
	pr, loss, score, y, err := m.score(t)
	if err != nil {
		return nil, err
	}
	l, acc, auc := pr.summarize(loss, score, y)
	return &Evaluation{Rows: t.NumRows(), Task: pr.task, Accuracy: acc, Loss: l, AUC: auc}, nil
}

// score runs the model on a labelled table: each row's loss and score
// (rowLosses) and its label.
func (m *Model) score(t *dataset.Table) (pr *program, loss, score, y []float64, err error) {
	if pr, err = m.compile(); err != nil {
		return nil, nil, nil, nil, err
	}
	if _, ok := t.Column(m.Plan.Label); !ok {
		return nil, nil, nil, nil, fmt.Errorf("label: column %q is not in the data set", m.Plan.Label)
	}
	x, err := m.inputs(pr, t)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if y, err = labels(m.Plan, pr, t, nil); err != nil {
		return nil, nil, nil, nil, err
	}
	n := t.NumRows()
	loss, score = pr.rowLosses(pr.forward(m.paramList(pr), x, n), y, n)
	return pr, loss, score, y, nil
}
