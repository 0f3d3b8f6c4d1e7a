package api

import (
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/plan"
)

// MaxHostedModelBytes bounds a hosted model's JSON. Its weights travel with
// every job that trains it (the job's starting weights, sent to the node),
// so a hosted model is kept well below the limit of a released model.
const MaxHostedModelBytes = 16 << 20

// ---- hosted models

func (a *API) listModels(*call) (any, error) {
	ms, err := a.st.HostedModels()
	if err != nil {
		return nil, err
	}
	if ms == nil {
		ms = []*store.HostedModel{}
	}
	return ModelList{Models: ms}, nil
}

func (a *API) getModel(c *call) (any, error) {
	return a.st.HostedModel(c.r.PathValue("id"))
}

func (a *API) deleteModel(c *call) (any, error) {
	return nil, a.st.DeleteHostedModel(c.r.PathValue("id"), c.actor())
}

// uploadModel hosts a fedgrid.model/v1 document: multipart/form-data with
// file (the model JSON), name (default: the plan's name, else the file's
// name) and description. The model is validated as plan.ParseModel does;
// its provenance, metrics and privacy are kept as uploaded.
func (a *API) uploadModel(c *call) (any, error) {
	limit := min(a.cfg.MaxUploadBytes, MaxHostedModelBytes)
	up, err := readUpload(c, limit, fmt.Sprintf("file: a hosted model may be at most %d bytes", limit), "the model JSON (format "+plan.ModelFormat+")", "name", "description")
	if err != nil {
		return nil, err
	}
	body, fields, fileName := up.file, up.fields, up.fileName
	m, err := plan.ParseModel(body)
	if err != nil {
		return nil, &httpError{status: http.StatusBadRequest, code: "bad_model", message: "file: " + err.Error()}
	}
	report, err := plan.Check(m.Plan, nil)
	if err != nil {
		return nil, &httpError{status: http.StatusBadRequest, code: "bad_model", message: "file: model plan: " + err.Error()}
	}
	name := strings.TrimSpace(fields["name"])
	if name == "" {
		name = m.Plan.Name
	}
	if name == "" && fileName != "" {
		name = strings.TrimSuffix(path.Base(fileName), path.Ext(fileName))
	}
	hm := &store.HostedModel{Name: name, Description: fields["description"], CreatedBy: c.actor(),
		Params: report.ParamCount, Size: int64(len(body)), Plan: modelSummary(m.Plan, report)}
	if err := a.st.PutHostedModel(hm, body); err != nil {
		return nil, err
	}
	return hm, nil
}

func modelSummary(p *plan.Plan, r *plan.Report) store.ModelSummary {
	s := store.ModelSummary{Name: p.Name, Features: p.Features, Label: p.Label, Task: r.Task, Ops: len(p.Forward), Layers: r.String()}
	if s.Features == nil {
		s.Features = []string{}
	}
	if p.Loss != nil {
		s.Loss = p.Loss.Op
	}
	if p.Optimizer != nil {
		s.Optimizer = p.Optimizer.Name
	}
	return s
}
