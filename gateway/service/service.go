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
	"time"

	"github.com/fedgrid/fedgrid/gateway/store"
)

// Hooks let the gateway react after a change has been committed. Any may be nil.
type Hooks struct {
	// JobSubmitted: a job was queued.
	JobSubmitted func(*store.Job)
	// JobCancelled: a job was cancelled (its shards with it).
	JobCancelled func(*store.Job)
}

// JobPolicy is the retry policy given to every new job (zero: no limit).
type JobPolicy struct {
	MaxAttempts    int
	AttemptTimeout time.Duration
	JobTimeout     time.Duration
}

// Config configures a Service.
type Config struct {
	Store  *store.Store
	Hooks  Hooks
	Jobs   JobPolicy
	Limits SubmitLimits
	Logger *slog.Logger     // nil: discard
	Now    func() time.Time // nil: time.Now
}

// Service is the gateway's service layer over one store.
type Service struct {
	st     *store.Store
	hooks  Hooks
	jobs   JobPolicy
	limits SubmitLimits
	log    *slog.Logger
	now    func() time.Time
}

// New builds the service layer.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{st: cfg.Store, hooks: cfg.Hooks, jobs: cfg.Jobs, limits: cfg.Limits, log: cfg.Logger, now: cfg.Now}
}

// Store is the store under the service.
func (s *Service) Store() *store.Store { return s.st }
