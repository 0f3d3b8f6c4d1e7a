package service

import (
	"errors"
	"fmt"
	"strings"

	"github.com/fedgrid/fedgrid/gateway/store"
)

// Kind is what went wrong, independent of the transport: HTTP
// (gateway/api) and p2p (gateway) each map a Kind to their status or code
// once, in one table.
type Kind int

const (
	Internal           Kind = iota // a fault of the gateway; its text never leaves
	Invalid                        // bad input (Field names the field when known)
	Unauthorized                   // no identity (unregistered peer, missing or bad token)
	BadCredentials                 // wrong email or password
	Forbidden                      // an identity that may not do this
	NotFound                       // nothing there, or nothing the actor may see
	Conflict                       // not in a state that allows this
	Exists                         // already exists
	Protected                      // the Owner role and account
	InsufficientBudget             // the privacy budget does not cover it
	Stale                          // a node's attempt is no longer current
	SetupDone                      // setup was done already
	SetupRequired                  // setup has not been done
	TooLarge                       // over a size limit
	Unavailable                    // a capability this gateway lacks
	Busy                           // too much of this at once: try again shortly
)

// Error is an error with a kind and a message a person may read; Field is
// the input field at fault (Invalid). cause, if any, stays inside.
type Error struct {
	Kind  Kind
	Field string
	Msg   string
	cause error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.cause }

// Errorf makes an error of kind k.
func Errorf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// FieldError makes an Invalid error about one input field.
func FieldError(field, format string, args ...any) *Error {
	return &Error{Kind: Invalid, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// As classifies any error: an *Error as it is, a store error by its
// sentinel (the one place store errors are classified), anything else
// Internal with a message that says nothing of its cause.
func As(err error) *Error {
	return Wrap(err, "")
}

// Wrap is As that names what the error is about ("job X") in messages
// built from a store error.
func Wrap(err error, what string) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	text := strings.ReplaceAll(err.Error(), "store: ", "")
	msg := func(generic string) string {
		if what != "" {
			return what + ": " + generic
		}
		return text
	}
	var inv *store.InvalidError
	switch {
	case errors.As(err, &inv):
		return &Error{Kind: Invalid, Field: inv.Field, Msg: inv.Reason, cause: err}
	case errors.Is(err, store.ErrNotFound):
		if what != "" {
			return &Error{Kind: NotFound, Msg: what + " not found", cause: err}
		}
		return &Error{Kind: NotFound, Msg: text, cause: err}
	case errors.Is(err, store.ErrExists):
		return &Error{Kind: Exists, Msg: text, cause: err}
	case errors.Is(err, store.ErrConflictState):
		return &Error{Kind: Conflict, Msg: msg("not in a state that allows this"), cause: err}
	case errors.Is(err, store.ErrStale):
		return &Error{Kind: Stale, Msg: msg("this attempt is no longer current (the lease was lost or the job moved on)"), cause: err}
	case errors.Is(err, store.ErrProtected):
		return &Error{Kind: Protected, Msg: text, cause: err}
	case errors.Is(err, store.ErrSetupDone):
		return &Error{Kind: SetupDone, Msg: "setup has already been done", cause: err}
	case errors.Is(err, store.ErrSetupRequired):
		return &Error{Kind: SetupRequired, Msg: "this gateway has no owner yet: POST /api/v1/setup first", cause: err}
	case errors.Is(err, store.ErrForbidden):
		return &Error{Kind: Forbidden, Msg: prefixed(what, text), cause: err}
	case errors.Is(err, store.ErrUnauthenticated):
		return &Error{Kind: Unauthorized, Msg: "a valid bearer token is required", cause: err}
	case errors.Is(err, store.ErrBusy):
		return &Error{Kind: Busy, Msg: "too many logins in progress; try again shortly", cause: err}
	case errors.Is(err, store.ErrBadCredentials):
		return &Error{Kind: BadCredentials, Msg: "wrong email or password", cause: err}
	case errors.Is(err, store.ErrInsufficientBudget):
		return &Error{Kind: InsufficientBudget, Msg: prefixed(what, text), cause: err}
	case errors.Is(err, store.ErrUnknownPeer):
		return &Error{Kind: Unauthorized, Msg: text, cause: err}
	case errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrTokenInvalid):
		return &Error{Kind: Invalid, Msg: text, cause: err}
	}
	return &Error{Kind: Internal, Msg: "internal error", cause: err}
}

func prefixed(what, text string) string {
	if what == "" {
		return text
	}
	return what + ": " + text
}
