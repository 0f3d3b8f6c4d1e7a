package store

import (
	"errors"
	"testing"
	"time"
)

func TestHostedModels(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	owner := setupTest(t, s)
	body := []byte(`{"format":"fedgrid.model/v1","params":{"w":{"shape":[1],"data":[0.5]}}}`)

	if err := s.PutHostedModel(&HostedModel{Name: "  ", CreatedBy: owner.ID}, body); !errors.Is(err, ErrInvalid) {
		t.Fatalf("blank name: %v", err)
	}
	if err := s.PutHostedModel(&HostedModel{Name: "x"}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no model bytes: %v", err)
	}
	a := &HostedModel{Name: " pima-logreg ", Description: "trained on 2023", CreatedBy: owner.ID, Params: 9,
		Plan: ModelSummary{Features: []string{"glucose"}, Label: "diabetes", Loss: "bce", Optimizer: "adam", Ops: 3}}
	if err := s.PutHostedModel(a, body); err != nil {
		t.Fatal(err)
	}
	if a.ID == "" || a.Name != "pima-logreg" || a.Size != int64(len(body)) || a.CreatedAt.IsZero() {
		t.Fatalf("stored record %+v", a)
	}
	s.now = func() time.Time { return time.Now().Add(time.Minute) }
	b := &HostedModel{Name: "second", CreatedBy: owner.ID}
	if err := s.PutHostedModel(b, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}

	got, err := s.HostedModel(a.ID)
	if err != nil || got.Name != "pima-logreg" || got.Params != 9 || got.Plan.Label != "diabetes" || got.Plan.Features[0] != "glucose" {
		t.Fatalf("HostedModel: %+v %v", got, err)
	}
	js, err := s.HostedModelJSON(a.ID)
	if err != nil || string(js) != string(body) {
		t.Fatalf("HostedModelJSON: %q %v", js, err)
	}
	list, err := s.HostedModels()
	if err != nil || len(list) != 2 || list[0].ID != b.ID || list[1].ID != a.ID {
		t.Fatalf("HostedModels (newest first): %+v %v", list, err)
	}

	// Survives a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	if got, err := s.HostedModel(a.ID); err != nil || got.Name != "pima-logreg" {
		t.Fatalf("after reopen: %+v %v", got, err)
	}

	if err := s.DeleteHostedModel(a.ID, owner.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HostedModel(a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted model: %v", err)
	}
	if _, err := s.HostedModelJSON(a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted model's JSON: %v", err)
	}
	if err := s.DeleteHostedModel(a.ID, owner.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if list, _ := s.HostedModels(); len(list) != 1 || list[0].ID != b.ID {
		t.Fatalf("after delete: %+v", list)
	}

	es, err := s.Audit(AuditFilter{Action: "model."})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range es {
		actions = append(actions, e.Action+" "+e.Target+" "+e.Actor)
	}
	want := []string{"model.put model/" + a.ID + " " + owner.ID, "model.put model/" + b.ID + " " + owner.ID, "model.delete model/" + a.ID + " " + owner.ID}
	if len(actions) != len(want) {
		t.Fatalf("audit %q, want %q", actions, want)
	}
	for i := range want {
		if actions[i] != want[i] {
			t.Fatalf("audit %q, want %q", actions, want)
		}
	}
	if _, err := s.VerifyAudit(); err != nil {
		t.Fatal(err)
	}
}
