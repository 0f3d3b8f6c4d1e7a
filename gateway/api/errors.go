package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/internal/strictjson"
)

// Error is the contract's error document: {"error": {"code", "message"}}.
type Error struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody is the inside of Error.
type ErrorBody struct {
	Code string `json:"code"`
	// Message is for people. On a 400 about one field it starts with the
	// field's wire name and a colon, e.g. "email: not an email address".
	Message string `json:"message"`
}

// httpError is an error that knows its status and code.
type httpError struct {
	status  int
	code    string
	message string
}

func (e *httpError) Error() string { return e.message }

func errorf(status int, code, format string, args ...any) *httpError {
	return &httpError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func badField(field, format string, args ...any) *httpError {
	return &httpError{status: http.StatusBadRequest, code: "invalid_field", message: field + ": " + fmt.Sprintf(format, args...)}
}

var (
	errSetupRequired = errorf(http.StatusServiceUnavailable, "setup_required", "this gateway has no owner yet: POST /api/v1/setup first")
	errUnauthorized  = errorf(http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
)

// toHTTP maps an error from a handler, the service layer or the store
// onto the contract: an *httpError as it is; anything else by its service
// error kind (service.As classifies store errors), in this one table.
func toHTTP(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	e := service.As(err)
	switch e.Kind {
	case service.Invalid:
		if e.Field != "" {
			return badField(e.Field, "%s", e.Msg)
		}
		return errorf(http.StatusBadRequest, "invalid", "%s", e.Msg)
	case service.NotFound:
		return errorf(http.StatusNotFound, "not_found", "%s", e.Msg)
	case service.Exists:
		return errorf(http.StatusConflict, "exists", "%s", e.Msg)
	case service.Conflict:
		return errorf(http.StatusConflict, "conflict", "%s", e.Msg)
	case service.Stale:
		return errorf(http.StatusConflict, "stale", "%s", e.Msg)
	case service.Protected:
		return errorf(http.StatusConflict, "protected", "%s", e.Msg)
	case service.SetupDone:
		return errorf(http.StatusConflict, "setup_done", "%s", e.Msg)
	case service.SetupRequired:
		return errSetupRequired
	case service.Forbidden:
		return errorf(http.StatusForbidden, "forbidden", "%s", e.Msg)
	case service.Unauthorized:
		return errUnauthorized
	case service.BadCredentials:
		return errorf(http.StatusUnauthorized, "invalid_credentials", "%s", e.Msg)
	case service.InsufficientBudget:
		return errorf(http.StatusConflict, "insufficient_budget", "%s", e.Msg)
	case service.TooLarge:
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "%s", e.Msg)
	case service.Unavailable:
		return errorf(http.StatusServiceUnavailable, "unavailable", "%s", e.Msg)
	case service.Busy:
		return errorf(http.StatusTooManyRequests, "busy", "%s", e.Msg)
	}
	return errorf(http.StatusInternalServerError, "internal", "internal error")
}

func trimStore(err error) string { return strings.ReplaceAll(err.Error(), "store: ", "") }

// jsonDecodeError turns a body read or strict-decoding error into a 400
// (or 413) naming the field or position at fault; nil stays nil.
func jsonDecodeError(err error) error {
	if err == nil {
		return nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "request body larger than %d bytes", mbe.Limit)
	}
	var se *strictjson.Error
	if !errors.As(err, &se) {
		return errorf(http.StatusBadRequest, "bad_json", "unreadable request body")
	}
	switch se.Kind {
	case strictjson.UnknownField:
		return badField(se.Path, "unknown field")
	case strictjson.Duplicate:
		return badField(se.Path, "given twice")
	case strictjson.WrongType:
		if se.Path != "" {
			return badField(se.Path, "%s", se.Reason)
		}
	case strictjson.NotObject:
		return errorf(http.StatusBadRequest, "bad_json", "request body must be a JSON object")
	case strictjson.Trailing:
		return errorf(http.StatusBadRequest, "bad_json", "unexpected data after the JSON object")
	}
	return errorf(http.StatusBadRequest, "bad_json", "request body: %s", se.Reason)
}
