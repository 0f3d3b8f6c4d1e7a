package store

import (
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Hosted models: a model (a fedgrid.model/v1 document: plan plus weights)
// that the data owner uploaded. A data scientist names it by ID in a plan
// ("model": "<id>") and sends only the training settings; the gateway
// resolves it and the job starts from the hosted weights.
//
// The record (HostedModel) is what anyone may list; the model JSON, weights
// included, is kept apart (HostedModelJSON) and is served only as a job's
// starting weights, to the node that trains it. A model trained from them
// is released like any result, and it carries weights derived from the
// hosted ones - with a tiny learning rate, nearly the same. Hosting a
// model shares it; it does not keep it secret.

const (
	prefixModel     = "model/"
	prefixModelJSON = "model-json/"
)

// HostedModel describes a hosted model; never its weights.
type HostedModel struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by"`
	// Params is the number of trainable numbers; Size the model JSON's bytes.
	Params int          `json:"params"`
	Size   int64        `json:"size"`
	Plan   ModelSummary `json:"plan"`
}

// ModelSummary is what a data scientist needs to know of a hosted model's
// plan to train it: the columns it reads and predicts, the loss, the
// optimizer it was trained with, and its layers as a table.
type ModelSummary struct {
	Name      string   `json:"name,omitempty"`
	Features  []string `json:"features"`
	Label     string   `json:"label"`
	Task      string   `json:"task"` // binary, multiclass or regression
	Loss      string   `json:"loss"`
	Optimizer string   `json:"optimizer"`
	Ops       int      `json:"ops"`
	// Layers is the plan as a readable table (plan.Report.String).
	Layers string `json:"layers,omitempty"`
}

// Limits on hosted model metadata.
const (
	MaxModelName = 200
)

func validateHostedModel(m *HostedModel) error {
	m.Name = strings.TrimSpace(m.Name)
	if m.Name == "" {
		return invalid("name", "required")
	}
	if len(m.Name) > MaxModelName {
		return invalid("name", "longer than %d characters", MaxModelName)
	}
	if len(m.Description) > MaxDescription {
		return invalid("description", "longer than %d characters", MaxDescription)
	}
	if m.Params < 0 {
		return invalid("params", "must not be negative")
	}
	return nil
}

// PutHostedModel stores m and its model JSON in one transaction, audited as
// model.put. An empty ID is assigned; an existing ID is replaced. Size
// defaults to len(model), CreatedAt to now. The caller has validated the
// model JSON (plan.ParseModel): the store keeps bytes.
func (s *Store) PutHostedModel(m *HostedModel, model []byte) error {
	if len(model) == 0 {
		return invalid("model", "required")
	}
	if err := validateHostedModel(m); err != nil {
		return err
	}
	if m.ID == "" {
		m.ID = newID()
	}
	if m.Size == 0 {
		m.Size = int64(len(model))
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = s.now().UTC()
	}
	return s.update(func(txn *badger.Txn) error {
		if err := putJSON(txn, prefixModel+m.ID, m); err != nil {
			return err
		}
		if err := txn.Set([]byte(prefixModelJSON+m.ID), model); err != nil {
			return err
		}
		return s.audit(txn, AuditEvent{Actor: m.CreatedBy, Action: "model.put", Target: "model/" + m.ID,
			Detail: map[string]any{"name": m.Name, "params": m.Params, "size": m.Size}})
	})
}

// HostedModel returns one hosted model's description, or ErrNotFound.
func (s *Store) HostedModel(id string) (*HostedModel, error) {
	var m HostedModel
	err := s.view(func(txn *badger.Txn) error { return getJSON(txn, prefixModel+id, &m) })
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// HostedModelJSON returns a hosted model's JSON (weights included), or ErrNotFound.
func (s *Store) HostedModelJSON(id string) ([]byte, error) {
	var b []byte
	err := s.view(func(txn *badger.Txn) error {
		var err error
		b, err = getBytes(txn, prefixModelJSON+id)
		return err
	})
	return b, err
}

// HostedModels lists every hosted model, newest first.
func (s *Store) HostedModels() ([]*HostedModel, error) {
	var out []*HostedModel
	err := s.view(func(txn *badger.Txn) error {
		var err error
		out, err = scanAll[HostedModel](txn, prefixModel)
		return err
	})
	slices.SortStableFunc(out, func(a, b *HostedModel) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, err
}

// DeleteHostedModel removes a hosted model and its JSON, audited as
// model.delete with the acting user. Jobs already submitted keep their copy
// of its weights and finish.
func (s *Store) DeleteHostedModel(id, actor string) error {
	return s.update(func(txn *badger.Txn) error {
		var m HostedModel
		if err := getJSON(txn, prefixModel+id, &m); err != nil {
			return err
		}
		for _, k := range []string{prefixModel + id, prefixModelJSON + id} {
			if err := txn.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return s.audit(txn, AuditEvent{Actor: actor, Action: "model.delete", Target: "model/" + id, Detail: map[string]any{"name": m.Name}})
	})
}
