// Package service is the gateway's transport-independent layer: one method
// per thing a caller can do, taking the Actor who asks. Each method, in one
// place, authorises, calls the store, has the side effects (hooks for
// metrics and wake-ups; the store audits in its transactions), and returns
// a view already redacted for that actor, or an *Error with a Kind.
//
// The HTTP API (gateway/api) and the p2p handlers (gateway) are adapters:
// they decode, resolve the actor, call, and map the Kind to their status or
// code once. What an actor may see of a job or a request is decided in one
// function each (visibility.go); no transport redacts on its own.
package service

import (
	"log/slog"

	"github.com/fedgrid/fedgrid/gateway/store"
)

// Hooks let the gateway react after a change has been committed. Any may be nil.
type Hooks struct {
	// JobCancelled: a job was cancelled (its shards with it).
	JobCancelled func(*store.Job)
}

// Config configures a Service.
type Config struct {
	Store  *store.Store
	Hooks  Hooks
	Logger *slog.Logger // nil: discard
}

// Service is the gateway's service layer over one store.
type Service struct {
	st    *store.Store
	hooks Hooks
	log   *slog.Logger
}

// New builds the service layer.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{st: cfg.Store, hooks: cfg.Hooks, log: cfg.Logger}
}

// Store is the store under the service.
func (s *Service) Store() *store.Store { return s.st }
